"""Config, model and output paths that used to end in a traceback: each is now one UserError naming the fix."""

from __future__ import annotations

import pytest

from nbtools.config import ConfigError, RunConfig
from nbtools.errors import UserError


def test_yaml_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"beta: 0.1\ntask_display_name: caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(path)
    assert str(err.value) == (f"{path}:2: config: not UTF-8 text (byte b'\\xe9' at offset 32) (fix: save the file as "
                              "UTF-8 (most editors: Save with encoding UTF-8))")


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("beta: 0.1\nlora_rank: 8\nbeta: 0.5\n")
    with pytest.raises(ConfigError, match=r"run.yaml:3: beta: set twice \(first on line 1\)"):
        RunConfig.from_yaml(path)
    path.write_text("beta: 0.1\nloss_type: [sigmoid, sft]\nloss_weights: [1.0, 0.5]\n")
    assert RunConfig.from_yaml(path).loss_weights == [1.0, 0.5]  # lists may repeat values


@pytest.mark.parametrize("field", ["task_display_name", "custom_model_name"])
@pytest.mark.parametrize("name", ["run\nname", "ansi\x1b[31mred", "tab\there", "bidi\u202etxt.exe", "nul\x00"])
def test_names_with_control_characters_are_refused(field, name):
    with pytest.raises(ConfigError, match=rf"^{field}: .* holds control characters .* \(fix: use letters, digits"):
        RunConfig(**{field: name})


def test_names_that_are_fine_stay_accepted():
    config = RunConfig(task_display_name="Ünïcode run — 1/2 $x$ <b>", custom_model_name="model 👩‍🔬")
    assert config.model_name == "model 👩‍🔬"
    assert len(RunConfig(task_display_name="x" * 200).resolved_output_dir().name) < 255


def test_output_dir_names_too_long_or_with_control_characters(tmp_path):
    with pytest.raises(ConfigError, match=r"output_dir: the folder name 'x+'\.\.\. is 256 bytes long; "
                                          r"filesystems allow 255"):
        RunConfig(output_dir=str(tmp_path / ("x" * 256)))
    with pytest.raises(ConfigError, match="output_dir: the folder name 'a\\\\nb' holds a control character"):
        RunConfig(output_dir=str(tmp_path / "a\nb"))


def test_missing_or_empty_model_folder(tmp_path):
    from nbtools.models.loading import ModelFolderError, resolve_model_folder

    with pytest.raises(ModelFolderError, match=r"^model: model folder '.*/nope' does not exist \(fix: pass an"):
        resolve_model_folder(str(tmp_path / "nope"))
    with pytest.raises(ModelFolderError, match=r"is a folder without config.json, so it holds no model \(fix:"):
        resolve_model_folder(str(tmp_path))
    assert issubclass(ModelFolderError, UserError)


def test_report_to_backend_must_be_installed(monkeypatch):
    import importlib.util

    from nbtools.train.runner import check_report_to

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    with pytest.raises(ConfigError, match=r"^report_to: tensorboard needs the tensorboard package, which is not "
                                          r"installed \(fix: pip install tensorboard, or set report_to: none\)"):
        check_report_to("tensorboard")
    check_report_to("none")
