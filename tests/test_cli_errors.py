"""Every command turns a user-facing error into one line and exit code 2, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "data_samples" / "shapes"


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nbtools", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_train_with_a_hub_model_missing_offline_says_how_to_fix(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: example-org/not-downloaded-VL\ntrain_file: {SHAPES / 'train.jsonl'}\n"
                      f"output_dir: {tmp_path / 'run'}\nmax_steps: 1\n")
    done = run_cli("train", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1
    assert "example-org/not-downloaded-VL" in error_lines[0] and "offline" in error_lines[0]
    assert "Fix:" in error_lines[0]


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_commands_on_a_folder_that_is_not_a_run(tmp_path, command):
    done = run_cli(command, str(tmp_path / "nowhere"), cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "nowhere" in done.stderr


def test_resume_of_a_folder_that_does_not_exist_says_so(tmp_path):
    done = run_cli("train", str(tmp_path / "runs" / "gone"), "--resume", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"error: {tmp_path / 'runs' / 'gone'}: no such run folder or config file to resume "
                                   "(fix: pass the folder a run wrote, e.g. from `python -m nbtools runs`, or its "
                                   "config.yaml)")
