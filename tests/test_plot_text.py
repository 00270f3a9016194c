"""Names in figures are plain text: a `$` in a run or model name never turns on matplotlib's mathtext.

``a $\\frac{$ b`` is invalid mathtext (drawing it used to raise after training and mark the run
failed); ``$x^2$`` is valid mathtext that would silently show x² instead of the name.
"""

from __future__ import annotations

import io
import json

import pytest

from nbtools.live import draw_history, save_plots
from nbtools.runs import plot_validation_curves, summarise_run
from nbtools.sweep import Sweep, SweepRun

NAMES = ["a $\\frac{$ b", "$x^2$ and $y$"]
HISTORY = [{"step": 1, "loss": 0.69, "rewards/accuracies": 0.5}, {"step": 2, "eval_loss": 0.6,
                                                                  "eval_rewards/accuracies": 0.75}]


def _draws(fig) -> None:
    fig.savefig(io.BytesIO(), format="png", dpi=40)  # mathtext is parsed when the text is drawn


def _texts(fig) -> list:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_text()]


def _shown_literally(fig, name: str) -> None:
    shown = [t for t in _texts(fig) if name in t.get_text()]
    assert shown, f"{name!r} is not in the figure"
    assert all(not t.get_parse_math() for t in shown)


def _run_folder(folder, name: str):
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": "finished", "task_display_name": name,
                                                 "custom_model_name": name, "started_at": "2026-01-01T00:00:00"}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in HISTORY))
    return folder


@pytest.mark.parametrize("name", NAMES)
def test_training_figure_title(name, tmp_path):
    fig = draw_history(HISTORY, title=name)
    _draws(fig)
    assert fig.get_suptitle() == name
    _shown_literally(fig, name)


def test_saved_training_plots(tmp_path):
    written = save_plots(HISTORY, tmp_path, title=NAMES[0])  # what a finished run writes into plots/
    assert [p.name for p in written] == ["training.png", "loss.png", "reward_accuracy.png", "reward_margin.png",
                                         "log_probabilities.png"]


@pytest.mark.parametrize("name", NAMES)
def test_run_list_curves(name, tmp_path):
    run = summarise_run(_run_folder(tmp_path / "run", name))
    fig = plot_validation_curves([run], path=tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    _shown_literally(fig, f"{name} (finished)")


@pytest.mark.parametrize("name", NAMES)
def test_sweep_plot(name, tmp_path):
    folder = _run_folder(tmp_path / "run", name)
    sweep = Sweep(str(tmp_path), {"task_display_name": [name]},
                  [SweepRun(name, {"task_display_name": name}, str(folder), "nb.ipynb", status="finished")])
    fig = sweep.plot(tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
    _shown_literally(fig, name)
    _shown_literally(fig, "task_display_name")  # the grid's names in the title
