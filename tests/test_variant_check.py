"""The answers' style against the model (Instruct / Thinking) is checked where users meet it: validation with
--model, the config form and train(), each warning once (issue 24, item 3)."""

from __future__ import annotations

import html
import json

import pytest

from nbtools.__main__ import main
from nbtools.config import RunConfig

REASONED = "<think>\nThe shape looks red.\n</think>\n\nIt is a red circle."
PLAIN = "It is a red circle."
INSTRUCT_WARNING = "the model is an Instruct model but 2 of 4 chosen answers contain <think> blocks"
THINKING_WARNING = "the model is a Thinking model but none of the 4 chosen answers has a <think>…</think> block"


def write_pairs(data_dir, name: str, reasoned: int, total: int = 4):
    """``total`` pairs (distinct, one small image), the first ``reasoned`` with reasoning in the chosen answer."""
    data_dir.image("img.png", (64, 64))
    rows = [{"messages": [{"role": "user", "content": f"<image>What colour is shape {i}?"},
                          {"role": "assistant", "content": REASONED if i < reasoned else PLAIN}],
             "images": ["img.png"], "rejected_response": f"It is a blue circle, number {i}."} for i in range(total)]
    return data_dir.jsonl(rows, name)


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory):
    """A processor-only folder whose chat template is the Thinking one (the generation prompt opens <think>)."""
    from nbtools.models import load_processor
    from nbtools.models.chat_templates import THINKING_CHAT_TEMPLATE

    processor = load_processor("tiny-qwen3-vl")
    processor.chat_template = THINKING_CHAT_TEMPLATE
    processor.tokenizer.chat_template = THINKING_CHAT_TEMPLATE
    folder = tmp_path_factory.mktemp("models") / "tiny-thinking"
    processor.save_pretrained(str(folder))
    return str(folder)


def style_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if ": warning: model: " in line]


# --- validation (CLI) --------------------------------------------------------------------------------------------

