"""TRL's DPOTrainer with the guarantees a long run needs, and packed pairs when possible.

* Checkpoints are atomic: each is written into a staging folder and renamed into
  ``checkpoints/checkpoint-<step>`` only when complete, so a run killed mid-save (even with
  SIGKILL) never leaves a half-written checkpoint for resume to trip over. Process 0 writes them, and
  so does the first process of each machine that does not share its disk (nbtools.train.nodes).
* A NaN or infinite loss stops the run at once (before the optimizer applies the bad
  gradients), with a clear message; the last good checkpoint stays on disk.

* Packed batches (``config.packing``, built by nbtools.packing's collator) are routed to the
  packed DPO step: each prompt and its images go through the model once per pass instead of
  twice, with TRL's loss and metric names.

Everything else (losses, metrics, reference via disabled adapter) is TRL's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Optional

import torch
from trl import DPOTrainer

from nbtools.errors import UserError, environment_error

# The checkpoint folder layout is the run folder's business (resume reads it without importing torch).
from nbtools.run_folder.lifecycle import (STAGING_PREFIX, STATE_FILE, complete_checkpoints,  # noqa: E402,F401
                                      remove_partial_checkpoints, without_checkpoint)
# transformers 5 names that TRL's disable_gradient_checkpointing still calls
DEPRECATED_CHECKPOINTING_NAMES = ("is_gradient_checkpointing", "gradient_checkpointing_disable",
                                  "gradient_checkpointing_enable")


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, value: float, last_checkpoint: Optional[str]):
        self.step = step
        self.value = value
        self.last_checkpoint = last_checkpoint
        keep = (f"The last good checkpoint is kept: {last_checkpoint}." if last_checkpoint
                else "No checkpoint had been saved yet.")
        super().__init__(
            f"Training stopped: the loss became {value} at step {step + 1}. {keep} Usual fixes: lower "
            "learning_rate (e.g. by 10x), keep max_grad_norm at 1.0, use precision: bf16 or fp32 instead of fp16, "
            "and check the data for empty answers."
        )


class NbDPOTrainer(DPOTrainer):
    """DPOTrainer + atomic checkpoints + a non-finite loss guard."""

    _staging_root: Optional[str] = None

    def __init__(self, *args, extra_losses: Optional[dict] = None, max_context_length: Optional[int] = None,
                 **kwargs):
        # {mDPO term: weight}: terms only the packed step implements, so TRL's DPOConfig never lists them
        self.extra_losses = dict(extra_losses or {})
        # the token budget of a packed row holding several pairs (block-mask kernel; packing.trainer_hook.row_budget)
        self.max_context_length = max_context_length
        super().__init__(*args, **kwargs)

    # --- atomic checkpoints ---------------------------------------------------------------
    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is being written, the parent class writes into the staging folder.
        if self._staging_root is not None:
            return self._staging_root
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        final_root = Path(super()._get_output_dir(trial))
        step_dir = f"checkpoint-{self.state.global_step}"
        staging = final_root / f"{STAGING_PREFIX}{self.state.global_step}"
        if self.args.should_save:  # process 0, and the first process of each node without a shared disk
            remove_partial_checkpoints(final_root)  # what a killed save left (on this node's disk too)
            _remove_later_checkpoints(final_root, self.state.global_step)
            staging.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self._staging_root = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        except BaseException as exc:
            if self.args.should_save:  # never leave half a checkpoint (and its disk space) behind
                shutil.rmtree(staging, ignore_errors=True)
            storage = environment_error(exc)  # torch.save on a full disk raises RuntimeError, not OSError
            if storage is not None and storage is not exc:
                raise storage from exc
            raise
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every rank has written its files (RNG states are per rank)
        final = final_root / step_dir
        if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint).parent == staging:
            self.state.best_model_checkpoint = str(final_root / Path(self.state.best_model_checkpoint).name)
        if self.args.should_save:
            written = staging / step_dir
            state_path = written / STATE_FILE
            if state_path.is_file():  # the saved state must point at the final folder, not the staging one
                state = json.loads(state_path.read_text())
                best = state.get("best_model_checkpoint")
                if best and Path(best).parent == staging:
                    state["best_model_checkpoint"] = str(final_root / Path(best).name)
                    state_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
            _fsync_tree(written)
            if final.exists():  # a resumed run saving the same step again
                shutil.rmtree(final)
            os.replace(written, final)
            shutil.rmtree(staging, ignore_errors=True)
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(output_dir=str(final_root), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()

    # --- loading a checkpoint to resume from --------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with _checkpoint_read(resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint):
        with _checkpoint_read(checkpoint):
            return super()._load_optimizer_and_scheduler(checkpoint)

    def _load_rng_state(self, checkpoint):
        with _checkpoint_read(checkpoint):
            return super()._load_rng_state(checkpoint)

    # --- a resume from the final checkpoint -----------------------------------------------------
    def _run_epoch(self, *args, **kwargs):
        # transformers 5.2x's epoch loop trains a batch before it looks at max_steps, so a run resumed from
        # its last checkpoint (killed while the final adapter was written, or a full disk at the very end)
        # would train step max_steps + 1. Nothing is left to train: the run goes straight to its end.
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    # --- packed pairs (nbtools.packing) ---------------------------------------------------------
    def _compute_loss(self, model, inputs, return_outputs):
        # Packed batches (one [prompt, chosen, rejected] row per pair) go to the packed step, which
        # logs TRL's metric names; anything else stays on TRL's own path.
        if "segment_ids" in inputs:
            from nbtools.packing.trainer_hook import packed_compute_loss

            return packed_compute_loss(self, model, inputs, return_outputs)
        # TRL 1.16's reference pass toggles checkpointing through transformers' deprecated
        # gradient_checkpointing_* names (a FutureWarning per step in a notebook); nothing can be passed
        # instead, so those three messages are hidden around TRL's call only. The packed path uses the new names.
        with warnings.catch_warnings():
            for name in DEPRECATED_CHECKPOINTING_NAMES:
                warnings.filterwarnings("ignore", message=f"`{name}` is deprecated", category=FutureWarning)
            return super()._compute_loss(model, inputs, return_outputs)

    def create_model_card(self, *args, **kwargs):
        # TRL writes a README.md into checkpoints/ at every save; the model card belongs to export.
        return None

    # --- non-finite loss guard -------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite = torch.isfinite(loss.detach().float()).all()
        if self.accelerator.num_processes > 1:  # every rank must stop together, or the others hang
            finite = self.accelerator.reduce(finite.to(self.accelerator.device).float(), reduction="sum")
            finite = finite.item() == self.accelerator.num_processes
        else:
            finite = bool(finite)
        if not finite:
            checkpoints = complete_checkpoints(Path(super()._get_output_dir(None)))
            value = loss.detach().float().item()
            raise NonFiniteLossError(self.state.global_step, value if not math.isfinite(value) else float("nan"),
                                     str(checkpoints[-1]) if checkpoints else None)
        return loss


class CheckpointError(UserError, RuntimeError):
    """A checkpoint's file cannot be loaded (edited, damaged or cut by a copy): the message names it and the fix."""


@contextlib.contextmanager
def _checkpoint_read(checkpoint):
    """Errors while a checkpoint is read become one message naming it (a damaged file, not a bug)."""
    try:
        yield
    except (UserError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        if checkpoint is None:
            raise
        folder = Path(checkpoint)
        raise CheckpointError(f"{folder}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}) (fix: restore the "
                              f"checkpoint, or {without_checkpoint(folder)})") from exc


def _remove_later_checkpoints(checkpoint_root: Path, step: int) -> None:
    """Checkpoints beyond ``step`` belong to steps this run trains again: a node resumed from an earlier one because
    another node lacked them (nbtools.train.nodes). They go before rotation could keep them over the new ones."""
    for checkpoint in complete_checkpoints(checkpoint_root):
        if int(checkpoint.name.split("-", 1)[1]) > step:
            shutil.rmtree(checkpoint, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """Flush a checkpoint's files to disk before it is renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass
