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


# --- the HTML pages and tables we write show names as text (guards: these escaped before too) ---------

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)> & \"quoted\" 'single'"


def _no_markup(page: str) -> None:
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_flipped_pairs_page_escapes_the_pair_text():
    from nbtools.data.records import PreferenceRecord
    from nbtools.evaluate.report import flipped_pairs_html

    record = PreferenceRecord(file=HOSTILE, line=3, prompt=[{"role": "user", "content": HOSTILE}],
                              chosen=HOSTILE, rejected=HOSTILE, images=[])
    page = flipped_pairs_html([{"index": 0, "direction": "fixed", "base_margin": -1.0, "tuned_margin": 1.0}],
                              [record])
    _no_markup(page)


def test_side_by_side_page_escapes_prompts_and_answers():
    from nbtools.evaluate import Decoding
    from nbtools.evaluate.lab import side_by_side_html

    row = {"prompt": HOSTILE, "base": HOSTILE, "tuned": HOSTILE, "chosen": HOSTILE, "rejected": HOSTILE}
    _no_markup(side_by_side_html([row], Decoding(max_new_tokens=4), lambda i: (lambda image: ""), title=HOSTILE))


def test_run_list_and_sweep_tables_escape_names(tmp_path):
    from nbtools.runs import runs_table_html

    run = summarise_run(_run_folder(tmp_path / "run", HOSTILE))
    _no_markup(runs_table_html([run]))
    sweep = Sweep(str(tmp_path), {"task_display_name": [HOSTILE]},
                  [SweepRun(HOSTILE, {"task_display_name": HOSTILE}, str(tmp_path / "run"), "nb", "finished")])
    _no_markup(sweep.table_html())


def test_ln2_line_only_when_the_loss_starts_there():
    """Plain DPO starts at ln 2 and the loss panel marks it; a run with an added sft term starts higher,
    where a line at ln 2 would suggest the loss is far above where it began."""
    def lines_labelled_ln2(history):
        figure = draw_history(history)
        return [l for ax in figure.axes for l in ax.get_lines() if l.get_label().startswith("ln 2")]

    dpo = [{"step": 1, "loss": 0.6931}, {"step": 2, "loss": 0.6}]
    with_sft = [{"step": 1, "loss": 3.1}, {"step": 2, "loss": 2.5}]
    assert len(lines_labelled_ln2(dpo)) == 1
    assert lines_labelled_ln2(with_sft) == []
