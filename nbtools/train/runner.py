"""``train(config)``: one DPO run of a VLM with LoRA, from config to a complete run folder.

Order of work, chosen so mistakes surface before anything expensive happens:
config checks -> data validation (may stop with the list of problems) -> run folder ->
model + LoRA -> TRL training (live metrics, atomic checkpoints) -> final evaluation ->
adapter, processor, plots, run.json. Works the same in a notebook, under papermill, from
``python -m nbtools train`` and in each process of ``torchrun`` (rank 0 writes the folder).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from nbtools.config import ConfigError, RunConfig, split_loss_types
from nbtools.errors import UserError
from nbtools.packing.support import BLOCK_MASK_ATTENTION
from nbtools.run_folder import lifecycle as run_folder
from nbtools.run_folder import record as rr
from nbtools.train.callbacks import RunCallback
from nbtools.train.dataset import LazyImageCollator, prepare_data, records_dataset
from nbtools.video import VideoSettings
from nbtools.train.diagnose import diagnose
from nbtools.run_folder.lifecycle import RunFolder, RunFolderError, resolve_config
from nbtools.train.trainer import NbDPOTrainer, NonFiniteLossError


@dataclass
class RunResult:
    """What a finished run hands back (everything is also in the run folder)."""

    run_dir: Path
    status: str
    metrics: dict = field(default_factory=dict)  # final evaluation (or last training log without validation)
    best: Optional[dict] = None
    diagnosis: Optional[dict] = None
    adapter_dir: Optional[Path] = None
    history: list = field(default_factory=list)  # metrics.jsonl rows
    data: dict = field(default_factory=dict)
    duration_s: float = 0.0
    resumed_from_step: Optional[int] = None
    model: Any = field(default=None, repr=False)  # the trained policy (PeftModel) in memory, for a notebook's next cell

    def __repr__(self) -> str:
        acc = self.metrics.get("eval_rewards/accuracies")
        acc_text = f", eval_rewards/accuracies={acc:.3f}" if isinstance(acc, float) else ""
        return f"RunResult({self.status}, {self.run_dir}{acc_text})"

    def _repr_html_(self) -> str:  # shown in a notebook: status, folder, duration, final metrics
        from nbtools.widgets.notebook import run_result_html

        return run_result_html(self)


# --- config and run folder ------------------------------------------------------------------------

def _agree_on_run_dir(cfg: RunConfig, state) -> Path:
    """Every process must use the same folder; the default name has a timestamp, so rank 0 decides."""
    run_dir = str(cfg.resolved_output_dir())
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        holder = [run_dir]
        broadcast_object_list(holder, from_process=0)
        run_dir = holder[0]
    return Path(run_dir)


def resolve_precision(precision: str, device_type: str) -> str:
    """'bf16' | 'fp16' | 'fp32' for this machine; a clear error when the choice cannot work here."""
    import torch

    on_gpu = device_type == "cuda"
    bf16_ok = on_gpu and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return ("bf16" if bf16_ok else "fp16") if on_gpu else "fp32"
    if precision == "fp16" and not on_gpu:
        raise ConfigError("precision", "fp16 training needs a CUDA GPU; this run is on the CPU",
                          "set precision: auto (fp32 on CPU) or fp32")
    if precision == "bf16" and on_gpu and not bf16_ok:
        raise ConfigError("precision", f"this GPU ({torch.cuda.get_device_name(0)}) has no bf16 support",
                          "set precision: fp16 or auto")
    return precision


def check_report_to(report_to: str) -> None:
    """The metrics backend must be installed before a run folder is made (else a "failed" folder is left)."""
    import importlib.util

    needed = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}.get(report_to, ())
    if needed and not any(importlib.util.find_spec(name) is not None for name in needed):
        raise ConfigError("report_to", f"{report_to} needs the {needed[0]} package, which is not installed",
                          f"pip install {needed[0]}, or set report_to: none")


def _claim(folder: RunFolder, cfg: RunConfig, state) -> Optional[str]:
    """Rank 0 takes the folder's lock; every rank learns whether it was refused (and stops with the same message).

    Returns the lock's token (every rank gets it: a node that reads another token there has its own disk).
    """
    error, original = None, None
    if state.is_main_process:
        try:
            folder.claim(cfg)
        except RunFolderError as exc:
            error, original = str(exc), exc
    token = folder.lock.token if state.is_main_process else None
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        holder = [error, token]
        broadcast_object_list(holder, from_process=0)
        error, token = holder
    if original is not None:
        raise original
    if error is not None:
        raise RunFolderError(error)
    return token


def check_quantization(quantization: str, device_type: str) -> None:
    if quantization == "none":
        return
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quantization", f"{quantization} loading needs the bitsandbytes package, which is not "
                          "installed", "pip install bitsandbytes (on a CUDA machine), or set quantization: none")
    if device_type != "cuda":
        raise ConfigError("quantization", f"{quantization} loading needs a CUDA GPU; this run is on the CPU",
                          "set quantization: none")


# --- model ---------------------------------------------------------------------------------------

def _dtype_for(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def packing_expected(cfg: RunConfig) -> bool:
    """Whether this run's pairs will be packed, as far as the config decides it (packing_plan has the last word).

    The attention kernel is chosen before the model loads, so it follows this, not the model.
    """
    from nbtools.packing.loss import PACKED_LOSS_TYPES

    trl_loss_types = split_loss_types(cfg.loss_type, cfg.loss_weights)[0]
    return cfg.packing and all(t in PACKED_LOSS_TYPES for t in trl_loss_types)


def policy_attention(cfg: RunConfig, precision: str, device: str):
    """The attention kernel (and its note) the policy is loaded with; ConfigError when the choice cannot work here."""
    from nbtools.packing.support import resolve_attention

    return resolve_attention(cfg.attn_implementation, str(device).split(":")[0], _dtype_for(precision),
                             packing_expected(cfg))


def load_policy(cfg: RunConfig, precision: str, device: str, rank_zero_loading: bool = False):
    """(model, processor, family name, peft_config or None). With adapter_path the model is already a
    PeftModel; TRL then keeps a frozen copy of that adapter as the reference.

    ``rank_zero_loading`` (:func:`nbtools.train.distributed.rank_zero_loading`): loaded for FSDP's
    ``cpu_ram_efficient_loading``, left on the CPU, weights read by each machine's first process only
    (see :func:`nbtools.models.load_model_and_processor`); every process must call this then.
    """
    from nbtools.models import detect_family, load_model_and_processor, load_processor, resolve_model_path

    attention = policy_attention(cfg, precision, device).implementation
    if cfg.quantization == "none":
        model, processor = load_model_and_processor(cfg.model, max_pixels=cfg.max_pixels,
                                                    video=VideoSettings.from_config(cfg),
                                                    dtype=_dtype_for(precision), device=device,
                                                    attn_implementation=attention,
                                                    rank_zero_loading=rank_zero_loading)
    else:
        import torch
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

        compute = _dtype_for(precision)
        quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=compute)
                 if cfg.quantization == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
        model = AutoModelForImageTextToText.from_pretrained(resolve_model_path(cfg.model), quantization_config=quant,
                                                            dtype=compute, device_map={"": torch.device(device)},
                                                            attn_implementation=attention)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        processor = load_processor(cfg.model, max_pixels=cfg.max_pixels, video=VideoSettings.from_config(cfg))
    family = detect_family(model).name
    if cfg.adapter_path:
        from peft import PeftModel

        if not (Path(cfg.adapter_path) / "adapter_config.json").is_file():
            raise ConfigError("adapter_path", f"{cfg.adapter_path} holds no adapter_config.json",
                              "point adapter_path at a folder saved by peft (save_pretrained), e.g. a run's adapter/")
        with warnings.catch_warnings():
            _ignore_peft_checkpointing_probe()
            model = PeftModel.from_pretrained(model, cfg.adapter_path, is_trainable=True)
        return model, processor, family, None
    return model, processor, family, build_lora_config(model, cfg)


def _ignore_peft_checkpointing_probe() -> None:
    """Inside a ``warnings.catch_warnings()`` block: hide the one warning PEFT's wrapper causes.

    peft 0.21's ``PeftModel.__init__`` reads the deprecated ``model.is_gradient_checkpointing`` property
    (transformers 5 renamed it ``is_activation_checkpointing``); there is no argument to pass
    instead, and the message is about PEFT's code, not the user's. Our own code uses the new names.
    """
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def build_lora_config(model, cfg: RunConfig):
    """LoRA on the language model's projections by default (vision tower frozen): nbtools.models' rule."""
    from nbtools.models.lora import LoraTargetError, lora_config

    try:
        return lora_config(model, target_modules=cfg.target_modules, lora_rank=cfg.lora_rank,
                           lora_alpha=cfg.resolved_lora_alpha, lora_dropout=cfg.lora_dropout)
    except LoraTargetError as exc:
        raise ConfigError("target_modules", str(exc), "use 'default', 'all-linear' or names from the message") \
            from None


# --- TRL config ------------------------------------------------------------------------------------

def build_dpo_config(cfg: RunConfig, run_dir: Path, precision: str, has_validation: bool, on_cpu: bool,
                     save_on_each_node: bool = False):
    """Translate RunConfig into TRL 1.16's DPOConfig (names differ; some TRL defaults are wrong for us).

    ``save_on_each_node``: this process's node does not see rank 0's disk, so its first process writes the
    checkpoints there too (nbtools.train.nodes).
    """
    from trl import DPOConfig

    report_to = [] if cfg.report_to == "none" else [cfg.report_to]
    if cfg.report_to == "tensorboard":
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / "tensorboard"))
    from nbtools.train.distributed import trainer_strategy_args

    load_best = bool(cfg.load_best_model_at_end and has_validation)
    # TRL gets only its own loss types (and their weights); the mDPO terms go to NbDPOTrainer(extra_losses=...)
    trl_loss_types, trl_loss_weights, _ = split_loss_types(cfg.loss_type, cfg.loss_weights)
    settings = dict(
        output_dir=str(run_dir / "checkpoints"),
        run_name=cfg.task_display_name,
        seed=cfg.seed,
        data_seed=cfg.seed,
        num_train_epochs=cfg.epoch,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        max_grad_norm=cfg.max_grad_norm,
        bf16=precision == "bf16",  # TRL turns bf16 on by default: must be off on CPU / fp32
        fp16=precision == "fp16",
        use_cpu=on_cpu,
        ddp_backend="gloo" if on_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,  # step 1 shows the ln 2 starting point
        eval_strategy="steps" if has_validation else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_on_each_node=save_on_each_node,
        save_total_limit=cfg.save_total_limit or None,
        load_best_model_at_end=load_best,
        metric_for_best_model="eval_loss" if has_validation else None,
        greater_is_better=False if has_validation else None,
        report_to=report_to,
        dataloader_num_workers=cfg.num_workers,
        remove_unused_columns=False,  # our rows are records; the collator turns them into model inputs
        prediction_loss_only=True,  # evaluation needs the DPO metrics, not logits (saves a forward pass)
        disable_tqdm=True,  # our own progress bar (nbtools.live) replaces the trainer's
        # Kept pairs all fit max_context_length (longer ones were dropped), so TRL never truncates:
        # a cut can never fall inside image tokens.
        max_length=None,
        beta=cfg.beta,
        loss_type=trl_loss_types,
        loss_weights=trl_loss_weights,
        label_smoothing=cfg.label_smoothing,
        discopop_tau=cfg.discopop_tau,
        f_divergence_type=cfg.f_divergence_type,
        f_alpha_divergence_coef=cfg.f_alpha_divergence_coef,
        ld_alpha=cfg.ld_alpha,
        use_weighting=cfg.use_weighting,
    )
    settings.update(trainer_strategy_args(cfg))  # distributed: fsdp -> the Trainer's FSDP settings
    return DPOConfig(**settings)


# --- the run ---------------------------------------------------------------------------------------

def train(config: Union[RunConfig, str, os.PathLike, dict], *, resume: bool = False, live: Any = None) -> RunResult:
    """Train a LoRA adapter with DPO as ``config`` says; write the run folder; return the result.

    ``config``: a RunConfig, a dict, a YAML path, or a run folder (to resume it).
    ``resume``: continue from the last complete checkpoint in ``output_dir`` (after a crash,
    a SIGKILL or a stopped kernel); starts fresh if there is none yet.
    ``live``: None = figure + bar in notebooks, log lines elsewhere; False = quiet;
    "notebook"/"headless", or a :class:`nbtools.live.LiveMonitor`.
    """
    import torch
    from accelerate import PartialState

    from nbtools.live import LiveMonitor, save_plots

    t_start = time.time()
    cfg = resolve_config(config)
    if resume and not cfg.output_dir:
        raise RunFolderError("resume needs the run folder: set output_dir to the folder of the run to continue, "
                             "or pass that folder (or its config.yaml) to train()")
    from nbtools.train.distributed import check_deepspeed

    check_deepspeed(cfg)  # ZeRO-3 is refused before accelerate sets DeepSpeed up (or fails to import it)
    on_cpu = not torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    state = PartialState(cpu=on_cpu, **({"backend": "gloo"} if on_cpu and distributed else {}))
    is_main = state.is_main_process
    device_type = "cpu" if on_cpu else "cuda"
    precision = resolve_precision(cfg.precision, device_type)
    check_quantization(cfg.quantization, device_type)
    check_report_to(cfg.report_to)
    attention = policy_attention(cfg, precision, device_type)  # refuses a kernel that cannot work, before any model
    from nbtools.train.distributed import adapter_state_dict, check_strategy, rank_zero_loading

    check_strategy(cfg, device_type)

    if isinstance(live, LiveMonitor):
        monitor = live
    else:
        mode = {None: None, True: None, False: "quiet"}.get(live, live) if not isinstance(live, str) else live
        monitor = LiveMonitor(mode if is_main else "quiet", title=cfg.task_display_name)

    run_dir = _agree_on_run_dir(cfg, state)
    cfg = cfg.replace(output_dir=str(run_dir))
    # Read-only, by rank 0 (other nodes may not see its disk): refuses an unusable folder or an incompatible resume
    # before anything is written; every rank stops with it (nodes.stop_together).
    from nbtools.train import nodes

    plan, error = run_folder.ResumePlan(run_dir, resume), None
    if is_main:
        try:
            plan = run_folder.check(run_dir, cfg, resume)
        except UserError as exc:
            error = exc
    nodes.stop_together(state, error)

    # Data first: a problem in the data stops the run before any model is loaded. Each process validates the
    # copy its node has (no shared disk assumed); the copies must give the same pairs.
    from nbtools.models import detect_family
    from nbtools.models.loading import resolve_model_folder

    data, error, prep_s = None, None, 0.0
    try:
        family = _family_of(cfg.model, resolve_model_folder, detect_family)
        t0 = time.time()
        data = prepare_data(cfg, family)
        prep_s = time.time() - t0
        run_folder.check_media(plan, data)  # a resume trains on the pictures the run started with, or not at all
    except UserError as exc:
        error = exc
    nodes.stop_together(state, error, same=nodes.data_signature(data) if data is not None else None)
    for text in data.messages:
        monitor.message(text)

    history: list[dict] = []
    callback = None
    trainer = None
    folder = RunFolder(plan, main=is_main)
    token = _claim(folder, cfg, state)  # the lock: a second run into this folder stops here
    try:
        # which disks the nodes keep checkpoints on, and the checkpoint all of them resume from
        layout = nodes.agree_on_layout(state, folder.plan, token, nodes.sharded_checkpoints(cfg))
        if is_main and layout.resume_from != folder.plan.resume_from:
            folder.plan = dataclasses.replace(folder.plan, resume_from=layout.resume_from)
        resume_from, previous = layout.resume_from, folder.plan.previous  # as checked again under the lock
        folder.begin(cfg, {
            "task_display_name": cfg.task_display_name,
            "custom_model_name": cfg.model_name,
            "model": cfg.model,
            "status": "running",
            "started_at": previous.get("started_at") or rr.utc_now(),
            "finished_at": None,
            "duration_s": None,
            "data": data.to_dict(),
            "metrics": {},
            "best": None,
            "diagnosis": None,
            "provenance": rr.provenance({"train_file": cfg.train_file, "validation_file": cfg.validation_file}),
            "export_path": previous.get("export_path"),
            "process": {**rr.process_info(), "world_size": state.num_processes},
            "precision": precision,
            "resumed_from": str(resume_from.relative_to(run_dir)) if resume_from else None,
            "resume_count": int(previous.get("resume_count", -1)) + 1 if resume else 0,
            "timings": {"data_s": round(prep_s, 2)},
            "error": None,
        })
        folder.start_heartbeat()
    except BaseException as exc:
        folder.fail(exc)
        folder.close()
        raise
    if is_main:
        for note in folder.take_notes() + layout.notes:
            monitor.message(note)
        monitor.message(f"run folder: {run_dir}")
    state.wait_for_everyone()

    try:
        # The Trainer's settings first: under FSDP they decide how the model is loaded (rank_zero_loading), and
        # transformers reads them from the environment that building them sets.
        args = build_dpo_config(cfg, run_dir, precision, data.validation is not None, on_cpu,
                                save_on_each_node=layout.own_disk)
        t0 = time.time()
        model, processor, family, peft_config = load_policy(cfg, precision, str(state.device),
                                                            rank_zero_loading(args, device_type))
        load_s = time.time() - t0
        packing = decide_packing(cfg, model, args, attention.note)
        if packing["attn_implementation"] == BLOCK_MASK_ATTENTION and not packing["on"]:
            raise ConfigError("attn_implementation", f"the block-mask kernel runs packed pairs only, and "
                              f"{packing['note']}", "set attn_implementation: sdpa, or change what turns packing off")
        mdpo_terms = split_loss_types(cfg.loss_type, cfg.loss_weights)[2]
        if mdpo_terms and not packing["on"]:
            raise ConfigError("loss_type",
                              f"only the packed step implements {', '.join(mdpo_terms)}, and {packing['note']}",
                              "remove " + " and ".join(mdpo_terms) + " from loss_type, or change what turns packing "
                              "off")
        if is_main:
            monitor.message(f"{packing['note']}; {packing['attention_note']}")
            folder.update(packing=packing)
            if "mdpo_conditional" in mdpo_terms:
                monitor.message(f"mdpo_conditional: each pair with images also trains as an image-contrast pair (its "
                                f"rejected_images, else a crop keeping 1-20% of each image, seeded by seed={cfg.seed})")
        callbacks: list = []
        if is_main:
            # at the first step or log row (checkpoint, optimizer and first batch loaded) it cuts a resumed run's
            # metrics back: folder.start_training
            callback = RunCallback(run_dir, folder, monitor, cfg, probe=answer_probe(cfg, data, processor, family))
            callbacks.append(callback)
        if cfg.early_stopping_patience > 0 and data.validation is not None:
            from transformers import EarlyStoppingCallback

            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*EarlyStoppingCallback without load_best_model_at_end.*")
            _ignore_peft_checkpointing_probe()
            trainer = NbDPOTrainer(
                model=model,
                args=args,
                data_collator=LazyImageCollator(processor, cfg.max_pixels, family, video=VideoSettings.from_config(cfg),
                                                packed=packing["on"],
                                                contrast_seed=cfg.seed if "mdpo_conditional" in mdpo_terms else None),
                train_dataset=records_dataset(data.train),
                eval_dataset=records_dataset(data.validation) if data.validation is not None else None,
                processing_class=processor,
                peft_config=peft_config,
                callbacks=callbacks,
                extra_losses=mdpo_terms,
                max_context_length=cfg.max_context_length,
            )
        _remove_default_printers(trainer)
        if is_main:
            monitor.message(_summary_line(cfg, data, trainer, precision, state.num_processes))
            folder.update(timings={"data_s": round(prep_s, 2), "model_load_s": round(load_s, 2)})
        if packing["on"] and cfg.precompute_ref_log_probs and cfg.distributed == "ddp" and cfg.ld_alpha is None:
            # Every process computes its share of the pairs and the values are exchanged (all ranks call this).
            # Not under fsdp: the precompute runs before the Trainer shards the model.
            from nbtools.train.reference import precompute_for_run

            precomputed = precompute_for_run(trainer, cfg, processor, precision,
                                             progress=getattr(monitor, "mode", None) != "quiet")
            if precomputed is not None and is_main:
                monitor.message(precomputed.message())
                folder.update(reference_logps=precomputed.to_dict())
        elif packing["on"] and cfg.precompute_ref_log_probs and is_main and cfg.ld_alpha is not None:
            monitor.message("reference log-probs: computed in each step (ld_alpha weighs each answer's tokens, and "
                            "stored reference log-probs are plain sums)")
        elif packing["on"] and cfg.precompute_ref_log_probs and is_main:
            monitor.message("reference log-probs: computed in each step (distributed: fsdp shards the model only "
                            "when training starts, so there is no precompute before it)")

        t0 = time.time()
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        train_s = time.time() - t0
        if callback is not None:
            callback.finish()  # a resume with nothing left to train takes over its folder's files here

        # Closing evaluation (of the best checkpoint when load_best_model_at_end) = the run's final metrics.
        if data.validation is not None:
            if callback is not None:
                callback.final = True
            repeated = _eval_at_final_step(trainer)
            if repeated is None:
                final_metrics = trainer.evaluate()
            else:
                # The scheduled evaluation already scored these exact weights at this step: report it as the
                # final one (same row, marked "final") instead of a second identical pass over the pairs.
                final_metrics = repeated
                if callback is not None:
                    callback.on_log(trainer.args, trainer.state, trainer.control, logs=dict(repeated))
        else:
            final_metrics = _last_train_metrics(callback.history if callback else [])
        final_metrics = {k: (v.item() if hasattr(v, "item") else v) for k, v in final_metrics.items()}
        gathered_adapter = adapter_state_dict(trainer, cfg)  # fsdp: a collective, so every process takes part

        if is_main:
            adapter_dir = run_dir / "adapter"
            unwrapped = trainer.accelerator.unwrap_model(trainer.model)
            selected = ["default"] if "default" in getattr(unwrapped, "peft_config", {}) else None
            # each folder is written under a temporary name and swapped in whole (the old one kept until then)
            folder.save_dir("adapter", lambda staging: unwrapped.save_pretrained(
                str(staging), selected_adapters=selected, state_dict=gathered_adapter))
            folder.save_dir("processor", lambda staging: processor.save_pretrained(str(staging)))
            history = callback.history
            folder.save_files("plots", lambda staging: save_plots(history, staging, title=cfg.task_display_name))
            diagnosis = diagnose(history, cfg.beta)
            best = _best(trainer, history)
            # Wall time since the run first started (a resumed run includes the time before the interruption).
            duration = time.time() - (rr._parse_time(previous.get("started_at")) or t_start)
            folder.finish(duration_s=round(duration, 2),
                          metrics=final_metrics, best=best, diagnosis=diagnosis.to_dict(),
                          timings={"data_s": round(prep_s, 2), "model_load_s": round(load_s, 2),
                                   "train_s": round(train_s, 2), "total_s": round(time.time() - t_start, 2)},
                          progress={"step": trainer.state.global_step, "max_steps": trainer.state.max_steps},
                          adapter="adapter", processor="processor")
            monitor.message(f"diagnosis: {diagnosis.message}")
            if diagnosis.alarms:  # each was shown in full when it fired; run.json's diagnosis keeps them
                monitor.message("health alarms: " + "; ".join(f"{a['kind']} at step {a['step']}"
                                                                for a in diagnosis.alarms))
            monitor.message(f"done in {time.time() - t_start:.0f} s: adapter in {adapter_dir}")
            result = RunResult(run_dir, "finished", final_metrics, best, diagnosis.to_dict(), adapter_dir, history,
                               data.to_dict(), round(time.time() - t_start, 2),
                               int(resume_from.name.split("-")[1]) if resume_from else None, unwrapped)
        else:
            result = RunResult(run_dir, "finished", final_metrics, adapter_dir=run_dir / "adapter")
        state.wait_for_everyone()
        return result
    except NonFiniteLossError as exc:
        _fail(folder, monitor, exc, "failed", str(exc), last_good_checkpoint=exc.last_checkpoint)
        raise
    except KeyboardInterrupt as exc:
        _fail(folder, monitor, exc, "interrupted", "stopped by the user (KeyboardInterrupt); resume with resume=True")
        raise
    except BaseException as exc:
        _fail(folder, monitor, exc, "failed")
        raise
    finally:
        if callback is not None:
            callback.close()
        folder.close()
        monitor.close()


def answer_probe(cfg: RunConfig, data, processor, family: str):
    """The few validation prompts answered at each evaluation for the answer-length alarm (nbtools.train.health),
    or None: no validation pairs, health_samples 0, or fsdp (the model is sharded: generating needs every rank)."""
    if data.validation is None or cfg.health_samples <= 0 or cfg.distributed == "fsdp":
        return None
    from nbtools.train.health import AnswerLengthProbe

    return AnswerLengthProbe.for_run(cfg, data.validation, processor, family)


def decide_packing(cfg: RunConfig, model, args, attention_note: Optional[str] = None) -> dict:
    """{"on": bool, "note": why, "attn_implementation": the kernel the model was loaded with, "attention_note":
    why that kernel}: packing when asked for and verified for this model and these settings (stored in run.json)."""
    loaded = getattr(getattr(model, "config", None), "_attn_implementation", None)
    attention = {"attn_implementation": loaded, "attention_note": attention_note or f"attention: {loaded}"}
    if not cfg.packing:
        return {"on": False, "note": "packing is off (packing: false): each pair runs as two padded rows", **attention}
    from nbtools.packing.trainer_hook import packing_plan

    plan = packing_plan(model, args)
    return {"on": bool(plan.supported), "note": plan.note, **attention}


def _family_of(model_name: str, resolve_model_path, detect_family) -> str:
    from transformers import AutoConfig

    return detect_family(AutoConfig.from_pretrained(resolve_model_path(model_name))).name


def _remove_default_printers(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cls in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cls)
    try:
        from transformers.utils.notebook import NotebookProgressCallback

        trainer.remove_callback(NotebookProgressCallback)
    except ImportError:
        pass


def _summary_line(cfg: RunConfig, data, trainer, precision: str, world: int) -> str:
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    val = len(data.validation.records) if data.validation else 0
    steps = f"{cfg.max_steps} steps" if cfg.max_steps > 0 else f"{cfg.epoch:g} epoch(s)"
    return (f"{cfg.model}: training {trainable:,} of {total:,} parameters (LoRA r={cfg.lora_rank}) in {precision} on "
            f"{world} process(es); {len(data.train.records)} training / {val} validation pairs; {steps}, "
            f"{cfg.batch_size} pairs x {cfg.gradient_accumulation_steps} accumulation per device")


def _eval_at_final_step(trainer) -> Optional[dict]:
    """The metrics of the scheduled evaluation at the last step, if the weights are still the ones it scored.

    None when there was none at the final step, or when load_best_model_at_end reloaded an earlier checkpoint.
    Decided from the trainer state, which every process shares, so all ranks make the same choice.
    """
    state = trainer.state
    last = next((row for row in reversed(state.log_history) if "eval_loss" in row), None)
    if last is None or last.get("step") != state.global_step:
        return None
    if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
        if Path(state.best_model_checkpoint).name != f"checkpoint-{state.global_step}":
            return None
    return {k: v for k, v in last.items() if k != "step"}


def _last_train_metrics(history: list[dict]) -> dict:
    for row in reversed(history):
        if "loss" in row:
            return {k: v for k, v in row.items() if k not in ("step", "epoch")}
    return {}


def _best(trainer, history: list[dict]) -> Optional[dict]:
    evals = [r for r in history if r.get("eval_loss") is not None and not r.get("final")]
    if not evals:
        return None
    best_row = min(evals, key=lambda r: r["eval_loss"])
    checkpoint = trainer.state.best_model_checkpoint
    return {"step": best_row["step"], "eval_loss": best_row["eval_loss"],
            "eval_rewards/accuracies": best_row.get("eval_rewards/accuracies"),
            "checkpoint": f"checkpoints/{Path(checkpoint).name}" if checkpoint else None}


def _fail(folder: RunFolder, monitor, exc: BaseException, status: str, message: Optional[str] = None,
          **extra) -> None:
    folder.fail(exc, status, message, **extra)  # run.json + error.log; never raises
    try:
        monitor.message(message or f"{type(exc).__name__}: {exc}")
    except Exception:  # the message must never hide the original error
        pass
