"""A newcomer's walk through the notebooks (issue 25 points 3, 4, 5, 8, 9): what they see, checked without a browser.

Empty model refused like any out-of-range value; the field that decides the run's length named; 00's
pairs handed on to 01 and 02; long outputs folded or said once; help on click, wide path boxes, plain
metric labels, plots that say what they mean.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import ipywidgets as widgets
import papermill
import pytest
from PIL import Image

from nbtools.config import ConfigError, RunConfig
from nbtools.widgets import form_from_config

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data_samples" / "shapes" / "train.jsonl"


def fake_estimate(config, gpu_memory_gib=None) -> str:
    return "<p>estimated</p>"


def typed(form, name: str, value: str) -> None:
    form.fields[name].control.value = value


# --- 3. an empty model name ------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["", "   "])
def test_an_empty_model_is_refused_with_the_field_and_the_fix(model):
    with pytest.raises(ConfigError) as info:
        RunConfig(model=model)
    assert info.value.field == "model" and info.value.reason == "is empty"
    assert "a built-in tiny id such as tiny-qwen3-vl-warm" in info.value.fix


def test_the_form_marks_an_empty_model_and_disables_save(tmp_path):
    form = form_from_config(RunConfig(train_file=str(SAMPLE)), save_path=tmp_path / "c.yaml", estimator=fake_estimate)
    typed(form, "model", "")
    assert list(form.errors) == ["model"] and "is empty" in form.errors["model"]
    assert "nbtools-invalid" in form.fields["model"].control._dom_classes  # the red outline
    assert form.save_button.disabled
    assert "fix the fields marked in red" in form.estimate.value
    form.on_save_clicked()
    assert not (tmp_path / "c.yaml").exists() and "Not saved" in form.status.value


def test_a_folder_that_is_no_model_gets_nbtools_words_not_a_transformers_message(tmp_path):
    from nbtools.widgets.estimate_view import estimate_html

    shown = estimate_html(RunConfig(model=str(tmp_path), train_file=str(SAMPLE)))
    assert shown.startswith("<p class='nbtools-estimate-body'><i>Estimate unavailable: model: ")
    assert "is a folder without config.json, so it holds no model" in shown
    assert "Unrecognized model" not in shown and "model_type" not in shown


# --- 4. what decides the run's length --------------------------------------------------------------

def test_the_form_says_which_field_decides_the_length(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(SAMPLE.read_text().splitlines(keepends=True)[:60]))
    config = RunConfig(train_file=str(train), validation_file=str(train), max_steps=40, batch_size=4,
                       gradient_accumulation_steps=1, epoch=1.0)
    form = form_from_config(config, estimator=fake_estimate)
    epoch_note = form.length_notes["epoch"].value
    assert ("max_steps 40 decides the length: 40 steps, 160 pairs seen (2.7 epochs); epoch is ignored "
            "(set max_steps to 0 to train by epoch)") in epoch_note
    assert form.length_notes["max_steps"].value.replace("#6b7280", "#1e3a8a") == epoch_note.replace(
        "#6b7280", "#1e3a8a")  # the same sentence under both fields, the governing one in the stronger colour
    assert "#1e3a8a" in form.length_notes["max_steps"].value and "#6b7280" in epoch_note
    assert form.length_notes["epoch"] in form.fields["epoch"].box.children  # next to the field, in Basic
    typed(form, "max_steps", "0")
    assert "epoch 1 decides the length: 15 steps, about 60 pairs seen (60 training pairs; max_steps 0 = off)" \
        in form.length_notes["epoch"].value
    typed(form, "epoch", "2.5")
    assert "epoch 2.5 decides the length: 38 steps, about 150 pairs seen" in form.length_notes["epoch"].value
    typed(form, "batch_size", "0")  # an invalid form: no length claimed
    assert form.length_notes["epoch"].value == ""


# --- 5. 00's output handed on ----------------------------------------------------------------------

def test_the_current_data_is_the_prepared_pairs_when_they_exist(tmp_path, monkeypatch):
    from nbtools.current_data import PREPARED_PAIRS, current_train_file

    monkeypatch.setenv("NBTOOLS_PROJECT_ROOT", str(tmp_path))
    sample = current_train_file()
    assert (sample.source, sample.path) == ("sample", str(tmp_path / "data_samples/shapes/train.jsonl"))
    assert sample.note == ("train_file: data_samples/shapes/train.jsonl, the bundled sample (00_prepare_data.ipynb "
                           "writes runs/prepared/pairs.jsonl when run; set train_file to use your own pairs)")
    prepared = tmp_path / PREPARED_PAIRS
    prepared.parent.mkdir(parents=True)
    prepared.write_text("")
    empty = current_train_file()
    assert empty.source == "sample" and "runs/prepared/pairs.jsonl holds no pairs" in empty.note
    prepared.write_text('{"a": 1}\n{"a": 2}\n\n')
    chosen = current_train_file()
    assert (chosen.source, chosen.path) == ("prepared", str(prepared))
    assert re.fullmatch(r"train_file: runs/prepared/pairs\.jsonl, the 2 pairs 00_prepare_data\.ipynb wrote at "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d \(set train_file to use another file, e\.g\. "
                        r"data_samples/shapes/train\.jsonl\)", chosen.note)
    given = current_train_file("mine/pairs.jsonl")
    assert (given.source, given.path) == ("given", str(tmp_path / "mine/pairs.jsonl"))
    assert given.note == "train_file: mine/pairs.jsonl (set in the parameters)"


def test_00_writes_where_01_and_02_look_and_they_ask_for_it():
    from nbtools.current_data import PREPARED_DIR
    from nbtools.prepare.pipeline import PAIRS_FILE

    notebooks = REPO / "notebooks"
    assert papermill.inspect_notebook(str(notebooks / "00_prepare_data.ipynb"))["output_dir"]["default"] \
        == f'"{PREPARED_DIR}"' and PAIRS_FILE == "pairs.jsonl"
    for name in ("01_inspect_data", "02_configure"):
        assert papermill.inspect_notebook(str(notebooks / f"{name}.ipynb"))["train_file"]["default"] == '""'
        code = "".join("".join(c["source"]) for c in json.loads((notebooks / f"{name}.ipynb").read_text())["cells"])
        assert "data = current_train_file(train_file)" in code and "data.show()" in code


def test_00_report_says_why_a_selected_strategy_made_nothing():
    from nbtools.prepare.report import PrepareReport

    report = PrepareReport(judge="vocabulary")
    for _ in range(3):
        report.count("reference", "made")
    for _ in range(5):
        report.count("reference", "agreement")
    for _ in range(8):
        report.count("ranking", "has_reference")
    assert report.empty_strategies() == [
        "ranking made no pairs (8 prompt(s): the prompt has a reference answer, so the reference strategy makes its "
        "pair (ranking serves prompts without one; select ranking alone to rank every prompt))"]
    assert "  note: ranking made no pairs (8 prompt(s)" in report.summary()
    page = report._repr_html_()
    assert "note: ranking made no pairs" in page and "word-break:normal" in page  # visible, not a tooltip


# --- 8. too much at once ---------------------------------------------------------------------------

def test_flipped_pairs_show_the_first_few_and_fold_the_rest(tmp_path):
    from nbtools.data.records import PreferenceRecord
    from nbtools.evaluate.report import FLIPPED_SHOWN, flipped_pairs_html

    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64), "red").save(image)
    records = [PreferenceRecord(file=str(tmp_path / "v.jsonl"), line=i + 1, prompt=f"q{i}", chosen="Red.",
                                rejected="Blue.", images=[str(image)]) for i in range(8)]
    flipped = [{"index": i, "direction": "fixed", "base_margin": -0.5, "tuned_margin": 0.5} for i in range(8)]
    page = flipped_pairs_html(flipped, records, root=tmp_path)
    open_part, folded = page.split("<details", 1)
    assert FLIPPED_SHOWN == 5 and open_part.count("<img") == 5 and folded.count("<img") == 3
    assert "Show the other 3 flipped pairs</summary>" in folded
    assert "8 pairs flipped: 8 fixed by tuning, 0 broken" in open_part
    assert "<details" not in flipped_pairs_html(flipped[:5], records, root=tmp_path)  # nothing to fold


class FakeBar:
    def __init__(self):
        self.postfixes, self.n = [], 0

    def set_postfix(self, values, refresh=True):
        self.postfixes.append(dict(values))


def test_in_a_notebook_the_diagnosis_so_far_is_in_the_bar_not_a_new_line(monkeypatch):
    import IPython.display

    from nbtools.live import LiveMonitor

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False, **kw: shown.append(obj))
    monitor = LiveMonitor("notebook")
    monitor.bar = FakeBar()
    monitor.log({"step": 2, "eval_loss": 0.69})
    monitor.diagnosis("not_learning", "Not learning: ...", 2)
    monitor.log({"step": 4, "loss": 0.5})
    assert monitor.bar.postfixes[-2:] == [{"eval_loss": "0.690", "diagnosis": "not learning"},
                                          {"loss": "0.500", "diagnosis": "not learning"}]
    assert shown == []  # no line printed for it: the run's end says the diagnosis once
    said = []
    LiveMonitor("headless", write=said.append).diagnosis("learning", "Learning well.", 20)
    assert said == ["diagnosis @ step 20: Learning well."]


# --- 9. small faces --------------------------------------------------------------------------------

def test_the_help_mark_shows_the_help_on_click_too():
    form = form_from_config(RunConfig(train_file="t.jsonl"), estimator=fake_estimate)
    field = form.fields["beta"]
    assert isinstance(field.help_button, widgets.Button) and field.help_button.description == "?"
    assert field.help_note.layout.display == "none"
    field.help_button.click()
    assert field.help_note.layout.display == "" and "DPO beta: how far the model may move" in field.help_note.value
    field.help_button.click()
    assert field.help_note.layout.display == "none"


def test_path_boxes_are_wide_enough_for_long_paths():
    from nbtools.widgets.fields import CONTROL_WIDTH, PATH_WIDTH

    form = form_from_config(RunConfig(train_file="t.jsonl"), estimator=fake_estimate)
    widths = {name: f.control.layout.width for name, f in form.fields.items()}
    assert PATH_WIDTH == "720px" and form.save_path.layout.width == PATH_WIDTH
    assert {n for n, w in widths.items() if w == PATH_WIDTH} == {
        "train_file", "validation_file", "output_dir", "adapter_path"}
    assert widths["beta"] == CONTROL_WIDTH


def test_notebook_log_lines_wrap_between_words(monkeypatch):
    import IPython.display

    from nbtools.live import LiveMonitor

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False, **kw: shown.append((obj, raw)))
    LiveMonitor("notebook").message("only 60 valid pairs; DPO usually needs at least 100 <pairs>")
    [(bundle, raw)] = shown
    assert raw and bundle["text/plain"] == "only 60 valid pairs; DPO usually needs at least 100 <pairs>"
    assert "word-break:normal" in bundle["text/html"] and "&lt;pairs&gt;" in bundle["text/html"]


def test_final_metrics_carry_plain_labels_beside_the_trl_names():
    from nbtools.metric_labels import metric_label
    from nbtools.widgets.notebook import run_result_html

    class Result:
        status, run_dir, duration_s, best, resumed_from_step, diagnosis = "finished", "/tmp/r", 4, None, None, None
        metrics = {"eval_logits/chosen": -0.0005, "eval_rewards/accuracies": 0.5, "eval_runtime": 1.0}

    page = run_result_html(Result())
    assert ("<tr><td>validation mean logit over the chosen answers' tokens</td><td>-0.0005</td>"
            "<td class='nbt-nowrap' style='color:#6b7280'><code>eval_logits/chosen</code></td></tr>") in \
        page.replace("&#x27;", "'")
    assert "validation reward accuracy: share of pairs where chosen beats rejected" in page
    assert "eval_runtime" not in page
    assert metric_label("rewards/margins") == "training reward margin: reward of chosen minus rejected"
    assert metric_label("eval_something_new") == "eval_something_new"


def test_the_base_reward_bars_are_labelled_as_the_reference_not_drawn_at_zero():
    import matplotlib

    matplotlib.use("Agg")
    from nbtools.evaluate.report import plot_evaluation

    side = {m: 0.8 for m in ("preference_accuracy", "preference_accuracy_normalized", "reward_accuracy",
                             "logprob_margin", "reward_margin")}
    side["ci95"] = {m: [0.7, 0.9] for m in side}
    fig = plot_evaluation({"base": side, "tuned": side, "n_pairs": 10, "confidence": 0.95})
    accuracy, margin = fig.axes[:2]
    assert len(accuracy.patches) == 5 and len(margin.patches) == 3  # base: no reward_accuracy, no reward_margin bar
    notes = [t.get_text() for ax in (accuracy, margin) for t in ax.texts]
    assert notes == ["base =\nreference\n(no bar)"] * 2


def test_step_axes_have_whole_steps_only():
    from nbtools.live import draw_history

    history = [{"step": s, "loss": 0.7 - s / 100, "eval_loss": 0.7 - s / 200} for s in range(0, 46, 5)]
    fig = draw_history(history)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_the_card_shows_each_plot_once_at_a_readable_size(tmp_path):
    from nbtools.export import _copy_plots
    from nbtools.live import PANEL_FILES
    from nbtools.widgets.model_card import PLOT_PX, _STYLE

    plots = tmp_path / "run" / "plots"
    plots.mkdir(parents=True)
    for name in ("training.png", "evaluation.png", *PANEL_FILES):
        Image.new("RGB", (20, 20)).save(plots / name)
    out = tmp_path / "export"
    out.mkdir()
    assert _copy_plots(tmp_path / "run", out) == ["plots/evaluation.png", "plots/training.png"]
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["evaluation.png", "training.png"]
    assert PLOT_PX >= 1000 and "flex:1 1 100%" in _STYLE
    assert "white-space:pre !important;word-break:normal !important" in _STYLE  # "Use it" code: not broken mid-token
