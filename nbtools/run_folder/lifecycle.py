"""The run folder's lifecycle, in one place: check, claim, begin, train, finish or fail — losing nothing.

    check    read-only: is this folder usable for a new run / a resume? (nothing is written)
    claim    rank 0 takes the folder's lock (pid + heartbeat); a live owner means "refused"
    begin    run.json says "running" (a resume keeps the previous record to restore on failure)
    start_training   the first step that changes a resumed run: config.yaml, metrics.jsonl cut
             back to the checkpoint, unfinished checkpoints removed
    finish / fail    the final record; ``fail`` writes error.log and never hides the original error
    close    heartbeat stopped, lock released

Why a lock file and not ``flock``: run folders live on network and Colab drives too, where
advisory locks are unreliable; a file with the owner's pid, host and a heartbeat works
everywhere and is what a human can read. A lock whose process is gone (same host) or whose
heartbeat is older than ``STALE_AFTER_S`` is taken over, so a resume after ``kill -9`` or a
closed Colab tab just works. Every file is written with ``nbtools.atomic`` (temporary name +
rename), so a full disk leaves the previous content and no stray temporary.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from nbtools import atomic
from nbtools.config import RunConfig, load_config
from nbtools.errors import LOG_ATTRIBUTE, UserError, environment_error, first_few, write_error_log
from nbtools.output_folder import check_output_folder
from nbtools.atomic import pid_alive
from nbtools.run_folder import record as rr

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = rr.LOCK_FILE
TAKEOVER_FILE = ".nbtools-lock.takeover"
TAKEOVER_STALE_S = 30.0  # a takeover takes milliseconds; an older guard was left by a killed process
# What nbtools itself puts in a run folder: a folder holding only these (and no run.json) is a run that never
# got going, so a new run may use it; anything else is the user's and is never overwritten.
STARTUP_NAMES = {LOCK_FILE, TAKEOVER_FILE, CONFIG_FILE, METRICS_FILE, "error.log"}
# Settings a checkpoint depends on: a resume with any of them changed would silently train something else.
RESUME_FIXED = ("model", "adapter_path", "quantization", "precision", "lora_rank", "lora_alpha", "lora_dropout",
                "target_modules", "train_file", "validation_file", "validation_split", "max_pixels",
                "max_context_length", "too_long", "seed", "batch_size", "gradient_accumulation_steps",
                "learning_rate", "lr_scheduler_type", "warmup_ratio", "max_grad_norm", "beta", "loss_type",
                "loss_weights", "label_smoothing", "discopop_tau", "f_divergence_type", "f_alpha_divergence_coef",
                "ld_alpha", "use_weighting")

# Lock tokens held by this process: a lock naming our own pid but another token is a leftover of an earlier call.
_HELD: set[str] = set()


def _names_data(path: str) -> bool:
    """A file or folder that exists, or a glob or Hub id (a missing file is reported by validation)."""
    from nbtools.data.sources import is_table_source

    return Path(path).expanduser().exists() or is_table_source(path)


class RunFolderError(UserError, RuntimeError):
    """The run folder is not in a state this call can use (exists without resume, nothing to resume, locked)."""


def resolve_config(config: Union[RunConfig, str, os.PathLike, dict]) -> RunConfig:
    """A RunConfig from an object, a dict, a YAML file or a run folder (its config.yaml).

    A run folder, or the config.yaml inside one, means that folder, wherever it is now: the
    output_dir stored in a copied or moved folder still names the original.
    """
    if isinstance(config, (str, os.PathLike)) and Path(config).is_dir():
        path = Path(config) / CONFIG_FILE
        if not path.is_file():
            recorded = recorded_config(_read_record(Path(config)))
            if recorded is not None:  # config.yaml deleted: run.json still says what the run trained with
                return recorded.replace(output_dir=str(config))
            raise RunFolderError(f"{config}: no {CONFIG_FILE} in this folder (fix: pass the config YAML, or the "
                                 "folder of a run started by nbtools)")
        return RunConfig.from_yaml(path).replace(output_dir=str(config))
    cfg = load_config(config)
    if isinstance(config, (str, os.PathLike)) and Path(config).name == CONFIG_FILE \
            and (Path(config).parent / rr.RUN_FILE).is_file():
        return cfg.replace(output_dir=str(Path(config).parent))
    return cfg


# --- the lock ---------------------------------------------------------------------------------------

def read_lock(run_dir: Path) -> Optional[dict]:
    """The lock's content; None when there is no lock; {"unreadable": reason} when it cannot be parsed."""
    path = Path(run_dir) / LOCK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"unreadable": str(exc)}
    try:
        info = json.loads(text)
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        int(info.get("pid", 0))
        float(info.get("heartbeat", 0))
        return info
    except (ValueError, TypeError) as exc:
        return {"unreadable": str(exc)}


