"""The config form is a thin view over RunConfig: built from it, read back into it, no browser needed."""

from __future__ import annotations

import dataclasses
import html

import ipywidgets as widgets
import pytest

from nbtools.config import ConfigError, RunConfig
from nbtools.errors import UserError
from nbtools.widgets import BASIC_FIELDS, ConfigForm, config_from_form, form_from_config


def fake_estimate(config: RunConfig, gpu_memory_gib=None) -> str:
    """Stands in for nbtools.estimate where only the form's wiring is tested."""
    fake_estimate.calls.append(config)
    return f"<p>pairs per update: {config.batch_size * config.gradient_accumulation_steps} ({gpu_memory_gib} GiB)</p>"


fake_estimate.calls = []


@pytest.fixture
def form() -> ConfigForm:
    fake_estimate.calls.clear()
    return form_from_config(RunConfig(train_file="data/train.jsonl"), estimator=fake_estimate)


def set_value(form: ConfigForm, name: str, value) -> None:
    """What a user typing into the browser does: change the widget's value (handlers fire)."""
    control = form.fields[name].control
    control.value = value if isinstance(control, (widgets.Checkbox, widgets.Dropdown)) else str(value)


def shown_names(box: widgets.Box) -> list[str]:
    """Field names of the rows inside a form section, in display order (each row has class nbtools-field-NAME)."""
    names = []
    for child in box.children:
        if isinstance(child, widgets.VBox) and child.children:
            names += [c[len("nbtools-field-"):] for c in child.children[0]._dom_classes
                      if c.startswith("nbtools-field-")]
    return names


UNUSUAL = RunConfig(
    model="tiny-qwen2-vl", train_file="/data/t.jsonl", validation_file="/data/v.jsonl", validation_split=0.2,
    max_pixels=200704, max_context_length=4096, too_long="error", task_display_name="charts",
    custom_model_name="charts-7b", output_dir="/runs/x", seed=7, epoch=2.5, max_steps=12, batch_size=3,
    gradient_accumulation_steps=5, learning_rate=2e-6, warmup_ratio=0.05, lr_scheduler_type="linear",
    max_grad_norm=0.5, num_workers=0, lora_rank=4, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj"],
    adapter_path="/sft/adapter", beta=0.25, loss_type=["robust"], loss_weights=[1.0], eval_steps=5,
    save_steps=10, logging_steps=1, save_total_limit=0, early_stopping_patience=3, load_best_model_at_end=False,
    report_to="tensorboard", precision="fp32", quantization="none", gradient_checkpointing=False, packing=False,
    precompute_ref_log_probs=False, distributed="fsdp", fps=1.5, max_frames=8, video_max_pixels=50176,
    columns="prompt=question image=img", attn_implementation="eager", loss_preset="robust", label_smoothing=0.2,
    discopop_tau=0.1, f_divergence_type="js_divergence", f_alpha_divergence_coef=0.7, ld_alpha=0.3, use_weighting=True,
    health_samples=2,
)


@pytest.mark.parametrize("config", [RunConfig(train_file="t.jsonl"), UNUSUAL], ids=["defaults", "every-field-changed"])
def test_form_round_trips_the_config(config):
    assert config_from_form(form_from_config(config, estimator=fake_estimate)) == config


def test_unusual_config_really_differs_from_the_defaults_in_every_field():
    # guards the round-trip test above: it must exercise each field with a non-default value
    defaults = RunConfig()
    same = [f.name for f in dataclasses.fields(RunConfig)
            if getattr(UNUSUAL, f.name) == getattr(defaults, f.name) and f.name != "quantization"]
    assert same == []


@pytest.mark.parametrize("target_modules", ["default", "all-linear", r".*\.(q|v)_proj$", ["q_proj"],
                                            ["q_proj", "v_proj"]])
def test_target_modules_keeps_its_kind_through_the_form(target_modules):
    config = RunConfig(train_file="t.jsonl", target_modules=target_modules)
    back = config_from_form(form_from_config(config, estimator=fake_estimate))
    assert back.target_modules == target_modules
    assert type(back.target_modules) is type(target_modules)


def test_every_field_appears_once_basic_first(form):
    basic, data, advanced = form.sections.children
    assert form.sections.titles == ("Basic", "Data and run", "Advanced")
    assert shown_names(basic) == list(BASIC_FIELDS)
    all_shown = shown_names(basic) + shown_names(data) + shown_names(advanced)
    assert sorted(all_shown) == sorted(f.name for f in dataclasses.fields(RunConfig))
    for name in ("max_context_length", "warmup_ratio", "gradient_accumulation_steps", "target_modules",
                 "max_pixels", "beta", "loss_type", "loss_weights", "eval_steps", "early_stopping_patience"):
        assert name in shown_names(advanced)


def test_tooltips_are_the_field_help(form):
    for f in dataclasses.fields(RunConfig):
        control = form.fields[f.name]
        assert control.control.tooltip.startswith(f.metadata["help"])
        # ipywidgets 8 shows a tooltip on the input only when the widget has no description label
        assert control.control.description == "", f.name
        title = 'title="' + html.escape(f.metadata["help"], quote=False).replace('"', "&quot;")
        assert title in control.label.value  # the name, hovered
        assert control.help_button.tooltip.startswith(f.metadata["help"])  # the "?", hovered
    assert "min 1" in form.fields["batch_size"].control.tooltip
    assert "usual: 1e-6 to 1e-4 with LoRA" in form.fields["learning_rate"].control.tooltip
    assert "one of auto, bf16, fp16, fp32" in form.fields["precision"].control.tooltip
    for extra in (form.gpu, form.save_path):  # the form's own inputs get help on hover too
        assert extra.tooltip and extra.description == ""


def test_a_number_set_from_python_is_shown_as_text(form):
    form.fields["batch_size"].control.value = 8  # as code (or another form built on FieldControl) may do
    assert form.fields["batch_size"].control.value == "8"
    assert config_from_form(form).batch_size == 8
    form.fields["learning_rate"].control.value = 1e-4
    assert config_from_form(form).learning_rate == 1e-4


def test_widget_kinds_follow_field_types(form):
    kinds = {name: type(c.control).__name__ for name, c in form.fields.items()}
    assert kinds["batch_size"] == "FieldText"  # numbers typed as text: ipywidgets' number boxes hide their tooltip
    assert kinds["learning_rate"] == "FieldText"
    assert kinds["gradient_checkpointing"] == "Checkbox"
    assert kinds["precision"] == "Dropdown"
    assert form.fields["precision"].control.options == ("auto", "bf16", "fp16", "fp32")
    assert kinds["lora_alpha"] == "FieldText"  # optional: empty means 2 x rank


def test_value_below_minimum_is_shown_inline_and_blocks_saving(form, tmp_path):
    set_value(form, "batch_size", 0)
    assert list(form.errors) == ["batch_size"]
    assert "0 is below the minimum 1" in form.errors["batch_size"]
    assert "most runs use batch_size 1 to 8 per device" in form.errors["batch_size"]  # the usual range
    assert form.fields["batch_size"].message.layout.display == ""
    assert form.save_button.disabled
    with pytest.raises(ConfigError) as info:
        config_from_form(form)
    assert info.value.field == "batch_size"
    form.save_path.value = str(tmp_path / "c.yaml")
    form.on_save_clicked()
    assert not (tmp_path / "c.yaml").exists()
    assert "Not saved" in form.status.value

    set_value(form, "batch_size", 4)
    assert form.errors == {}
    assert form.fields["batch_size"].message.layout.display == "none"
    assert not form.save_button.disabled
    assert config_from_form(form).batch_size == 4


def test_a_limit_is_fixed_with_the_usual_range_or_the_limit_itself(form):
    set_value(form, "learning_rate", 1e-12)
    assert "1e-12 is below the minimum 1e-9" in form.errors["learning_rate"]
    assert "Fix: most runs use learning_rate 1e-6 to 1e-4 with LoRA" in form.errors["learning_rate"]
    assert "nbtools-invalid" in form.fields["learning_rate"].control._dom_classes  # the red outline ...
    assert "outline:2px solid #c62828" in form.fields["learning_rate"].rule.value  # ... and its rule, with the field
    set_value(form, "learning_rate", 1e-4)
    assert "nbtools-invalid" not in form.fields["learning_rate"].control._dom_classes
    assert "<style>" not in form.fields["learning_rate"].rule.value
    set_value(form, "eval_steps", 0)  # no usual range in the config: the limit is the advice
    assert "Fix: set eval_steps to 1 or more" in form.errors["eval_steps"]


@pytest.mark.parametrize("name, typed, message", [
    ("learning_rate", 2.0, "2.0 is above the maximum 1"),
    ("lora_alpha", "abc", "'abc' is not a whole number"),
    ("lora_alpha", "0", "0 is below the minimum 1"),
    ("loss_type", "sigmoid, hindge", "'hindge' is not one of sigmoid, hinge"),
    ("loss_weights", "1.0, x", "'x' is not a number"),
    ("task_display_name", "   ", "is empty"),
])
def test_invalid_values_are_reported_at_their_field(form, name, typed, message):
    set_value(form, name, typed)
    assert list(form.errors) == [name]
    assert message in form.errors[name]
    assert form.save_button.disabled


