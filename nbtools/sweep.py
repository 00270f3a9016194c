"""Run the train notebook over a grid of parameters with papermill and compare the runs.

    from nbtools.sweep import run_sweep
    sweep = run_sweep({"beta": [0.1, 0.5], "learning_rate": [5e-5, 2e-4]},
                      config_file="runs/notebooks/config.yaml", out_dir="runs/sweep-beta-lr",
                      max_steps=20)
    sweep            # in a notebook: the comparison table and plot

or ``python -m nbtools.sweep --config runs/notebooks/config.yaml --grid beta=0.1,0.5
--grid learning_rate=5e-5,2e-4 --out runs/sweep-beta-lr -p max_steps=20``.

Each grid point is one papermill execution of ``notebooks/03_train.ipynb`` with the base
config file and the point's values as parameters (set parameters win over the file, see
03_train.ipynb), into its own run folder under ``out_dir``; the executed notebooks are kept
next to the runs. Every point is checked as a RunConfig before anything runs.
"""

from __future__ import annotations

import argparse
import difflib
import html
import itertools
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from nbtools.config import ConfigError, RunConfig
from nbtools.display import fixed_width_table
from nbtools.errors import run_entry

TRAIN_NOTEBOOK = "03_train.ipynb"
METRICS = ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins")
SWEEP_FILE = "sweep.json"
PLOT_FILE = "sweep.png"


@dataclass
class SweepRun:
    """One grid point: its values, where it ran, and how it ended."""

    name: str
    point: dict
    run_dir: str
    notebook: str
    status: str = "pending"  # finished | failed | pending
    metrics: dict = field(default_factory=dict)  # final metrics from run.json
    best: Optional[dict] = None
    duration_s: Optional[float] = None
    error: str = ""


@dataclass
class Sweep:
    """The runs of a sweep; shows as one table and one plot in a notebook."""

    out_dir: str
    grid: dict
    runs: list[SweepRun]

    # --- comparison ------------------------------------------------------------------------
    def table(self) -> list[dict]:
        """One row per run: the grid values, status, final validation metrics, best step, duration."""
        rows = []
        for run in self.runs:
            row = {"run": run.name, **run.point, "status": run.status}
            for metric in METRICS:
                row[metric] = run.metrics.get(metric)
            row["best_step"] = (run.best or {}).get("step")
            row["duration_s"] = run.duration_s
            rows.append(row)
        return rows

    def best_run(self, metric: str = "eval_rewards/accuracies", higher_is_better: bool = True) -> Optional[SweepRun]:
        done = [r for r in self.runs if r.status == "finished" and isinstance(r.metrics.get(metric), (int, float))]
        if not done:
            return None
        return (max if higher_is_better else min)(done, key=lambda r: r.metrics[metric])

    def table_text(self) -> str:
        rows = self.table()
        if not rows:
            return "no runs"
        columns = list(rows[0])
        return "\n".join(fixed_width_table([columns] + [[_fmt(row[c]) for c in columns] for row in rows]))

    def table_html(self) -> str:
        rows = self.table()
        if not rows:
            return "<p>No runs.</p>"
        best = self.best_run()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = []
        for run, row in zip(self.runs, rows):
            style = " style='font-weight:bold'" if best is not None and run is best else ""
            cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values())
            body.append(f"<tr{style}>{cells}</tr>")
        note = (f"<p>Best validation reward accuracy: <b>{html.escape(best.name)}</b> (bold).</p>"
                if best is not None else "")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"

    def plot(self, path: Union[str, os.PathLike, None] = None):
        """Validation loss and reward accuracy over steps, one line per run, in one figure."""
        from matplotlib.figure import Figure

        from nbtools.plot_text import plain_legend, plain_suptitle, save_figure
        from nbtools.runs import validation_curve

        fig = Figure(figsize=(12, 4), layout="constrained")
        axes = fig.subplots(1, len(METRICS))
        for ax, metric in zip(axes, METRICS):
            for run in self.runs:
                steps, values = validation_curve(run.run_dir, metric)
                if steps:
                    ax.plot(steps, values, marker="o", markersize=3, label=run.name)
            ax.set(title=metric, xlabel="step")
            if ax.lines:
                plain_legend(ax, fontsize=7)  # labels are grid values (names too): a `$` is not mathtext
        plain_suptitle(fig, f"sweep over {', '.join(self.grid)} ({len(self.runs)} runs)")
        if path is not None:
            save_figure(fig, path, dpi=100)
        return fig

    def _repr_html_(self) -> str:
        import base64
        import io

        buffer = io.BytesIO()
        self.plot().savefig(buffer, format="png", dpi=90)
        image = base64.b64encode(buffer.getvalue()).decode("ascii")
        return self.table_html() + f'<img src="data:image/png;base64,{image}">'

    def __repr__(self) -> str:
        return f"Sweep({self.out_dir})\n{self.table_text()}"

    # --- storage -----------------------------------------------------------------------------
    def save(self) -> Path:
        from nbtools import atomic

        return atomic.write_json(Path(self.out_dir) / SWEEP_FILE,
                                 {"grid": self.grid, "runs": [asdict(r) for r in self.runs]}, indent=2)