def stale_reason(run_dir: Path, info: dict, stale_after_s: float = rr.STALE_AFTER_S) -> Optional[str]:
    """Why the lock ``info`` no longer protects a live run, or None when its owner is alive."""
    if "unreadable" in info:
        try:
            age = time.time() - (Path(run_dir) / LOCK_FILE).stat().st_mtime
        except OSError:
            return "the lock file is gone"
        return f"the lock file is damaged ({info['unreadable']})" if age > stale_after_s else None
    pid = int(info.get("pid", 0))
    same_host = info.get("hostname") == socket.gethostname()
    if same_host and pid == os.getpid():
        return None if info.get("token") in _HELD else "it was left by an earlier run in this process"
    if same_host and pid and not pid_alive(pid):
        return f"its process (pid {pid}) is no longer running"
    age = time.time() - float(info.get("heartbeat", 0))
    if age > stale_after_s:
        return f"its heartbeat stopped {age:.0f} s ago"
    return None


class RunLock:
    """An exclusive lock file in the run folder: created atomically, refreshed by a heartbeat, taken over when stale."""

    def __init__(self, run_dir: Path, stale_after_s: float = rr.STALE_AFTER_S):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.stale_after_s = stale_after_s
        self.token = uuid.uuid4().hex
        self.held = False
        self.lost = False

    def _content(self) -> dict:
        return {"pid": os.getpid(), "hostname": socket.gethostname(), "token": self.token,
                "heartbeat": time.time(), "heartbeat_at": rr.utc_now()}

    def _create(self) -> bool:
        """Create the lock with its content in one step (link of a complete temporary); False if it exists."""
        tmp = atomic.temp_name(self.path)
        atomic.write_json(tmp, self._content())
        try:
            os.link(tmp, self.path)  # fails if the lock exists: creation and content are one atomic step
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create, then write
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(self._content()))
            return True
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def acquire(self) -> Optional[str]:
        """Take the lock; returns a note when a stale lock was taken over. Raises RunFolderError when held."""
        for _ in range(5):
            if self._create():
                self._took()
                return None
            info = read_lock(self.run_dir)
            if info is None:
                continue  # released between our attempt and the read: try again
            reason = stale_reason(self.run_dir, info, self.stale_after_s)
            if reason is None:
                raise RunFolderError(_busy_message(self.run_dir, info))
            with self._takeover_guard():
                now = read_lock(self.run_dir)
                if now is None:
                    continue
                if now.get("token") != info.get("token") or now.get("unreadable") != info.get("unreadable"):
                    continue  # someone else took it over meanwhile: judge the new owner
                self.path.unlink()
                if self._create():
                    self._took()
                    return f"took over the run folder's lock: {reason}"
        raise RunFolderError(f"{self.run_dir}: another process keeps taking this run folder's lock (fix: make sure "
                             "only one run uses this output_dir)")

    @contextlib.contextmanager
    def _takeover_guard(self):
        guard = self.run_dir / TAKEOVER_FILE
        for _ in range(2):
            try:
                fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.close(fd)
                break
            except FileExistsError:
                try:
                    old = time.time() - guard.stat().st_mtime > TAKEOVER_STALE_S
                except FileNotFoundError:
                    old = True
                if not old:
                    raise RunFolderError(f"{self.run_dir}: another process is taking over this run folder right "
                                         "now (fix: make sure only one run uses this output_dir)") from None
                with contextlib.suppress(FileNotFoundError):
                    guard.unlink()
        else:
            raise RunFolderError(f"{self.run_dir}: cannot take over the stale lock (fix: delete {guard})")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                guard.unlink()

    def _took(self) -> None:
        self.held = True
        self.lost = False
        _HELD.add(self.token)

    def owned(self) -> bool:
        info = read_lock(self.run_dir)
        return bool(self.held and info and info.get("token") == self.token)

    def heartbeat(self) -> bool:
        """Refresh the heartbeat; False (and ``lost``) when another process took the lock over meanwhile."""
        if not self.held:
            return False
        if not self.owned():
            self.lost = True
            return False
        atomic.write_json(self.path, self._content())
        return True

    def release(self) -> None:
        if self.held and not self.lost and self.owned():
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.held = False
        _HELD.discard(self.token)