def test_rules_over_several_fields_are_shown_at_the_field_the_config_names(form):
    set_value(form, "loss_type", "sigmoid, sft")
    assert form.errors == {}
    set_value(form, "loss_weights", "1.0")
    assert list(form.errors) == ["loss_weights"]
    assert "1 weights for 2 loss types" in form.errors["loss_weights"]
    set_value(form, "loss_weights", "1.0, 0.3")
    assert form.errors == {}
    assert config_from_form(form).loss_weights == [1.0, 0.3]


def test_empty_optional_field_means_default(form):
    set_value(form, "lora_alpha", "12")
    assert config_from_form(form).lora_alpha == 12
    set_value(form, "lora_alpha", "")
    config = config_from_form(form)
    assert config.lora_alpha is None and config.resolved_lora_alpha == 2 * config.lora_rank


def test_estimate_is_recomputed_when_a_field_changes(form):
    assert form.estimate.value == "<p>pairs per update: 8 (16.0 GiB)</p>"  # defaults: 2 x 4, a T4
    calls = len(fake_estimate.calls)
    set_value(form, "batch_size", 8)
    assert form.estimate.value == "<p>pairs per update: 32 (16.0 GiB)</p>"
    assert fake_estimate.calls[-1].batch_size == 8
    assert len(fake_estimate.calls) == calls + 1
    set_value(form, "batch_size", 0)
    assert "fix the fields marked in red" in form.estimate.value
    assert len(fake_estimate.calls) == calls + 1
    set_value(form, "batch_size", 8)  # back to the last valid value: the estimate comes back
    assert form.estimate.value == "<p>pairs per update: 32 (16.0 GiB)</p>"


def test_estimate_failure_is_shown_not_raised():
    def broken(config, gpu_memory_gib):
        raise ZeroDivisionError("division by zero")  # a bug in the estimate: shown as one, not as "unavailable" advice

    form = form_from_config(RunConfig(train_file="t.jsonl"), estimator=broken)
    assert "Estimate failed with an internal error (a bug in nbtools: please report it): ZeroDivisionError: division by zero" \
        in form.estimate.value
    assert "unavailable" not in form.estimate.value
    assert config_from_form(form).train_file == "t.jsonl"

    def offline(config, gpu_memory_gib):
        raise UserError("not cached. Fix: download it once (`huggingface-cli download Qwen/X`) or <pick> another")

    shown = form_from_config(RunConfig(train_file="t.jsonl"), estimator=offline).estimate.value
    assert "<code>huggingface-cli download Qwen/X</code>" in shown and "`" not in shown  # a command, not backticks
    assert "&lt;pick&gt;" in shown  # the rest stays escaped


def test_save_button_writes_the_yaml_that_train_reads(form, tmp_path):
    target = tmp_path / "sub" / "config.yaml"
    form.save_path.value = str(target)
    set_value(form, "beta", 0.3)
    set_value(form, "target_modules", "[q_proj, v_proj]")
    form.save_button.click()
    assert f"Saved to <code>{target.resolve()}</code> at " in form.status.value
    assert "times" not in form.status.value
    loaded = RunConfig.from_yaml(target)
    assert loaded == config_from_form(form)
    assert loaded.beta == 0.3 and loaded.target_modules == ["q_proj", "v_proj"]


def test_a_second_save_click_shows_that_it_saved_again(form, tmp_path):
    form.save_path.value = str(tmp_path / "c.yaml")
    form.save_button.click()
    first = form.status.value
    form.save_button.click()
    assert form.status.value != first and "(saved 2 times)" in form.status.value


