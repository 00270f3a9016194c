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

def _agree_on_run_dir(cfg: RunConfig, state, runs_dir=None) -> Path:
    """Every process must use the same folder; the default name has a timestamp, so rank 0 decides.

    With output_dir empty the run gets a new folder (RunConfig.resolved_output_dir's name, under ``runs_dir``
    when given), never one that exists: a second run in the same second gets a "-2" after the name.
    """
    run_dir = cfg.resolved_output_dir()
    if not cfg.output_dir:
        run_dir = Path(runs_dir) / run_dir.name if runs_dir is not None else run_dir
        base, n = run_dir, 1
        while run_dir.exists():
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
    run_dir = str(run_dir)
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


# --- the run: train() and its steps, in the order they happen ---------------------------------------

@dataclass
class _Run:
    """What train()'s steps decided so far, handed from one step to the next."""

    cfg: RunConfig
    state: Any  # accelerate's PartialState: this process among the run's processes
    precision: str
    device_type: str
    attention: Any  # the attention kernel the policy loads with, and why (policy_attention)
    monitor: Any  # nbtools.live.LiveMonitor
    t_start: float
    plan: Any = None  # the run folder's ResumePlan, as rank 0 checked it
    data: Any = None  # the validated pairs (prepare_data)
    folder: Optional[RunFolder] = None
    resume_from: Optional[Path] = None  # the checkpoint every process resumes from
    previous: dict = field(default_factory=dict)  # run.json of the run being resumed
    own_disk: bool = False  # this node keeps its own checkpoints (nbtools.train.nodes)
    callback: Optional[RunCallback] = None
    timings: dict = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.state.is_main_process


def train(config: Union[RunConfig, str, os.PathLike, dict], *, resume: bool = False, live: Any = None,
          runs_dir: Union[str, os.PathLike, None] = None) -> RunResult:
    """Train a LoRA adapter with DPO as ``config`` says; write the run folder; return the result.

    ``config``: a RunConfig, a dict, a YAML path, or a run folder (to resume it).
    ``resume``: continue from the last complete checkpoint in ``output_dir`` (after a crash,
    a SIGKILL or a stopped kernel); starts fresh if there is none yet.
    ``live``: None = figure + bar in notebooks, log lines elsewhere; False = quiet;
    "notebook"/"headless", or a :class:`nbtools.live.LiveMonitor`.
    ``runs_dir``: where a run whose output_dir is empty gets its new folder (default: runs/ in the working
    folder); a resume with output_dir empty continues the newest run there. The notebooks pass theirs.
    """
    from nbtools.train.distributed import adapter_state_dict

    run = _settle(config, resume, live, runs_dir)
    _check_folder(run, resume, runs_dir)
    _prepare(run)
    run.folder = RunFolder(run.plan, main=run.is_main)
    _begin(run, _claim(run.folder, run.cfg, run.state))
    try:
        trainer, processor, packing = _build_trainer(run)
        _precompute_reference(run, trainer, processor, packing)
        t0 = time.time()
        trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
        run.timings["train_s"] = round(time.time() - t0, 2)
        if run.callback is not None:
            run.callback.finish()  # a resume with nothing left to train takes over its folder's files here
        final_metrics = _final_metrics(run, trainer)
        gathered_adapter = adapter_state_dict(trainer, run.cfg)  # fsdp: a collective, so every process takes part
        if run.is_main:
            result = _save_results(run, trainer, processor, final_metrics, gathered_adapter)
        else:
            result = RunResult(run.folder.path, "finished", final_metrics, adapter_dir=run.folder.path / "adapter")
        run.state.wait_for_everyone()
        return result
    except NonFiniteLossError as exc:
        _fail(run.folder, run.monitor, exc, "failed", str(exc), last_good_checkpoint=exc.last_checkpoint)
        raise
    except KeyboardInterrupt as exc:
        _fail(run.folder, run.monitor, exc, "interrupted",
              "stopped by the user (KeyboardInterrupt); resume with resume=True")
        raise
    except BaseException as exc:
        _fail(run.folder, run.monitor, exc, "failed")
        raise
    finally:
        if run.callback is not None:
            run.callback.close()
        run.folder.close()
        run.monitor.close()