def _busy_message(run_dir: Path, info: dict) -> str:
    if "unreadable" in info:
        return (f"{run_dir}: the run folder's lock file is damaged ({info['unreadable']}) and counts as held until it "
                f"is {rr.STALE_AFTER_S:.0f} s old (fix: wait that long, or delete {run_dir / LOCK_FILE} if no run "
                "uses this folder)")
    age = time.time() - float(info.get("heartbeat", time.time()))
    return (f"{run_dir}: another training run is using this folder (pid {info.get('pid')} on "
            f"{info.get('hostname')}, heartbeat {age:.0f} s ago) (fix: wait for it to finish or stop it, then resume; "
            "or choose another output_dir)")


# --- checkpoints (written by nbtools.train.trainer: staged, then renamed into place) -------------------

STAGING_PREFIX = ".partial-"
STATE_FILE = "trainer_state.json"


def complete_checkpoints(checkpoint_root: Path) -> list[Path]:
    """Finished checkpoints (renamed into place, trainer state present), oldest step first."""
    if not checkpoint_root.is_dir():
        return []
    found = []
    for child in checkpoint_root.iterdir():
        if child.is_dir() and child.name.startswith("checkpoint-") and (child / STATE_FILE).is_file():
            try:
                found.append((int(child.name.split("-", 1)[1]), child))
            except ValueError:
                continue
    return [path for _, path in sorted(found)]


def remove_partial_checkpoints(checkpoint_root: Path) -> list[Path]:
    """Delete staging folders a killed run left behind; returns what was removed."""
    removed = []
    if checkpoint_root.is_dir():
        for child in checkpoint_root.iterdir():
            if child.name.startswith(STAGING_PREFIX):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


# --- what a folder holds -----------------------------------------------------------------------------

@dataclass
class ResumePlan:
    """What ``check`` found: how the run starts."""

    run_dir: Path
    resume: bool
    previous: dict = field(default_factory=dict)  # the run.json of the run being resumed (raw, as on disk)
    resume_from: Optional[Path] = None  # the last complete checkpoint, or None (start from step 0)

    @property
    def resume_step(self) -> Optional[int]:
        return int(self.resume_from.name.split("-")[1]) if self.resume_from else None


def is_run_folder(path: Path) -> bool:
    return (path / rr.RUN_FILE).is_file() or bool(complete_checkpoints(path / "checkpoints"))


def _foreign_entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name not in STARTUP_NAMES and atomic.TEMP_MARK not in p.name)


def check(run_dir: Path, cfg, resume: bool, own_lock: Optional[str] = None) -> ResumePlan:
    """Decide, without writing anything, whether ``cfg`` may start (or resume) a run in ``run_dir``.

    ``own_lock``: the token of the lock this process holds (the check repeated under the lock).
    """
    run_dir = check_output_folder(run_dir, "output_dir")  # a file, a name too long or with control characters
    if not resume:
        if not run_dir.exists():
            return ResumePlan(run_dir, False)
        if is_run_folder(run_dir):
            raise RunFolderError(holds_a_run_message(run_dir, own_lock))
        foreign = _foreign_entries(run_dir)
        if foreign:
            raise RunFolderError(f"output_dir: {run_dir} already holds files that are not a run "
                                 f"({first_few(foreign, 5)}); nbtools "
                                 "never writes over your files (fix: choose a new or empty folder as output_dir)")
        return ResumePlan(run_dir, False)

    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder to resume (fix: check output_dir)")
    _check_layout(run_dir)
    if not is_run_folder(run_dir) and _foreign_entries(run_dir):
        raise RunFolderError(f"{run_dir}: not a run folder (no {rr.RUN_FILE}, no checkpoints) (fix: pass the folder "
                             "a run wrote, or start a new run without resume)")
    previous = _read_record(run_dir)
    _check_compatible(run_dir, cfg, previous)
    lock = read_lock(run_dir)
    if lock is not None and lock.get("token") != own_lock and stale_reason(run_dir, lock) is None:
        raise RunFolderError(_busy_message(run_dir, lock))
    done = complete_checkpoints(run_dir / "checkpoints")
    if done:
        _check_checkpoint(done)
    return ResumePlan(run_dir, True, previous, done[-1] if done else None)


NEW_RUN_ADVICE = "leave output_dir empty to start each run in a new folder, or set output_dir to a new folder"


def holds_a_run_message(run_dir: Path, own_lock: Optional[str] = None) -> str:
    """Why a new run cannot start in ``run_dir``, with the advice that fits the run there: a finished run is
    kept (start the new one elsewhere), an unfinished one can be resumed, a live one is waited for.
    ``own_lock``: the token of the lock this process holds (not another run's)."""
    lock = read_lock(run_dir)
    if lock is not None and lock.get("token") != own_lock and stale_reason(run_dir, lock) is None:
        return _busy_message(run_dir, lock)
    try:
        record = rr.read_run(run_dir)
    except (OSError, ValueError, RecursionError):
        record = {}  # no run.json (killed before it was written) or unreadable: the checkpoints are what is left
    record = record if isinstance(record, dict) else {}
    status = record.get("status")
    step = record["progress"].get("step") if isinstance(record.get("progress"), dict) else None
    if status == "finished":
        return (f"{run_dir}: this folder holds a finished run{f' (step {step})' if step else ''}, and a new run "
                f"never writes over it (fix: {NEW_RUN_ADVICE}; to train this run further, raise max_steps or epoch "
                "and pass resume=True / --resume)")
    done = complete_checkpoints(run_dir / "checkpoints")
    where = f"its last complete checkpoint is {done[-1].name}" if done else "it has no complete checkpoint yet"
    return (f"{run_dir}: this folder holds a run that did not finish ({status or 'no run.json'}; {where}) (fix: pass "
            f"resume=True / --resume to continue it, or {NEW_RUN_ADVICE} to start a new run)")


# What a run folder keeps under these names; anything else there (a file where a folder belongs) is refused.
FOLDER_NAMES = ("checkpoints", "adapter", "processor", "plots")
FILE_NAMES = (rr.RUN_FILE, CONFIG_FILE, METRICS_FILE)


def _check_layout(run_dir: Path) -> None:
    for name in FOLDER_NAMES:
        path = run_dir / name
        if (path.exists() or path.is_symlink()) and not path.is_dir():
            raise RunFolderError(f"{path}: is a file, but a run keeps a folder there (fix: move the file out of the "
                                 "run folder, then resume)")
    for name in FILE_NAMES:
        if (run_dir / name).is_dir():
            raise RunFolderError(f"{run_dir / name}: is a folder, but a run keeps a file there (fix: move the folder "
                                 "out of the run folder, then resume)")


def _read_record(run_dir: Path) -> dict:
    """run.json as stored ({} when there is none); an unreadable one is refused (it is the run's only record)."""
    path = run_dir / rr.RUN_FILE
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(previous, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, RecursionError) as exc:
        raise RunFolderError(f"{path}: cannot be read ({exc}) (fix: restore it from a backup, or start a new run in "
                             "another output_dir)") from None
    return previous


def recorded_config(record: dict) -> Optional[RunConfig]:
    """The config the run trained with, as run.json recorded it (None for runs of older nbtools versions)."""
    data = record.get("config") if isinstance(record, dict) else None
    if not isinstance(data, dict):
        return None
    try:
        return RunConfig.from_dict(data)
    except (UserError, TypeError, ValueError):
        return None


def _check_checkpoint(done: list[Path]) -> None:
    """The checkpoint a resume starts from must be whole: its trainer state reads and its weights are there."""
    checkpoint = done[-1]
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        raise RunFolderError(f"{problem} (fix: restore it, or {without_checkpoint(checkpoint)})")


def checkpoint_problem(checkpoint: Path) -> Optional[str]:
    """Why ``checkpoint`` cannot be resumed from (its trainer state or weights' header do not read), or None."""
    state_path = checkpoint / STATE_FILE
    problem = None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
            problem = f"{state_path}: holds no global_step"
    except (OSError, ValueError, RecursionError) as exc:
        problem = f"{state_path}: cannot be read ({exc})"
    weights = [checkpoint / name for name in CHECKPOINT_WEIGHTS if (checkpoint / name).exists()]
    if problem is None and not weights:
        problem = f"{checkpoint}: holds no adapter weights ({' or '.join(CHECKPOINT_WEIGHTS)})"
    if problem is None:
        from nbtools.models.weights import weights_problem

        found = weights_problem(weights[0])  # the header is read: milliseconds
        problem = f"{weights[0]}: {found}" if found else None
    return problem


def without_checkpoint(checkpoint: Path) -> str:
    """The way on when ``checkpoint`` cannot be used: delete it and resume from the one before (or step 0)."""
    earlier = [p for p in complete_checkpoints(checkpoint.parent) if p.name != checkpoint.name]
    return (f"delete {checkpoint.name} to resume from {earlier[-1].name}" if earlier
            else f"delete {checkpoint.name} to start again from step 0")


CHECKPOINT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")


def check_media(plan: ResumePlan, data) -> None:
    """Refuse a resume whose pictures or videos changed since the run started (the data file may be the same).

    Compares the media fingerprint validation just took (path, size and mtime of every local file the
    trainable rows name; its cost: benchmarks/media_fingerprint.py) with the one run.json recorded,
    and names what changed. Runs of older versions recorded none: nothing to compare.
    """
    if not plan.resume:
        return
    from datetime import datetime, timezone

    from nbtools.data.fingerprint import changed_media

    recorded = plan.previous.get("data") if isinstance(plan.previous.get("data"), dict) else {}
    for name in ("train", "validation"):
        split = getattr(data, name, None)
        before = (recorded.get(name) or {}).get("media_fingerprint") if isinstance(recorded.get(name), dict) else None
        if split is None or not before or split.media_fingerprint in (None, before):
            continue
        since = rr._parse_time(plan.previous.get("started_at")) or 0.0
        changed = changed_media(split.records, since)
        shown = "; ".join(f"{c.path} ({c.how}" + (f" {datetime.fromtimestamp(c.at, timezone.utc):%Y-%m-%d %H:%M} UTC"
                                                   if c.at else "") + ")" for c in changed)
        raise RunFolderError(f"{split.file}: the {name} pictures or videos changed since the run started"
                             f"{': ' + shown if shown else ' (their sizes or modification times differ)'} (fix: "
                             "restore the files the run was trained on, or start a new run with another output_dir)")


def _differences(before: RunConfig, after: RunConfig) -> list[str]:
    return [f"{name}: {getattr(before, name)!r} -> {getattr(after, name)!r}" for name in RESUME_FIXED
            if getattr(before, name) != getattr(after, name)]


def _check_compatible(run_dir: Path, cfg, previous: dict) -> None:
    """Refuse a resume whose settings or data differ from the run's (nothing has been touched yet).

    The truth is the config run.json recorded when the run started: config.yaml edited behind the
    run's back is refused with the difference named (the checkpoint would go on with the recorded
    values — its scheduler state holds the learning rate — while the folder said otherwise).
    """
    stored_path = run_dir / CONFIG_FILE
    try:
        stored = RunConfig.from_yaml(stored_path) if stored_path.is_file() else None
    except UserError as exc:
        raise RunFolderError(f"{stored_path}: the run's config cannot be read ({exc}) (fix: restore it, or delete it "
                             f"when {rr.RUN_FILE} records the config the run trained with)") from None
    recorded = recorded_config(previous)
    if recorded is not None and stored is not None:
        edited = _differences(recorded, stored)
        if edited:
            raise RunFolderError(f"{stored_path}: edited after the run started; the run trained with other values "
                                 f"(recorded in {rr.RUN_FILE}): {'; '.join(edited)} (fix: undo the edit to continue "
                                 "this run, or start a new run with another output_dir)")
    stored = recorded or stored
    if stored is None:
        return  # killed before config.yaml and run.json were written: nothing to compare against
    changed = _differences(stored, cfg)
    if changed:
        raise RunFolderError(f"{run_dir}: resume must use the settings the run started with; changed: "
                             f"{'; '.join(changed)} (fix: undo these changes to continue this run, or start a new "
                             "run with another output_dir)")
    files = ((previous.get("provenance") or {}).get("data_files") or {}) if isinstance(previous, dict) else {}
    for name, entry in files.items() if isinstance(files, dict) else ():
        path = getattr(cfg, name, None)
        if not isinstance(entry, dict) or not path or not entry.get("sha256") or not _names_data(path):
            continue
        if rr.data_digest(path) != entry["sha256"]:
            raise RunFolderError(f"{path}: {name} changed since the run started (sha256 differs) (fix: restore the "
                                 "file the run was trained on, or start a new run with another output_dir)")
    if previous.get("status") == "finished" and stored.max_steps == cfg.max_steps and stored.epoch == cfg.epoch:
        step = (previous.get("progress") or {}).get("step")
        raise RunFolderError(f"{run_dir}: this run already finished{f' at step {step}' if step else ''}; there is "
                             "nothing to resume (fix: raise max_steps or epoch to train further, or evaluate / "
                             "export the run)")


# --- the lifecycle ---------------------------------------------------------------------------------

