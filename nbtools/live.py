"""Watching a run: one live figure and a progress bar in notebooks, log lines when headless.

In a notebook the figure is displayed once and then *updated in place* through its
IPython display handle (no new figure per update, no growing output). Headless (a script,
the CLI, torchrun) each log event becomes one plain text line, and the same figure is
saved as PNG at the end. The progress bar is tqdm.auto: a widget in notebooks, text elsewhere.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Union

from nbtools.display import show_log_line
from nbtools.plot_text import plain_suptitle
from nbtools.train.history import evaluation_rows

# Panels of the live figure: (title, [(metric, label)], y-label)
PANELS = (
    ("Loss", [("loss", "train"), ("eval_loss", "validation")], "DPO loss"),
    ("Reward accuracy", [("rewards/accuracies", "train"), ("eval_rewards/accuracies", "validation")],
     "share of pairs with chosen > rejected"),
    ("Reward margin", [("rewards/margins", "train"), ("eval_rewards/margins", "validation")],
     "reward(chosen) - reward(rejected)"),
    ("Log-probabilities", [("logps/chosen", "chosen (train)"), ("logps/rejected", "rejected (train)"),
                           ("eval_logps/chosen", "chosen (val)"), ("eval_logps/rejected", "rejected (val)")],
     "sum of answer log-probs"),
)
LINE_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "eval_loss", "eval_rewards/accuracies",
             "eval_rewards/margins", "learning_rate", "grad_norm")


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel (including papermill), False in scripts and terminals."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    return type(shell).__name__ in ("ZMQInteractiveShell", "Shell") or "IPKernelApp" in getattr(shell, "config", {})


def _starts_at_ln2(history) -> bool:
    """Plain DPO starts at loss ln 2 (policy == reference); with an added term (e.g. sft) it starts higher,
    and a line at ln 2 would only mislead."""
    xs, ys = _series(history, "loss")
    return bool(ys) and abs(ys[0] - math.log(2)) < 1e-2


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in evaluation_rows(history) if key.startswith("eval_") else history:
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(row.get("step", 0))
            ys.append(value)
    return xs, ys


def draw_history(history: list[dict], figure=None, title: str = ""):
    """The 2x2 training figure for ``history`` (metrics.jsonl rows). Reuses ``figure`` if given."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = figure if figure is not None else Figure(figsize=(11, 7), layout="constrained")
    if not fig.axes:
        fig.subplots(2, 2)
    for ax, (panel_title, keys, ylabel) in zip(fig.axes, PANELS):
        ax.clear()
        drew = False
        for key, label in keys:
            xs, ys = _series(history, key)
            if xs:
                marker = "o" if key.startswith("eval_") else None
                ax.plot(xs, ys, label=label, marker=marker, markersize=3)
                drew = True
        if panel_title == "Loss" and _starts_at_ln2(history):
            ax.axhline(math.log(2), color="grey", linewidth=0.8, linestyle=":", label="ln 2 (start)")
        if panel_title == "Reward accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # optimizer steps are whole: no tick at 22.5
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        if drew:
            ax.legend(fontsize=8)
    if title:
        plain_suptitle(fig, title)  # the run's name: a `$` in it is not mathtext
    return fig


def alarms_html(alarms: list[str]) -> str:
    """The alarm box under the live figure: one line per alarm, in the order they fired."""
    import html

    items = "".join(f"<li>{html.escape(text)}</li>" for text in alarms)
    return ("<div class='nbtools-alarms' style='border-left:4px solid #b91c1c;background:#fef2f2;padding:4px 10px;"
            "margin:4px 0'><b style='color:#b91c1c'>&#9888; Training-health alarms</b>"
            f"<ul style='margin:4px 0'>{items}</ul></div>")


def format_line(row: dict, max_steps: Optional[int] = None) -> str:
    """``step 20/180 | epoch 0.33 | loss 0.5719 | ...`` for headless logs."""
    step = row.get("step")
    parts = [f"step {step}/{max_steps}" if max_steps else f"step {step}"]
    if row.get("epoch") is not None:
        parts.append(f"epoch {row['epoch']:.2f}")
    for key in LINE_KEYS:
        value = row.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{key} {value:.3g}" if key in ("learning_rate", "grad_norm") else f"{key} {value:.4f}")
    if row.get("final"):
        parts.insert(0, "final")
    return " | ".join(parts)