def _settle(config, resume: bool, live: Any, runs_dir) -> _Run:
    """The config and this machine's settings, each refused before anything is read or written if it cannot work."""
    import torch
    from accelerate import PartialState

    from nbtools.live import LiveMonitor
    from nbtools.train.distributed import check_deepspeed, check_strategy

    t_start = time.time()
    cfg = resolve_config(config)
    if resume and not cfg.output_dir and runs_dir is None:
        raise RunFolderError("resume needs the run folder: set output_dir to the folder of the run to continue, "
                             "or pass that folder (or its config.yaml) to train()")
    check_deepspeed(cfg)  # ZeRO-3 is refused before accelerate sets DeepSpeed up (or fails to import it)
    on_cpu = not torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    state = PartialState(cpu=on_cpu, **({"backend": "gloo"} if on_cpu and distributed else {}))
    device_type = "cpu" if on_cpu else "cuda"
    precision = resolve_precision(cfg.precision, device_type)
    check_quantization(cfg.quantization, device_type)
    check_report_to(cfg.report_to)
    attention = policy_attention(cfg, precision, device_type)  # refuses a kernel that cannot work, before any model
    check_strategy(cfg, device_type)
    if isinstance(live, LiveMonitor):
        monitor = live
    else:
        mode = {None: None, True: None, False: "quiet"}.get(live, live) if not isinstance(live, str) else live
        monitor = LiveMonitor(mode if state.is_main_process else "quiet", title=cfg.task_display_name)
    return _Run(cfg, state, precision, device_type, attention, monitor, t_start)


def _check_folder(run: _Run, resume: bool, runs_dir) -> None:
    """Decide the run folder and check it read-only (by rank 0: other nodes may not see its disk); every rank
    stops with the same message when it cannot be used (nodes.stop_together)."""
    from nbtools.train import nodes

    if resume and not run.cfg.output_dir:
        from nbtools.runs import newest_run

        run.cfg = run.cfg.replace(output_dir=str(newest_run(runs_dir)))
    run_dir = _agree_on_run_dir(run.cfg, run.state, runs_dir)
    run.cfg = run.cfg.replace(output_dir=str(run_dir))
    run.plan, error = run_folder.ResumePlan(run_dir, resume), None
    if run.is_main:
        try:
            run.plan = run_folder.check(run_dir, run.cfg, resume)
        except UserError as exc:
            error = exc
    nodes.stop_together(run.state, error)


def _prepare(run: _Run) -> None:
    """Validate the data before any model loads; each process reads its node's copy, and the copies must agree."""
    from nbtools.models import detect_family
    from nbtools.models.loading import resolve_model_folder
    from nbtools.train import nodes

    error = None
    try:
        family = _family_of(run.cfg.model, resolve_model_folder, detect_family)
        t0 = time.time()
        run.data = prepare_data(run.cfg, family)
        run.timings["data_s"] = round(time.time() - t0, 2)
        run_folder.check_media(run.plan, run.data)  # a resume trains on the pictures the run started with, or not at all
    except UserError as exc:
        error = exc
    nodes.stop_together(run.state, error, same=nodes.data_signature(run.data) if run.data is not None else None)
    for text in run.data.messages:
        run.monitor.message(text)