def test_validate_warns_once_for_think_blocks_with_an_instruct_model(data_dir, capsys):
    path = write_pairs(data_dir, "think.jsonl", reasoned=2)
    assert main(["validate", str(path), "--model", "tiny-qwen3-vl"]) == 0  # a warning, not an error
    lines = style_lines(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith(f"{path}:-: warning: model: {INSTRUCT_WARNING}: it would learn")
    assert "(fix: remove them" in lines[0]
    assert main(["validate", str(path), "--model", "tiny-qwen3-vl", "--strict"]) == 1
    capsys.readouterr()
    assert main(["validate", str(path)]) == 0  # without --model the kind is unknown: nothing said
    assert style_lines(capsys.readouterr().out) == []


def test_validate_warns_for_plain_answers_with_a_thinking_model(data_dir, thinking_model, capsys):
    plain = write_pairs(data_dir, "plain.jsonl", reasoned=0)
    assert main(["validate", str(plain), "--model", thinking_model, "--json"]) == 0
    problems = [p for p in json.loads(capsys.readouterr().out)["problems"] if p["field"] == "model"]
    assert len(problems) == 1 and problems[0]["message"].startswith(THINKING_WARNING)
    assert problems[0]["severity"] == "warning" and problems[0]["line"] is None
    reasoned = write_pairs(data_dir, "reasoned.jsonl", reasoned=4)
    assert main(["validate", str(reasoned), "--model", thinking_model]) == 0
    assert style_lines(capsys.readouterr().out) == []  # reasoning kept: suits a Thinking model


def test_matching_answers_say_nothing(data_dir, capsys):
    assert main(["validate", str(write_pairs(data_dir, "plain.jsonl", reasoned=0)), "--model", "tiny-qwen3-vl"]) == 0
    assert style_lines(capsys.readouterr().out) == []


# --- the config form ---------------------------------------------------------------------------------------------

def test_form_shows_the_warning_and_clears_it(data_dir, thinking_model):
    from nbtools.models import resolve_model_path
    from nbtools.widgets import form_from_config

    resolve_model_path("tiny-qwen3-vl")  # built: the form itself never waits for a build
    think = write_pairs(data_dir, "think.jsonl", reasoned=2)
    plain = write_pairs(data_dir, "plain.jsonl", reasoned=0)
    form = form_from_config(RunConfig(model="tiny-qwen3-vl", train_file=str(think)), estimator=lambda c, g: "")
    assert html.escape(INSTRUCT_WARNING) in form.style_note.value and form.style_note.value.count("&#9888;") == 1
    assert html.escape(INSTRUCT_WARNING) in form.summary_html()  # kept in the executed notebook's static view
    form.fields["train_file"].control.value = str(plain)
    assert form.style_note.value == ""
    form.fields["model"].control.value = thinking_model
    assert html.escape(THINKING_WARNING) in form.style_note.value
    form.fields["lora_rank"].control.value = "16"  # other fields: not checked again, still shown once
    assert html.escape(THINKING_WARNING) in form.style_note.value


def test_form_never_builds_a_tiny_model_nor_breaks_on_unreadable_data(monkeypatch):
    from nbtools.models import tiny, variant
    from nbtools.widgets import form_from_config

    monkeypatch.setattr(tiny, "_is_current", lambda folder: False)  # as if not built yet
    monkeypatch.setattr(tiny, "_cached_build", lambda *a, **k: pytest.fail("the form built a model"))
    variant.variant_of_model.cache_clear()
    try:
        form = form_from_config(RunConfig(model="tiny-qwen2-vl", train_file="/nowhere/train.jsonl"),
                                estimator=lambda c, g: "")
    finally:
        variant.variant_of_model.cache_clear()
    assert form.style_note.value == ""


# --- train() -----------------------------------------------------------------------------------------------------

def test_train_warns_once_for_train_and_validation_files(data_dir, monkeypatch, tmp_path):
    from nbtools.live import LiveMonitor
    from nbtools.train import runner, train

    think = write_pairs(data_dir, "think.jsonl", reasoned=2)
    also = write_pairs(data_dir, "think_val.jsonl", reasoned=2)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):  # the data step is over: no model is needed to see its messages
        raise Stop

    monkeypatch.setattr(runner, "load_policy", stop)
    said: list[str] = []
    config = RunConfig(model="tiny-qwen3-vl", train_file=str(think), validation_file=str(also),
                       output_dir=str(tmp_path / "run"), max_steps=1, num_workers=0, max_pixels=64 * 64)
    with pytest.raises(Stop):
        train(config, live=LiveMonitor("headless", write=said.append))
    style = [line for line in said if "chosen answers contain <think> blocks" in line]
    assert len(style) == 1 and style[0].startswith(f"{think}:-: warning: model: {INSTRUCT_WARNING}")


def test_the_quick_checks_say_nothing_for_unreadable_inputs_but_do_not_hide_a_bug(data_dir, monkeypatch):
    """'Cannot be read here' is None (the check is advice); an error of nbtools' own propagates."""
    from nbtools.data import answer_style
    from nbtools.models import loading, variant

    think = write_pairs(data_dir, "think.jsonl", reasoned=2)
    variant.variant_of_model.cache_clear()
    try:
        assert variant.variant_of_model(str(data_dir.root / "no-such-model")) is None
        assert answer_style.answers_style_warning("tiny-qwen3-vl", str(data_dir.root / "gone.jsonl")) is None
        assert answer_style.answers_style_warning("tiny-qwen3-vl", str(think)) is not None

        def planted(*_args, **_kwargs):
            raise RuntimeError("planted bug")

        monkeypatch.setattr(answer_style, "open_data", planted)
        with pytest.raises(RuntimeError, match="planted bug"):
            answer_style.answers_style_warning("tiny-qwen3-vl", str(think))
        monkeypatch.setattr(loading, "load_processor", planted)
        variant.variant_of_model.cache_clear()
        with pytest.raises(RuntimeError, match="planted bug"):
            variant.variant_of_model("tiny-qwen3-vl")
    finally:
        variant.variant_of_model.cache_clear()
