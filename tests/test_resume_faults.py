"""Real runs of the tiny model through the faults a long run meets: killed at its last moment, a full disk
inside ``torch.save`` and in the data loader, pictures that change under it, a record edited behind its back.

Each run is 4 steps of 12 pairs (a few seconds); kill points are named moments (tests/kill_at.py), not timing.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbtools import atomic
from nbtools.errors import run_entry
from nbtools.train import read_run, train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "data_samples" / "shapes"


def copy_shapes(folder: Path, n_train: int = 12, n_val: int = 4) -> Path:
    """The first pairs of the shapes task with their own copies of the pictures (tests damage them)."""
    (folder / "images").mkdir(parents=True)
    for split, count in (("train", n_train), ("validation", n_val)):
        lines = (SHAPES / f"{split}.jsonl").read_text().splitlines()[:count]
        for line in lines:
            for image in json.loads(line)["images"]:
                shutil.copy(SHAPES / image, folder / image)
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def short_run(shapes_config, tmp_path):
    """A 4-step run config (checkpoints at 2 and 4) on copied data: (config, data folder)."""
    data = copy_shapes(tmp_path / "data")
    cfg = shapes_config(tmp_path / "run", train_file=str(data / "train.jsonl"),
                        validation_file=str(data / "validation.jsonl"), max_steps=4, save_steps=2, eval_steps=2,
                        logging_steps=1, save_total_limit=0)
    return cfg, data


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def _exit_code(action) -> tuple[int, str]:
    """The command line's exit code and stderr for ``action`` (nbtools.errors.run_entry, in this process)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        # an int is an exit code (nbtools.__main__.main); anything else returned (train's RunResult) means 0
        code = run_entry(lambda: (lambda out: out if isinstance(out, int) else 0)(action()), prog="nbtools train")
    return code, err.getvalue()


def test_a_run_killed_while_its_final_adapter_is_written_resumes_without_training_again(short_run):
    cfg, data = short_run
    run = Path(cfg.output_dir)
    yaml_path = cfg.to_yaml(run.parent / "run.yaml")
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "kill_at.py"), "final-adapter", str(yaml_path)],
                            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-3000:]
    assert [p.name for p in run.glob(".adapter.nbtmp-*")], "the kill left the adapter's temporary folder"
    assert not (run / "adapter").exists()
    rows = _rows(run)
    summary = [r for r in rows if "train_runtime" in r]
    # the closing evaluation scored the best checkpoint (load_best_model_at_end), whose evaluation is its row
    final = min((r for r in rows if "eval_loss" in r), key=lambda r: r["eval_loss"])

    result = train(run, resume=True, live=False)
    record = read_run(run)
    assert record["status"] == "finished" and record["progress"] == {"step": 4, "max_steps": 4}
    assert _checkpoints(run) == ["checkpoint-2", "checkpoint-4"]  # no checkpoint-5: nothing trained again
    after = _rows(run)
    assert [r for r in after if "train_runtime" in r] == summary  # the run's own train_loss, not a new one
    assert max(r["step"] for r in after) == 4
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"):
        assert result.metrics[key] == pytest.approx(final[key], abs=1e-5), key
    assert atomic.leftovers(run) == []  # the killed process's temporary adapter was cleaned when claimed
    assert (run / "adapter" / "adapter_model.safetensors").stat().st_size > 0

    # The record tells the truth: an edited learning rate is refused with the difference, nothing changes.
    path = run / "config.yaml"
    path.write_text(path.read_text().replace(f"learning_rate: {cfg.to_dict()['learning_rate']}",
                                             "learning_rate: 0.001"))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    from nbtools.__main__ import main

    code, err = _exit_code(lambda: main(["train", str(run), "--resume", "--max-steps", "6"]))
    assert code == 2 and "config.yaml: edited after the run started" in err and "learning_rate: 0.005 -> 0.001" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    # A checkpoint that fails to load inside the trainer: a clear error, and the finished run stays finished.
    path.write_text(path.read_text().replace("learning_rate: 0.001", f"learning_rate: {cfg.to_dict()['learning_rate']}"))
    (run / "checkpoints" / "checkpoint-4" / "optimizer.pt").write_bytes(b"not a pickle")
    finished = json.loads((run / "run.json").read_text())
    metrics_before = (run / "metrics.jsonl").read_bytes()
    code, err = _exit_code(lambda: main(["train", str(run), "--resume", "--max-steps", "6"]))
    assert code == 2, err
    assert "checkpoint-4: cannot be loaded" in err and "delete checkpoint-4 to resume from checkpoint-2" in err
    record = json.loads((run / "run.json").read_text())
    assert record.pop("last_resume_error")["error"].startswith(str(run / "checkpoints" / "checkpoint-4"))
    assert record == finished and (run / "metrics.jsonl").read_bytes() == metrics_before


