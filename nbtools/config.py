"""The one typed run config: every knob a DPO-VLM run needs, with help, limits and YAML.

The same object is rendered by the widget form (it reads ``metadata``: ``help``, ``min``,
``max``, ``choices``, ``group``), stored as ``config.yaml`` in the run folder, filled by
papermill parameters and read by ``python -m nbtools train``. A new knob is added here only.

Turning strings into typed values and holding them to the limits is :mod:`nbtools.config_coerce`;
reading and writing the YAML file is :mod:`nbtools.config_yaml`.

Defaults are chosen for LoRA DPO on a vision-language model on one GPU; the tests override
a few (steps, learning rate) for the tiny CPU models.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

from nbtools.config_coerce import ConfigError, check_limits, coerce, plain
from nbtools.config_yaml import read_config_yaml, write_config_yaml

# The losses TRL 1.16's DPOTrainer accepts (trl/trainer/dpo_trainer.py); combined with loss_weights.
TRL_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
# mDPO's extra terms (Wang et al. 2024), ours: only the packed step implements them (nbtools.packing.mdpo),
# so TRL's DPOConfig never sees them (see split_loss_types).
MDPO_LOSS_TYPES = ("mdpo_conditional", "mdpo_anchor")
# The TRL losses the mDPO terms can be added to: all of them (the packed step implements every one).
MDPO_BASE_LOSS_TYPES = TRL_LOSS_TYPES
LOSS_TYPES = TRL_LOSS_TYPES + MDPO_LOSS_TYPES
# f-DPO's divergences (TRL's f_divergence_type), and the losses built on the chosen - rejected score difference,
# the only ones they apply to (TRL refuses the others).
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
F_DIVERGENCE_LOSS_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
# Losses that sort the batch's pairs (a WPO weight per pair would no longer belong to its pair).
SORTING_LOSS_TYPES = ("aot", "aot_unpaired")


@dataclass(frozen=True)
class LossPreset:
    """A named loss recipe: TRL loss types and weights (and label_smoothing where the recipe needs one)."""

    loss_type: tuple[str, ...]
    loss_weights: Optional[tuple[float, ...]]
    help: str  # one line: when to use it
    label_smoothing: float = 0.0  # used when the config's label_smoothing is left at 0


LOSS_PRESETS = {
    "dpo": LossPreset(("sigmoid",), None, "standard DPO: the first choice when the chosen and rejected answers "
                      "differ in what you want the model to learn"),
    "rpo": LossPreset(("sigmoid", "sft"), (1.0, 1.0), "DPO plus an SFT term on the chosen answer (RPO, the demo's "
                      "recipe): when plain DPO lets the chosen answer's own likelihood fall and outputs degrade"),
    "mpo": LossPreset(("sigmoid", "bco_pair", "sft"), (0.8, 0.2, 1.0), "InternVL's MPO (preference 0.8, BCO "
                      "quality 0.2, SFT 1.0): when the chosen answers are good on their own, e.g. multimodal "
                      "reasoning or hallucination data"),
    "ipo": LossPreset(("ipo",), None, "IPO, a squared loss that stops at a target margin instead of pushing it "
                      "without end: when DPO overfits small or near-deterministic preference data (beta is IPO's tau)"),
    "robust": LossPreset(("robust",), None, "robust DPO: when a share of the preference labels is wrong (e.g. "
                         "judged automatically); label_smoothing is that share, 0.1 unless set",
                         label_smoothing=0.1),
}
LOSS_PRESET_CHOICES = ("custom",) + tuple(LOSS_PRESETS)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
QUANTIZATIONS = ("none", "4bit", "8bit")
REPORT_TO = ("none", "tensorboard", "wandb")
TOO_LONG = ("drop", "error")
LR_SCHEDULERS = ("cosine", "linear", "constant_with_warmup")
DISTRIBUTED = ("ddp", "fsdp")
TARGET_MODULE_PRESETS = ("default", "all-linear")
# Attention kernels a run may ask for; "block-mask" names nbtools' FlexAttention kernel (nbtools.packing.support).
ATTENTION_CHOICES = ("auto", "sdpa", "block-mask", "flash_attention_2", "eager")
# The ones that take the 4-D [prompt, chosen, rejected] mask of a packed pair ("auto" picks one of them).
PACKED_ATTENTION_CHOICES = ("auto", "sdpa", "block-mask", "eager")
MAX_NAME_BYTES = 255  # longest file or folder name most filesystems allow
MAX_NAME_CHARS = 200  # run and model names: fit a folder name (with the timestamp), a table and a model card
# Bidirectional overrides and isolates: invisible, and they reorder how the rest of a line is displayed.
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def config_field(default=dataclasses.MISSING, *, help: str, group: str, default_factory=dataclasses.MISSING,
                 **limits):
    """A dataclass field with the metadata the form and the validator read (help, group, limits)."""
    metadata = {"help": help, "group": group, **limits}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_f = config_field  # short, for the long table of fields below


@dataclass
class RunConfig:
    """Everything one DPO run of a vision-language model needs (see ``RunConfig.describe()``)."""

    # --- what to train on -------------------------------------------------------------
    model: str = _f(
        "tiny-qwen3-vl-warm",
        help="Base model: a Hugging Face hub id (e.g. Qwen/Qwen3-VL-2B-Instruct), a local folder, "
        "or a built-in tiny id (tiny-qwen3-vl, tiny-qwen3-vl-warm, ...).",
        group="model",
    )
    train_file: str = _f(
        "", help="Training pairs: a JSONL (or JSON list) file, a Parquet file, glob or folder of shards, a "
        "datasets save_to_disk folder, or a Hub dataset id (owner/name, from the local cache when offline).",
        group="data", kind="path"
    )
    validation_file: Optional[str] = _f(
        None,
        help="Validation pairs (same kinds as train_file). When empty, validation_split of the training pairs "
        "is held out instead.",
        group="data", kind="path",
    )
    columns: str = _f(
        "",
        help="For Parquet/Arrow data in a schema nbtools does not recognise: which column holds each part of a "
        "pair, e.g. 'prompt=question image=img chosen=good rejected=bad' (empty: recognise the schema).",
        group="data",
    )
    validation_split: float = _f(
        0.1,
        help="Fraction of the training pairs held out for validation when no validation_file is given "
        "(0 = no validation).",
        group="data", min=0.0, max=0.5,
    )
    max_pixels: int = _f(
        512 * 512,
        help="Largest image area in pixels; bigger images are resized down (keeps aspect ratio). "
        "Fewer pixels = fewer image tokens = less memory. 262144 (512x512) is 256 image tokens on Qwen3-VL.",
        group="data", min=3136,
    )
    max_context_length: int = _f(
        2048,
        help="Longest pair (prompt + image tokens + answer) in tokens. Longer pairs are dropped or stop "
        "the run (see too_long); they are never cut inside image tokens.",
        group="data", min=32,
    )
    too_long: str = _f(
        "drop",
        help="What to do with pairs longer than max_context_length: 'drop' them (count and line numbers "
        "are reported) or stop with an 'error'.",
        group="data", choices=TOO_LONG,
    )

    # --- videos (rows with <video> tags) -----------------------------------------------
    fps: float = _f(
        2.0, help="Frames sampled per second of each video (the frame timestamps the model sees follow the "
        "video's own frame rate).", group="video", min=0.1, max=60.0, usual="1 to 4",
    )
    max_frames: int = _f(
        16, help="Most frames taken from one video; longer clips are sampled evenly over their length "
        "instead of at fps.", group="video", min=2, max=768, usual="8 to 64",
    )
    video_max_pixels: int = _f(
        128 * 128,
        help="Largest area of one video frame in pixels (each frame is resized under it, keeping aspect "
        "ratio). Videos usually need fewer pixels per frame than photos: frames x pixels is what costs memory.",
        group="video", min=3136,
    )

    # --- names and where the run goes ---------------------------------------------------
    task_display_name: str = _f(
        "dpo-run", help="Name of this run in the list of runs (also names the default run folder).", group="output"
    )
    custom_model_name: Optional[str] = _f(
        None,
        help="Name of the trained model in the list of models and in exports (default: task_display_name).",
        group="output",
    )
    output_dir: Optional[str] = _f(
        None,
        help="The run folder. Empty = runs/<task_display_name>-<UTC timestamp>, decided when the run starts.",
        group="output", kind="path",
    )
    seed: int = _f(42, help="Random seed (data order, LoRA init, validation split).", group="training", min=0)

    # --- how long and how fast ----------------------------------------------------------
    epoch: float = _f(3.0, help="Passes over the training pairs (ignored when max_steps > 0).", group="training",
                      min=0.01, max=1000.0, usual="1 to 3")
    max_steps: int = _f(0, help="Optimizer steps to run; > 0 overrides epoch. 0 = use epoch.", group="training",
                        min=0)
    batch_size: int = _f(2, help="Pairs per device per step (each pair is a chosen and a rejected answer).",
                         group="training", min=1, max=1024, usual="1 to 8 per device")
    gradient_accumulation_steps: int = _f(
        4, help="Steps whose gradients are summed before one update: effective batch = batch_size x this x devices.",
        group="training", min=1, max=1024, usual="1 to 16",
    )
    learning_rate: float = _f(5e-5, help="Peak learning rate of the LoRA weights (AdamW).", group="training",
                              min=1e-9, max=1.0, usual="1e-6 to 1e-4 with LoRA")
    warmup_ratio: float = _f(0.1, help="Fraction of the steps spent ramping the learning rate up from 0.",
                             group="training", min=0.0, max=0.9, usual="0.03 to 0.1")
    lr_scheduler_type: str = _f("cosine", help="How the learning rate decays after warmup.", group="training",
                                choices=LR_SCHEDULERS)
    max_grad_norm: float = _f(1.0, help="Gradient clipping norm (0 = no clipping).", group="training", min=0.0)
    num_workers: int = _f(
        2, help="Data loader worker processes that open and resize images while the model trains (0 = in the "
        "main process).", group="training", min=0, max=64,
    )

    # --- LoRA ------------------------------------------------------------------------------
    lora_rank: int = _f(16, help="LoRA rank r: size of the low-rank update; higher = more capacity and memory.",
                        group="lora", min=1, max=1024, usual="8 to 64")
    lora_alpha: Optional[int] = _f(
        None, help="LoRA alpha (update scale = alpha / rank). Empty = 2 x lora_rank.", group="lora", min=1
    )
    lora_dropout: float = _f(0.05, help="Dropout on the LoRA input.", group="lora", min=0.0, max=0.9, usual="0 to 0.1")
    target_modules: Union[str, list[str]] = _f(
        "default",
        help="Layers that get LoRA: 'default' (the language model's attention and MLP projections, vision "
        "tower frozen), 'all-linear', a list of module names, or a regular expression over module paths.",
        group="lora",
    )
    adapter_path: Optional[str] = _f(
        None,
        help="Start from this SFT LoRA adapter (folder). The reference model is then base + this adapter, frozen.",
        group="lora", kind="path",
    )

    # --- DPO -----------------------------------------------------------------------------
    beta: float = _f(0.1, help="DPO beta: how far the model may move from the reference; higher = stay closer.",
                     group="dpo", min=1e-4, max=10.0, usual="0.05 to 0.5")
    loss_type: list[str] = _f(
        default_factory=lambda: ["sigmoid"],
        help="DPO losses, combined with loss_weights (or pick a loss_preset): any of TRL's. 'sigmoid' is standard "
        "DPO; add 'sft' to also learn to generate the chosen answer (e.g. [sigmoid, sft]). mDPO terms (packing only): 'mdpo_conditional' "
        "makes the chosen answer likelier with the real images than with a corrupted copy (a seeded random crop, "
        "or the row's rejected_images), so the model cannot ignore the images; 'mdpo_anchor' keeps the chosen "
        "answer's reward above zero. Use them when plain DPO learns from the text alone; "
        "e.g. [sigmoid, mdpo_conditional, mdpo_anchor].",
        group="dpo", choices=LOSS_TYPES, multiple=True,
    )
    loss_weights: Optional[list[float]] = _f(
        None, help="One weight per loss_type entry (default: 1.0 each).", group="dpo", min=0.0
    )
    loss_preset: str = _f(
        "custom",
        help="A named loss recipe that sets loss_type and loss_weights (mDPO terms in loss_type are kept); custom = "
        "as loss_type and loss_weights say. "
        + " ".join(f"{name}: {preset.help}." for name, preset in LOSS_PRESETS.items()),
        group="dpo", choices=LOSS_PRESET_CHOICES,
    )
    label_smoothing: float = _f(
        0.0, help="Share of preference labels assumed wrong, for the robust, exo_pair, aot and aot_unpaired losses "
        "(robust DPO: the flip rate, e.g. 0.1; exo_pair needs it above 0, e.g. 1e-3). Below 0.5.",
        group="dpo", min=0.0, max=0.49, usual="0 to 0.2",
    )
    discopop_tau: float = _f(
        0.05, help="Temperature of the discopop loss (how sharply it switches between its logistic and "
        "exponential parts); its paper uses 0.05.", group="dpo", min=1e-4, max=10.0,
    )
    f_divergence_type: str = _f(
        "reverse_kl",
        help="Divergence that keeps the model near the reference (f-DPO): reverse_kl is standard DPO; forward_kl, "
        "js_divergence and alpha_divergence keep more of the reference's variety. Only with sigmoid, "
        "sigmoid_norm, hinge, ipo, exo_pair, robust, discopop and sft.",
        group="dpo", choices=F_DIVERGENCES,
    )
    f_alpha_divergence_coef: float = _f(
        0.5, help="Alpha of f_divergence_type: alpha_divergence (1 = reverse_kl).", group="dpo", min=0.0, max=10.0,
    )
    ld_alpha: Optional[float] = _f(
        None,
        help="LD-DPO: answer tokens past the shorter answer's length count this much (0 to 1) in the log-probs, so "
        "the model does not learn to prefer longer answers. Empty = off (1 is the same as off). The reference "
        "pass then runs in each step (stored reference log-probs are plain sums).",
        group="dpo", min=0.0, max=1.0,
    )
    use_weighting: bool = _f(
        False,
        help="WPO: weight each pair by how likely the policy itself is to produce its two answers, so pairs far "
        "from what the model would say count less. Not with aot, aot_unpaired or sft.",
        group="dpo",
    )

    # --- evaluation, checkpoints, logging ---------------------------------------------------
    eval_steps: int = _f(50, help="Evaluate on the validation pairs every N optimizer steps.", group="evaluation",
                         min=1)
    save_steps: int = _f(50, help="Save a checkpoint every N optimizer steps (a multiple of eval_steps when "
                         "load_best_model_at_end is on).", group="evaluation", min=1)
    logging_steps: int = _f(10, help="Log training metrics every N optimizer steps.", group="evaluation", min=1)
    save_total_limit: int = _f(2, help="Checkpoints kept on disk (the best one is always kept); 0 = keep all.",
                               group="evaluation", min=0)
    early_stopping_patience: int = _f(
        0, help="Stop when validation loss has not improved for this many evaluations (0 = off).",
        group="evaluation", min=0,
    )
    load_best_model_at_end: bool = _f(
        True, help="At the end, keep the adapter of the checkpoint with the lowest validation loss.",
        group="evaluation",
    )
    report_to: str = _f("none", help="Also send metrics to: none, tensorboard or wandb.", group="evaluation",
                        choices=REPORT_TO)
    health_samples: int = _f(
        4, help="Validation prompts answered (greedy) at the start and at each evaluation, to raise an alarm when "
        "answers grow much longer or shorter (0 = off; not under distributed: fsdp).", group="evaluation", min=0,
        max=64, usual="2 to 8",
    )

    # --- memory and numbers ------------------------------------------------------------------
    precision: str = _f(
        "auto",
        help="Number format: auto = bf16 on GPUs that support it, fp16 on older GPUs (e.g. T4), fp32 on CPU.",
        group="memory", choices=PRECISIONS,
    )
    quantization: str = _f(
        "none", help="Load the frozen base model in 4-bit or 8-bit (QLoRA; needs bitsandbytes and a CUDA GPU).",
        group="memory", choices=QUANTIZATIONS,
    )
    gradient_checkpointing: bool = _f(
        True, help="Recompute activations in the backward pass: much less memory, about 30% slower.",
        group="memory",
    )
    packing: bool = _f(
        True,
        help="Pack each pair into one row [prompt, chosen, rejected] so the prompt and its images go through "
        "the model once instead of twice and no padding is computed. Used when verified for the model "
        "and settings (every loss_type and loss setting; sdpa/eager/block-mask attention; also under torchrun/accelerate "
        "with DDP or FSDP); the run says when it is off and why.",
        group="memory",
    )
    precompute_ref_log_probs: bool = _f(
        True,
        help="Compute each pair's reference log-probs once before training (adapter off, no gradients) and reuse "
        "them in every step, epoch, resumed run and sweep; cached under ~/.cache/nbtools/ref_logps, keyed by "
        "everything that changes them (pair, images, rejected images, video frames and frame settings, "
        "max_pixels, model, starting adapter, tokenizer and chat template, precision). Only with packing; split across processes under ddp; not under fsdp (the "
        "reference pass then runs in each step).",
        group="memory",
    )
    distributed: str = _f(
        "ddp",
        help="With several GPUs (torchrun / accelerate launch): ddp = a full copy of the model per GPU, data split "
        "between them; fsdp = weights, gradients and optimizer state sharded across the GPUs (FSDP2, full shard, "
        "activation checkpointing from gradient_checkpointing), for models too big for one GPU. Packing works "
        "with both. One process: no effect.",
        group="memory", choices=DISTRIBUTED,
    )
    attn_implementation: str = _f(
        "auto",
        help="Attention kernel. auto = one packing can use: on a CUDA GPU the block-mask kernel (FlexAttention, "
        "memory linear in the length) where nbtools has it, else sdpa; sdpa on the CPU; with packing: false, "
        "flash_attention_2 when installed on a CUDA GPU in bf16/fp16. flash_attention_2 cannot run packed pairs "
        "(they need a 4-D mask) and block-mask needs packing and a CUDA GPU; eager keeps every attention matrix "
        "(most memory).",
        group="memory", choices=ATTENTION_CHOICES,
    )

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce(f, _hints()[f.name], getattr(self, f.name)))
        for f in dataclasses.fields(self):
            check_limits(f, getattr(self, f.name))
        self._check_combinations()

    def _check_combinations(self) -> None:
        if not self.model.strip():  # '' would load the working folder as a model and fail deep in transformers
            raise ConfigError("model", "is empty", "name the base model: a hub id such as Qwen/Qwen3-VL-2B-Instruct, "
                              "a local model folder, or a built-in tiny id such as tiny-qwen3-vl-warm")
        if isinstance(self.target_modules, str) and self.target_modules not in TARGET_MODULE_PRESETS:
            try:
                re.compile(self.target_modules)
            except re.error as exc:
                raise ConfigError("target_modules", f"{self.target_modules!r} is not a valid regular expression "
                                  f"({exc})", "use 'default', 'all-linear', a list of names or a valid regex") from None
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ConfigError("target_modules", "the list is empty", "name at least one module or use 'default'")
        if not self.loss_type:
            raise ConfigError("loss_type", "no loss given", "use [sigmoid] for standard DPO")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ConfigError(
                "loss_weights", f"{len(self.loss_weights)} weights for {len(self.loss_type)} loss types "
                f"{self.loss_type}", f"give exactly {len(self.loss_type)} weights, or leave loss_weights empty",
            )
        self._apply_loss_preset()
        self._check_mdpo_terms()
        self._check_loss_settings()
        has_validation = bool(self.validation_file) or self.validation_split > 0
        if self.early_stopping_patience > 0 and not has_validation:
            raise ConfigError("early_stopping_patience", "early stopping needs validation pairs",
                              "set validation_file or validation_split > 0, or set early_stopping_patience: 0")
        if self.load_best_model_at_end and has_validation and self.save_steps % self.eval_steps != 0:
            raise ConfigError(
                "save_steps", f"{self.save_steps} is not a multiple of eval_steps ({self.eval_steps}), so the best "
                "checkpoint may never be saved", f"set save_steps to {self.eval_steps} (or a multiple of it), "
                "or load_best_model_at_end: false",
            )
        check_attention(self.attn_implementation, self.packing)
        if self.quantization != "none" and self.precision == "fp32":
            raise ConfigError("quantization", f"{self.quantization} loading computes in 16-bit, not fp32",
                              "set precision: auto (or bf16/fp16), or quantization: none")
        if self.distributed == "fsdp" and self.quantization != "none":
            raise ConfigError("distributed", f"fsdp does not shard {self.quantization}-quantized weights here",
                              "set quantization: none with fsdp, or distributed: ddp for QLoRA")
        if not self.task_display_name.strip():
            raise ConfigError("task_display_name", "is empty", "give the run a short name, e.g. shapes-dpo")
        for name in ("task_display_name", "custom_model_name"):
            _check_name(name, getattr(self, name))
        if self.output_dir:
            for part in Path(self.output_dir).parts:
                if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                    raise ConfigError("output_dir", f"the folder name {part[:40]!r}... is "
                                      f"{len(part.encode('utf-8', 'surrogateescape'))} bytes long; filesystems allow "
                                      f"{MAX_NAME_BYTES}", "choose a shorter folder name")
                if _control_characters(part):
                    raise ConfigError("output_dir", f"the folder name {part!r} holds a control character",
                                      "choose a name without tabs, newlines or other control characters")

    def _apply_loss_preset(self) -> None:
        """loss_preset fills loss_type / loss_weights (keeping mDPO terms); a contradicting loss_type is refused."""
        if self.loss_preset == "custom":
            return
        preset = LOSS_PRESETS[self.loss_preset]
        values = preset_values(self.loss_preset, self.loss_type, self.loss_weights, self.label_smoothing)
        trl, trl_weights, _ = split_loss_types(self.loss_type, self.loss_weights)
        untouched = trl == [] or (self.loss_type == ["sigmoid"] and self.loss_weights is None)
        if not untouched:  # the losses were written out: they must be the preset's (then they stay as written)
            if not preset_matches(self.loss_preset, self.loss_type, self.loss_weights):
                wanted = list(preset.loss_weights or [1.0] * len(preset.loss_type))
                raise ConfigError(
                    "loss_preset", f"{self.loss_preset} sets loss_type {list(preset.loss_type)} with weights "
                    f"{wanted}, but loss_type is {trl} with weights {trl_weights or [1.0] * len(trl)}",
                    "leave loss_type and loss_weights at their defaults (or list only mDPO terms) with a preset, "
                    "or set loss_preset: custom",
                )
            values = {k: v for k, v in values.items() if k == "label_smoothing"}
        for name, value in values.items():
            setattr(self, name, value)

    def _check_loss_settings(self) -> None:
        """What TRL refuses (or fails on) for these loss types, said before anything loads."""
        trl = [t for t in self.loss_type if t not in MDPO_LOSS_TYPES]
        if "exo_pair" in trl and self.label_smoothing <= 0:
            raise ConfigError("label_smoothing", "the exo_pair loss needs label_smoothing above 0 (its target "
                              "distribution holds log(label_smoothing))", "set label_smoothing: 0.001 (the EXO "
                              "paper's value)")
        if self.f_divergence_type != "reverse_kl":
            other = [t for t in trl if t not in F_DIVERGENCE_LOSS_TYPES]
            if other:
                raise ConfigError("f_divergence_type", f"{self.f_divergence_type} applies only to losses built on "
                                  f"the chosen - rejected difference ({', '.join(F_DIVERGENCE_LOSS_TYPES)}), not to "
                                  f"{', '.join(other)}", "set f_divergence_type: reverse_kl, or remove "
                                  + ", ".join(other) + " from loss_type")
        if self.use_weighting:
            other = [t for t in trl if t in SORTING_LOSS_TYPES or t == "sft"]
            if other:
                why = {"aot": "aot sorts the batch's pairs", "aot_unpaired": "aot_unpaired sorts the batch's answers",
                       "sft": "sft is one value over the batch's tokens (TRL 1.16 fails on it)"}
                raise ConfigError("use_weighting", "WPO weights each pair's own loss, and these losses have none: "
                                  + "; ".join(why[t] for t in other),
                                  "set use_weighting: false, or remove " + ", ".join(other) + " from loss_type")

    def _check_mdpo_terms(self) -> None:
        """mDPO terms exist only in the packed step, and they add to a DPO loss the packed step implements."""
        terms = [t for t in self.loss_type if t in MDPO_LOSS_TYPES]
        if not terms:
            return
        repeated = sorted({t for t in terms if terms.count(t) > 1})
        if repeated:
            raise ConfigError("loss_type", f"{repeated[0]} is listed {terms.count(repeated[0])} times",
                              f"list {repeated[0]} once and set its weight in loss_weights")
        if not self.packing:
            raise ConfigError("loss_type", f"only the packed step implements {', '.join(terms)}, and packing is off",
                              "set packing: true, or remove " + " and ".join(terms) + " from loss_type")
        base = [t for t in self.loss_type if t not in MDPO_LOSS_TYPES]
        if not base:
            raise ConfigError("loss_type", f"{', '.join(terms)} must be added to a DPO loss, and none is given",
                              "add sigmoid, e.g. loss_type: [sigmoid, " + ", ".join(terms) + "], or choose a "
                              "loss_preset")

    # --- derived values ----------------------------------------------------------------------
    @property
    def resolved_lora_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank

    @property
    def model_name(self) -> str:
        """What the list of models and the exports call the trained model."""
        return self.custom_model_name or self.task_display_name

    @property
    def has_validation(self) -> bool:
        return bool(self.validation_file) or self.validation_split > 0

    def resolved_output_dir(self, now: Optional[datetime] = None) -> Path:
        """The run folder: output_dir, or runs/<task name>-<UTC timestamp> when that is empty."""
        if self.output_dir:
            return Path(self.output_dir).expanduser()
        now = now or datetime.now(timezone.utc)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.task_display_name.strip()).strip("-")[:MAX_NAME_CHARS] or "run"
        return Path("runs") / f"{slug}-{now.strftime('%Y%m%d-%H%M%S')}"

    # --- dict / YAML -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Optional[str] = None) -> "RunConfig":
        """Build from a mapping; unknown keys are an error listing the valid names (with a guess)."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError("config", f"expected a mapping of field: value, got {type(data).__name__}",
                              "write one 'name: value' per line", source)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            key = unknown[0]
            guess = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            raise ConfigError(
                str(key), f"unknown setting ({len(unknown)} unknown: {', '.join(map(str, unknown))})",
                f"{hint}valid names are: {', '.join(names)}", source,
            )
        try:
            return cls(**data)
        except ConfigError as exc:
            if source and not exc.source:
                raise ConfigError(exc.field, exc.reason, exc.fix, source) from None
            raise

    def to_yaml(self, path: Union[str, Path]) -> Path:
        """Write the config as YAML with each field's help as a comment above it."""
        return write_config_yaml(path, ((f.metadata.get("group"), f.metadata["help"], f.name,
                                         plain(getattr(self, f.name))) for f in dataclasses.fields(self)))

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "RunConfig":
        return cls.from_dict(read_config_yaml(path), source=str(Path(path)))

    def replace(self, **changes) -> "RunConfig":
        """A validated copy with some fields changed."""
        return self.from_dict({**self.to_dict(), **changes})

    # --- help --------------------------------------------------------------------------------
    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}

    @classmethod
    def field_specs(cls) -> list[dict[str, Any]]:
        """For forms: name, type, default, help, group and limits (min/max/choices/multiple/kind)."""
        specs = []
        defaults = cls()
        for f in dataclasses.fields(cls):
            spec = {"name": f.name, "type": _type_name(f), "default": plain(getattr(defaults, f.name))}
            spec.update(f.metadata)
            specs.append(spec)
        return specs

    @classmethod
    def describe(cls) -> str:
        """A readable table of every setting: name, type, default and help."""
        out = []
        for spec in cls.field_specs():
            limits = []
            if "choices" in spec:
                limits.append("one of " + "/".join(spec["choices"]))
            if "min" in spec:
                limits.append(f">= {spec['min']}")
            if "max" in spec:
                limits.append(f"<= {spec['max']}")
            extra = f" [{', '.join(limits)}]" if limits else ""
            out.append(f"{spec['name']} ({spec['type']}, default {spec['default']!r}){extra}\n    {spec['help']}")
        return "\n".join(out)


