"""Several nodes, with or without a shared disk: how the processes agree (units; no processes are started).

Each process gathers what it sees; these tests play process 1 with process 0's values given. The two-node
run itself: tests/test_train_two_nodes.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from nbtools.config import ConfigError, RunConfig
from nbtools.train import nodes
from nbtools.run_folder.lifecycle import LOCK_FILE, ResumePlan

ROOT = Path("/runs/r/checkpoints")


def _as_process_1(monkeypatch, *process_0_values):
    """Make each gather return [process 0's next value, this process's value]."""
    values = iter(process_0_values)
    monkeypatch.setattr(nodes, "_gather", lambda state, mine: [next(values), mine])
    return SimpleNamespace(num_processes=2, is_main_process=False)


# --- which checkpoint every node resumes from ---------------------------------------------------------

@pytest.mark.parametrize("steps_1, expected", [([2, 4], 4), ([2], 2), ([2, 4, 6], 4)])
def test_resume_from_the_newest_checkpoint_every_node_holds(steps_1, expected):
    step, notes = nodes.decide([("a", False, [2, 4]), ("b", True, steps_1)], True, ROOT, False)
    assert step == expected
    assert bool(notes) == (expected != 4)  # the user is told when process 0's newest is not used
    if notes:
        assert "checkpoint-4 is missing on process 1 (on b)" in notes[0]


def test_a_node_without_any_of_the_checkpoints_stops_the_resume():
    with pytest.raises(nodes.NodeError) as caught:
        nodes.decide([("a", False, [2, 4]), ("b", True, [])], True, ROOT, False)
    message = str(caught.value)
    assert "process 1 (on b)" in message and "checkpoint-2, checkpoint-4" in message
    assert f"copy {ROOT / 'checkpoint-4'}" in message


def test_without_a_checkpoint_on_process_0_the_run_starts_again():
    assert nodes.decide([("a", False, []), ("b", True, [2])], True, ROOT, False) == (None, [])


def test_a_new_run_never_mixes_with_checkpoints_left_on_a_node():
    with pytest.raises(nodes.NodeError, match=r"process 1 \(on b\) holds checkpoint-2.*delete /runs/r on that node"):
        nodes.decide([("a", False, []), ("b", True, [2])], False, ROOT, False)
    assert nodes.decide([("a", False, []), ("a", False, [])], False, ROOT, False) == (None, [])


def test_fsdp_needs_a_shared_disk():
    with pytest.raises(ConfigError) as caught:
        nodes.decide([("a", False, []), ("b", True, [])], False, ROOT, True)
    assert caught.value.field == "distributed" and "a disk every node shares" in caught.value.fix
    nodes.decide([("a", False, []), ("a", False, [])], False, ROOT, True)  # one disk: fine
    assert nodes.sharded_checkpoints(RunConfig(train_file="t.jsonl"), {"ACCELERATE_USE_FSDP": "true"})
    assert not nodes.sharded_checkpoints(RunConfig(train_file="t.jsonl"), {})


def test_a_node_sees_its_own_disk_by_the_lock_token(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "heartbeat": 0, "token": "abc"}))
    assert nodes.sees_run_folder_of_process_0(tmp_path, "abc")
    assert not nodes.sees_run_folder_of_process_0(tmp_path, "another")  # a lock copied from elsewhere
    assert not nodes.sees_run_folder_of_process_0(tmp_path / "absent", "abc")


def test_a_damaged_checkpoint_on_another_node_stops_every_process(tmp_path, monkeypatch):
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
    (checkpoint / "adapter_model.safetensors").write_bytes(b"cut")
    state = _as_process_1(monkeypatch, ("a", False, [2]), ("a", None))  # process 0: the lock's disk, checkpoint whole
    with pytest.raises(nodes.NodeError) as caught:
        nodes.agree_on_layout(state, ResumePlan(run, True), "token-of-process-0", False)
    assert "adapter_model.safetensors" in str(caught.value) and "on process 1" in str(caught.value)

    (checkpoint / "trainer_state.json").unlink()  # not complete on process 1's disk: its step is not common
    state = _as_process_1(monkeypatch, ("a", False, [2]))
    with pytest.raises(nodes.NodeError, match="no checkpoint is complete on every node's disk"):
        nodes.agree_on_layout(state, ResumePlan(run, True), "token-of-process-0", False)


def test_own_disk_and_resume_point_as_agreed(tmp_path, monkeypatch):
    from safetensors.torch import save_file
    import torch

    run = tmp_path / "run"
    for step in (2, 4):
        checkpoint = run / "checkpoints" / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        save_file({"w": torch.zeros(2)}, str(checkpoint / "adapter_model.safetensors"))
    state = _as_process_1(monkeypatch, ("a", False, [2]), ("a", None))
    layout = nodes.agree_on_layout(state, ResumePlan(run, True), "token-of-process-0", False)
    assert layout.own_disk and layout.resume_from == run / "checkpoints" / "checkpoint-2" and layout.notes == []


# --- every process stops together -----------------------------------------------------------------------

def test_an_error_on_one_process_stops_the_others_with_its_message(monkeypatch):
    state = _as_process_1(monkeypatch, ("a", "train_file: no such file", None))
    with pytest.raises(nodes.NodeError, match=r"process 0 \(on a\) stopped: train_file: no such file"):
        nodes.stop_together(state)
    state = _as_process_1(monkeypatch, ("a", None, None))
    with pytest.raises(ValueError, match="mine"):
        nodes.stop_together(state, ValueError("mine"))  # the process that met it raises its own error
    single = SimpleNamespace(num_processes=1, is_main_process=True)
    nodes.stop_together(single)
    with pytest.raises(KeyError):
        nodes.stop_together(single, KeyError("alone"))


def test_the_nodes_copies_of_the_data_must_agree(monkeypatch):
    split = SimpleNamespace(name="train", records=range(16), dropped_too_long=[], stats={
        "training_tokens_per_epoch": 1416})
    mine = nodes.data_signature(SimpleNamespace(train=split, validation=None))
    assert mine == {"train pairs": 16, "train dropped lines": [], "train tokens": 1416}
    state = _as_process_1(monkeypatch, ("a", None, mine))
    nodes.stop_together(state, same=dict(mine))
    state = _as_process_1(monkeypatch, ("a", None, {**mine, "train pairs": 15}))
    with pytest.raises(nodes.NodeError, match=r"train pairs 16 on process 1 \(on .*\), 15 on process 0.*same files"):
        nodes.stop_together(state, same=mine)


# --- checkpoints another node's resume made obsolete ----------------------------------------------------

def test_a_save_removes_checkpoints_beyond_its_step_and_killed_stagings(tmp_path):
    from nbtools.run_folder.lifecycle import remove_partial_checkpoints
    from nbtools.train.trainer import _remove_later_checkpoints

    for name in ("checkpoint-2", "checkpoint-4", "checkpoint-6", ".partial-4"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text("{}")
    _remove_later_checkpoints(tmp_path, 3)
    remove_partial_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
