"""Property-based fuzzing of the run folder's lifecycle (hypothesis, repeatable: derandomized, no database).

Three simulated training processes on three machines share one run folder and do random
sequences of start / resume / heartbeat / stall (time passes) / kill / save / finish / fail.
After every step: at most one process writes the folder, run.json is always whole and has a
known status, the lock is always readable, no temporary file is left, and the last finished
result is never lost from run.json.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nbtools import atomic
from nbtools.config import RunConfig
from nbtools.train import run_folder as rf
from nbtools.train.run_folder import RunFolder, RunFolderError, RunLock
from nbtools.train.run_record import STALE_AFTER_S, STATUSES

ACTORS = ("a", "b", "c")


class Clock:
    """Time as the locks see it: starts now, moves only when a rule says so."""

    def __init__(self):
        self.now = time.time()

    def time(self):
        return self.now

    def __getattr__(self, name):  # anything else (sleep, ...) is the real module's
        return getattr(time, name)


class MachineLock(RunLock):
    """The lock of a process on another machine (so only its heartbeat tells whether it is alive)."""

    def __init__(self, run_dir, actor):
        super().__init__(run_dir)
        self.actor = actor

    def _content(self):
        return {"pid": 1000 + ACTORS.index(self.actor), "hostname": f"machine-{self.actor}", "token": self.token,
                "heartbeat": rf.time.time(), "actor": self.actor}


class RunFolderMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="nbtools-fuzz-"))
        self.run = self.root / "run"
        self.data = self.root / "train.jsonl"
        self.data.write_text('{"pair": 1}\n')
        self.clock = Clock()
        self._real_time, self._real_fsync = rf.time, os.fsync
        rf.time = self.clock
        os.fsync = lambda fd: None  # durability on power loss is not what is fuzzed here; speed is welcome
        self.folders: dict[str, RunFolder] = {}  # running (or killed and abandoned) processes
        self.dead: set[str] = set()
        self.steps = 4
        self.last_finished_metrics = None
        self.holder = None  # who holds the lock, as the model sees it
        self.beat_at: dict[str, float] = {}

    def teardown(self):
        rf.time, os.fsync = self._real_time, self._real_fsync
        shutil.rmtree(self.root, ignore_errors=True)

    def _config(self):
        return RunConfig(train_file=str(self.data), output_dir=str(self.run), max_steps=self.steps)

    def _holder_alive(self) -> bool:
        """The model's own view (not the code under test): the last claimer, if its last beat is recent."""
        return self.holder is not None and self.clock.now - self.beat_at[self.holder] <= STALE_AFTER_S

    # --- rules -----------------------------------------------------------------------------------
    @rule(actor=st.sampled_from(ACTORS), resume=st.booleans(), more_steps=st.booleans())
    def start(self, actor, resume, more_steps):
        if actor in self.folders:
            return
        if more_steps:
            self.steps += 4
        must_refuse = self._holder_alive()
        cfg = self._config()
        try:
            plan = rf.check(self.run, cfg, resume)
            folder = RunFolder(plan, lock=MachineLock(self.run, actor))
            folder.claim(cfg)
        except RunFolderError as exc:
            assert must_refuse or "another training run is using this folder" not in str(exc), str(exc)
            return
        assert not must_refuse, f"{actor} claimed the folder while {self.holder} was alive"
        self.holder, self.beat_at[actor] = actor, self.clock.now
        folder.begin(cfg, {"status": "running", "actor": actor, "metrics": {}})
        folder.start_training(cfg)
        self.folders[actor] = folder

    @rule(actor=st.sampled_from(ACTORS))
    def heartbeat(self, actor):
        folder = self.folders.get(actor)
        if folder is not None and actor not in self.dead:
            if folder._beat():
                assert self.holder == actor, f"{actor} still beats a lock {self.holder} took over"
                self.beat_at[actor] = self.clock.now
            folder.update(progress={"actor": actor})

    @rule(seconds=st.sampled_from([1, 10, 30, 61, 300]))
    def time_passes(self, seconds):
        self.clock.now += seconds

    @rule(actor=st.sampled_from(ACTORS))
    def kill(self, actor):
        if actor in self.folders:
            self.dead.add(actor)  # kill -9: no cleanup, the lock stays until it goes stale

    @rule(actor=st.sampled_from(ACTORS))
    def save_adapter(self, actor):
        folder = self.folders.get(actor)
        if folder is not None and actor not in self.dead and not folder.lost and folder.lock.owned():
            folder.save_dir("adapter", lambda d: atomic.write_text(d / "adapter_config.json", actor))

    @rule(actor=st.sampled_from(ACTORS))
    def finish(self, actor):
        folder = self.folders.get(actor)
        if folder is None or actor in self.dead:
            return
        metrics = {"actor": actor, "steps": self.steps, "at": self.clock.now}
        try:
            folder.finish(metrics=metrics)
            self.last_finished_metrics = metrics
        except RunFolderError as exc:
            assert "another process took over this run folder" in str(exc)
        finally:
            self._closed(actor)

    @rule(actor=st.sampled_from(ACTORS))
    def fail(self, actor):
        folder = self.folders.get(actor)
        if folder is None or actor in self.dead:
            return
        folder.fail(RuntimeError(f"{actor} crashed"))
        self._closed(actor)

    def _closed(self, actor):
        self.folders.pop(actor).close()
        if self.holder == actor:
            self.holder = None

    @precondition(lambda self: any(a in self.dead for a in self.folders))
    @rule()
    def forget_the_dead(self):
        for actor in [a for a in self.folders if a in self.dead]:
            del self.folders[actor]
        self.dead.clear()

    # --- invariants -------------------------------------------------------------------------------
    @invariant()
    def run_json_is_whole_and_written_by_the_owner(self):
        path = self.run / "run.json"
        if not path.exists():
            return
        record = json.loads(path.read_text())
        assert record["status"] in STATUSES
        info = rf.read_lock(self.run)
        if info is not None and record["status"] == "running":
            assert record["actor"] == info["actor"], "a process wrote run.json while another held the lock"

    @invariant()
    def lock_is_readable_and_names_one_holder(self):
        if not self.run.exists():
            return
        info = rf.read_lock(self.run)
        assert info is None or "unreadable" not in info
        believers = [a for a, f in self.folders.items() if a not in self.dead and f.lock.owned()]
        assert len(believers) <= 1, believers

    @invariant()
    def no_temporary_files(self):
        assert atomic.leftovers(self.root) == []

    @invariant()
    def the_last_finished_result_is_kept(self):
        if self.last_finished_metrics is None:
            return
        record = json.loads((self.run / "run.json").read_text())
        kept = [record.get("metrics"), (record.get("previous_result") or {}).get("metrics")]
        assert self.last_finished_metrics in kept, (self.last_finished_metrics, kept)


RunFolderMachine.TestCase.settings = settings(derandomize=True, database=None, deadline=None, max_examples=30,
                                              stateful_step_count=20)
test_run_folder_lifecycle_fuzz = RunFolderMachine.TestCase