class LiveMonitor:
    """Progress bar + live figure (notebook) or log lines (headless) for one run.

    ``mode``: "notebook", "headless" or "quiet" (no bar, no lines; the PNG is still saved).
    """

    def __init__(self, mode: Optional[str] = None, title: str = "", min_redraw_s: float = 1.5,
                 write: Optional[Callable[[str], None]] = None):
        self.mode = mode or ("notebook" if in_notebook() else "headless")
        self.title = title
        self.min_redraw_s = min_redraw_s
        self.history: list[dict] = []
        self.max_steps: Optional[int] = None
        self.bar = None
        self.figure = None
        self.handle = None
        self.redraws = 0
        self._last_draw = 0.0
        self._write = write
        self.alarms: list[str] = []  # training-health alarms (nbtools.train.health), shown under the figure
        self.verdict: Optional[str] = None  # the diagnosis so far, in the notebook's progress bar
        self._postfix: dict = {}
        self.alarm_handle = None

    # --- text ---------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        """A line for the user (data notes, diagnosis); goes above the bar, never breaks it."""
        if self.mode == "quiet":
            return
        if self._write is not None:
            self._write(text)
        elif self.mode == "notebook":
            show_log_line(text)
        elif self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def diagnosis(self, verdict: str, text: str, step: int) -> None:
        """The diagnosis so far, after an evaluation that changed it. In a notebook its verdict goes into the
        progress bar (replaced in place; the full sentence is said once, at the end of the run); elsewhere a line."""
        if self.mode == "notebook":
            self.verdict = verdict.replace("_", " ")
            if self.bar is not None:
                self.bar.set_postfix({**self._postfix, "diagnosis": self.verdict})
        else:
            self.message(f"diagnosis @ step {step}: {text}")

    def alarm(self, text: str) -> None:
        """A training-health alarm: in a notebook, listed in a box under the live figure (shown with the first
        alarm, updated in place); elsewhere one line."""
        self.alarms.append(text)
        if self.mode == "notebook":
            from IPython.display import HTML, display

            view = HTML(alarms_html(self.alarms))
            if self.alarm_handle is None:
                self.alarm_handle = display(view, display_id=True)
            else:
                self.alarm_handle.update(view)
        else:
            self.message(f"alarm: {text}")

    # --- run lifecycle ----------------------------------------------------------------------------
    def start(self, max_steps: int, initial_step: int = 0, history: Optional[list[dict]] = None) -> None:
        self.max_steps = max_steps
        if history:
            self.history = list(history)
        self._t0 = time.monotonic()
        self._step0 = initial_step
        # A bar is for eyes: skip it when headless output goes to a file or a pipe (the lines carry the ETA).
        if self.mode == "notebook" or (self.mode == "headless" and sys.stderr.isatty()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_steps, initial=initial_step, desc=self.title or "training", unit="step",
                            dynamic_ncols=True, file=sys.stderr if self.mode == "headless" else None)
        if self.mode == "notebook":
            from IPython.display import display

            self.figure = draw_history(self.history, title=self.title)
            self.handle = display(self.figure, display_id=True)
            self.redraws = 1

    def eta_s(self, step: int) -> Optional[float]:
        done = step - getattr(self, "_step0", 0)
        if not self.max_steps or done <= 0 or step >= self.max_steps:
            return None
        return (time.monotonic() - self._t0) / done * (self.max_steps - step)

    def step(self, global_step: int) -> None:
        if self.bar is not None and global_step > self.bar.n:
            self.bar.update(global_step - self.bar.n)

    def log(self, row: dict) -> None:
        self.history.append(row)
        if self.mode == "headless":
            line = format_line(row, self.max_steps)
            eta = self.eta_s(row.get("step", 0))
            self.message(line + (f" | eta {eta:.0f} s" if eta is not None else ""))
        if self.bar is not None:
            postfix = {k.replace("rewards/", ""): f"{row[k]:.3f}" for k in ("loss", "eval_loss",
                       "eval_rewards/accuracies") if isinstance(row.get(k), (int, float))}
            if postfix:
                self._postfix = postfix
                self.bar.set_postfix({**postfix, **({"diagnosis": self.verdict} if self.verdict else {})},
                                     refresh=False)
        force = any(k.startswith("eval_") for k in row)
        self.redraw(force=force)

    def redraw(self, force: bool = False) -> None:
        if self.mode != "notebook" or self.handle is None:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_redraw_s:
            return
        self._last_draw = now
        draw_history(self.history, self.figure, title=self.title)
        self.handle.update(self.figure)  # same output area, same figure object
        self.redraws += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.redraw(force=True)

    def save(self, path: Union[str, Path]) -> Path:
        """Write the figure of the whole history as PNG."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = draw_history(self.history, title=self.title)
        fig.savefig(path, dpi=110)
        return path


def panel_file(panel_title: str) -> str:
    """The file name of one panel's own PNG (``Reward accuracy`` -> ``reward_accuracy.png``)."""
    return panel_title.lower().replace(" ", "_").replace("-", "_") + ".png"


PANEL_FILES = tuple(panel_file(title) for title, _, _ in PANELS)  # each also a panel of training.png


def save_plots(history: list[dict], plots_dir: Union[str, Path], title: str = "") -> list[Path]:
    """plots/training.png (all four panels) plus one PNG per panel, for reports and the run list."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig = draw_history(history, title=title)
    fig.savefig(plots_dir / "training.png", dpi=110)
    written.append(plots_dir / "training.png")
    for index, (panel_title, _, _) in enumerate(PANELS):
        single = Figure(figsize=(11, 7), layout="constrained")
        draw_history(history, single)
        # keep only the panel we want by hiding the others, then crop via a fresh small figure
        small = Figure(figsize=(5.5, 3.6), layout="constrained")
        ax = small.subplots()
        src = single.axes[index]
        for line in src.get_lines():
            ax.plot(line.get_xdata(), line.get_ydata(), label=line.get_label(), linestyle=line.get_linestyle(),
                    marker=line.get_marker(), markersize=3, color=line.get_color())
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
        name = panel_file(panel_title)
        small.savefig(plots_dir / name, dpi=110)
        written.append(plots_dir / name)
    return written
