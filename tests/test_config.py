"""RunConfig: defaults, validation messages, YAML round trip, help for forms."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest

from nbtools.config import ConfigError, RunConfig, load_config


def test_every_field_has_a_type_default_and_help():
    cfg = RunConfig()
    for f in dataclasses.fields(RunConfig):
        assert f.metadata.get("help"), f"{f.name} has no help text"
        assert f.metadata.get("group"), f"{f.name} has no group"
    assert cfg.loss_type == ["sigmoid"]  # plain DPO: first-step loss is ln 2
    assert cfg.lora_dropout == 0.05
    assert cfg.too_long == "drop"
    assert cfg.resolved_lora_alpha == 2 * cfg.lora_rank
    assert RunConfig(lora_rank=4).resolved_lora_alpha == 8
    assert RunConfig(lora_rank=4, lora_alpha=4).resolved_lora_alpha == 4


def test_yaml_round_trip_keeps_every_value(tmp_path):
    cfg = RunConfig(
        model="tiny-qwen3-vl", train_file="a.jsonl", validation_file="b.jsonl", learning_rate=5e-3,
        loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.2], target_modules=["q_proj", "v_proj"],
        lora_alpha=7, max_steps=12, output_dir=str(tmp_path / "run"), packing=False,
    )
    path = cfg.to_yaml(tmp_path / "c.yaml")
    text = path.read_text()
    assert "# DPO losses" in text  # help is written as comments
    assert "loss_type: [sigmoid, sft]" in text
    assert RunConfig.from_yaml(path) == cfg


def test_yaml_scientific_notation_and_ints_are_coerced(tmp_path):
    # PyYAML reads 5e-5 as a string; users write it that way all the time.
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 5e-5\nepoch: 2\nbatch_size: 4.0\ngradient_checkpointing: 'no'\n")
    cfg = RunConfig.from_yaml(path)
    assert cfg.learning_rate == pytest.approx(5e-5)
    assert isinstance(cfg.epoch, float) and cfg.epoch == 2.0
    assert cfg.batch_size == 4 and isinstance(cfg.batch_size, int)
    assert cfg.gradient_checkpointing is False


def test_unknown_key_lists_valid_names_with_a_guess(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lerning_rate: 0.001\n")
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: lerning_rate: unknown setting")
    assert "did you mean 'learning_rate'?" in msg
    assert "valid names are: model, train_file" in msg
    assert err.value.field == "lerning_rate"


@pytest.mark.parametrize(
    "changes, field_name, message",
    [
        ({"batch_size": 0}, "batch_size", "batch_size: 0 is below the minimum 1 (fix: set batch_size to 1 or more)"),
        ({"learning_rate": -1.0}, "learning_rate", "learning_rate: -1.0 is below the minimum"),
        ({"validation_split": 0.9}, "validation_split", "validation_split: 0.9 is above the maximum 0.5"),
        ({"precision": "bf61"}, "precision", "did you mean 'bf16'?"),
        ({"loss_type": ["sigmoid", "sfx"]}, "loss_type", "'sfx' is not one of"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, "loss_weights",
         "1 weights for 2 loss types ['sigmoid', 'sft'] (fix: give exactly 2 weights"),
        ({"quantization": "4bit", "precision": "fp32"}, "quantization", "computes in 16-bit"),
        ({"target_modules": "(unclosed"}, "target_modules", "is not a valid regular expression"),
        ({"save_steps": 15, "eval_steps": 10}, "save_steps", "15 is not a multiple of eval_steps (10)"),
        ({"early_stopping_patience": 2, "validation_split": 0.0}, "early_stopping_patience",
         "early stopping needs validation pairs"),
        ({"batch_size": "four"}, "batch_size", "expected a whole number, got 'four'"),
        ({"gradient_checkpointing": "maybe"}, "gradient_checkpointing", "expected true or false"),
        ({"beta": float("nan")}, "beta", "is not a finite number"),
        ({"task_display_name": "  "}, "task_display_name", "is empty"),
    ],
)
def test_impossible_values_are_refused_naming_field_and_fix(changes, field_name, message):
    with pytest.raises(ConfigError) as err:
        RunConfig(**changes)
    assert err.value.field == field_name
    assert message in str(err.value)
    assert "(fix: " in str(err.value)


def test_combinations_that_are_fine():
    # no validation at all is allowed when nothing needs it
    RunConfig(validation_split=0.0, load_best_model_at_end=True)
    RunConfig(save_steps=15, eval_steps=10, load_best_model_at_end=False)
    RunConfig(target_modules=r".*language_model.*\.(q_proj|v_proj)")


def test_default_output_dir_uses_task_name_and_utc_time():
    cfg = RunConfig(task_display_name="Shapes DPO / v1")
    when = datetime(2026, 11, 27, 10, 5, 3, tzinfo=timezone.utc)
    assert cfg.resolved_output_dir(when) == Path("runs") / "Shapes-DPO-v1-20261127-100503"
    assert RunConfig(output_dir="x/y").resolved_output_dir(when) == Path("x/y")


def test_field_specs_carry_limits_for_forms():
    specs = {s["name"]: s for s in RunConfig.field_specs()}
    assert specs["precision"]["choices"] == ("auto", "bf16", "fp16", "fp32")
    assert specs["batch_size"]["min"] == 1 and specs["batch_size"]["type"] == "int"
    assert specs["loss_type"]["multiple"] is True
    assert specs["lora_alpha"]["default"] is None
    assert set(RunConfig.field_help()) == {f.name for f in dataclasses.fields(RunConfig)}
    text = RunConfig.describe()
    assert "precision (str, default 'auto') [one of auto/bf16/fp16/fp32]" in text


def test_replace_and_load_config(tmp_path):
    cfg = RunConfig(train_file="t.jsonl")
    assert cfg.replace(max_steps=5).max_steps == 5
    with pytest.raises(ConfigError):
        cfg.replace(max_steps=-1)
    path = cfg.to_yaml(tmp_path / "c.yaml")
    assert load_config(path) == cfg and load_config(str(path)) == cfg
    assert load_config({"train_file": "t.jsonl"}) == cfg
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\nbatch_size: [1\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: config: not valid YAML"):
        RunConfig.from_yaml(path)


# --- losses: presets and the settings TRL checks ----------------------------------------------------

@pytest.mark.parametrize("preset, loss_type, loss_weights", [
    ("dpo", ["sigmoid"], None),
    ("rpo", ["sigmoid", "sft"], [1.0, 1.0]),
    ("mpo", ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]),  # InternVL's MPO weights
    ("ipo", ["ipo"], None),
    ("robust", ["robust"], None),
])
def test_loss_presets_set_the_losses_and_survive_yaml(tmp_path, preset, loss_type, loss_weights):
    from nbtools.config import LOSS_PRESETS

    cfg = RunConfig(loss_preset=preset)
    assert (cfg.loss_type, cfg.loss_weights) == (loss_type, loss_weights)
    assert cfg.label_smoothing == (0.1 if preset == "robust" else 0.0)  # robust DPO's flip rate, unless set
    assert RunConfig.from_yaml(cfg.to_yaml(tmp_path / "c.yaml")) == cfg
    help_text = RunConfig.field_help()["loss_preset"]
    assert f"{preset}: {LOSS_PRESETS[preset].help}." in help_text and "when" in LOSS_PRESETS[preset].help


def test_loss_presets_keep_mdpo_terms_and_refuse_a_contradicting_loss_type():
    cfg = RunConfig(loss_preset="mpo", loss_type=["mdpo_conditional", "mdpo_anchor"], loss_weights=[0.5, 1.0])
    assert cfg.loss_type == ["sigmoid", "bco_pair", "sft", "mdpo_conditional", "mdpo_anchor"]
    assert cfg.loss_weights == [0.8, 0.2, 1.0, 0.5, 1.0]
    assert RunConfig(loss_preset="robust", label_smoothing=0.3).label_smoothing == 0.3
    # the preset's losses written out: kept as written
    assert RunConfig(loss_preset="rpo", loss_type=["sigmoid", "sft"]).loss_weights is None
    with pytest.raises(ConfigError, match="loss_preset: mpo sets loss_type .* but loss_type is \\['hinge'\\]"):
        RunConfig(loss_preset="mpo", loss_type=["hinge"])
    with pytest.raises(ConfigError, match="fix: .*or set loss_preset: custom"):
        RunConfig(loss_preset="rpo", loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])


@pytest.mark.parametrize("changes, field_name, message", [
    ({"loss_type": ["exo_pair"]}, "label_smoothing", "the exo_pair loss needs label_smoothing above 0"),
    ({"label_smoothing": 0.5}, "label_smoothing", "above the maximum 0.49"),
    ({"loss_type": ["sigmoid", "bco_pair"], "f_divergence_type": "js_divergence"}, "f_divergence_type",
     "not to bco_pair"),
    ({"loss_type": ["sigmoid", "aot"], "use_weighting": True}, "use_weighting", "aot sorts the batch's pairs"),
    ({"loss_preset": "rpo", "use_weighting": True}, "use_weighting", "sft is one value over the batch's tokens"),
    ({"ld_alpha": 1.5}, "ld_alpha", "above the maximum 1"),
    ({"discopop_tau": 0}, "discopop_tau", "below the minimum"),
])
def test_loss_settings_trl_refuses_are_refused_before_training(changes, field_name, message):
    with pytest.raises(ConfigError) as err:
        RunConfig(**changes)
    assert err.value.field == field_name and message in str(err.value)


def test_every_trl_loss_combines_with_mdpo_terms_and_loss_settings():
    from nbtools.config import TRL_LOSS_TYPES

    for loss_type in TRL_LOSS_TYPES:
        cfg = RunConfig(loss_type=[loss_type, "mdpo_conditional", "mdpo_anchor"], label_smoothing=0.01)
        assert cfg.loss_type[0] == loss_type
    cfg = RunConfig(loss_type=["sigmoid", "ipo", "mdpo_anchor"], f_divergence_type="alpha_divergence",
                    f_alpha_divergence_coef=0.3, ld_alpha=0.5, use_weighting=True)
    assert (cfg.ld_alpha, cfg.use_weighting) == (0.5, True)


def test_trl_receives_the_loss_settings(tmp_path):
    from nbtools.train.runner import build_dpo_config

    cfg = RunConfig(loss_preset="robust", label_smoothing=0.2, discopop_tau=0.1, f_divergence_type="js_divergence",
                    f_alpha_divergence_coef=0.7, ld_alpha=0.4, use_weighting=True)
    args = build_dpo_config(cfg, tmp_path, "fp32", has_validation=False, on_cpu=True)
    assert args.loss_type == ["robust"] and args.loss_weights is None
    assert (args.label_smoothing, args.discopop_tau, args.f_divergence_type, args.f_alpha_divergence_coef,
            args.ld_alpha, args.use_weighting) == (0.2, 0.1, "js_divergence", 0.7, 0.4, True)