def _begin(run: _Run, token: Optional[str]) -> None:
    """With the lock held: agree on the checkpoint to resume from, then run.json says "running" (rank 0)."""
    from nbtools.train import nodes

    cfg, folder, state = run.cfg, run.folder, run.state
    try:
        # which disks the nodes keep checkpoints on, and the checkpoint all of them resume from
        layout = nodes.agree_on_layout(state, folder.plan, token, nodes.sharded_checkpoints(cfg))
        if run.is_main and layout.resume_from != folder.plan.resume_from:
            folder.plan = dataclasses.replace(folder.plan, resume_from=layout.resume_from)
        run.resume_from, run.previous = layout.resume_from, folder.plan.previous  # as checked again under the lock
        run.own_disk = layout.own_disk
        previous = run.previous
        folder.begin(cfg, {
            "task_display_name": cfg.task_display_name,
            "custom_model_name": cfg.model_name,
            "model": cfg.model,
            "status": "running",
            "started_at": previous.get("started_at") or rr.utc_now(),
            "finished_at": None,
            "duration_s": None,
            "data": run.data.to_dict(),
            "metrics": {},
            "best": None,
            "diagnosis": None,
            "provenance": rr.provenance({"train_file": cfg.train_file, "validation_file": cfg.validation_file}),
            "export_path": previous.get("export_path"),
            "process": {**rr.process_info(), "world_size": state.num_processes},
            "precision": run.precision,
            "resumed_from": str(run.resume_from.relative_to(folder.path)) if run.resume_from else None,
            "resume_count": int(previous.get("resume_count", -1)) + 1 if folder.plan.resume else 0,
            "timings": {"data_s": run.timings.get("data_s", 0.0)},
            "error": None,
        })
        folder.start_heartbeat()
    except BaseException as exc:
        folder.fail(exc)
        folder.close()
        raise
    if run.is_main:
        for note in folder.take_notes() + layout.notes:
            run.monitor.message(note)
        run.monitor.message(f"run folder: {folder.path}")
    state.wait_for_everyone()


def _load_model(run: _Run):
    """(Trainer settings, model, processor, family, packing decision): the settings first, since under FSDP they
    decide how the model is loaded and transformers reads them from the environment that building them sets."""
    from nbtools.train.distributed import rank_zero_loading

    cfg = run.cfg
    args = build_dpo_config(cfg, run.folder.path, run.precision, run.data.validation is not None,
                            run.device_type == "cpu", save_on_each_node=run.own_disk)
    t0 = time.time()
    model, processor, family, peft_config = load_policy(cfg, run.precision, str(run.state.device),
                                                        rank_zero_loading(args, run.device_type))
    run.timings["model_load_s"] = round(time.time() - t0, 2)
    packing = decide_packing(cfg, model, args, run.attention.note)
    if packing["attn_implementation"] == BLOCK_MASK_ATTENTION and not packing["on"]:
        raise ConfigError("attn_implementation", f"the block-mask kernel runs packed pairs only, and "
                          f"{packing['note']}", "set attn_implementation: sdpa, or change what turns packing off")
    mdpo_terms = split_loss_types(cfg.loss_type, cfg.loss_weights)[2]
    if mdpo_terms and not packing["on"]:
        raise ConfigError("loss_type",
                          f"only the packed step implements {', '.join(mdpo_terms)}, and {packing['note']}",
                          "remove " + " and ".join(mdpo_terms) + " from loss_type, or change what turns packing off")
    if run.is_main:
        run.monitor.message(f"{packing['note']}; {packing['attention_note']}")
        run.folder.update(packing=packing)
        if "mdpo_conditional" in mdpo_terms:
            run.monitor.message(f"mdpo_conditional: each pair with images also trains as an image-contrast pair (its "
                                f"rejected_images, else a crop keeping 1-20% of each image, seeded by seed={cfg.seed})")
    return args, model, processor, family, peft_config, packing


def _build_trainer(run: _Run):
    """(trainer, processor, packing decision): the model loaded, our callbacks in and TRL's printers out."""
    cfg, data = run.cfg, run.data
    args, model, processor, family, peft_config, packing = _load_model(run)
    mdpo_terms = split_loss_types(cfg.loss_type, cfg.loss_weights)[2]
    callbacks: list = []
    if run.is_main:
        # at the first step or log row (checkpoint, optimizer and first batch loaded) it cuts a resumed run's
        # metrics back: folder.start_training
        run.callback = RunCallback(run.folder.path, run.folder, run.monitor, cfg,
                                   probe=answer_probe(cfg, data, processor, family))
        callbacks.append(run.callback)
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
    if run.is_main:
        run.monitor.message(_summary_line(cfg, data, trainer, run.precision, run.state.num_processes))
        run.folder.update(timings={key: run.timings[key] for key in ("data_s", "model_load_s") if key in run.timings})
    return trainer, processor, packing


