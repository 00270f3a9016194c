"""Property-based fuzzing of the run folder's lifecycle (hypothesis, repeatable: derandomized, no database).

Three simulated training processes on three machines share one run folder and do random
sequences of start / resume / heartbeat / stall (time passes) / kill / save / finish / fail, while
a person edits config.yaml behind the run's back, a killed process leaves temporaries at named
write points, and files get damaged (run.json, metrics.jsonl, a checkpoint's state, the lock).
After every step: at most one process writes the folder, run.json is whole (unless the person
damaged it) and has a known status, the lock is readable, no temporary file outlives the next
claim, the last finished result is never lost from run.json, and a claim either succeeds or is
refused with a RunFolderError — an edited config always refused, naming what changed.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import subprocess
import sys

from hypothesis import settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from nbtools import atomic
from nbtools.config import ConfigError, RunConfig
from nbtools.run_folder import lifecycle as rf
from nbtools.run_folder.lifecycle import RunFolder, RunFolderError, RunLock
from nbtools.run_folder.record import STALE_AFTER_S, STATUSES

ACTORS = ("a", "b", "c")
KILL_POINTS = {"run.json": ".run.json", "adapter": ".adapter", "adapter-swap": ".adapter.old",
               "plots": "plots/.loss.png", "checkpoint-state": "checkpoints/.trainer_state.json"}
DAMAGE = ("run.json", "metrics", "checkpoint-state", "lock", "config")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


DEAD_PID = _dead_pid()
EVENTS: collections.Counter = collections.Counter()  # fault states the fuzz reached (it must reach each)


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
        self.edited = False  # config.yaml's learning rate changed behind the run's back
        self.damaged: set[str] = set()  # files the person damaged (a claim must be refused or cope)
        self.checkpoint = 0
        self.good_rows: list[dict] = []  # metrics rows that read, as written

    def teardown(self):
        rf.time, os.fsync = self._real_time, self._real_fsync
        shutil.rmtree(self.root, ignore_errors=True)

    def _config(self):
        return RunConfig(train_file=str(self.data), output_dir=str(self.run), max_steps=self.steps)

    def _holder_alive(self) -> bool:
        """The model's own view (not the code under test): the last claimer, if its last beat is recent."""
        return self.holder is not None and self.clock.now - self.beat_at[self.holder] <= STALE_AFTER_S

    # --- rules -----------------------------------------------------------------------------------
    @initialize(finished=st.booleans())
    def a_run_with_checkpoints(self, finished):
        """Most sequences start from a real run folder: two checkpoints, then finished or killed."""
        self.start("a", resume=False, more_steps=False, from_folder=False)
        self.log_and_checkpoint("a")
        self.log_and_checkpoint("a")
        if finished:
            self.finish("a")
        else:
            self.kill("a")

    @rule(actor=st.sampled_from(ACTORS), resume=st.booleans(), more_steps=st.booleans(), from_folder=st.booleans())
    def start(self, actor, resume, more_steps, from_folder):
        """A new run or a resume; ``from_folder``: the config is read from the folder (``train RUN --resume``)."""
        if actor in self.folders:
            return
        if more_steps:
            self.steps += 4
        # a damaged lock is judged by its file's age, which the simulated clock does not move: no expectation then
        lock_damaged = "unreadable" in (rf.read_lock(self.run) or {}) if self.run.exists() else False
        must_refuse = self._holder_alive() and not lock_damaged
        record_has_config = self._record_has_config()
        damaged_now = self._damaged_now()
        leftovers = bool(atomic.leftovers(self.run)) if self.run.exists() else False
        try:
            cfg = rf.resolve_config(self.run).replace(max_steps=self.steps) \
                if resume and from_folder and self.run.is_dir() else self._config()
            plan = rf.check(self.run, cfg, resume)
            folder = RunFolder(plan, lock=MachineLock(self.run, actor))
            folder.claim(cfg)
        except RunFolderError as exc:  # never any other error, whatever was damaged or edited
            assert must_refuse or lock_damaged or "another training run is using this folder" not in str(exc), str(exc)
            if resume and self.edited and record_has_config and "edited after the run started" in str(exc):
                EVENTS["edited config refused"] += 1
            if resume and damaged_now:
                EVENTS["damaged folder refused"] += 1
            if "the run's config cannot be read" in str(exc):
                EVENTS["damaged config refused"] += 1
            return
        except ConfigError as exc:  # config.yaml itself damaged: its own clear message
            assert "config" in self.damaged and resume and from_folder, str(exc)
            EVENTS["damaged config refused"] += 1
            return
        if leftovers:
            EVENTS["claim cleaned leftovers"] += 1
        if resume and "metrics" in self.damaged:
            EVENTS["resumed past damaged metrics"] += 1
        assert not must_refuse, f"{actor} claimed the folder while {self.holder} was alive"
        assert not (resume and self.edited and record_has_config), "an edited config.yaml was not refused"
        assert not (resume and damaged_now), f"a resume claimed a folder with a damaged {damaged_now}"
        assert atomic.leftovers(self.run) == [], "a claim leaves no temporary of a killed process"
        self.holder, self.beat_at[actor] = actor, self.clock.now
        self.edited = False  # a new run (or a resume) writes config.yaml anew
        folder.begin(cfg, {"status": "running", "actor": actor, "metrics": {}})
        history = folder.start_training(cfg)
        if resume and plan.resume_step is not None:
            expected = [r for r in self.good_rows if r["step"] <= plan.resume_step]
            assert history == expected, (history, expected)  # damaged lines cost themselves only
        self.good_rows = list(history)
        self.damaged.discard("metrics")
        self.folders[actor] = folder

    def _damaged_now(self) -> list[str]:
        """The files whose damage a resume must refuse: run.json, or the state of the checkpoint it would use."""
        found = []
        try:
            json.loads((self.run / "run.json").read_text())
        except FileNotFoundError:
            pass
        except ValueError:
            found.append("run.json")
        done = rf.complete_checkpoints(self.run / "checkpoints")
        if done:
            try:
                json.loads((done[-1] / rf.STATE_FILE).read_text())
            except ValueError:
                found.append("checkpoint-state")
        return found

    def _record_has_config(self) -> bool:
        try:
            return isinstance(json.loads((self.run / "run.json").read_text()).get("config"), dict)
        except (OSError, ValueError, AttributeError):
            return False

    def _owner(self, actor):
        folder = self.folders.get(actor)
        if folder is not None and actor not in self.dead and not folder.lost and folder.lock.owned():
            return folder
        return None

    @precondition(lambda self: self.folders)
    @rule(actor=st.sampled_from(ACTORS))
    def log_and_checkpoint(self, actor):
        """A training step: a metrics row, then a complete checkpoint at that step."""
        folder = self._owner(actor)
        if folder is None:
            return
        self.checkpoint += 1
        row = {"loss": 0.5, "step": self.checkpoint}
        with open(self.run / rf.METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        self.good_rows.append(row)
        staging = self.run / "checkpoints" / f"{rf.STAGING_PREFIX}{self.checkpoint}"
        staging.mkdir(parents=True, exist_ok=True)
        (staging / rf.STATE_FILE).write_text(json.dumps({"global_step": self.checkpoint}))
        (staging / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
        os.replace(staging, self.run / "checkpoints" / f"checkpoint-{self.checkpoint}")

    @precondition(lambda self: (self.run / rf.CONFIG_FILE).is_file() and not self.edited)
    @rule(value=st.sampled_from(["0.001", "0.5"]))
    def edit_config(self, value):
        """A person changes the learning rate in config.yaml behind the run's back."""
        path = self.run / rf.CONFIG_FILE
        if path.is_file() and "learning_rate: 5.0e-05" in path.read_text():
            path.write_text(path.read_text().replace("learning_rate: 5.0e-05", f"learning_rate: {value}"))
            self.edited = True

    @precondition(lambda self: self.edited)
    @rule()
    def undo_edit(self):
        path = self.run / rf.CONFIG_FILE
        if self.edited and path.is_file():
            text = path.read_text()
            for value in ("0.001", "0.5"):
                text = text.replace(f"learning_rate: {value}", "learning_rate: 5.0e-05")
            path.write_text(text)
            self.edited = False

    @precondition(lambda self: self.run.is_dir())
    @rule(point=st.sampled_from(sorted(KILL_POINTS)))
    def killed_mid_write(self, point):
        """What a process killed at a named write leaves: its temporary (a half file, or a folder moved aside)."""
        if not self.run.is_dir():
            return
        leftover = self.run / f"{KILL_POINTS[point]}{atomic.TEMP_MARK}{DEAD_PID}-{point.replace('-', '')[:8]}"
        leftover.parent.mkdir(parents=True, exist_ok=True)
        if point == "adapter-swap":  # killed between moving the old adapter aside and renaming the new one in
            if (self.run / "adapter").is_dir():
                os.replace(self.run / "adapter", leftover)
        elif point == "adapter":
            leftover.mkdir(exist_ok=True)
            (leftover / "adapter_config.json").write_text("{")
        else:
            leftover.write_text('{"half": ')

    @precondition(lambda self: self.run.is_dir())
    @rule(kind=st.sampled_from(DAMAGE))
    def damage(self, kind):
        """A person (or a bad copy) damages one file of the folder."""
        if kind == "run.json" and (self.run / "run.json").is_file():
            self.backup = (self.run / "run.json").read_bytes()
            (self.run / "run.json").write_text('{"status": "fini')
        elif kind == "metrics" and (self.run / rf.METRICS_FILE).is_file():
            with open(self.run / rf.METRICS_FILE, "ab") as handle:
                handle.write(b"garbage{\n\xff\xfe\n")
        elif kind == "checkpoint-state" and self.checkpoint and \
                (self.run / "checkpoints" / f"checkpoint-{self.checkpoint}").is_dir():
            (self.run / "checkpoints" / f"checkpoint-{self.checkpoint}" / rf.STATE_FILE).write_text("{")
        elif kind == "lock" and (self.run / rf.LOCK_FILE).is_file():
            (self.run / rf.LOCK_FILE).write_text("{not json")
        elif kind == "config" and (self.run / rf.CONFIG_FILE).is_file():
            (self.run / rf.CONFIG_FILE).write_text("model: [unclosed")
        else:
            return
        self.damaged.add(kind)

    @precondition(lambda self: self.damaged)
    @rule()
    def repair(self):
        """The person restores what they damaged (run.json from a backup; a damaged checkpoint is deleted)."""
        if "run.json" in self._damaged_now():  # still damaged (an owner's next write may have rewritten it whole)
            (self.run / "run.json").write_bytes(self.backup)
        if "checkpoint-state" in self._damaged_now():
            shutil.rmtree(self.run / "checkpoints" / f"checkpoint-{self.checkpoint}", ignore_errors=True)
            self.checkpoint -= 1
            self.good_rows = [r for r in self.good_rows if r["step"] <= self.checkpoint]
        if "config" in self.damaged:
            (self.run / rf.CONFIG_FILE).unlink()  # the record's config stands in for it
        self.damaged -= {"run.json", "checkpoint-state", "config"}

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
        folder = self._owner(actor)
        if folder is not None:
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
        if not path.exists() or "run.json" in self._damaged_now():
            return
        record = json.loads(path.read_text())
        assert record["status"] in STATUSES
        info = rf.read_lock(self.run)
        if info is not None and "unreadable" not in info and record["status"] == "running":
            assert record["actor"] == info["actor"], "a process wrote run.json while another held the lock"

    @invariant()
    def lock_is_readable_and_names_one_holder(self):
        if not self.run.exists():
            return
        info = rf.read_lock(self.run)
        assert info is None or "unreadable" not in info or "lock" in self.damaged
        if info is not None and "unreadable" not in info:
            self.damaged.discard("lock")
        believers = [a for a, f in self.folders.items() if a not in self.dead and f.lock.owned()]
        assert len(believers) <= 1, believers

    @invariant()
    def only_killed_processes_leave_temporaries(self):
        assert all(atomic.temp_owner(p) == DEAD_PID for p in atomic.leftovers(self.root)), atomic.leftovers(self.root)

    @invariant()
    def the_last_finished_result_is_kept(self):
        if self.last_finished_metrics is None or "run.json" in self._damaged_now():
            return
        record = json.loads((self.run / "run.json").read_text())
        kept = [record.get("metrics"), (record.get("previous_result") or {}).get("metrics")]
        assert self.last_finished_metrics in kept, (self.last_finished_metrics, kept)


SETTINGS = settings(derandomize=True, database=None, deadline=None, max_examples=150, stateful_step_count=30)


def test_run_folder_lifecycle_fuzz():
    EVENTS.clear()
    run_state_machine_as_test(RunFolderMachine, settings=SETTINGS)
    reached = ("edited config refused", "damaged folder refused", "damaged config refused", "claim cleaned leftovers",
               "resumed past damaged metrics")
    assert all(EVENTS[name] for name in reached), EVENTS  # a fault state never reached tests nothing
