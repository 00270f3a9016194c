"""Reference log-probs of a run's pairs, computed once before training and reused by every step.

Why: the reference model is frozen, so each pair's reference chosen/rejected log-probs are
constants. Computing them up front (same reference TRL would use: the starting "ref" adapter
if the run continues one, else the adapter disabled) removes the reference forward from every
training and evaluation step; the shared cache (nbtools.packing.ref_cache) lets resumed runs
and sweeps over the same base model and data skip even this pass. Only for packed batches:
the packed step is what reads the stored values.
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

    def to_dict(self) -> dict:
        return {"computed": self.computed, "reused": self.reused, "seconds": round(self.seconds, 2)}

    def message(self) -> str:
        return (f"reference log-probs: {self.computed} pair(s) computed, {self.reused} reused from the cache "
                f"in {self.seconds:.1f} s; training steps skip the reference pass")


def fingerprint_dtype(precision: str, quantization: str) -> str:
    """The number format the reference runs in (precision + how the base weights are stored)."""
    name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[precision]
    return name if quantization == "none" else f"{name}+{quantization}"


def _lazy_examples(collator, dataset):
    """The dataset's rows as training examples, images opened one pair at a time."""
    for row in dataset:
        yield collator.examples([row])[0]


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
    t0 = time.time()
    computed = reused = 0
    splits: list[tuple[str, Any]] = [("training", trainer.train_dataset)]
    if trainer.eval_dataset is not None:
        splits.append(("validation", trainer.eval_dataset))
    for name, dataset in splits:
        report = precompute_reference_logps(
            trainer.model, _lazy_examples(collator, dataset), plain, store, fingerprint,
            batch_size=cfg.batch_size, reference_context=reference_context,
            description=f"Reference log-probs ({name})", total=len(dataset), progress=progress,
        )
        computed += report.computed
        reused += report.reused
    inner.reference_lookup = store.lookup_for(fingerprint)
    return ReferencePrecompute(computed, reused, time.time() - t0)