def test_a_full_disk_when_the_final_adapter_is_written_then_resume(short_run, monkeypatch):
    cfg, data = short_run
    run = Path(cfg.output_dir)
    real = atomic.swap_in

    def full(staging, path):
        if path.name == "adapter":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(staging, path)

    monkeypatch.setattr(atomic, "swap_in", full)
    code, err = _exit_code(lambda: train(cfg, live=False))
    assert code == 2 and "No space left on device (fix: free disk space" in err
    record = read_run(run)
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert not (run / "error.log").exists() and atomic.leftovers(run) == []

    monkeypatch.setattr(atomic, "swap_in", real)
    train(cfg, resume=True, live=False)
    assert read_run(run)["progress"] == {"step": 4, "max_steps": 4}
    assert _checkpoints(run) == ["checkpoint-2", "checkpoint-4"]

    # Another picture under the same name: the resume is refused, naming it; nothing in the folder changes.
    picture = data / "images" / "train_0003.png"
    shutil.copy(data / "images" / "train_0004.png", picture)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, err = _exit_code(lambda: train(cfg.replace(max_steps=6), resume=True, live=False))
    assert code == 2 and "the train pictures or videos changed since the run started" in err
    assert f"{picture} (modified " in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


PYTORCH_WRITE_FAILED = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                        "file write failed")


@pytest.mark.parametrize("site", ["torch.save", "torch.save-oserror", "data-loader"])
def test_a_full_disk_inside_torch_save_or_the_data_loader_is_a_clear_error(short_run, monkeypatch, site):
    import torch

    from nbtools.train.dataset import LazyImageCollator

    cfg, _ = short_run
    run = Path(cfg.output_dir)
    if site.startswith("torch.save"):
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if ".partial-" in str(f):  # a checkpoint is being written: half of a file reaches the disk
                Path(f).write_bytes(b"PK\x03\x04" + bytes(64))
                if site == "torch.save":
                    raise RuntimeError(PYTORCH_WRITE_FAILED)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    else:
        real_call, calls = LazyImageCollator.__call__, []

        def call(self, rows):
            calls.append(1)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/tmp/cache/shard")
            return real_call(self, rows)

        monkeypatch.setattr(LazyImageCollator, "__call__", call)
    code, err = _exit_code(lambda: train(cfg, live=False))
    assert code == 2, err
    assert "disk" in err and "(fix: free disk space" in err
    record = read_run(run)
    assert record["status"] == "failed" and "fix: free disk space" in record["error"]
    assert not (run / "error.log").exists()  # the machine's state, not a bug: no traceback file
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".partial")] \
        if (run / "checkpoints").exists() else True
    assert atomic.leftovers(run) == []


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_picture_damaged_during_the_run_stops_it_with_the_row_and_file(short_run, monkeypatch, damage):
    from nbtools.train import runner

    cfg, data = short_run
    run = Path(cfg.output_dir)
    picture = data / "images" / "train_0002.png"
    real_prepare = runner.prepare_data

    def prepare_then_damage(*args, **kwargs):
        prepared = real_prepare(*args, **kwargs)  # validation read the picture: it was fine then
        if damage == "deleted":
            picture.unlink()
        else:
            picture.write_bytes(picture.read_bytes()[:60])
        return prepared

    monkeypatch.setattr(runner, "prepare_data", prepare_then_damage)
    code, err = _exit_code(lambda: train(cfg, live=False))
    assert code == 2, err
    assert f"train.jsonl: line 2: images[0]: {picture}: cannot be read now" in err
    assert "(fix: restore the file" in err
    record = read_run(run)
    assert record["status"] == "failed" and "line 2: images[0]" in record["error"]
    assert not (run / "error.log").exists()


def test_a_resume_whose_first_batch_fails_leaves_the_finished_run_as_it_was(short_run, monkeypatch):
    """Nothing trained: the checkpoint loaded, then the first batch's picture is unreadable."""
    from nbtools.train import runner

    cfg, data = short_run
    cfg = cfg.replace(precompute_ref_log_probs=False)  # so the picture is first read by the first batch
    run = Path(cfg.output_dir)
    train(cfg, live=False)
    finished = json.loads((run / "run.json").read_text())
    files_before = {p.name: p.read_bytes() for p in (run / "metrics.jsonl", run / "config.yaml")}
    real_prepare = runner.prepare_data

    def prepare_then_delete(*args, **kwargs):
        prepared = real_prepare(*args, **kwargs)
        for picture in (data / "images").iterdir():
            picture.unlink()
        return prepared

    monkeypatch.setattr(runner, "prepare_data", prepare_then_delete)
    code, err = _exit_code(lambda: train(cfg.replace(max_steps=6), resume=True, live=False))
    assert code == 2 and "cannot be read now" in err, err
    record = json.loads((run / "run.json").read_text())
    assert "cannot be read now" in record.pop("last_resume_error")["error"]
    assert record == finished  # still finished, its metrics and config untouched
    assert {p.name: p.read_bytes() for p in (run / "metrics.jsonl", run / "config.yaml")} == files_before