def test_save_to_an_unwritable_place_says_so(form, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    form.save_path.value = str(blocker / "config.yaml")
    form.on_save_clicked()
    assert form.status.value.startswith('<span style="color:#c62828">Not saved: cannot write')
    assert "choose another path" in form.status.value


def test_changing_a_field_clears_the_saved_message(form, tmp_path):
    form.save(tmp_path / "c.yaml")
    assert "Saved to" in form.status.value
    set_value(form, "epoch", 2.0)
    assert form.status.value == ""


def test_set_config_shows_another_config(form):
    form.set_config(UNUSUAL)
    assert config_from_form(form) == UNUSUAL
    assert form.fields["loss_type"].control.value == "robust"
    assert form.fields["target_modules"].control.value == "[q_proj]"


def test_summary_marks_changed_values(form):
    set_value(form, "beta", 0.5)
    summary = form.summary_html()
    assert "<tr><td style='text-align:left'>beta</td><td style='text-align:left'><b>0.5</b></td></tr>" in summary
    assert "<tr><td style='text-align:left'>seed</td><td style='text-align:left'>42</td></tr>" in summary
    assert summary.endswith(form.estimate.value)


def test_choosing_another_gpu_recomputes_the_estimate(form):
    form.gpu.value = 80.0
    assert form.estimate.value == "<p>pairs per update: 8 (80.0 GiB)</p>"
    assert config_from_form(form) == RunConfig(train_file="data/train.jsonl")  # not a config setting


@pytest.fixture(scope="module")
def sample_config() -> RunConfig:
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "data_samples" / "shapes"
    return RunConfig(model="tiny-qwen3-vl", train_file=str(data / "train.jsonl"),
                     validation_file=str(data / "validation.jsonl"), batch_size=2, gradient_accumulation_steps=4,
                     epoch=1.0)


def test_real_estimate_follows_the_fields(sample_config):
    form = form_from_config(sample_config)  # nbtools.estimate on the tiny model and the sample data
    before = form.estimate.value
    assert "Estimated peak GPU memory per device" in before
    assert "fits in 16 GiB" in before
    assert "30 optimizer steps x 8 pairs = 1.00 epochs of 240 training pairs" in before  # ceil(240 / 8)
    set_value(form, "batch_size", 8)
    after = form.estimate.value
    assert after != before
    assert "8 optimizer steps x 32 pairs" in after
    assert "8 sequences per step (one packed row per pair" in after  # packing (the default): one row per pair
    set_value(form, "packing", False)
    assert "16 sequences per step (chosen + rejected rows)" in form.estimate.value  # TRL's two rows per pair


def test_real_estimate_names_the_knob_when_it_does_not_fit(sample_config):
    # a real 4B model's dimensions (nbtools knows them offline); nothing is downloaded
    config = sample_config.replace(model="Qwen/Qwen3-VL-4B-Instruct", batch_size=16, gradient_checkpointing=False)
    form = form_from_config(config)
    assert "does NOT fit in 16 GiB" in form.estimate.value
    assert "turn on gradient_checkpointing" in form.estimate.value
    set_value(form, "gradient_checkpointing", True)
    set_value(form, "batch_size", 2)
    assert "fits in 16 GiB" in form.estimate.value


def test_loss_presets_fill_the_loss_fields_and_say_when_to_use_them(form):
    from nbtools.config import LOSS_PRESETS

    assert form.fields["loss_preset"].control.options == ("custom", "dpo", "rpo", "mpo", "ipo", "robust")
    assert form.preset_note.value == ""  # custom: nothing to explain
    set_value(form, "loss_preset", "mpo")
    assert form.fields["loss_type"].control.value == "sigmoid, bco_pair, sft"
    assert form.fields["loss_weights"].control.value == "0.8, 0.2, 1.0"
    assert LOSS_PRESETS["mpo"].help in html.unescape(form.preset_note.value)
    config = config_from_form(form)
    assert (config.loss_preset, config.loss_type, config.loss_weights) == ("mpo", ["sigmoid", "bco_pair", "sft"],
                                                                           [0.8, 0.2, 1.0])
    set_value(form, "loss_preset", "robust")
    assert form.fields["loss_type"].control.value == "robust" and form.fields["loss_weights"].control.value == ""
    assert config_from_form(form).label_smoothing == 0.1
    # editing the losses away from the preset: the form says custom, and the config is what was typed
    set_value(form, "loss_type", "robust, sft")
    assert form.fields["loss_preset"].control.value == "custom" and form.errors == {}
    assert config_from_form(form).loss_type == ["robust", "sft"]
    for name in LOSS_PRESETS:
        set_value(form, "loss_preset", name)
        assert form.errors == {} and config_from_form(form).loss_preset == name


def test_a_bug_in_the_answer_style_check_is_shown_as_one_not_hidden():
    """The form's answer-style note is advice: a bug in it must not break the form, nor vanish."""
    from nbtools.config import RunConfig
    from nbtools.widgets.config_form import ConfigForm

    def broken(config):
        raise KeyError("planted")

    form = ConfigForm(RunConfig(), style_check=broken)
    assert "internal error" in form.style_note.value and "KeyError" in form.style_note.value
