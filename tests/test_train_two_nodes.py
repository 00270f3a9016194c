"""Two nodes without a shared disk, rehearsed on one machine.

Two torchrun agents (``--nnodes 2 --nproc_per_node 1``) meet over a localhost rendezvous; each "node" works
in its own folder (its working directory) holding its own copy of the data and pictures, its own cache
folder (reference log-probs, error logs; the built tiny models are linked in) and the run folder at the same
relative path. Neither node can see the other's files, as on machines without a shared disk.

The run trains 2 steps (a checkpoint at step 2), then both nodes resume it to step 4 from their own disks;
the loss history must equal one process with the same global batch within 1e-4, the run folder and the
adapter exist once (on the first node), and each node's cache ends up with every reference value.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nbtools.config import RunConfig
from nbtools.packing import ReferenceLogpsStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "data_samples" / "shapes"
PAIRS = 16
RUN = Path("runs") / "two-nodes"  # relative: each node resolves it on its own disk
HISTORY_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected")


def _node(root: Path, index: int, models: Path) -> Path:
    """A node's folder: data/ (16 pairs and their pictures, copied), cache/ (models linked), run.yaml."""
    node = root / f"node{index}"
    (node / "data" / "images").mkdir(parents=True)
    (node / "cache").mkdir()
    (node / "cache" / "models").symlink_to(models)
    lines = (SHAPES / "train.jsonl").read_text().splitlines()[:PAIRS]
    (node / "data" / "train.jsonl").write_text("\n".join(lines) + "\n")
    for line in lines:
        for image in json.loads(line)["images"]:
            shutil.copy(SHAPES / image, node / "data" / image)
    # fp32, no dropout; a constant learning rate, so that the run stopped at step 2 and trained on to step 4
    # follows the schedule of one 4-step run
    _config(train_file="data/train.jsonl", output_dir=str(RUN), max_steps=2).to_yaml(node / "run.yaml")
    return node


def _config(**changes) -> RunConfig:
    settings = dict(model="tiny-qwen3-vl-warm", validation_split=0.0, task_display_name="two-nodes", seed=0,
                    batch_size=2, gradient_accumulation_steps=1, learning_rate=2e-3, lr_scheduler_type=
                    "constant_with_warmup", warmup_ratio=0.0, lora_rank=8, lora_dropout=0.0, logging_steps=1,
                    save_steps=2, eval_steps=1000, gradient_checkpointing=False, num_workers=0,
                    max_pixels=128 * 128, max_context_length=256, precision="fp32")
    settings.update(changes)
    return RunConfig(**settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_nodes(nodes: list[Path], *args: str) -> list[str]:
    """``torchrun --nnodes 2`` on each node (node_rank 0 and 1) with ``nbtools train run.yaml ARGS``; their outputs."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    port = _free_port()
    agents = []
    for rank, node in enumerate(nodes):
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
                   PYTHONPATH=str(REPO), NBTOOLS_CACHE_DIR=str(node / "cache"))
        agents.append(subprocess.Popen(
            [torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank), "--master_addr",
             "127.0.0.1", "--master_port", str(port), "-m", "nbtools", "train", "run.yaml", *args],
            cwd=node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for agent in agents:
            outputs.append(agent.communicate(timeout=300)[0])
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    for rank, (agent, output) in enumerate(zip(agents, outputs)):
        assert agent.returncode == 0, f"node {rank}:\n{output[-4000:]}"
    return outputs


def _train_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "loss" in row and "train_runtime" not in row]


def test_two_nodes_without_a_shared_disk_train_resume_and_match_one_process(tmp_path, monkeypatch):
    from nbtools.train import read_run, train

    models = Path(os.environ.get("NBTOOLS_CACHE_DIR") or Path.home() / ".cache" / "nbtools") / "models"
    nodes = [_node(tmp_path, index, models) for index in (0, 1)]
    first, second = (node / RUN for node in nodes)

    # --- 2 steps: the run folder on node 0 only; checkpoints on each node's own disk ---------------------
    outputs = _two_nodes(nodes)
    assert "finished: " in outputs[0] and "finished: " not in outputs[1]
    record = read_run(first)
    assert record["status"] == "finished" and record["process"]["world_size"] == 2
    assert sorted(p.name for p in second.iterdir()) == ["checkpoints"]  # no run.json, metrics, adapter on node 1
    for rank, run in enumerate((first, second)):
        checkpoint = run / "checkpoints" / "checkpoint-2"
        written = {p.name for p in checkpoint.iterdir()}
        assert {"trainer_state.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt"} <= written
        # each process's RNG state on its own node's disk, and only there: the disks are apart
        assert f"rng_state_{rank}.pth" in written and f"rng_state_{1 - rank}.pth" not in written
    # reference log-probs: each process computed half, and each node's cache received all of them
    assert record["reference_logps"]["per_process"] == [{"computed": PAIRS // 2, "reused": 0}] * 2
    for node in nodes:
        assert len(ReferenceLogpsStore(node / "cache" / "ref_logps")) == PAIRS

    # --- resumed on both nodes, each from its own checkpoint-2, trained on to step 4 -------------------------
    outputs = _two_nodes(nodes, "--resume", "--max-steps", "4")
    record = read_run(first)
    assert record["status"] == "finished" and record["resumed_from"] == "checkpoints/checkpoint-2"
    # each node found every value in its own cache
    assert record["reference_logps"]["per_process"] == [{"computed": 0, "reused": PAIRS // 2}] * 2
    assert sorted(p.name for p in second.iterdir()) == ["checkpoints"]
    assert sorted(p.name for p in (second / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert (first / "adapter" / "adapter_model.safetensors").is_file()  # the adapter: written once, on node 0

    # --- one process, same global batch (4 pairs), 4 steps in one go, on node 0's files and cache ---------------
    monkeypatch.chdir(nodes[0])
    monkeypatch.setenv("NBTOOLS_CACHE_DIR", str(nodes[0] / "cache"))
    single = train(_config(train_file="data/train.jsonl", output_dir="runs/single", batch_size=4, max_steps=4),
                   live=False)
    assert single.status == "finished"
    # node 0's cache holds all 16 values under its own key, half of them computed on node 1
    assert read_run(nodes[0] / "runs" / "single")["reference_logps"]["computed"] == 0
    two, one = _train_rows(first), _train_rows(nodes[0] / "runs" / "single")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4]
    for mine, theirs in zip(two, one):
        for key in HISTORY_KEYS:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-4), f"{key} at step {mine['step']}"
    assert two[-1]["rewards/margins"] != two[0]["rewards/margins"]  # it trained: the history is not flat
