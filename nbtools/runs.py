"""The list of runs in a folder ("task list" / "my models") and their validation curves.

A run is a folder with a ``run.json`` (see the run folder layout in the README). A run
whose record still says "running" but whose heartbeat stopped was killed (kernel restart,
closed laptop, preempted VM): ``read_run`` reports it as interrupted, and so does the list.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

from nbtools.display import fixed_width_table
from nbtools.errors import UserError
from nbtools.run_folder.record import RUN_FILE, STALE_AFTER_S, read_run

METRICS_FILE = "metrics.jsonl"
COLUMNS = ("run", "task_display_name", "custom_model_name", "model", "status", "started_at", "duration",
           "best_eval_loss", "best_reward_accuracy", "export_path")


@dataclass
class RunSummary:
    """One row of the run list."""

    run_dir: str
    task_display_name: str
    custom_model_name: Optional[str]
    model: Optional[str]
    status: str  # running | finished | failed | interrupted | unreadable
    started_at: Optional[str]
    duration_s: Optional[float]
    best_eval_loss: Optional[float]
    best_reward_accuracy: Optional[float]
    export_path: Optional[str]
    note: str = ""  # why the status was inferred (stale heartbeat, dead process) or why unreadable

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def duration(self) -> str:
        return format_duration(self.duration_s)


def parse_time(value) -> Optional[datetime]:
    """ISO-8601 (with or without zone; naive means UTC) or epoch seconds -> aware datetime."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _duration(record: dict, status: str, now: datetime) -> Optional[float]:
    if record.get("duration_s") is not None:
        return float(record["duration_s"])
    start = parse_time(record.get("started_at"))
    if start is None:
        return None
    end = parse_time(record.get("finished_at"))
    if end is None:
        end = now if status == "running" else parse_time(record.get("heartbeat_at"))
    return max((end - start).total_seconds(), 0.0) if end else None


def _export_path(record: dict, run_dir: Path) -> Optional[str]:
    if record.get("export_path"):
        return str(record["export_path"])
    default = run_dir / "export"
    return str(default) if default.is_dir() else None


def summarise_run(run_dir, stale_after_s: float = STALE_AFTER_S, now: Optional[datetime] = None) -> RunSummary:
    """The run list row for one run folder; a run.json that cannot be read or makes no sense becomes a row
    saying so (status "unreadable"), so one damaged run never hides the others."""
    run_dir = Path(run_dir)
    now = now or datetime.now(timezone.utc)
    try:
        record = read_run(run_dir, stale_after_s)  # corrects a dead "running" run to "interrupted"
        if not isinstance(record, dict):
            raise ValueError("it is not a JSON object")
        status = _text(record.get("status")) or "unknown"
        best = record.get("best") or {}
        if not isinstance(best, dict):
            raise ValueError(f"'best' is {type(best).__name__}, not an object")
        return RunSummary(
            run_dir=str(run_dir),
            task_display_name=_text(record.get("task_display_name")) or run_dir.name,
            custom_model_name=_text(record.get("custom_model_name")),
            model=_text(record.get("model")),
            status=status,
            started_at=_text(record.get("started_at")),
            duration_s=_duration(record, status, now),
            best_eval_loss=_number(best.get("eval_loss")),
            best_reward_accuracy=_number(best.get("eval_rewards/accuracies")),
            export_path=_export_path(record, run_dir),
            note=_text(record.get("status_reason")) or "",
        )
    except Exception as exc:  # noqa: BLE001 - any damage (types, nesting, encoding) makes this one row unreadable
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (OSError, ValueError)) else str(exc)
        return RunSummary(str(run_dir), run_dir.name, None, None, "unreadable", None, None, None, None, None,
                          note=f"{run_dir / RUN_FILE}: cannot read ({reason[:200]}); fix or delete the folder")


