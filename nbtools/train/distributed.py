"""Several processes: which engine trains (DDP or FSDP) and how RunConfig says it to the HF Trainer.

We build no scheduler of our own: ``distributed: ddp`` is the Trainer's default data parallel
(one full model per process, gradients all-reduced); ``distributed: fsdp`` turns on the
Trainer's own FSDP integration (accelerate's FSDP2 plugin: every decoder layer and the root
``fully_shard``-ed, weights, gradients and optimizer state split across processes). Packed
pairs run under both: the packed step runs inside the wrapper's forward
(:func:`nbtools.packing.trainer_hook.run_inside_forward`).
"""

from __future__ import annotations

from nbtools.config import ConfigError, RunConfig


def fsdp_config(cfg: RunConfig) -> dict:
    """The Trainer's ``fsdp_config`` for ``distributed: fsdp`` (keys as transformers 5 documents them)."""
    return {
        "version": 2,  # FSDP2 (fully_shard); FSDP1 is deprecated in transformers 5
        "reshard_after_forward": True,  # full shard: parameters gathered per layer, dropped after use
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # one shard unit per decoder / vision block (_no_split_modules)
        # FSDP's own activation checkpointing: the Trainer's would add an all-gather in the backward pass
        "activation_checkpointing": bool(cfg.gradient_checkpointing),
        "state_dict_type": "FULL_STATE_DICT",  # checkpoints stay plain, loadable on one GPU
        # each machine's first process reads the weights into CPU memory, the others build the model unfilled;
        # accelerate fills every process's shards from rank 0 when it wraps the model (rank_zero_loading)
        "cpu_ram_efficient_loading": True,
    }


def rank_zero_loading(args, device_type: str) -> bool:
    """Whether the model must be loaded for accelerate's ``cpu_ram_efficient_loading`` (see
    :func:`nbtools.models.loading.load_model_and_processor`): FSDP on CUDA with that setting on, from
    ``distributed: fsdp`` (``args``, a DPOConfig) or from an accelerate FSDP config file (its
    environment). Decided as accelerate will: it fills the shards from rank 0 only then, so a model
    loaded this way under any other setting would train on unfilled weights. One process counts too:
    its model then goes to the GPU shard by shard, never whole before wrapping.
    """
    if device_type != "cuda":
        return False  # on the CPU accelerate runs DDP even with an FSDP plugin: every process needs the weights
    plugin_args = getattr(args, "fsdp_plugin_args", None)
    fsdp_on = bool(getattr(args, "fsdp", False)) or _env_true("ACCELERATE_USE_FSDP")
    if plugin_args is not None:  # distributed: fsdp; transformers also writes it to the environment
        return fsdp_on and bool(plugin_args.get("cpu_ram_efficient_loading"))
    return fsdp_on and _env_true("FSDP_CPU_RAM_EFFICIENT_LOADING")  # accelerate's plugin reads it there


def _env_true(name: str) -> bool:
    import os

    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def trainer_strategy_args(cfg: RunConfig) -> dict:
    """DPOConfig arguments that select the engine; empty for ddp (the Trainer's default)."""
    if cfg.distributed == "ddp":
        return {}
    return {
        "fsdp": True,
        "fsdp_config": fsdp_config(cfg),
        # checkpointing moves into fsdp_config (above); both on is a redundant all-gather per layer
        "activation_checkpointing": False,
        "activation_checkpointing_kwargs": None,
    }


def check_strategy(cfg: RunConfig, device_type: str) -> None:
    """Refuse FSDP where accelerate would not run it (on the CPU it silently falls back to DDP)."""
    if cfg.distributed == "fsdp" and device_type != "cuda":
        raise ConfigError("distributed", "fsdp needs CUDA GPUs: on the CPU accelerate does not run its FSDP plugin "
                          "(each process would silently keep a full copy)", "set distributed: ddp")


def adapter_state_dict(trainer, cfg: RunConfig):
    """The full adapter state dict to save, gathered from the shards (FSDP); None under DDP / one process.

    FSDP is recognised from the trainer too, so a run launched with ``configs/accelerate_fsdp.yaml``
    saves a whole adapter even when its YAML kept ``distributed: ddp``. Every process must call this
    (the gather is a collective); only the main process saves.
    """
    if cfg.distributed != "fsdp" and not getattr(trainer, "is_fsdp_enabled", False):
        return None
    return trainer.accelerator.get_state_dict(trainer.model)


# --- DeepSpeed ZeRO-3: refused until it can be tested ------------------------------------------------

def deepspeed_zero_stage(environ=None) -> int | None:
    """The ZeRO stage this process runs under, None without DeepSpeed; read as accelerate's DeepSpeedPlugin reads it.

    ``accelerate launch`` turns its config file (``distributed_type: DEEPSPEED``) into environment
    variables: ``ACCELERATE_USE_DEEPSPEED=true``, the stage in ``ACCELERATE_DEEPSPEED_ZERO_STAGE``
    (accelerate's default: 2), or a DeepSpeed JSON in ``ACCELERATE_DEEPSPEED_CONFIG_FILE`` whose
    ``zero_optimization.stage`` wins over the variable.
    """
    import json
    import os

    environ = os.environ if environ is None else environ
    if environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return None
    stage = environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    config_file = environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if config_file != "none":
        try:
            with open(config_file, encoding="utf-8") as handle:
                from_file = json.load(handle)["zero_optimization"]["stage"]
        except (OSError, ValueError, KeyError, TypeError):
            from_file = None  # unreadable: DeepSpeed itself says why
        if from_file not in (None, "auto"):
            stage = from_file
    try:
        return int(stage)
    except (TypeError, ValueError):
        return None


def check_deepspeed(cfg: RunConfig, environ=None) -> None:
    """Refuse a run under DeepSpeed ZeRO-3 before anything loads: the adapter would be saved ungathered, and no
    ZeRO-3 run has been tested (DeepSpeed is not installed on the test machines)."""
    if deepspeed_zero_stage(environ) != 3:
        return
    fix = ("launch without the DeepSpeed config (e.g. --config_file configs/accelerate_fsdp.yaml): distributed: fsdp "
           "shards the model itself" if cfg.distributed == "fsdp" else
           "launch with configs/accelerate_ddp.yaml (a full model per GPU), or set distributed: fsdp to shard the "
           "model (its adapter is gathered when saved)")
    raise ConfigError("distributed", f"the accelerate config runs DeepSpeed ZeRO-3 (here with distributed: "
                      f"{cfg.distributed}), which nbtools does not support yet: ZeRO-3 splits the LoRA weights across "
                      "the processes, the adapter save does not gather them, and no ZeRO-3 run has been tested", fix)