def _precompute_reference(run: _Run, trainer, processor, packing: dict) -> None:
    """Packed ddp runs score the reference once before training (every process its share); else say why not."""
    cfg, is_main = run.cfg, run.is_main
    if not (packing["on"] and cfg.precompute_ref_log_probs):
        return
    if cfg.distributed == "ddp" and cfg.ld_alpha is None:
        # Every process computes its share of the pairs and the values are exchanged (all ranks call this).
        # Not under fsdp: the precompute runs before the Trainer shards the model.
        from nbtools.train.reference import precompute_for_run

        precomputed = precompute_for_run(trainer, cfg, processor, run.precision,
                                         progress=getattr(run.monitor, "mode", None) != "quiet")
        if precomputed is not None and is_main:
            run.monitor.message(precomputed.message())
            run.folder.update(reference_logps=precomputed.to_dict())
    elif is_main and cfg.ld_alpha is not None:
        run.monitor.message("reference log-probs: computed in each step (ld_alpha weighs each answer's tokens, and "
                            "stored reference log-probs are plain sums)")
    elif is_main:
        run.monitor.message("reference log-probs: computed in each step (distributed: fsdp shards the model only "
                            "when training starts, so there is no precompute before it)")


def _final_metrics(run: _Run, trainer) -> dict:
    """The run's final metrics: the closing evaluation (of the best checkpoint with load_best_model_at_end), or the
    last training log row without validation pairs."""
    callback = run.callback
    if run.data.validation is not None:
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
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in final_metrics.items()}


def _save_results(run: _Run, trainer, processor, final_metrics: dict, gathered_adapter) -> RunResult:
    """Rank 0: adapter, processor and plots swapped in whole, then run.json says "finished"; the result in memory."""
    from nbtools.live import save_plots

    cfg, folder, monitor = run.cfg, run.folder, run.monitor
    adapter_dir = folder.path / "adapter"
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    selected = ["default"] if "default" in getattr(unwrapped, "peft_config", {}) else None
    # each folder is written under a temporary name and swapped in whole (the old one kept until then)
    folder.save_dir("adapter", lambda staging: unwrapped.save_pretrained(
        str(staging), selected_adapters=selected, state_dict=gathered_adapter))
    folder.save_dir("processor", lambda staging: processor.save_pretrained(str(staging)))
    history = run.callback.history
    folder.save_files("plots", lambda staging: save_plots(history, staging, title=cfg.task_display_name))
    diagnosis = diagnose(history, cfg.beta)
    best = _best(trainer, history)
    # Wall time since the run first started (a resumed run includes the time before the interruption).
    duration = time.time() - (rr._parse_time(run.previous.get("started_at")) or run.t_start)
    folder.finish(duration_s=round(duration, 2),
                  metrics=final_metrics, best=best, diagnosis=diagnosis.to_dict(),
                  timings={**{k: run.timings.get(k, 0.0) for k in ("data_s", "model_load_s", "train_s")},
                           "total_s": round(time.time() - run.t_start, 2)},
                  progress={"step": trainer.state.global_step, "max_steps": trainer.state.max_steps},
                  adapter="adapter", processor="processor")
    monitor.message(f"diagnosis: {diagnosis.message}")
    if diagnosis.alarms:  # each was shown in full when it fired; run.json's diagnosis keeps them
        monitor.message("health alarms: " + "; ".join(f"{a['kind']} at step {a['step']}" for a in diagnosis.alarms))
    monitor.message(f"done in {time.time() - run.t_start:.0f} s: adapter in {adapter_dir}")
    return RunResult(folder.path, "finished", final_metrics, best, diagnosis.to_dict(), adapter_dir, history,
                     run.data.to_dict(), round(time.time() - run.t_start, 2),
                     int(run.resume_from.name.split("-")[1]) if run.resume_from else None, unwrapped)


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
