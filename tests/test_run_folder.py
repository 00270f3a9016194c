"""The run folder's lifecycle (nbtools.run_folder.lifecycle): lock, resume checks, atomic writes, full disks.

Unit tests drive the same RunFolder steps train() takes (check, claim, begin, start_training,
save, finish or fail, close) without a model, so every failure point can be hit in a second.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbtools import atomic
from nbtools.config import RunConfig
from nbtools.errors import UserError
from nbtools.train import read_run
from nbtools.run_folder import lifecycle as rf
from nbtools.run_folder.lifecycle import RunFolder, RunFolderError, RunLock


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"pair": 1}\n', encoding="utf-8")
    return path


def config(run_dir, data_file, **changes):
    return RunConfig(**{"train_file": str(data_file), "output_dir": str(run_dir), "max_steps": 4, **changes})


def started(run, data_file, record=None):
    """A run folder claimed by this process with ``run.json`` begun as ``record``: (folder, config)."""
    cfg = config(run, data_file)
    folder = RunFolder(rf.check(run, cfg, False))
    folder.claim(cfg)
    folder.begin(cfg, record or {"status": "running"})
    return folder, cfg


def lifecycle(run_dir, cfg, resume=False, crash_at=None):
    """What train() does with the folder, with the model left out; ``crash_at`` names a step that raises."""
    plan = rf.check(run_dir, cfg, resume)
    folder = RunFolder(plan)
    folder.claim(cfg)
    try:
        folder.begin(cfg, {"status": "running", "task_display_name": cfg.task_display_name, "metrics": {},
                           "started_at": "2026-01-01T00:00:00+00:00",
                           "provenance": {"data_files": {"train_file": {"path": cfg.train_file,
                                                                        "sha256": rr_sha(cfg.train_file)}}}})
        if crash_at == "model_load":
            raise RuntimeError("model load failed")
        folder.update(packing={"on": False})
        folder.start_training(cfg)
        with open(run_dir / rf.METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"loss": 0.69, "step": cfg.max_steps}) + "\n")
        (run_dir / "checkpoints" / f"checkpoint-{cfg.max_steps}").mkdir(parents=True, exist_ok=True)
        atomic.write_json(run_dir / "checkpoints" / f"checkpoint-{cfg.max_steps}" / "trainer_state.json",
                          {"global_step": cfg.max_steps, "best_model_checkpoint": None})
        atomic.write_bytes(run_dir / "checkpoints" / f"checkpoint-{cfg.max_steps}" / "adapter_model.safetensors",
                           SAFETENSORS)
        if crash_at == "training":
            raise RuntimeError("training failed")
        folder.save_dir("adapter", lambda d: atomic.write_text(d / "adapter_config.json", f"{cfg.max_steps}"))
        folder.save_files("plots", lambda d: atomic.write_bytes(d / "loss.png", b"png"))
        folder.finish(metrics={"eval_loss": 0.5, "steps": cfg.max_steps}, progress={"step": cfg.max_steps})
    except BaseException as exc:
        folder.fail(exc)
        raise
    finally:
        folder.close()
    return folder


SAFETENSORS = b"\x02\x00\x00\x00\x00\x00\x00\x00{}"  # an empty safetensors file (header "{}"), as a checkpoint's weights


def rr_sha(path):
    from nbtools.run_folder.record import sha256_file

    return sha256_file(path)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- folders that are not (or not yet) runs ---------------------------------------------------------

def test_a_folder_with_the_users_files_is_refused_and_left_alone(tmp_path, data_file):
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own config\n")
    (mine / "notes.txt").write_text("do not lose me\n")
    before = snapshot(mine)
    with pytest.raises(RunFolderError, match=r"already holds files that are not a run \(notes.txt\); nbtools never "
                                             r"writes over your files \(fix: choose a new or empty folder"):
        lifecycle(mine, config(mine, data_file))
    assert snapshot(mine) == before


def test_an_empty_folder_is_used_and_a_file_is_refused(tmp_path, data_file):
    empty = tmp_path / "empty"
    empty.mkdir()
    lifecycle(empty, config(empty, data_file))
    assert read_run(empty)["status"] == "finished"

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="output_dir: .*a-file is a file, not a folder"):
        rf.check(a_file, config(a_file, data_file), False)
    long_name = tmp_path / ("x" * 256)
    with pytest.raises(UserError, match="256 bytes long; filesystems allow 255"):
        rf.check(long_name, config(tmp_path / "ok", data_file), False)


def test_a_refused_claim_leaves_no_folder_behind(tmp_path, data_file):
    run = tmp_path / "run"
    lifecycle(run, config(run, data_file))
    other = RunFolder(rf.check(tmp_path / "new", config(tmp_path / "new", data_file), False))
    os.rename(run, tmp_path / "new")  # the folder became a run between the check and the claim
    with pytest.raises(RunFolderError, match="this folder holds a finished run .step 4., and a new run never"):
        other.claim(config(tmp_path / "new", data_file))
    other.close()
    assert not (tmp_path / "new" / rf.LOCK_FILE).exists()


def new_run_refused(run, data_file) -> str:
    """The message a new run (no resume) into ``run`` stops with."""
    with pytest.raises(RunFolderError) as info:
        rf.check(run, config(run, data_file), False)
    return str(info.value)


def test_a_new_run_into_a_finished_run_is_told_how_to_start_a_new_run(tmp_path, data_file):
    run = tmp_path / "run"
    lifecycle(run, config(run, data_file))
    assert new_run_refused(run, data_file) == (
        f"{run}: this folder holds a finished run (step 4), and a new run never writes over it (fix: leave "
        "output_dir empty to start each run in a new folder, or set output_dir to a new folder; to train this run "
        "further, raise max_steps or epoch and pass resume=True / --resume)")


@pytest.mark.parametrize("status", ["interrupted", "failed"])
def test_a_new_run_into_an_unfinished_run_is_told_to_resume_it(tmp_path, data_file, status):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="training failed"):
        lifecycle(run, config(run, data_file), crash_at="training")  # checkpoint-4 complete, run.json "failed"
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "status": status}))
    assert new_run_refused(run, data_file) == (
        f"{run}: this folder holds a run that did not finish ({status}; its last complete checkpoint is "
        "checkpoint-4) (fix: pass resume=True / --resume to continue it, or leave output_dir empty to start each "
        "run in a new folder, or set output_dir to a new folder to start a new run)")


def test_a_new_run_into_a_folder_whose_run_is_training_is_told_to_wait(tmp_path, data_file):
    run = tmp_path / "run"
    folder, cfg = started(run, data_file)  # this process holds the lock, heartbeat fresh
    try:
        with pytest.raises(RunFolderError, match=r"another training run is using this folder \(pid "):
            rf.check(run, cfg, False)
    finally:
        folder.close()


# --- the lock -------------------------------------------------------------------------------------

def test_a_second_run_into_the_same_folder_is_refused_while_the_first_holds_it(tmp_path, data_file):
    run = tmp_path / "run"
    first, cfg = started(run, data_file)
    try:
        with pytest.raises(RunFolderError, match=r"another training run is using this folder \(pid "
                                                 rf"{os.getpid()} .*\(fix: wait for it to finish"):
            RunFolder(rf.ResumePlan(run, True)).claim(cfg)
    finally:
        first.close()
    assert not (run / rf.LOCK_FILE).exists()


def test_a_killed_owner_s_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "up"
        lock = RunLock(run)
        lock._content = lambda: {"pid": holder.pid, "hostname": socket.gethostname(), "token": "holder",
                                 "heartbeat": time.time()}
        assert lock.acquire() is None  # the lock as the holder process would have written it
        lock.held = False
        with pytest.raises(RunFolderError, match=rf"another training run is using this folder \(pid {holder.pid}"):
            RunLock(run).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        taker = RunLock(run)
        note = taker.acquire()
        assert note == f"took over the run folder's lock: its process (pid {holder.pid}) is no longer running"
        assert taker.owned() and json.loads((run / rf.LOCK_FILE).read_text())["pid"] == os.getpid()
        taker.release()
        assert not (run / rf.LOCK_FILE).exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_lock_from_another_machine_is_taken_over_only_when_its_heartbeat_is_stale(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    info = {"pid": 1, "hostname": "some-other-machine", "token": "t", "heartbeat": time.time() - 5}
    (run / rf.LOCK_FILE).write_text(json.dumps(info))
    with pytest.raises(RunFolderError, match="pid 1 on some-other-machine, heartbeat 5 s ago"):
        RunLock(run).acquire()
    info["heartbeat"] = time.time() - 120
    (run / rf.LOCK_FILE).write_text(json.dumps(info))
    note = RunLock(run).acquire()
    assert note.startswith("took over the run folder's lock: its heartbeat stopped 1") and note.endswith("s ago")


def test_an_owner_that_lost_its_lock_stops_writing(tmp_path, data_file):
    run = tmp_path / "run"
    stalled, cfg = started(run, data_file)
    info = json.loads((run / rf.LOCK_FILE).read_text())
    info.update(token="someone-else", pid=1, hostname="elsewhere")  # another process took it over meanwhile
    (run / rf.LOCK_FILE).write_text(json.dumps(info))
    assert stalled.lock.heartbeat() is False and stalled.lost
    before = (run / "run.json").read_bytes()
    stalled.update(progress={"step": 3})
    with pytest.raises(RunFolderError, match="another process took over this run folder"):
        stalled.require_lock()
    stalled.fail(RuntimeError("late"))
    stalled.close()
    assert (run / "run.json").read_bytes() == before
    assert json.loads((run / rf.LOCK_FILE).read_text())["token"] == "someone-else"


# --- resume -----------------------------------------------------------------------------------------

def test_an_incompatible_resume_changes_nothing(tmp_path, data_file):
    run = tmp_path / "run"
    lifecycle(run, config(run, data_file))
    before = snapshot(run)
    with pytest.raises(RunFolderError, match=r"resume must use the settings the run started with; changed: "
                                             r"lora_rank: 16 -> 8; beta: 0.1 -> 0.5 \(fix: undo these changes"):
        lifecycle(run, config(run, data_file, beta=0.5, lora_rank=8, max_steps=8), resume=True)
    assert snapshot(run) == before
    data_file.write_text('{"pair": 2}\n')
    with pytest.raises(RunFolderError, match="train_file changed since the run started"):
        lifecycle(run, config(run, data_file, max_steps=8), resume=True)
    assert snapshot(run) == before


def test_resuming_a_finished_run_without_more_steps_is_refused(tmp_path, data_file):
    run = tmp_path / "run"
    lifecycle(run, config(run, data_file))
    before = snapshot(run)
    with pytest.raises(RunFolderError, match="this run already finished at step 4; there is nothing to resume"):
        lifecycle(run, config(run, data_file), resume=True)
    assert snapshot(run) == before


def test_a_resume_that_fails_before_training_restores_the_finished_record(tmp_path, data_file):
    run = tmp_path / "run"
    lifecycle(run, config(run, data_file))
    finished = json.loads((run / "run.json").read_text())
    config_before = (run / "config.yaml").read_bytes()
    with pytest.raises(RuntimeError, match="model load failed"):
        lifecycle(run, config(run, data_file, max_steps=8), resume=True, crash_at="model_load")
    record = json.loads((run / "run.json").read_text())
    assert record.pop("last_resume_error")["error"] == "RuntimeError: model load failed"
    assert record == finished
    assert (run / "config.yaml").read_bytes() == config_before
    assert "RuntimeError: model load failed" in (run / "error.log").read_text()

    # failing after training restarted: failed, with the earlier result kept beside the error
    with pytest.raises(RuntimeError, match="training failed"):
        lifecycle(run, config(run, data_file, max_steps=8), resume=True, crash_at="training")
    record = read_run(run)
    assert record["status"] == "failed" and record["error"] == "RuntimeError: training failed"
    assert record["previous_result"]["metrics"] == finished["metrics"]
    assert (run / "adapter" / "adapter_config.json").read_text() == "4"  # the old adapter is untouched


def test_a_copied_run_folder_resumes_into_the_copy(tmp_path, data_file):
    from nbtools.train import resolve_config

    run = tmp_path / "original"
    lifecycle(run, config(run, data_file))
    state = run / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    atomic.write_json(state, {"global_step": 4, "best_model_checkpoint": str(run / "checkpoints" / "checkpoint-4")})
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    original_files = snapshot(run)
    for given in (copy, copy / "config.yaml"):
        assert resolve_config(given).output_dir == str(given if given.is_dir() else copy)
    lifecycle(copy, resolve_config(copy).replace(max_steps=8), resume=True)
    assert snapshot(run) == original_files
    assert read_run(copy)["metrics"]["steps"] == 8
    assert json.loads((copy / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())[
        "best_model_checkpoint"] == str(copy / "checkpoints" / "checkpoint-4")


def test_a_dead_running_record_without_its_lock_reads_as_interrupted(tmp_path, data_file):
    run = tmp_path / "run"
    folder, cfg = started(run, data_file, {"status": "running", "process": {"pid": os.getpid(), "hostname": "h"}})
    assert read_run(run)["status"] == "running"
    folder.close()  # the lock is released, run.json could not be updated (e.g. a full disk)
    record = read_run(run)
    assert record["status"] == "interrupted" and "released the run folder" in record["status_reason"]


# --- full disk at every write ------------------------------------------------------------------------

def _count_writes(monkeypatch, action) -> int:
    calls = []
    original = atomic._write_to
    monkeypatch.setattr(atomic, "_write_to", lambda handle, data: (calls.append(1), original(handle, data)))
    action()
    monkeypatch.setattr(atomic, "_write_to", original)
    return len(calls)


def _disk_full_at(monkeypatch, k):
    calls = []
    original = atomic._write_to

    def write(handle, data):
        calls.append(1)
        if len(calls) == k:
            handle.write(data[: len(data) // 2])  # half of it reached the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(handle, data)

    monkeypatch.setattr(atomic, "_write_to", write)
    return original


@pytest.mark.parametrize("resume", [False, True], ids=["new-run", "resume-of-a-finished-run"])
def test_disk_full_at_each_write_leaves_a_readable_status_and_no_temporary(tmp_path, data_file, monkeypatch,
                                                                           resume):
    template = tmp_path / "template"
    if resume:
        lifecycle(template, config(template, data_file))
    cfg_for = lambda run: config(run, data_file, max_steps=8 if resume else 4)  # noqa: E731

    probe = tmp_path / "probe"
    if resume:
        shutil.copytree(template, probe)
    n = _count_writes(monkeypatch, lambda: lifecycle(probe, cfg_for(probe), resume=resume))
    assert n >= 6  # run.json several times, lock, config.yaml, metrics, adapter, plots
    for k in range(1, n + 1):
        run = tmp_path / f"run-{k}"
        if resume:
            shutil.copytree(template, run)
            before = json.loads((template / "run.json").read_text())
        original = _disk_full_at(monkeypatch, k)
        with pytest.raises(OSError) as err:
            lifecycle(run, cfg_for(run), resume=resume)
        monkeypatch.setattr(atomic, "_write_to", original)
        assert err.value.errno == errno.ENOSPC
        assert atomic.leftovers(tmp_path) == [], k
        assert not (run / rf.LOCK_FILE).exists(), k
        if not (run / "run.json").exists():  # the run never started: the folder is gone again
            assert not resume and not run.exists(), k
            continue
        record = read_run(run)  # always whole JSON
        if record["status"] == "failed":
            assert record["error"].endswith("No space left on device (fix: free disk space (or choose another "
                                            "output folder), then run again)"), k
        elif resume and record.get("last_resume_error"):
            assert record["status"] == "finished" and record["metrics"] == before["metrics"], k
        else:  # the failure could not be recorded either: the run reads as stopped, never as still running
            assert record["status"] in ("interrupted", "finished"), (k, record["status"])
        if resume:  # a finished run's results are never lost
            kept = record.get("previous_result", record)
            assert kept["metrics"] == before["metrics"] or record["metrics"]["steps"] == 8, k


# --- edits, damage and leftovers found by a second pass of faults ----------------------------------

def test_config_yaml_edited_behind_the_run_s_back_is_refused_with_the_difference(tmp_path, data_file):
    run = tmp_path / "run"
    lifecycle(run, config(run, data_file))
    path = run / "config.yaml"
    assert "learning_rate: 5.0e-05" in path.read_text()
    path.write_text(path.read_text().replace("learning_rate: 5.0e-05", "learning_rate: 0.001"))
    before = snapshot(run)
    edited = rf.resolve_config(run).replace(max_steps=8)  # what `train RUN --resume --max-steps 8` reads
    with pytest.raises(RunFolderError, match=r"config.yaml: edited after the run started; the run trained with "
                                             r"other values \(recorded in run.json\): learning_rate: 5e-05 -> 0.001"):
        lifecycle(run, edited, resume=True)
    assert snapshot(run) == before

    # config.yaml deleted, a YAML with another learning rate passed: still measured against the record
    path.unlink()
    with pytest.raises(RunFolderError, match=r"changed: learning_rate: 5e-05 -> 0.002"):
        lifecycle(run, config(run, data_file, max_steps=8, learning_rate=0.002), resume=True)
    # the folder alone: the recorded config stands in for the missing config.yaml, and the resume goes on
    assert rf.resolve_config(run).learning_rate == 5e-05
    lifecycle(run, rf.resolve_config(run).replace(max_steps=8), resume=True)
    assert read_run(run)["config"]["learning_rate"] == 5e-05 and read_run(run)["config"]["max_steps"] == 8
    assert RunConfig.from_yaml(path).max_steps == 8


def _metrics_rows(run, steps):
    return "".join(json.dumps({"loss": 0.6, "step": s}) + "\n" for s in steps)


def test_a_damaged_metrics_line_costs_that_line_only_and_the_file_is_kept(tmp_path, data_file):
    from nbtools.train.callbacks import read_metrics_report

    run = tmp_path / "run"
    lifecycle(run, config(run, data_file, max_steps=8))
    text = _metrics_rows(run, range(1, 9)).splitlines(keepends=True)
    damaged = "".join(text[:5]).encode() + b"garbage{\n" + b'{"loss": "\xff\xfe", "step": 6}\n' + "".join(text[7:]).encode()
    (run / "metrics.jsonl").write_bytes(damaged)
    assert [r["step"] for r in read_metrics_report(run)[0]] == [1, 2, 3, 4, 5, 8]
    assert read_metrics_report(run)[1] == [6, 7]

    folder = RunFolder(rf.check(run, config(run, data_file, max_steps=12), True))
    cfg = config(run, data_file, max_steps=12)
    folder.claim(cfg)
    try:
        folder.begin(cfg, {"status": "running"})
        history = folder.start_training(cfg)
    finally:
        folder.close()
    assert [r["step"] for r in history] == [1, 2, 3, 4, 5, 8]  # the checkpoint is at step 8: nothing after 5 lost
    kept = sorted(run.glob("metrics.damaged-*.jsonl"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    (note,) = [n for n in folder.take_notes() if "metrics.jsonl" in n]
    assert "line(s) 6, 7 are not JSON rows" in note and kept[0].name in note


def test_a_metrics_line_cut_by_a_kill_is_dropped_without_a_copy(tmp_path, data_file):
    run = tmp_path / "run"
    lifecycle(run, config(run, data_file, max_steps=8))
    (run / "metrics.jsonl").write_text(_metrics_rows(run, range(1, 9)) + '{"loss": 0.5, "st')
    cfg = config(run, data_file, max_steps=12)
    folder = RunFolder(rf.check(run, cfg, True))
    folder.claim(cfg)
    try:
        folder.begin(cfg, {"status": "running"})
        assert [r["step"] for r in folder.start_training(cfg)] == list(range(1, 9))
    finally:
        folder.close()
    assert not list(run.glob("metrics.damaged-*")) and "cut off" in " ".join(folder.take_notes())


@pytest.mark.parametrize("damage", ["checkpoints-is-a-file", "trainer-state-not-json", "no-weights",
                                    "weights-damaged", "metrics-is-a-folder"])
def test_a_damaged_run_folder_is_refused_before_anything_changes(tmp_path, data_file, damage):
    run = tmp_path / "run"
    lifecycle(run, config(run, data_file))
    checkpoint = run / "checkpoints" / "checkpoint-4"
    if damage == "checkpoints-is-a-file":
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").write_text("not a folder")
        expected = r"checkpoints: is a file, but a run keeps a folder there \(fix: move the file out"
    elif damage == "trainer-state-not-json":
        (checkpoint / "trainer_state.json").write_text('{"global_step": 4,')
        expected = r"checkpoint-4/trainer_state.json: cannot be read .*\(fix: restore it, or delete checkpoint-4 to " \
                   r"start again from step 0\)"
    elif damage == "no-weights":
        (checkpoint / "adapter_model.safetensors").unlink()
        expected = r"checkpoint-4: holds no adapter weights"
    elif damage == "weights-damaged":
        (checkpoint / "adapter_model.safetensors").write_bytes(b"\xff" * 16)
        expected = r"checkpoint-4/adapter_model.safetensors: is damaged .*\(fix: restore it, or delete checkpoint-4"
    else:
        (run / "metrics.jsonl").unlink()
        (run / "metrics.jsonl").mkdir()
        expected = r"metrics.jsonl: is a folder, but a run keeps a file there"
    before = snapshot(run)
    with pytest.raises(RunFolderError, match=expected):
        lifecycle(run, config(run, data_file, max_steps=8), resume=True)
    assert snapshot(run) == before and read_run(run)["status"] == "finished"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_a_killed_process_are_cleaned_when_the_folder_is_claimed(tmp_path, data_file):
    run = tmp_path / "run"
    lifecycle(run, config(run, data_file))
    dead = _dead_pid()
    (run / f".run.json.nbtmp-{dead}-0badf00d").write_text('{"status": "runn')
    (run / f".adapter.nbtmp-{dead}-0badf00e").mkdir()
    (run / f".adapter.nbtmp-{dead}-0badf00e" / "adapter_model.safetensors").write_bytes(b"half")
    (run / "checkpoints" / f".trainer_state.json.nbtmp-{dead}-0badf00f").write_text("{")
    (run / "plots" / f".loss.png.nbtmp-{dead}-0badf010").write_bytes(b"png")
    os.replace(run / "adapter", run / f".adapter.old.nbtmp-{dead}-0badf011")  # killed between the two renames
    alive = run / f".evaluation.json.nbtmp-{os.getpid()}-0badf012"  # a live process is writing it right now
    alive.write_text("{}")

    cfg = config(run, data_file, max_steps=8)
    folder = RunFolder(rf.check(run, cfg, True))
    folder.claim(cfg)
    notes = folder.take_notes()
    folder.close()
    assert atomic.leftovers(run) == [alive]
    assert (run / "adapter" / "adapter_config.json").read_text() == "4"  # the previous adapter is back
    assert sum("left by a stopped process" in n for n in notes) == 4, notes
    assert any("restored adapter" in n for n in notes), notes


def test_an_error_log_is_whole_or_the_earlier_one(tmp_path, monkeypatch):
    from nbtools.errors import write_error_log

    write_error_log(RuntimeError("first"), tmp_path)
    before = (tmp_path / "error.log").read_bytes()
    _disk_full_at(monkeypatch, 1)
    with pytest.raises(OSError):
        write_error_log(RuntimeError("second"), tmp_path)
    assert (tmp_path / "error.log").read_bytes() == before and atomic.leftovers(tmp_path) == []


@pytest.mark.parametrize("error, expected", [
    (RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file "
                  "write failed"), "the disk is probably full"),
    (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on "
                  "device\" })"), "the disk is probably full"),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "disk quota"),
    (None, None),
    (RuntimeError("shape mismatch"), None),
])
def test_writers_that_fail_on_a_full_disk_are_recognised(error, expected):
    from nbtools.errors import environment_error

    if error is None:  # an OSError a library wrapped in its own error
        try:
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/x.bin")
            except OSError as inner:
                raise ValueError("could not save") from inner
        except ValueError as exc:
            error, expected = exc, "/data/x.bin: No space left on device"
    found = environment_error(error)
    assert (found is None) if expected is None else (expected in str(found)), found