def load_sweep(out_dir: Union[str, os.PathLike]) -> Sweep:
    """A finished (or interrupted) sweep from its folder, with metrics re-read from the runs."""
    data = json.loads((Path(out_dir) / SWEEP_FILE).read_text())
    sweep = Sweep(str(out_dir), data["grid"], [SweepRun(**r) for r in data["runs"]])
    for run in sweep.runs:
        _read_results(run)
    return sweep


# --- planning ------------------------------------------------------------------------------------

def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict]:
    """Every combination of the grid's values, the first key varying slowest."""
    if not grid:
        raise ConfigError("grid", "is empty", "give at least one parameter with its values, e.g. {'beta': [0.1, 0.5]}")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ConfigError(name, f"expected a non-empty list of values, got {values!r}",
                              f"e.g. {{'{name}': [value1, value2]}}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(point: Mapping[str, Any]) -> str:
    """'beta=0.1,learning_rate=5e-05': readable, and the folder name after making it path-safe."""
    return ",".join(f"{k}={_fmt(v)}" for k, v in point.items())


def _folder_name(index: int, point: Mapping[str, Any]) -> str:
    return f"{index:02d}-" + re.sub(r"[^A-Za-z0-9._=-]+", "_", point_name(point).replace(",", "_"))


def check_points(base: RunConfig, points: Sequence[dict], fixed: Mapping[str, Any]) -> None:
    """Refuse the sweep before any run when a name is unknown or a value is impossible."""
    names = [f for f in base.to_dict()]
    for key in list(points[0]) + list(fixed):
        if key not in names:
            guess = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            raise ConfigError(key, "is not a RunConfig setting", f"{hint}sweep over RunConfig fields only")
    for point in points:
        try:
            base.replace(**fixed, **point)
        except ConfigError as exc:
            raise ConfigError(exc.field, f"{exc.reason} in grid point {point_name(point)}", exc.fix) from None


# --- running -----------------------------------------------------------------------------------

def run_sweep(grid: Mapping[str, Sequence[Any]], *, config_file: Union[str, os.PathLike, None] = None,
              out_dir: Union[str, os.PathLike, None] = None, notebook: Union[str, os.PathLike, None] = None,
              progress: bool = True, **fixed: Any) -> Sweep:
    """Train once per grid point via the train notebook; return the comparison.

    ``config_file``: the base config YAML (e.g. saved by 02_configure.ipynb); without it,
    RunConfig's defaults plus ``fixed``. ``fixed``: parameters every run gets (e.g.
    ``max_steps=20``, ``train_file=...``). Relative paths are relative to the project folder.
    A run that fails is recorded as failed and the sweep goes on.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from nbtools.paths import project_root
    from nbtools.widgets.notebook import project_path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    points = grid_points(grid)
    base_path = project_path(config_file)
    base = RunConfig.from_yaml(base_path) if base_path else RunConfig()
    check_points(base, points, fixed)
    out = Path(project_path(out_dir) or project_root() / "runs" / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    if not base_path:  # the notebook reads a file: store the base config the sweep started from
        base_path = str(base.to_yaml(out / "base_config.yaml"))
    source = Path(notebook) if notebook else project_root() / "notebooks" / TRAIN_NOTEBOOK
    name = base.task_display_name
    sweep = Sweep(str(out), {k: list(v) for k, v in grid.items()}, [])
    for i, point in enumerate(points):
        folder = _folder_name(i, point)
        run = SweepRun(point_name(point), dict(point), str(out / folder), str(out / "notebooks" / f"{folder}.ipynb"))
        sweep.runs.append(run)
    sweep.save()
    for i, run in enumerate(sweep.runs, 1):
        if progress:
            print(f"[{i}/{len(sweep.runs)}] {run.name}", flush=True)
        parameters = {"config_file": base_path, "output_dir": run.run_dir, "task_display_name": f"{name} {run.name}",
                      **fixed, **run.point}
        t0 = time.time()
        try:
            papermill.execute_notebook(str(source), run.notebook, parameters=_plain(parameters),
                                       cwd=str(source.parent), progress_bar=False, kernel_name="python3")
        except PapermillExecutionError as exc:
            run.error = f"{exc.ename}: {exc.evalue}"
        run.duration_s = round(time.time() - t0, 1)
        _read_results(run)
        if progress:
            print(f"[{i}/{len(sweep.runs)}] {run.name}: {run.status} {_headline(run)}", flush=True)
        sweep.save()
    sweep.plot(out / PLOT_FILE)
    return sweep


def _read_results(run: SweepRun) -> None:
    from nbtools.train import read_run

    try:
        record = read_run(run.run_dir)
    except (OSError, ValueError):
        run.status = "failed" if run.error else run.status
        return
    run.status = "failed" if run.error else record.get("status", "unknown")
    run.metrics = record.get("metrics") or {}
    run.best = record.get("best")


def _headline(run: SweepRun) -> str:
    acc = run.metrics.get("eval_rewards/accuracies")
    return f"(eval_rewards/accuracies {acc:.3f})" if isinstance(acc, (int, float)) else run.error


def _plain(values: dict) -> dict:
    """papermill parameters must be plain literals (e.g. lists, not tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- command line --------------------------------------------------------------------------------

def _parse_value(text: str) -> Any:
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML reads 5e-5 as text: numbers as users write them
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _parse_assignment(text: str, many: bool) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE{',VALUE' if many else ''}, got {text!r}")
    name, _, values = text.partition("=")
    if many:
        return name.strip(), [_parse_value(v) for v in values.split(",") if v.strip()]
    return name.strip(), _parse_value(values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbtools.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="append", required=True, metavar="NAME=V1,V2",
                        type=lambda t: _parse_assignment(t, True), help="a RunConfig field and its values (repeat)")
    parser.add_argument("--config", help="base config YAML (e.g. saved by 02_configure.ipynb)")
    parser.add_argument("--out", help="sweep folder (default runs/sweep-<timestamp>)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        type=lambda t: _parse_assignment(t, False), help="a parameter every run gets (repeat)")
    args = parser.parse_args(argv)

    def body() -> int:
        sweep = run_sweep(dict(args.grid), config_file=args.config, out_dir=args.out, **dict(args.param))
        print(sweep.table_text())
        print(f"plot: {Path(sweep.out_dir) / PLOT_FILE}")
        print(sweep.out_dir)
        if all(r.status == "finished" for r in sweep.runs):
            return 0
        failed = [r.name for r in sweep.runs if r.status != "finished"]
        print(f"error: {len(failed)} of {len(sweep.runs)} runs did not finish ({', '.join(failed)}); each row "
              "above says why and its executed notebook is kept", file=sys.stderr)
        return 2

    # a refused grid or config is a ConfigError (exit 2, one line); anything else exit 3 (nbtools.errors)
    return run_entry(body, prog="nbtools.sweep")


if __name__ == "__main__":
    sys.exit(main())
