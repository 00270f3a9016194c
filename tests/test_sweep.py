"""Sweeps: the train notebook over a grid with papermill, compared in one table and one plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbtools.config import ConfigError, RunConfig
from nbtools.sweep import grid_points, load_sweep, main, point_name, run_sweep

REPO = Path(__file__).resolve().parent.parent


def small_validation_file(folder: Path, n: int = 6) -> Path:
    source = REPO / "data_samples" / "shapes" / "validation.jsonl"
    rows = [json.loads(line) for line in source.read_text().splitlines()[:n]]
    for row in rows:
        row["images"] = [str(source.parent / image) for image in row["images"]]
    path = folder / "validation_small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def base_config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep-base")
    config = RunConfig(model="tiny-qwen3-vl", train_file=str(REPO / "data_samples" / "shapes" / "train.jsonl"),
                       validation_file=str(small_validation_file(folder)), task_display_name="sweep-test",
                       max_steps=2, eval_steps=2, save_steps=2, logging_steps=1, batch_size=2,
                       gradient_accumulation_steps=1, lora_rank=4)
    return config.to_yaml(folder / "base.yaml")


def test_grid_points_cover_every_combination_first_key_slowest():
    points = grid_points({"beta": [0.1, 0.5], "learning_rate": [1e-4, 5e-4]})
    assert points == [{"beta": 0.1, "learning_rate": 1e-4}, {"beta": 0.1, "learning_rate": 5e-4},
                      {"beta": 0.5, "learning_rate": 1e-4}, {"beta": 0.5, "learning_rate": 5e-4}]
    assert point_name(points[1]) == "beta=0.1,learning_rate=0.0005"


def test_unknown_name_is_refused_before_anything_runs(base_config, tmp_path):
    with pytest.raises(ConfigError) as info:
        run_sweep({"betta": [0.1, 0.2]}, config_file=base_config, out_dir=tmp_path / "s")
    assert info.value.field == "betta"
    assert "did you mean 'beta'?" in info.value.fix
    assert not (tmp_path / "s").exists()


def test_impossible_value_names_its_grid_point(base_config, tmp_path):
    with pytest.raises(ConfigError) as info:
        run_sweep({"beta": [0.1, -1.0], "lora_rank": [4]}, config_file=base_config, out_dir=tmp_path / "s")
    assert info.value.field == "beta"
    assert info.value.reason == "-1.0 is below the minimum 0.0001 in grid point beta=-1,lora_rank=4"
    assert not (tmp_path / "s").exists()


def test_command_line_reports_a_refused_sweep(base_config, tmp_path, capsys):
    code = main(["--grid", "beta=0.1,0.2", "--grid", "lerning_rate=1e-4", "--config", str(base_config),
                 "--out", str(tmp_path / "s")])
    assert code == 2
    assert "did you mean 'learning_rate'?" in capsys.readouterr().err


@pytest.mark.slow
def test_two_by_two_sweep_trains_each_point_and_compares_them(base_config, tmp_path):
    sweep = run_sweep({"beta": [0.1, 0.5], "learning_rate": [1e-4, 1e-3]}, config_file=base_config,
                      out_dir=tmp_path / "sweep", progress=False)
    assert [r.name for r in sweep.runs] == ["beta=0.1,learning_rate=0.0001", "beta=0.1,learning_rate=0.001",
                                            "beta=0.5,learning_rate=0.0001", "beta=0.5,learning_rate=0.001"]
    assert [r.status for r in sweep.runs] == ["finished"] * 4, [r.error for r in sweep.runs]
    for run in sweep.runs:
        config = RunConfig.from_yaml(Path(run.run_dir) / "config.yaml")
        # the grid values reached the run; everything else came from the base YAML
        assert (config.beta, config.learning_rate) == (run.point["beta"], run.point["learning_rate"])
        assert (config.max_steps, config.lora_rank) == (2, 4)
        assert config.task_display_name == f"sweep-test {run.name}"
        assert Path(run.notebook).is_file()

    rows = sweep.table()
    assert [(r["beta"], r["learning_rate"]) for r in rows] == [(0.1, 1e-4), (0.1, 1e-3), (0.5, 1e-4), (0.5, 1e-3)]
    assert all(isinstance(r["eval_loss"], float) and isinstance(r["eval_rewards/accuracies"], float) for r in rows)
    # a larger learning rate moves the policy further from the reference in the same 2 steps
    margins = {(r["beta"], r["learning_rate"]): abs(r["eval_rewards/margins"]) for r in rows}
    assert margins[(0.1, 1e-3)] > margins[(0.1, 1e-4)]

    text = sweep.table_text()
    assert text.splitlines()[0].split()[:4] == ["run", "beta", "learning_rate", "status"]
    assert "<table>" in sweep._repr_html_() and "data:image/png;base64" in sweep._repr_html_()
    figure = sweep.plot()
    assert [len(ax.lines) for ax in figure.axes] == [4, 4, 4]
    assert (tmp_path / "sweep" / "sweep.png").is_file()

    again = load_sweep(tmp_path / "sweep")
    assert again.table() == rows