# --- helpers -------------------------------------------------------------------------------
def _control_characters(text: str) -> list[str]:
    import unicodedata

    return [ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in BIDI_CONTROLS]


def _check_name(name: str, value: Optional[str]) -> None:
    """Run and model names are shown in tables, plots, folder names and cards: plain, one line, not huge."""
    if value is None:
        return
    bad = _control_characters(value)
    if bad:
        raise ConfigError(name, f"{value!r} holds control characters ({', '.join(repr(c) for c in bad[:3])}) that "
                          "break tables and file names", "use letters, digits, spaces and punctuation only")
    if len(value) > MAX_NAME_CHARS:
        raise ConfigError(name, f"is {len(value)} characters long", f"use at most {MAX_NAME_CHARS} characters")


_HINTS = None


def _hints() -> dict:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(RunConfig)
    return _HINTS


def _type_name(f) -> str:
    hint = _hints()[f.name]
    return str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__


def check_attention(choice: str, packing: bool) -> None:
    """Refuse, before any model loads, an attention kernel the run's packing setting cannot use.

    Packing would otherwise turn itself off at model load (slower, more memory) with only a note.
    """
    if packing and choice not in PACKED_ATTENTION_CHOICES:
        raise ConfigError("attn_implementation", f"{choice} cannot run packed pairs: they need a 4-D attention "
                          "mask, which it does not take", "set attn_implementation: auto or sdpa, or packing: false")
    if not packing and choice == "block-mask":
        raise ConfigError("attn_implementation", "the block-mask kernel runs packed pairs only, and this run's pairs "
                          "are not packed", "set attn_implementation: auto or sdpa, or packing: true")