def _text(value) -> Optional[str]:
    """A record field shown as text: None stays None; control characters are made visible (they break tables)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def _number(value) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def find_run_dirs(folder) -> list[Path]:
    """The folder itself if it is a run, else its sub-folders (two levels deep) that are runs."""
    folder = Path(folder)
    if (folder / RUN_FILE).is_file():
        return [folder]
    found = sorted({p.parent for pattern in (f"*/{RUN_FILE}", f"*/*/{RUN_FILE}") for p in folder.glob(pattern)})
    return found


def list_runs(folder="runs", stale_after_s: float = STALE_AFTER_S) -> list[RunSummary]:
    """Every run under ``folder``, newest first."""
    now = datetime.now(timezone.utc)
    runs = [summarise_run(d, stale_after_s, now) for d in find_run_dirs(folder)]
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(runs, key=lambda r: parse_time(r.started_at) or oldest, reverse=True)


def newest_run(folder, status: Optional[str] = None) -> Path:
    """The newest run under ``folder`` (of that status, if given): what a notebook means by "the run 03 wrote"."""
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    runs = [r for r in list_runs(folder) if status is None or r.status == status]
    if not runs:
        what = f"{status} run" if status else "run"
        raise UserError(f"{folder}: no {what} in this folder (fix: run 03_train.ipynb first, or set output_dir to "
                        "the run folder you mean)")
    newest = max(runs, key=lambda r: (parse_time(r.started_at) or oldest, Path(r.run_dir).name))
    return Path(newest.run_dir)


def _cell(run: RunSummary, column: str) -> str:
    if column == "duration":
        return run.duration
    if column == "run":
        return Path(run.run_dir).name
    if column == "started_at":
        started = parse_time(run.started_at)
        return started.strftime("%Y-%m-%d %H:%M UTC") if started else ""
    value = getattr(run, column)
    if value is None:
        return ""
    if column == "best_reward_accuracy":
        return f"{value:.1%}"
    if column == "best_eval_loss":
        return f"{value:.4f}"
    return str(value)


def runs_table_text(runs: Sequence[RunSummary]) -> str:
    if not runs:
        return "no runs found"
    return "\n".join(fixed_width_table([COLUMNS, *[tuple(_cell(r, c) for c in COLUMNS) for r in runs]]))


STATUS_COLOURS = {"running": "#2563eb", "finished": "#15803d", "failed": "#b91c1c", "interrupted": "#b45309"}


# Short columns stay on one line; names wrap at word boundaries; paths are shown relative to the project.
_NOWRAP = {"status", "started_at", "duration", "best_eval_loss", "best_reward_accuracy", "model"}
_HEADERS = {"task_display_name": "task", "custom_model_name": "model name", "model": "base model",
            "started_at": "started (UTC)", "best_eval_loss": "best val. loss", "best_reward_accuracy": "best reward acc.",
            "export_path": "export"}


def runs_table_html(runs: Sequence[RunSummary], root=None) -> str:
    """The runs as an HTML table (paths relative to the project folder or ``root``; full path on hover)."""
    from nbtools.display import path_html, table_style

    if not runs:
        return "<p>No runs yet.</p>"
    head = "".join(f'<th title="{c}">{_HEADERS.get(c, c.replace("_", " "))}</th>' for c in COLUMNS)
    body = []
    for run in runs:
        cells = []
        for column in COLUMNS:
            text = html.escape(_cell(run, column))
            if column == "status":
                colour = STATUS_COLOURS.get(run.status, "#6b7280")
                tip = html.escape(run.note, quote=True)
                text = f'<b style="color:{colour}" title="{tip}">{text}</b>'
            elif column == "run":
                text = f'<span title="{html.escape(str(run.run_dir), quote=True)}">{text}</span>'
            elif column == "started_at":
                text = text.replace(" UTC", "")  # the header says UTC
            elif column == "export_path" and run.export_path:
                text = path_html(run.export_path, root)
            wrap = ' class="nbt-nowrap"' if column in _NOWRAP else ""
            cells.append(f"<td{wrap}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"{table_style('nbt-runs')}<div style=\"overflow-x:auto\"><table class=\"nbt-runs\"><thead><tr>{head}</tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table></div>")


def validation_curve(run_dir, metric: str = "eval_loss") -> tuple[list[float], list[float]]:
    """(steps, values) of one metric from a run's metrics.jsonl; damaged lines are skipped."""
    steps, values = [], []
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return steps, values
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut short by a crash mid-write
        if isinstance(event, dict) and event.get(metric) is not None and event.get("step") is not None:
            try:
                step, value = float(event["step"]), float(event[metric])
            except (TypeError, ValueError):
                continue  # a damaged row: the others still plot
            steps.append(step)
            values.append(value)
    return steps, values


def plot_validation_curves(runs: Sequence[RunSummary], metrics=("eval_loss", "eval_rewards/accuracies"), path=None):
    """One panel per metric, one line per run, labelled with the run's names."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from nbtools.plot_text import plain_legend

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for run in runs:
            steps, values = validation_curve(run.run_dir, metric)
            if steps:
                label = run.custom_model_name or run.task_display_name
                ax.plot(steps, values, marker="o", markersize=3, label=f"{label} ({run.status})")
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # optimizer steps are whole: no tick at 22.5
        if ax.lines:
            plain_legend(ax, fontsize=7)  # labels are run names: a `$` in them is not mathtext
        else:
            ax.text(0.5, 0.5, "no validation logged yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
