"""The CLI under torchrun: two CPU processes (gloo), one run folder written by rank 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbtools.train import read_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def test_torchrun_two_processes_write_one_run(shapes_config, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun ships with torch"
    config = shapes_config(tmp_path / "ddp", max_steps=6, eval_steps=3, save_steps=3, logging_steps=1,
                           batch_size=2)
    yaml_path = config.to_yaml(tmp_path / "ddp.yaml")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    done = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", "-m", "nbtools", "train",
                           str(yaml_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run = Path(config.output_dir)
    record = read_run(run)
    assert record["status"] == "finished"
    assert record["process"]["world_size"] == 2
    assert done.stdout.count("finished: ") == 1  # rank 1 stays silent
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if "loss" in r and "train_runtime" not in r]
    assert train_steps == [1, 2, 3, 4, 5, 6]  # each step logged once, not once per process
    # 2 processes x 2 pairs: 6 steps use 24 pairs = 0.1 epoch of 240
    assert rows[-1]["epoch"] == pytest.approx(0.1, abs=0.01)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-6"]
    assert (run / "checkpoints" / "checkpoint-6" / "rng_state_1.pth").is_file()  # both ranks saved their RNG
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
