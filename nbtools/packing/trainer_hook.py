"""Glue between TRL's ``DPOTrainer`` and the packed step.

The trainer subclass overrides ``_compute_loss`` and hands packed batches (those carrying
``segment_ids``) to :func:`packed_compute_loss`; anything else stays on TRL's path.
:func:`packing_plan` decides once, before training, whether packing can run for this model
and these DPO settings, and says why not when it cannot.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from .loss import PACKED_LOSS_TYPES
from .step import packed_dpo_step
from .support import PackingSupport, packing_supported


def packing_plan(model, args) -> PackingSupport:
    """Packing on/off for this model and ``DPOConfig``, with the reason when off."""
    support = packing_supported(model)
    if not support.supported:
        return support
    loss_types = list(getattr(args, "loss_type", None) or ["sigmoid"])
    if isinstance(getattr(args, "loss_type", None), str):
        loss_types = [args.loss_type]
    unsupported = [t for t in loss_types if t not in PACKED_LOSS_TYPES]
    if unsupported or len(loss_types) != 1:
        return PackingSupport(False, f"packing is off for loss_type={loss_types}: the packed step implements one of "
                                     f"{', '.join(PACKED_LOSS_TYPES)}")
    if list(getattr(args, "loss_weights", None) or [1.0]) != [1.0]:
        return PackingSupport(False, f"packing is off with loss_weights={args.loss_weights}: the packed step uses weight 1")
    for name, default in (("f_divergence_type", "reverse_kl"), ("ld_alpha", None), ("use_weighting", False)):
        value = getattr(args, name, default)
        value = getattr(value, "value", value)
        if value != default:
            return PackingSupport(False, f"packing is off with {name}={value!r}: the packed step implements plain DPO")
    if int(getattr(args, "world_size", 1) or 1) > 1:
        return PackingSupport(False, "packing is off with several processes: the packed step calls the model's "
                                     "backbone directly, outside DistributedDataParallel's forward")
    if getattr(args, "precompute_ref_log_probs", False):
        return PackingSupport(False, "packing is off with TRL's precompute_ref_log_probs: use "
                                     "nbtools.packing.precompute_reference_logps instead")
    return support


@contextlib.contextmanager
def activation_checkpointing_off(model, checkpointing_kwargs: dict | None = None):
    """Activation checkpointing off for a no-grad pass, restored afterwards.

    Same job as TRL's ``disable_gradient_checkpointing``, through transformers 5's
    ``activation_checkpointing_*`` API: TRL's helper calls the deprecated ``gradient_checkpointing_*``
    names, which printed a FutureWarning into notebooks at every reference pass.
    """
    base = getattr(model, "module", model)  # DistributedDataParallel
    if hasattr(base, "get_base_model"):  # PeftModel: the transformers model under the adapters
        base = base.get_base_model()
    if not hasattr(base, "activation_checkpointing_disable"):
        yield
        return
    was_enabled = bool(getattr(base, "is_activation_checkpointing", False))
    if was_enabled:
        base.activation_checkpointing_disable()
    try:
        yield
    finally:
        if was_enabled:
            # re-enabled the way transformers' Trainer enables it from the args
            kwargs = dict(checkpointing_kwargs or {})
            every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None,
                                                 every_n_layers=every_n_layers, offload=offload)


def reference_context_for(trainer):
    """TRL's own choice of reference for a PEFT policy: the 'ref' adapter if loaded, else adapters disabled."""

    def context():
        stack = contextlib.ExitStack()
        args = trainer.args
        kwargs = getattr(args, "activation_checkpointing_kwargs", None) or getattr(args, "gradient_checkpointing_kwargs", None)
        stack.enter_context(activation_checkpointing_off(trainer.model, kwargs))
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if hasattr(unwrapped, "peft_config"):
            from trl.trainer.utils import use_adapter

            stack.enter_context(use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None))
        return stack

    return context


def packed_compute_loss(trainer, model, inputs: dict, return_outputs: bool = False):
    """Drop-in for ``DPOTrainer._compute_loss`` on packed batches; logs TRL's metric names."""
    mode = "train" if trainer.model.training else "eval"
    loss_type = trainer.loss_types[0] if getattr(trainer, "loss_types", None) else "sigmoid"
    with trainer.accelerator.autocast():
        result = packed_dpo_step(
            model,
            inputs,
            beta=trainer.beta,
            loss_type=loss_type,
            ref_model=trainer.ref_model,
            reference_context=reference_context_for(trainer),
        )
    for name, value in result.metrics.items():
        trainer._metrics[mode][name].append(value)
    if mode == "train":
        trainer._total_train_tokens += int(inputs["attention_mask"].sum())
    trainer._metrics[mode]["num_tokens"] = [trainer._total_train_tokens]
    if return_outputs:
        # packed rows have no per-row logits to hand to compute_metrics; set prediction_loss_only=True
        return result.loss, SimpleNamespace(logits=None)
    return result.loss
