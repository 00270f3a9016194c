"""Reference log-probs of a run's pairs, computed once before training and reused by every step.

Why: the reference model is frozen, so each pair's reference chosen/rejected log-probs are
constants. Computing them up front (same reference TRL would use: the starting "ref" adapter
if the run continues one, else the adapter disabled) removes the reference forward from every
training and evaluation step; the shared cache (nbtools.packing.ref_cache) lets resumed runs
and sweeps over the same base model and data skip even this pass. Only for packed batches:
the packed step is what reads the stored values.

Several processes: each rank takes every world_size-th pair (its share), looks it up or computes
it, and the values are exchanged with ``torch.distributed`` (all_gather_object); the first
process of each node then writes what its node's cache lacks. Every pair is computed at most
once in the whole job, and every rank's collator finds every value. All ranks key the values with
rank 0's fingerprint, so nodes whose copies of the model differ in path or file times still share them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class ReferencePrecompute:
    """What happened before training: pairs computed now, pairs found in the cache, seconds spent."""

    computed: int
    reused: int
    seconds: float
    per_process: Optional[list] = None  # [(computed, reused)] per rank, when several processes shared the work

    def to_dict(self) -> dict:
        out = {"computed": self.computed, "reused": self.reused, "seconds": round(self.seconds, 2)}
        if self.per_process is not None:
            out["per_process"] = [{"computed": c, "reused": r} for c, r in self.per_process]
        return out

    def message(self) -> str:
        shared = f" by {len(self.per_process)} processes" if self.per_process else ""
        return (f"reference log-probs: {self.computed} pair(s) computed{shared}, {self.reused} reused from the cache "
                f"in {self.seconds:.1f} s; training steps skip the reference pass")


def fingerprint_dtype(precision: str, quantization: str) -> str:
    """The number format the reference runs in (precision + how the base weights are stored)."""
    name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[precision]
    return name if quantization == "none" else f"{name}+{quantization}"


def _lazy_examples(collator, dataset, rank: int = 0, world_size: int = 1):
    """The dataset's rows (this rank's share: every world_size-th) as training examples, images opened one at a time.

    A row may give more than one example: with mdpo_conditional, its image-contrast pair follows it.
    """
    for index in range(rank, len(dataset), world_size):
        yield from collator.examples([dataset[index]])


class _ShareStore:
    """Stands in for the cache while one rank works on its share: reads the node's cache, keeps every value in memory.

    Values found in the cache are kept too, so that ranks on a node whose cache lacks them receive them.
    """

    def __init__(self, store):
        self.store = store
        self.values: dict[str, tuple[float, float]] = {}

    def get(self, key: str):
        value = self.store.get(key)
        if value is not None:
            self.values[key] = value
        return value

    def put(self, key: str, chosen: float, rejected: float) -> None:
        self.values[key] = (chosen, rejected)


def _share_values(accelerator, store, share: _ShareStore) -> None:
    """Every rank's values to every rank; each node's first process writes what its cache lacks."""
    import torch.distributed as dist

    gathered: list = [None] * accelerator.num_processes
    dist.all_gather_object(gathered, share.values)
    if accelerator.is_local_main_process:
        for values in gathered:
            keys = list(values)
            for key, found in zip(keys, store.get_many(keys)):  # one look at the shards per rank's values
                if found is None:
                    store.put(key, *values[key])
        store.flush()  # durable, and visible to other nodes sharing the folder, before any rank reads it
    accelerator.wait_for_everyone()


def precompute_for_run(trainer, cfg, processor, precision: str, store=None, collator=None,
                       progress: bool = True) -> Optional[ReferencePrecompute]:
    """Fill the cache for the trainer's train/eval pairs and make its collator attach the stored values.

    ``collator``: the run's :class:`~nbtools.train.dataset.LazyImageCollator` when the trainer holds it
    wrapped (default: ``trainer.data_collator``). Returns None (and changes nothing) when it is not packed.
    """
    from nbtools.models import local_model_folder
    from nbtools.packing import (PackedPreferenceCollator, ReferenceLogpsStore, precompute_reference_logps,
                                 reference_fingerprint)
    from nbtools.packing.trainer_hook import reference_context_for

    collator = collator if collator is not None else trainer.data_collator
    inner = getattr(collator, "inner", None)
    if not isinstance(inner, PackedPreferenceCollator):
        return None
    store = store if store is not None else ReferenceLogpsStore()
    fingerprint = reference_fingerprint(
        local_model_folder(cfg.model), processor, max_pixels=cfg.max_pixels,
        dtype=fingerprint_dtype(precision, cfg.quantization), starting_adapter=cfg.adapter_path or None,
    )
    # The reference exactly as the training step would pick it, in the step's autocast.
    step_reference = reference_context_for(trainer)

    def reference_context():
        stack = contextlib.ExitStack()
        stack.enter_context(step_reference())
        stack.enter_context(trainer.accelerator.autocast())
        return stack

    plain = PackedPreferenceCollator(processor, max_length=inner.max_length,
                                     extra_processor_kwargs=inner.extra_processor_kwargs)
    accelerator = trainer.accelerator
    world, rank = accelerator.num_processes, accelerator.process_index
    if world > 1:
        # One key for every node: a node's copy of the model may sit at another path or carry other file times,
        # which would key its values apart from rank 0's (every rank trains rank 0's weights: DDP copies them).
        from accelerate.utils import broadcast_object_list

        holder = [fingerprint]
        broadcast_object_list(holder, from_process=0)
        fingerprint = holder[0]
    t0 = time.time()
    computed = reused = 0
    splits: list[tuple[str, Any]] = [("training", trainer.train_dataset)]
    if trainer.eval_dataset is not None:
        splits.append(("validation", trainer.eval_dataset))
    share = _ShareStore(store) if world > 1 else None
    for name, dataset in splits:
        report = precompute_reference_logps(
            trainer.model, _lazy_examples(collator, dataset, rank, world), plain, share or store, fingerprint,
            batch_size=cfg.batch_size, reference_context=reference_context,
            description=f"Reference log-probs ({name})",
            # with mdpo_conditional a row gives one or two pairs: count without a total
            total=None if getattr(collator, "contrast_seed", None) is not None
            else len(range(rank, len(dataset), world)),
            progress=progress and accelerator.is_main_process,
        )
        computed += report.computed
        reused += report.reused
    per_process = None
    if share is not None:
        import torch.distributed as dist

        _share_values(accelerator, store, share)
        counts: list = [None] * world
        dist.all_gather_object(counts, (computed, reused))
        per_process = [tuple(c) for c in counts]
        computed, reused = sum(c for c, _ in per_process), sum(r for _, r in per_process)
    inner.reference_lookup = store.lookup_for(fingerprint)
    return ReferencePrecompute(computed, reused, time.time() - t0, per_process)