class RunFolder:
    """One run folder, owned by rank 0 of one run. Other ranks get an instance that writes nothing."""

    def __init__(self, plan: ResumePlan, *, main: bool = True, stale_after_s: float = rr.STALE_AFTER_S,
                 lock: Optional[RunLock] = None):
        self.plan = plan
        self.path = plan.run_dir
        self.main = main
        self.lock = lock or RunLock(self.path, stale_after_s)
        self.record: Optional[rr.RunRecord] = None
        self.training_started = False
        self.notes: list[str] = []
        self._created = False
        self._wrote_config = False

    # claim ------------------------------------------------------------------------------------------
    def claim(self, cfg) -> None:
        """Create the folder if needed and take its lock; check again under the lock (two runs may race)."""
        if not self.main:
            return
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            note = self.lock.acquire()
            if note:
                self.notes.append(note)
            self.plan = check(self.path, cfg, self.plan.resume, own_lock=self.lock.token)
            for folder in (self.path, self.path / "checkpoints", self.path / "plots"):
                self.notes.extend(atomic.remove_dead_leftovers(folder))  # temporaries of a killed run
        except BaseException:
            self.close()
            raise

    # begin ------------------------------------------------------------------------------------------
    def begin(self, cfg, initial: dict) -> None:
        """run.json says "running" (with a heartbeat); a new run also gets its config.yaml now."""
        if not self.main:
            return
        if not self.plan.resume:
            self._wrote_config = True
            cfg.to_yaml(self.path / CONFIG_FILE)
            with contextlib.suppress(FileNotFoundError):
                (self.path / METRICS_FILE).unlink()  # left by a start that never got going
        initial = {**initial, "config": cfg.to_dict(), "locked": True}  # what this run trains with
        previous = self.plan.previous
        if self.plan.resume and previous.get("status") == "finished":
            # a finished run trained further: its results stay in run.json whatever happens next
            initial["previous_result"] = {key: previous.get(key) for key in
                                          ("status", "finished_at", "progress", "metrics", "best", "diagnosis")}
        elif self.plan.resume and previous.get("previous_result"):
            initial["previous_result"] = previous["previous_result"]  # still the last finished result
        self.record = rr.RunRecord(self.path, initial)

    def start_heartbeat(self, interval_s: float = rr.HEARTBEAT_INTERVAL_S) -> None:
        if self.record is not None:
            self.record.start_heartbeat(interval_s, on_beat=self._beat)

    def _beat(self) -> bool:
        try:
            return self.lock.heartbeat()
        except OSError:
            return True  # a full disk must not stop training; the next beat retries

    @property
    def lost(self) -> bool:
        return self.lock.lost

    def update(self, **fields: Any) -> None:
        """Write fields into run.json, only while the folder is still ours (one small read of the lock)."""
        if self.record is not None and self._still_ours():
            self.record.update(**fields)

    def _still_ours(self) -> bool:
        if self.lock.lost:
            return False
        if self.main and not self.lock.owned():
            self.lock.lost = True  # another process took the folder over while this one was stalled
            return False
        return True

    # start_training ---------------------------------------------------------------------------------
    def history_so_far(self) -> list[dict]:
        """The metrics rows a resumed run continues from (up to its checkpoint), read without changing anything."""
        from nbtools.train.callbacks import read_metrics

        step = self.plan.resume_step if self.plan.resume else None
        return [] if step is None else _rows_up_to(read_metrics(self.path), step)

    def start_training(self, cfg) -> list[dict]:
        """The first changes to a resumed run's files; returns the metrics history up to the checkpoint."""
        from nbtools.train.callbacks import read_metrics_report

        self.training_started = True
        if not self.main:
            return []
        history: list[dict] = []
        if self.plan.resume:
            cfg.to_yaml(self.path / CONFIG_FILE)
            for removed in remove_partial_checkpoints(self.path / "checkpoints"):
                self.notes.append(f"removed an unfinished checkpoint left by the interrupted run: {removed.name}")
            _rebase_checkpoints(self.path / "checkpoints")
            step = self.plan.resume_step
            if step is not None:
                rows, damaged = read_metrics_report(self.path)
                if damaged:
                    self._keep_damaged_metrics(damaged)
                history = _rows_up_to(rows, step)
                atomic.write_text(self.path / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history))
            else:
                with contextlib.suppress(FileNotFoundError):
                    (self.path / METRICS_FILE).unlink()
        return history

    def _keep_damaged_metrics(self, damaged: list[int]) -> None:
        """Lines of metrics.jsonl that do not read are left out of the history, never lost: the file as it
        was is kept beside it. (A last line cut by a kill is expected and only mentioned.)"""
        source = self.path / METRICS_FILE
        data = source.read_bytes()
        cut_last = damaged == [len(data.split(b"\n"))] and not data.endswith(b"\n")
        if cut_last:
            self.notes.append(f"{METRICS_FILE}: its last line was cut off by the interruption and is dropped")
            return
        kept = self.path / f"metrics.damaged-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
        atomic.write_bytes(kept, data)
        self.notes.append(f"{METRICS_FILE}: line(s) {first_few(damaged, 10)} are not JSON rows (edited or damaged); "
                          f"they are left out of the history, and the file as it was is kept as {kept.name}")

    # artifacts --------------------------------------------------------------------------------------
    def save_dir(self, name: str, save: Callable[[Path], Any]) -> Path:
        """Save a folder artifact (adapter/, processor/, plots/) under a temporary name, then swap it in."""
        return atomic.save_with(self.path / name, save)

    def save_files(self, name: str, save: Callable[[Path], Any]) -> Path:
        """Save files into the folder ``name`` (plots/): each replaces its old version atomically, others are kept."""
        target = self.path / name
        target.mkdir(exist_ok=True)
        staging = atomic.temp_name(target)
        staging.mkdir()
        try:
            save(staging)
            for item in sorted(staging.iterdir()):
                if item.is_file():
                    os.replace(item, target / item.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def take_notes(self) -> list[str]:
        """Messages for the user (a lock taken over, an unfinished checkpoint removed), each given once."""
        notes, self.notes = self.notes, []
        return notes

    # end --------------------------------------------------------------------------------------------
    def finish(self, **fields: Any) -> None:
        if self.main:
            self.require_lock()
            self.record.update(status="finished", finished_at=rr.utc_now(), error=None, **fields)

    def fail(self, exc: BaseException, status: str = "failed", message: Optional[str] = None, **extra: Any) -> None:
        """Record the failure without ever hiding ``exc``: error.log for the details, run.json for the status.

        A resume that fails before it changed anything leaves run.json as it was (plus a note), so a
        finished run keeps its status and metrics. Write errors here are swallowed: the previous
        run.json (written atomically) stays readable, and the released lock marks the run as stopped.
        """
        if not self.main or not self.path.is_dir() or not self.lock.held or not self._still_ours():
            return
        if not isinstance(exc, (UserError, KeyboardInterrupt)) and environment_error(exc) is None:
            with contextlib.suppress(OSError):
                log = write_error_log(exc, self.path)
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(exc, LOG_ATTRIBUTE, log)
        if message is None:
            storage = environment_error(exc)
            message = str(storage) if storage is not None else (
                str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(OSError):
            if self.plan.resume and not self.training_started and self.plan.previous:
                restored = dict(self.plan.previous)
                restored["last_resume_error"] = {"at": rr.utc_now(), "error": message}
                if self.record is not None:
                    self.record.stop_heartbeat()
                atomic.write_json(self.path / rr.RUN_FILE, restored, indent=2)
            elif self.record is not None:
                self.record.update(status=status, error=message, finished_at=rr.utc_now(), **extra)

    def close(self) -> None:
        """Stop the heartbeat and release the lock (always, also after a failure)."""
        if self.record is not None:
            self.record.stop_heartbeat()
        if self.main:
            self.lock.release()
            if self.record is None:  # run.json was never written: leave the folder as it was before
                if self._wrote_config:
                    with contextlib.suppress(OSError):
                        (self.path / CONFIG_FILE).unlink()
                if self._created:
                    with contextlib.suppress(OSError):
                        self.path.rmdir()

    def require_lock(self) -> None:
        """Stop when another process took the folder over (this one stalled past the stale limit)."""
        if not self._still_ours():
            raise RunFolderError(f"{self.path}: another process took over this run folder while this run was "
                                 "stalled (no heartbeat); this run's results were not recorded (fix: use one "
                                 "output_dir per run)")


def _rows_up_to(rows: list[dict], step: int) -> list[dict]:
    """The metrics rows a run resumed from ``step`` continues from (read_metrics_report's rows have a numeric step)."""
    return [r for r in rows if r.get("step", 0) <= step and not r.get("final")]


def _rebase_checkpoints(checkpoint_root: Path) -> None:
    """A copied run folder still names the original's checkpoints in trainer_state.json: point them here."""
    for checkpoint in complete_checkpoints(checkpoint_root):
        state_path = checkpoint / STATE_FILE
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        best = state.get("best_model_checkpoint")
        if best and Path(best).parent != checkpoint_root:
            state["best_model_checkpoint"] = str(checkpoint_root / Path(best).name)
            atomic.write_json(state_path, state, indent=2)
