"""Notebook parameters -> RunConfig: path rule and the config_file precedence (03_train.ipynb)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbtools.config import ConfigError, RunConfig
from nbtools.paths import PROJECT_ROOT_ENV, project_root
from nbtools.widgets.notebook import config_from_parameters, project_path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder (notebooks/ + data_samples/) with the kernel working in notebooks/, as in JupyterLab."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "data_samples").mkdir()
    monkeypatch.delenv(PROJECT_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path / "notebooks")
    return tmp_path


def test_relative_paths_start_at_the_project_folder_not_the_working_folder(project):
    assert project_root() == project
    assert project_path("data_samples/a.jsonl") == str(project / "data_samples" / "a.jsonl")
    assert project_path("/abs/a.jsonl") == "/abs/a.jsonl"
    assert project_path("s3://bucket/a.jsonl") == "s3://bucket/a.jsonl"
    assert project_path("") is None and project_path(None) is None


def test_environment_variable_sets_the_project_folder(project, tmp_path_factory, monkeypatch):
    other = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.setenv(PROJECT_ROOT_ENV, str(other))
    assert project_path("runs/x") == str(other / "runs" / "x")


def test_parameters_alone_build_the_config_with_absolute_paths(project):
    namespace = {"model": "tiny-qwen3-vl", "train_file": "data_samples/t.jsonl", "validation_file": "",
                 "beta": 0.2, "max_steps": 3, "config_file": "", "unrelated": object()}
    config = config_from_parameters(namespace)
    assert config.train_file == str(project / "data_samples" / "t.jsonl")
    assert config.validation_file is None
    assert (config.model, config.beta, config.max_steps) == ("tiny-qwen3-vl", 0.2, 3)
    assert config.learning_rate == RunConfig().learning_rate  # not given: RunConfig's default


def test_set_parameters_win_over_config_file_and_none_keeps_the_file(project, capsys):
    saved = RunConfig(train_file="/d/t.jsonl", beta=0.3, learning_rate=1e-5, lora_rank=4, task_display_name="from-yaml")
    saved.to_yaml(project / "runs" / "c.yaml")
    namespace = {"beta": 0.5, "learning_rate": None, "lora_rank": None, "max_steps": 2, "model": None}
    config = config_from_parameters(namespace, config_file="runs/c.yaml")
    assert config.beta == 0.5 and config.max_steps == 2  # set parameters win
    assert config.learning_rate == 1e-5 and config.lora_rank == 4  # None: the file's values
    assert config.task_display_name == "from-yaml" and config.train_file == "/d/t.jsonl"
    assert capsys.readouterr().out == (f"config from {project / 'runs' / 'c.yaml'}; "
                                       "parameters that override it: max_steps=2, beta=0.5\n")


def test_missing_config_file_names_the_notebook_that_writes_it(project):
    with pytest.raises(ConfigError) as info:
        config_from_parameters({}, config_file="runs/none.yaml")
    assert info.value.field == "config_file"
    assert str(project / "runs" / "none.yaml") in info.value.reason
    assert "run 02_configure.ipynb" in info.value.fix


def test_bad_parameter_value_names_the_field(project):
    with pytest.raises(ConfigError) as info:
        config_from_parameters({"batch_size": 0})
    assert info.value.field == "batch_size"
    assert str(info.value) == "parameters: batch_size: 0 is below the minimum 1 (fix: set batch_size to 1 or more)"


def test_run_folder_view_lists_files_with_what_they_are(tmp_path):
    from nbtools.widgets.notebook import run_folder

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"x" * 2048)
    (tmp_path / "run.json").write_text("{}")
    view = run_folder(tmp_path)
    text = repr(view)
    assert "adapter/  2.0 KB  the final LoRA adapter" in text
    assert "adapter_model.safetensors  2.0 KB" in text
    assert "run.json  2 B  run record" in text
    assert f'title="{tmp_path.resolve()}"' in view._repr_html_()  # the folder, its full path on hover
    assert repr(run_folder(tmp_path / "missing")) == f"No run folder at {tmp_path / 'missing'}."


def test_config_table_marks_changed_values_and_has_a_plain_text_form():
    from nbtools.widgets.notebook import config_table

    view = config_table(RunConfig(beta=0.3))
    assert "<td style='text-align:left'><b>0.3</b></td>" in view._repr_html_()
    assert "beta  0.3" in repr(view) and " at 0x" not in repr(view)
