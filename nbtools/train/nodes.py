"""Several processes on one machine or several ("nodes"), with or without a disk they share.

What each process writes, and where (every path is the same string on every node):

* The run folder's record (``run.json``, ``config.yaml``, ``metrics.jsonl``, the lock, ``adapter/``,
  ``processor/``, ``plots/``): process 0 only, on its node's disk.
* Checkpoints, what a resume reads (adapter weights, optimizer, scheduler, trainer state, one RNG file
  per process): process 0 under ``<run folder>/checkpoints``, and on each node that does not see process
  0's run folder, that node's first process under the same path on its own disk (the Trainer's
  ``save_on_each_node``, set per process). Each process writes its RNG file where its node keeps them.
* Reference log-probs: each node's own cache folder (:mod:`nbtools.train.reference`).

Whether a node shares process 0's disk is seen, not configured: once process 0 holds the run folder's
lock, every process reads the lock file at the same path and compares its token with process 0's.

Before anything expensive or written, the processes agree (:func:`stop_together`): a user error on any
one of them (an unusable folder, a problem in one node's copy of the data) stops all of them with its
message, and every node's copy of the data must give the same pairs. A resume starts from the newest
checkpoint complete on every node's disk (:func:`agree_on_layout`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from nbtools.config import ConfigError
from nbtools.errors import UserError, first_few
from nbtools.run_folder.lifecycle import checkpoint_problem, complete_checkpoints, read_lock


class NodeError(UserError, RuntimeError):
    """The processes of a run cannot go on together (another one stopped, their disks or data disagree)."""


def _gather(state, value: Any) -> list:
    import torch.distributed as dist

    gathered: list = [None] * state.num_processes
    dist.all_gather_object(gathered, value)
    return gathered


def _who(rank: int, host: str) -> str:
    return f"process {rank} (on {host})"


def stop_together(state, error: Optional[BaseException] = None, same: Optional[dict] = None) -> None:
    """Every process calls this at the same point: if any met ``error`` (a UserError), all stop.

    The process that met it raises it; the others raise a :class:`NodeError` quoting it. ``same``: values
    every process must hold alike (what its node's copy of the data gave); a difference stops all.
    """
    if state.num_processes == 1:
        if error is not None:
            raise error
        return
    gathered = _gather(state, (socket.gethostname(), None if error is None else str(error), same))
    if error is not None:
        raise error
    for rank, (host, message, _) in enumerate(gathered):
        if message is not None:
            raise NodeError(f"{_who(rank, host)} stopped: {message}")
    first = gathered[0][2] or {}
    for rank, (host, _, values) in enumerate(gathered):
        values = values or {}
        if values != first:
            differences = "; ".join(f"{name} {values.get(name)} on {_who(rank, host)}, {first.get(name)} on "
                                    f"process 0" for name in sorted(set(first) | set(values))
                                    if values.get(name) != first.get(name))
            raise NodeError(f"the processes' copies of the data differ ({differences}); each process reads the "
                            "data files and pictures at the paths in the config on its own node (fix: give every "
                            "node the same files)")


def data_signature(data) -> dict:
    """What must be equal on every node: pairs kept and dropped, and their tokens (which cover text and tokenizer)."""
    signature: dict = {}
    for split in (data.train, data.validation):
        if split is not None:
            signature[f"{split.name} pairs"] = len(split.records)
            signature[f"{split.name} dropped lines"] = list(split.dropped_too_long)
            signature[f"{split.name} tokens"] = (split.stats or {}).get("training_tokens_per_epoch")
    return signature


@dataclass
class NodeLayout:
    """Where this process's node keeps checkpoints, and the one every process resumes from."""

    own_disk: bool = False  # this node does not see process 0's run folder: its first process saves checkpoints too
    resume_from: Optional[Path] = None
    notes: list[str] = field(default_factory=list)  # for the user (printed by process 0)


def sees_run_folder_of_process_0(run_dir: Path, token: Optional[str]) -> bool:
    """Whether this process reads, at ``run_dir``, the lock process 0 holds (token compared): the same disk."""
    info = read_lock(run_dir)
    return bool(token) and bool(info) and info.get("token") == token


def sharded_checkpoints(cfg, environ=None) -> bool:
    """FSDP: distributed: fsdp, or an accelerate config that turns FSDP on whatever the YAML says."""
    environ = os.environ if environ is None else environ
    return cfg.distributed == "fsdp" or environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1")


def agree_on_layout(state, plan, token: Optional[str], sharded: bool) -> NodeLayout:
    """Every process calls this once process 0 holds the lock (``token``), before anything is written.

    ``plan``: process 0's :class:`~nbtools.run_folder.lifecycle.ResumePlan` on process 0, a bare one elsewhere.
    Raises the same error on every process when the nodes cannot go on (see :func:`decide`).
    """
    if state.num_processes == 1:
        return NodeLayout(False, plan.resume_from)
    root = Path(plan.run_dir) / "checkpoints"
    own_disk = not state.is_main_process and not sees_run_folder_of_process_0(plan.run_dir, token)
    steps = [int(path.name.split("-", 1)[1]) for path in complete_checkpoints(root)]
    gathered = _gather(state, (socket.gethostname(), own_disk, steps))
    step, notes = decide(gathered, plan.resume, root, sharded)
    resume_from = root / f"checkpoint-{step}" if step is not None else None
    if resume_from is None:
        return NodeLayout(own_disk, None, notes)
    # the checkpoint must be whole on every disk it is read from (process 0 checked its newest one already)
    problem = checkpoint_problem(resume_from) if own_disk or state.is_main_process else None
    for rank, (host, found) in enumerate(_gather(state, (socket.gethostname(), problem))):
        if found is not None:
            raise NodeError(f"{found} on {_who(rank, host)} (fix: copy {resume_from.name} there from another node, "
                            "or delete it on that node to resume from an earlier checkpoint)")
    return NodeLayout(own_disk, resume_from, notes)


def decide(gathered: list, resume: bool, root: Path, sharded: bool) -> tuple[Optional[int], list[str]]:
    """(the step to resume from or None, notes) from every process's (host, own disk, complete checkpoint steps).

    The same on every process, since all decide from the same gathered values; so are its errors.
    """
    apart = [_who(rank, host) for rank, (host, own, _) in enumerate(gathered) if own]
    if sharded and apart:
        raise ConfigError("distributed", f"process 0's run folder is not on the disk of {first_few(apart, 4)} (no "
                          "shared disk), and fsdp checkpoints are written by process 0 alone: those nodes could not "
                          "resume",
                          "put output_dir on a disk every node shares, or set distributed: ddp")
    if not resume:
        left = [f"{_who(rank, host)} holds {first_few([f'checkpoint-{step}' for step in steps], 3)}"
                for rank, (host, own, steps) in enumerate(gathered) if own and steps]
        if left:
            raise NodeError(f"{root}: on its own disk, {'; '.join(left)}, left there by another run; a new run "
                            f"never mixes with them (fix: delete {root.parent} on that node, or choose another "
                            "output_dir)")
        return None, []
    first = set(gathered[0][2])
    if not first:
        return None, []  # process 0 holds no checkpoint: the run starts again from step 0 (later saves replace any)
    common = first.intersection(*(set(steps) for _, _, steps in gathered[1:]))
    newest = max(first)
    lacking = [_who(rank, host) for rank, (host, _, steps) in enumerate(gathered) if newest not in steps]
    if not common:
        raise NodeError(f"{root}: no checkpoint is complete on every node's disk; process 0 holds "
                        f"{first_few([f'checkpoint-{step}' for step in sorted(first)], 5)}, and not one of them is "
                        f"complete on the disk of {first_few(lacking, 4)} (fix: copy "
                        f"{root / f'checkpoint-{newest}'} from process 0's node to the same path on the others, "
                        "then resume)")
    step = max(common)
    notes = [] if step == newest else [
        f"resuming from checkpoint-{step}, the newest checkpoint complete on every node (checkpoint-{newest} is "
        f"missing on {first_few(lacking, 4)}; it is replaced when the run gets there again)"]
    return step, notes
