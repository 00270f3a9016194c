"""Glue between TRL's ``DPOTrainer`` and the packed step.

The trainer subclass overrides ``_compute_loss`` and hands packed batches (those carrying
``segment_ids``) to :func:`packed_compute_loss`; anything else stays on TRL's path.
:func:`packing_plan` decides once, before training, whether packing can run for this model
and these DPO settings, and says why not when it cannot.

Several processes: the packed step calls the model's backbone and LM head itself, not the
model's ``forward``. :func:`run_inside_forward` runs it *inside* the forward of the
DistributedDataParallel / FSDP wrapper (the wrapped module's ``forward`` is swapped for the
step during one call), so the wrapper's hooks do what they do for any forward: DDP prepares
its gradient all-reduce (and honours ``no_sync`` under gradient accumulation), FSDP gathers
the root's sharded parameters. No gradient code of our own.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from .loss import PACKED_LOSS_TYPES, LossOptions
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
    if unsupported:  # a loss type of a later TRL
        return PackingSupport(False, f"packing is off for loss_type={loss_types}: the packed step implements "
                                     f"{', '.join(PACKED_LOSS_TYPES)} (alone or weighted together)")
    # f_divergence_type, ld_alpha and use_weighting are packed too (nbtools.packing.loss.reweighted_logps)
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


def _forward_owner(model):
    """The module whose ``forward`` the distributed wrapper calls, or None when ``model`` is not wrapped.

    DistributedDataParallel, FSDP1 and DeepSpeed's engine call ``model.module``; FSDP2's ``fully_shard``
    hooks the module itself, so its own ``forward`` is the one to swap.
    """
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.module
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # torch without distributed support
        return None
    if isinstance(model, FullyShardedDataParallel):
        return model.module
    if isinstance(model, FSDPModule):
        return model
    if type(model).__name__ == "DeepSpeedEngine":  # its forward calls .module; untested here (no DeepSpeed)
        return model.module
    return None


def run_inside_forward(model, function, *args, **kwargs):
    """``function(*args, **kwargs)``, called from inside ``model``'s forward when ``model`` is a DDP/FSDP wrapper.

    The wrapped module's ``forward`` is replaced for this one call and restored before ``function``
    runs (so nested calls of that module see its real forward again). Unwrapped models: a plain call.
    """
    owner = _forward_owner(model)
    if owner is None:
        return function(*args, **kwargs)
    had_own_forward = "forward" in owner.__dict__
    original = owner.__dict__.get("forward")

    def restore():
        if had_own_forward:
            owner.forward = original
        else:
            owner.__dict__.pop("forward", None)

    def redirected(*_ignored, **_ignored_kwargs):
        restore()
        return function(*args, **kwargs)

    owner.forward = redirected
    try:
        return model()
    finally:
        restore()


def row_budget(model, inputs: dict, max_context_length: int | None) -> int:
    """Tokens per row when consecutive pairs of a batch share rows (``packed_logps(row_budget=...)``).

    Block-mask kernel: up to ``max_context_length`` (its cost follows the tiles pairs fill, not the row's
    square). Dense-mask kernels (sdpa, eager): the batch's own width, so no row and no (W, W) mask
    grows beyond the one-pair-per-row batch; the merged batch only has fewer rows.
    """
    from .logps import unwrap_model
    from .support import BLOCK_MASK_ATTENTION

    width = int(inputs["segment_ids"].shape[1])
    if unwrap_model(model).config._attn_implementation == BLOCK_MASK_ATTENTION and max_context_length:
        return max(width, int(max_context_length))
    return width


def metrics_reducer(accelerator):
    """Sum over processes (None on one process: nothing to add)."""
    if accelerator.num_processes <= 1:
        return None
    return lambda tensor: accelerator.reduce(tensor, reduction="sum")


def trainer_loss_options(trainer) -> LossOptions:
    """The loss settings TRL's ``DPOTrainer`` computes with: its own attributes, where ``__init__`` copied them."""
    args = trainer.args
    values = {name: getattr(trainer, name, getattr(args, name, None))
              for name in ("label_smoothing", "f_divergence_type", "f_alpha_divergence_coef", "ld_alpha",
                           "use_weighting")}
    values["discopop_tau"] = getattr(args, "discopop_tau", LossOptions.discopop_tau)  # TRL reads it from args
    return LossOptions.of({k: v for k, v in values.items() if v is not None or k == "ld_alpha"})


def packed_compute_loss(trainer, model, inputs: dict, return_outputs: bool = False):
    """Drop-in for ``DPOTrainer._compute_loss`` on packed batches; logs TRL's metric names.

    ``model`` is what the Trainer passes: the DDP/FSDP-wrapped model when several processes train.
    Metrics cover the global batch (summed over processes in one all-reduce, read in one transfer).
    """
    mode = "train" if trainer.model.training else "eval"
    loss_types = list(getattr(trainer, "loss_types", None) or ["sigmoid"])
    loss_weights = getattr(trainer, "loss_weights", None)
    extra = dict(getattr(trainer, "extra_losses", None) or {})  # mDPO terms, which TRL's DPOConfig never sees
    if extra:
        loss_weights = list(loss_weights or [1.0] * len(loss_types)) + list(extra.values())
        loss_types = loss_types + list(extra)

    budget = row_budget(model, inputs, getattr(trainer, "max_context_length", None))

    def step():
        with trainer.accelerator.autocast():
            return packed_dpo_step(
                model,
                inputs,
                beta=trainer.beta,
                loss_type=loss_types,
                loss_weights=loss_weights,
                ref_model=trainer.ref_model,
                reference_context=reference_context_for(trainer),
                reduce_metrics=metrics_reducer(trainer.accelerator),
                row_budget=budget,
                loss_options=trainer_loss_options(trainer),
            )

    result = run_inside_forward(model, step)
    for name, value in result.metrics.items():
        trainer._metrics[mode][name].append(value)
    if mode == "train":
        trainer._total_train_tokens += result.attention_tokens
    trainer._metrics[mode]["num_tokens"] = [trainer._total_train_tokens]
    if return_outputs:
        # packed rows have no per-row logits to hand to compute_metrics; set prediction_loss_only=True
        return result.loss, SimpleNamespace(logits=None)
    return result.loss