def split_loss_types(loss_types, loss_weights=None) -> tuple[list[str], Optional[list[float]], dict[str, float]]:
    """(TRL loss types, their weights or None, {mDPO term: weight}) from a combined loss_type list.

    TRL's DPOConfig must receive only its own loss types, with the weights that belong to them.
    """
    loss_types = [loss_types] if isinstance(loss_types, str) else list(loss_types)
    weights = list(loss_weights) if loss_weights else [1.0] * len(loss_types)
    if len(weights) != len(loss_types):
        raise ValueError(f"{len(loss_types)} loss types but {len(weights)} weights")
    trl = [(t, w) for t, w in zip(loss_types, weights) if t not in MDPO_LOSS_TYPES]
    mdpo = {t: w for t, w in zip(loss_types, weights) if t in MDPO_LOSS_TYPES}
    trl_weights = [w for _, w in trl] if loss_weights else None
    return [t for t, _ in trl], trl_weights, mdpo


def preset_matches(name: str, loss_type, loss_weights=None) -> bool:
    """Whether the TRL part of ``loss_type`` / ``loss_weights`` is what preset ``name`` sets (``custom``: always)."""
    if name == "custom":
        return True
    preset = LOSS_PRESETS[name]
    try:
        trl, trl_weights, _ = split_loss_types(loss_type, loss_weights)
    except ValueError:  # as many weights as loss types: checked (and reported) elsewhere
        return False
    return (trl == list(preset.loss_type)
            and list(trl_weights or [1.0] * len(trl)) == list(preset.loss_weights or [1.0] * len(trl)))


def preset_values(name: str, loss_type, loss_weights=None, label_smoothing: float = 0.0) -> dict[str, Any]:
    """The loss fields a preset gives, keeping the mDPO terms (and their weights) of ``loss_type``.

    ``{}`` for ``custom``. The form applies these when a preset is picked; the config when it is built.
    """
    if name == "custom":
        return {}
    preset = LOSS_PRESETS[name]
    _, _, mdpo = split_loss_types(loss_type, loss_weights)
    types = list(preset.loss_type) + list(mdpo)
    weights = None
    if preset.loss_weights is not None or any(w != 1.0 for w in mdpo.values()):
        weights = list(preset.loss_weights or [1.0] * len(preset.loss_type)) + list(mdpo.values())
    values: dict[str, Any] = {"loss_type": types, "loss_weights": weights}
    if preset.label_smoothing and not label_smoothing:
        values["label_smoothing"] = preset.label_smoothing
    return values


def load_config(config: Union["RunConfig", str, Path, dict]) -> RunConfig:
    """A RunConfig from a RunConfig, a YAML path or a dict (what train() and the CLI accept)."""
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return RunConfig.from_dict(config)
    return RunConfig.from_yaml(config)
