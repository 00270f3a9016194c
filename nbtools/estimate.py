"""Peak GPU memory of a LoRA DPO run, before anything is loaded (tokens per epoch: ``nbtools.data.tokens.EpochTokens``).

Exact parts (parameter counts, weight bytes, LoRA parameters, optimizer state) come from the
model's config instantiated on the meta device: no weights are allocated or downloaded.
Activation memory is an approximation of what autograd keeps for a decoder layer with a
frozen base and LoRA adapters (per token: layer inputs, attention q/k/v/output, MLP
intermediates, LoRA-dropout copies); it is labelled as such in the result.

DPO doubles every sequence: TRL runs chosen and rejected as one batch of 2 x batch_size,
each with the prompt's images, and then a reference forward (adapters disabled, no grad)
while the policy's activations are still held. ``packing=True`` estimates nbtools' packed
layout instead (what training uses where verified): one row [prompt, chosen, rejected] per
pair, LM head on answer tokens only, no reference pass in the step when the reference
log-probs are precomputed.

Attention: flash_attention_2 and the block-mask kernel keep nothing quadratic in the length.
sdpa with a 4-D mask (packed rows, padded rows) keeps the boolean mask for the step and, per
layer in autograd, the float bias its memory-efficient kernel is given; eager keeps each
layer's attention probabilities (fp32 softmax and its half-precision copy). ``auto`` is
resolved as training resolves it on a CUDA GPU (``nbtools.packing.support.resolve_attention``).

Image-contrast rows (pairs with ``rejected_images``) hold a second prompt, the rejected answer's own, with its
images: the packed row is [prompt, chosen, rejected prompt, rejected] (TRL's rejected sequence starts with it).
mDPO's ``mdpo_conditional`` adds an image-contrast pair for every pair with images: another row in the step,
[prompt, chosen, corrupted prompt, chosen], or only [corrupted prompt, chosen] when the collator lays contrast
rows out lean (``lean_contrast_rows``).

Strategy: ``ddp`` (and one device) keeps a full copy of everything per device; ``fsdp``
shards weights, LoRA weights, gradients and AdamW state over ``num_devices`` and adds the
parameters FSDP gathers while it works (the root unit — embeddings, LM head — for the whole
step, and about two decoder layers at a time). Activations are per device either way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

GIB = 1024**3

BYTES_PER_DTYPE = {"bf16": 2, "fp16": 2, "fp32": 4}
# bitsandbytes: NF4 packs two weights per byte plus fp32 absmax per 64-block (double-quantised ~0.127 bit).
QUANTIZED_BYTES_PER_PARAM = {"4bit": 0.5 + 0.127 / 8, "8bit": 1.0 + 4 / 4096}
# LoRA weights are kept in fp32 by PEFT: weight + gradient + AdamW exp_avg + exp_avg_sq.
LORA_BYTES_PER_PARAM = 4
LORA_GRAD_BYTES_PER_PARAM = 4
ADAMW_BYTES_PER_PARAM = 8
TRL_LOGPROB_VOCAB_CHUNK = 32768  # TRL's fused LM head scores the vocabulary in chunks of this size
TRL_LOGPROB_TOKEN_CHUNK = 4096  # ... and at most this many tokens per tile (trl.kernels TOKEN_CHUNK_SIZE)
STRATEGIES = ("ddp", "fsdp")
# FSDP2 gathers the next layer while it computes the current one (prefetch)
FSDP_GATHERED_LAYERS = 2


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters per component of a model, counted on the meta device."""

    vision: int
    projector: int
    language_model: int
    lm_head: int
    other: int
    # Linear layers a quantizer would quantize (all but lm_head), in parameters
    linear: int

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.language_model + self.lm_head + self.other


@dataclass
class MemoryEstimate:
    """Estimated peak GPU memory of one training step, split into its parts (bytes)."""

    weights_bytes: int
    lora_params: int
    lora_weights_bytes: int
    lora_grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int  # with the chosen gradient_checkpointing setting (approximate)
    activation_bytes_with_checkpointing: int
    activation_bytes_without_checkpointing: int
    reference_pass_bytes: int  # transient working set of the reference forward (approximate)
    logits_bytes: int
    total_bytes: int
    parameters: ParameterCounts
    tokens_per_sequence: int
    image_tokens_per_image: int  # what one image costs in the prompt (Qwen: vision start/end markers included)
    sequences_per_step: int
    gpu_memory_gib: float | None
    fits: bool | None
    advice: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    packing: bool = False  # one [prompt, chosen, rejected] row per pair (nbtools' packed step)
    video_tokens_per_pair: int = 0  # tokens the pair's videos add to the prompt (0: no videos)
    strategy: str = "ddp"  # ddp (or one device): full copy per device; fsdp: sharded over num_devices
    num_devices: int = 1
    gathered_bytes: int = 0  # fsdp: parameters gathered while a unit works (root for the step + ~2 layers)
    attention_bytes: int = 0  # masks and attention matrices the kernel keeps (0 for flash / block-mask)
    attn_implementation: str = "sdpa"  # the kernel estimated for (auto resolved as on a CUDA GPU)
    second_prompt_tokens: int = 0  # image-contrast rows: the rejected answer's own prompt (0: none)
    auxiliary_rows: int = 0  # mDPO image-contrast rows per step, among sequences_per_step
    tokens_per_step: int = 0  # tokens through the model in one step (rows differ in length)
    image_markers: int = 0  # of image_tokens_per_image, the vision start/end markers (0: the family has none)

    @property
    def tokens_per_image(self) -> str:
        """What one image costs, labelled with what is counted (``images.tokens_per_image_label``)."""
        from nbtools.images import tokens_per_image_label

        return tokens_per_image_label(self.image_tokens_per_image, self.image_markers)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def rows(self) -> list[tuple[str, float]]:
        """(label, GiB) rows for display."""
        return [
            ("weights", self.weights_bytes / GIB),
            ("LoRA weights + gradients", (self.lora_weights_bytes + self.lora_grad_bytes) / GIB),
            ("optimizer state (AdamW)", self.optimizer_bytes / GIB),
            (
                "activations (" + ("with" if self.settings.get("gradient_checkpointing") else "without")
                + " gradient checkpointing)",
                self.activation_bytes / GIB,
            ),
            (f"attention masks and scores ({self.attn_implementation})", self.attention_bytes / GIB),
            ("reference pass", self.reference_pass_bytes / GIB),
            ("log-prob chunks", self.logits_bytes / GIB),
        ] + ([("gathered shards (FSDP)", self.gathered_bytes / GIB)] if self.strategy == "fsdp" else []) + [
            ("total (estimate)", self.total_gib),
        ]

    def format(self) -> str:
        lines = [f"{label:<48}{gib:>8.2f} GiB" for label, gib in self.rows()]
        if self.strategy == "fsdp":
            lines.append(f"per device, weights and optimizer state sharded over {self.num_devices} devices (FSDP)")
        layout = "packed rows [prompt, chosen, rejected]" if self.packing else "sequences"
        videos = f", {self.video_tokens_per_pair} video tokens per pair" if self.video_tokens_per_pair else ""
        if self.second_prompt_tokens:
            videos += f", a second prompt of {self.second_prompt_tokens} tokens (rejected_images)"
        if self.auxiliary_rows:
            videos += f", {self.auxiliary_rows} of the rows mDPO image-contrast pairs"
        lines.append(
            f"{self.sequences_per_step} {layout} x up to {self.tokens_per_sequence} tokens "
            f"({self.tokens_per_image}{videos}), attention {self.attn_implementation}; "
            f"without checkpointing activations would be {self.activation_bytes_without_checkpointing / GIB:.2f} GiB"
        )
        if self.gpu_memory_gib is not None:
            lines.append(f"fits in {self.gpu_memory_gib:g} GiB: {'yes' if self.fits else 'NO'}")
        lines += [f"advice: {a}" for a in self.advice]
        return "\n".join(lines)


# --------------------------------------------------------------------------- config & parameter counts


def load_config(model_config_or_name: Any):
    """A transformers config from a config object, a dict, a tiny id, a folder, a known or cached hub id."""
    from transformers import AutoConfig, PretrainedConfig

    from nbtools.models.reference_configs import reference_config

    if isinstance(model_config_or_name, PretrainedConfig):
        return model_config_or_name
    if isinstance(model_config_or_name, dict):
        raw = dict(model_config_or_name)
        return AutoConfig.for_model(raw.pop("model_type"), **raw)
    known = reference_config(str(model_config_or_name))
    if known is not None:
        return known
    from nbtools.models import resolve_model_path

    path = resolve_model_path(model_config_or_name)
    config = AutoConfig.from_pretrained(path)
    config._nbtools_min_pixels, config._nbtools_max_pixels = _processor_pixel_bounds(path)
    return config


def _processor_pixel_bounds(path: str) -> tuple[int | None, int | None]:
    """The saved image processor's (min, max) pixels (``size.shortest_edge/longest_edge``), if a folder has one."""
    from pathlib import Path

    for name in ("processor_config.json", "preprocessor_config.json"):
        file = Path(path) / name
        if file.is_file():
            data = json.loads(file.read_text())
            size = data.get("image_processor", data).get("size") or {}
            return size.get("shortest_edge"), size.get("longest_edge")
    return None, None


def _config_key(config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


@lru_cache(maxsize=16)
def _meta_model_facts(config_json: str):
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from nbtools.models import detect_family

    raw = json.loads(config_json)
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    family = detect_family(config)
    counts = {"vision": 0, "projector": 0, "language_model": 0, "lm_head": 0, "other": 0}
    seen = set()
    linear = 0
    for name, param in model.named_parameters():  # shared (tied) weights appear once
        if id(param) in seen:
            continue
        seen.add(id(param))
        counts[family.component_of(name)] += param.numel()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and family.component_of(name) != "lm_head":
            linear += module.weight.numel()
    linear_shapes = {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    return ParameterCounts(linear=linear, **counts), linear_shapes, model


def count_parameters(model_config_or_name: Any) -> ParameterCounts:
    """Parameters per component, from the config alone (meta device, nothing allocated)."""
    return _meta_model_facts(_config_key(load_config(model_config_or_name)))[0]


def lora_parameter_count(
    model_config_or_name: Any, lora_rank: int, target_modules: Any = "default", include_vision: bool = False
) -> int:
    """Exact LoRA parameters: rank x (in + out) for each targeted Linear."""
    from nbtools.models.lora import resolve_target_modules

    _, shapes, meta_model = _meta_model_facts(_config_key(load_config(model_config_or_name)))
    names = resolve_target_modules(meta_model, target_modules, include_vision=include_vision)
    return sum(lora_rank * (shapes[n][0] + shapes[n][1]) for n in names)


# --------------------------------------------------------------------------- arithmetic


def weight_bytes(counts: ParameterCounts, precision: str, quantization: str | None = None) -> int:
    """Bytes of the base weights: params x dtype size; quantized Linear layers at their packed size."""
    per = _dtype_bytes(precision)
    if quantization is None:
        return counts.total * per
    if quantization not in QUANTIZED_BYTES_PER_PARAM:
        raise ValueError(f"quantization must be None, '4bit' or '8bit', got {quantization!r}")
    quantized = counts.linear
    return int(quantized * QUANTIZED_BYTES_PER_PARAM[quantization]) + (counts.total - quantized) * per


def lora_training_bytes(lora_params: int) -> tuple[int, int, int]:
    """(weights, gradients, AdamW state) bytes of the trainable LoRA parameters (fp32)."""
    return (
        lora_params * LORA_BYTES_PER_PARAM,
        lora_params * LORA_GRAD_BYTES_PER_PARAM,
        lora_params * ADAMW_BYTES_PER_PARAM,
    )


def _dtype_bytes(precision: str) -> int:
    if precision not in BYTES_PER_DTYPE:
        raise ValueError(f"precision must be one of {', '.join(BYTES_PER_DTYPE)}, got {precision!r}")
    return BYTES_PER_DTYPE[precision]


def image_tokens_per_image(
    config, max_pixels: int | None, image_size: tuple[int, int] | None = None, min_pixels: int | None = None
) -> int:
    """LLM tokens one image costs in the prompt: Qwen families resize into max_pixels and wrap the image tokens in
    vision start/end markers (``images.prompt_image_tokens``); LLaVA uses a fixed grid.

    ``min_pixels`` defaults to the processor's own bound when the model was given by name
    (tiny models use a much lower one than the real families), else to the family default.
    """
    from nbtools.models import detect_family

    family = detect_family(config)
    if not family.dynamic_resolution:
        vision = config.vision_config
        return (vision.image_size // vision.patch_size) ** 2
    from nbtools import images

    if max_pixels is None:
        max_pixels = getattr(config, "_nbtools_max_pixels", None)
    if image_size is None:  # assume images large enough to use the whole budget (worst case)
        side = math.isqrt(max_pixels or images.geometry(family.name).max_pixels)
        image_size = (side, side)
    height, width = image_size
    if min_pixels is None:
        min_pixels = getattr(config, "_nbtools_min_pixels", None)
    return images.prompt_image_tokens(height, width, family.name, max_pixels=max_pixels, min_pixels=min_pixels)


def vision_markers(config) -> int:
    """Of what an image costs, the vision start/end markers: the Qwen families wrap the image tokens, LLaVA does not."""
    from nbtools.images import VISION_MARKERS
    from nbtools.models import detect_family

    return VISION_MARKERS if detect_family(config).dynamic_resolution else 0


def _text_dims(config) -> dict[str, int]:
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return {
        "hidden": text.hidden_size,
        "intermediate": text.intermediate_size,
        "q": heads * head_dim,
        "kv": (getattr(text, "num_key_value_heads", None) or heads) * head_dim,
        "layers": text.num_hidden_layers,
        "vocab": text.vocab_size,
    }


def layer_activation_elements(config, lora_dropout: bool = True) -> int:
    """Approximate elements autograd keeps per token for one decoder layer (frozen base + LoRA)."""
    d = _text_dims(config)
    saved = (
        4 * d["hidden"]  # two RMSNorm inputs, attention and MLP inputs
        + 4 * d["q"]  # q (pre/post norm+rope), attention output, o_proj input
        + 3 * d["kv"]  # k (pre/post), v
        + 4 * d["intermediate"]  # gate, up, act(gate), down input
    )
    if lora_dropout:  # PEFT keeps each targeted module's dropped-out input (and a mask)
        saved += 5 * d["hidden"] + d["q"] + d["intermediate"]
    return saved


def estimate_memory(
    model_config_or_name: Any, *, batch_size: int, max_context_length: int, max_pixels: int | None, lora_rank: int,
    gradient_checkpointing: bool, precision: str, quantization: str | None = None, target_modules: Any = "default",
    images_per_pair: int = 1, gpu_memory_gib: float | None = None, prompt_text_tokens: int | None = None,
    answer_tokens: int | None = None, image_size: tuple[int, int] | None = None, lora_dropout: float = 0.05,
    include_vision: bool = False, packing: bool = False, precompute_reference: bool = True, strategy: str = "ddp",
    num_devices: int = 1, video_tokens_per_pair: int = 0, attn_implementation: str = "auto",
    rejected_images_per_pair: int = 0, auxiliary_pairs: float = 0.0, lean_contrast_rows: bool | None = None,
) -> MemoryEstimate:
    """Peak memory per device of one DPO step with LoRA.

    Sequence length: prompt text + images + videos + answer when ``prompt_text_tokens``/``answer_tokens``
    are given, capped at ``max_context_length``; otherwise ``max_context_length`` (worst case).
    ``video_tokens_per_pair``: what the pair's videos cost in the prompt, counted by the validator's
    arithmetic (``TokenCounter.video_tokens``: frames at fps up to max_frames, video_max_pixels per frame).
    ``packing``: nbtools' packed layout (one row of prompt + both answers per pair; with
    ``precompute_reference`` no reference pass in the step). ``strategy``/``num_devices``: see the module text.
    ``attn_implementation``: a RunConfig choice (auto, sdpa, block-mask, flash_attention_2, eager) or a kernel name.
    ``rejected_images_per_pair``: images of the rejected answer's own prompt (image-contrast rows, ``rejected_images``;
    0: the answers share the prompt). ``auxiliary_pairs``: mDPO image-contrast pairs per pair (1 when
    ``mdpo_conditional`` is on and the pairs have images); ``lean_contrast_rows``: whether their rows hold only the
    corrupted side (None: as the installed collator lays them out).
    """
    _check_arguments(batch_size, max_context_length, lora_rank, num_devices, strategy)
    config = load_config(model_config_or_name)
    counts = count_parameters(config)
    act_bytes = _dtype_bytes(precision)
    dims = _text_dims(config)

    weights = weight_bytes(counts, precision, quantization)
    lora_params = lora_parameter_count(config, lora_rank, target_modules, include_vision)
    lora_w, lora_g, optim = lora_training_bytes(lora_params)

    img_tokens = image_tokens_per_image(config, max_pixels, image_size)
    if lean_contrast_rows is None:
        lean_contrast_rows = collator_lays_out_lean_contrast_rows()
    shape = _step_shape(batch_size, max_context_length, img_tokens, images_per_pair, rejected_images_per_pair,
                        video_tokens_per_pair, prompt_text_tokens, answer_tokens, packing, auxiliary_pairs,
                        lean_contrast_rows)
    with_ckpt, without_ckpt = _activation_bytes(config, dims, shape.tokens, act_bytes, lora_dropout > 0)
    activations = with_ckpt if gradient_checkpointing else without_ckpt
    # reference forward (no grad): one layer's temporaries at a time, plus its log-prob chunks; packed with
    # precompute_reference, the step reads stored reference log-probs instead
    reference = 0 if packing and precompute_reference else \
        shape.tokens * (3 * dims["hidden"] + 3 * dims["intermediate"]) * act_bytes
    logits = _logits_bytes(shape, dims["vocab"], batch_size, packing, lean_contrast_rows)
    kernel = estimated_attention(attn_implementation, precision, packing)
    attention = attention_bytes(config, kernel, shape.n_seq, shape.seq, act_bytes, gradient_checkpointing)

    gathered = 0
    if strategy == "fsdp" and num_devices > 1:
        gathered = _fsdp_gathered_bytes(config, counts, weights)
        weights, lora_w, lora_g, optim = (math.ceil(b / num_devices) for b in (weights, lora_w, lora_g, optim))

    total = weights + lora_w + lora_g + optim + activations + attention + reference + logits + gathered
    fits = None if gpu_memory_gib is None else total <= gpu_memory_gib * GIB * 0.92  # CUDA context & fragmentation
    settings = dict(
        batch_size=batch_size, max_context_length=max_context_length, max_pixels=max_pixels, lora_rank=lora_rank,
        gradient_checkpointing=gradient_checkpointing, precision=precision, quantization=quantization,
        target_modules=target_modules, images_per_pair=images_per_pair, packing=packing,
        precompute_reference=precompute_reference, strategy=strategy, num_devices=num_devices,
        video_tokens_per_pair=video_tokens_per_pair, attn_implementation=kernel,
        rejected_images_per_pair=rejected_images_per_pair, auxiliary_pairs=auxiliary_pairs,
        lean_contrast_rows=lean_contrast_rows,
    )
    estimate = MemoryEstimate(
        weights_bytes=weights, lora_params=lora_params, lora_weights_bytes=lora_w, lora_grad_bytes=lora_g,
        optimizer_bytes=optim, activation_bytes=activations, activation_bytes_with_checkpointing=with_ckpt,
        activation_bytes_without_checkpointing=without_ckpt, reference_pass_bytes=reference, logits_bytes=logits,
        total_bytes=total, parameters=counts, tokens_per_sequence=shape.seq, image_tokens_per_image=img_tokens,
        sequences_per_step=shape.n_seq, gpu_memory_gib=gpu_memory_gib, fits=fits, settings=settings,
        packing=packing, strategy=strategy, num_devices=num_devices, gathered_bytes=gathered,
        video_tokens_per_pair=video_tokens_per_pair, attention_bytes=attention, attn_implementation=kernel,
        second_prompt_tokens=shape.second_prompt, auxiliary_rows=shape.auxiliary_rows, tokens_per_step=shape.tokens,
        image_markers=vision_markers(config),
    )
    estimate.advice += _length_advice(images_per_pair * img_tokens, video_tokens_per_pair, max_context_length)
    if fits is False:
        estimate.advice += _advice(estimate, config, counts)
    return estimate


def _check_arguments(batch_size: int, max_context_length: int, lora_rank: int, num_devices: int, strategy: str) -> None:
    if batch_size <= 0 or max_context_length <= 0 or lora_rank <= 0 or num_devices <= 0:
        raise ValueError("batch_size, max_context_length, lora_rank and num_devices must be positive")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


@dataclass(frozen=True)
class _StepShape:
    """How one step lays out its tokens: the longest row, the rows, and the tokens of all rows together."""

    seq: int  # tokens in the longest row
    completion: int  # answer tokens
    second_prompt: int  # the rejected answer's own prompt (image-contrast rows), 0 when the answers share one
    n_seq: int  # rows per step
    tokens: int  # tokens of every row together
    auxiliary_rows: int  # mDPO contrast rows (packed only)


def _step_shape(batch_size: int, max_context_length: int, img_tokens: int, images_per_pair: int,
                rejected_images_per_pair: int, video_tokens_per_pair: int, prompt_text_tokens: int | None,
                answer_tokens: int | None, packing: bool, auxiliary_pairs: float,
                lean_contrast_rows: bool) -> _StepShape:
    """Sequence lengths from the measured token counts (capped at ``max_context_length``), else the worst case."""
    if prompt_text_tokens is not None and answer_tokens is not None:
        images = max(images_per_pair, rejected_images_per_pair)  # the longer of the two prompts
        seq = min(max_context_length,
                  prompt_text_tokens + images * img_tokens + video_tokens_per_pair + answer_tokens)
        completion = min(answer_tokens, seq)
        second_prompt = (prompt_text_tokens + rejected_images_per_pair * img_tokens + video_tokens_per_pair
                         if rejected_images_per_pair else 0)
    else:
        seq, completion = max_context_length, min(max_context_length, answer_tokens or max_context_length // 4)
        second_prompt = seq - completion if rejected_images_per_pair else 0
    prompt = seq - completion  # the (longest) prompt, images and videos included
    auxiliary_rows = math.ceil(batch_size * max(0.0, auxiliary_pairs)) if packing else 0
    if packing:  # one row per pair: the prompt and its images once, then both answers (after its own prompt)
        seq += completion + second_prompt
        n_seq = batch_size + auxiliary_rows
        # an mDPO contrast row: the chosen answer after the real and after the corrupted images, or (lean) the latter
        auxiliary_seq = prompt + completion if lean_contrast_rows else 2 * (prompt + completion)
        tokens = batch_size * seq + auxiliary_rows * auxiliary_seq
        seq = max(seq, auxiliary_seq if auxiliary_rows else 0)
    else:
        n_seq = 2 * batch_size  # chosen + rejected
        tokens = n_seq * seq
    return _StepShape(seq, completion, second_prompt, n_seq, tokens, auxiliary_rows)


def _activation_bytes(config, dims: dict, tokens: int, act_bytes: int, dropout: bool) -> tuple[int, int]:
    """(with, without) gradient checkpointing: checkpointing keeps each layer's input and recomputes one layer
    at a time during backward."""
    per_layer = layer_activation_elements(config, dropout) * act_bytes
    hidden_bytes = dims["hidden"] * act_bytes
    without_ckpt = tokens * (dims["layers"] * per_layer + 3 * hidden_bytes)
    with_ckpt = tokens * (dims["layers"] * hidden_bytes + per_layer + 3 * hidden_bytes)
    return with_ckpt, without_ckpt


def _logits_bytes(shape: _StepShape, vocab: int, batch_size: int, packing: bool, lean_contrast_rows: bool) -> int:
    """The LM head's logits, counted in fp32 twice (the tile and its gradient)."""
    if packing:  # LM head on the answer tokens only, through TRL's chunked kernel (nbtools.packing.logps): one
        # tile of at most TRL_LOGPROB_TOKEN_CHUNK answer tokens x one vocabulary chunk at a time, never the whole
        # vocabulary
        scored = (batch_size * 2 + shape.auxiliary_rows * (1 if lean_contrast_rows else 2)) * shape.completion
        return min(scored, TRL_LOGPROB_TOKEN_CHUNK) * min(vocab, TRL_LOGPROB_VOCAB_CHUNK) * 4 * 2
    return shape.n_seq * shape.completion * min(vocab, TRL_LOGPROB_VOCAB_CHUNK) * 4 * 2


def _length_advice(image_tokens: int, video_tokens: int, max_context_length: int) -> list[str]:
    """What to change when the media alone fill the context (TRL would cut image tokens)."""
    advice = []
    if image_tokens >= max_context_length:
        advice.append(f"images alone take {image_tokens} tokens, more than max_context_length={max_context_length}: "
                      "lower max_pixels or raise max_context_length (TRL would cut image tokens)")
    if video_tokens >= max_context_length:
        advice.append(f"videos alone take {video_tokens} tokens, more than max_context_length={max_context_length}: "
                      "lower video_max_pixels, max_frames or fps, or raise max_context_length")
    return advice


def collator_lays_out_lean_contrast_rows() -> bool:
    """Whether the packed collator gives an mDPO contrast row only its corrupted side (when its pair is in the batch)."""
    import dataclasses

    from nbtools.packing.layout import PackedPreferenceCollator

    lean = {f.name: f.default for f in dataclasses.fields(PackedPreferenceCollator)}.get("lean_auxiliary", False)
    return bool(lean)


def estimated_attention(choice: str, precision: str, packing: bool) -> str:
    """The kernel a CUDA training run would load for ``choice`` (a RunConfig value or a kernel name).

    Never flash_attention_2 for packed rows: training refuses that combination, or auto avoids it.
    """
    import torch

    from nbtools.packing.support import BLOCK_MASK_ATTENTION, resolve_attention

    if choice == BLOCK_MASK_ATTENTION:
        choice = "block-mask"
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    return resolve_attention(choice, "cuda", dtype, packing, block_mask=True if choice == "block-mask" else None
                             ).implementation


def attention_bytes(config, kernel: str, rows: int, seq: int, act_bytes: int, checkpointing: bool) -> int:
    """What the attention kernel keeps beyond the per-token activations (approximate; see the module text)."""
    from nbtools.packing.support import BLOCK_MASK_ATTENTION

    if kernel in ("flash_attention_2", BLOCK_MASK_ATTENTION):
        return 0
    text = config.get_text_config()
    kept_layers = 1 if checkpointing else text.num_hidden_layers  # checkpointing recomputes one layer at a time
    pairs_of_positions = rows * seq * seq
    if kernel == "eager":  # additive mask, then per layer fp32 softmax probabilities and their cast copy
        return pairs_of_positions * act_bytes + kept_layers * pairs_of_positions * text.num_attention_heads * (
            4 + act_bytes)
    # sdpa: boolean mask for the step, plus the float bias each layer's kernel saves for its backward
    return pairs_of_positions + kept_layers * pairs_of_positions * act_bytes


def _fsdp_gathered_bytes(config, counts: ParameterCounts, weights: int) -> int:
    """Parameters FSDP holds unsharded at once: the root unit (embeddings, LM head, norms) for the whole step,
    plus about two decoder layers (the one computing and the one being prefetched)."""
    dims = _text_dims(config)
    per_param = weights / max(counts.total, 1)
    embeddings = dims["vocab"] * dims["hidden"]
    root = embeddings + counts.lm_head
    layer = max(counts.language_model - embeddings, 0) / max(dims["layers"], 1)
    return int((root + FSDP_GATHERED_LAYERS * layer) * per_param)


def _advice(est: MemoryEstimate, config, counts: ParameterCounts) -> list[str]:
    """Knobs that would make the run fit, cheapest first."""
    budget = est.gpu_memory_gib * GIB * 0.92
    s = est.settings
    fixed = (est.total_bytes - est.activation_bytes - est.attention_bytes - est.reference_pass_bytes
             - est.logits_bytes)
    tips = []
    if not s["gradient_checkpointing"]:
        saved = est.activation_bytes_without_checkpointing - est.activation_bytes_with_checkpointing
        tips.append(f"turn on gradient_checkpointing (saves about {saved / GIB:.1f} GiB of activations)")
    per_pair = (est.total_bytes - fixed) / s["batch_size"]
    if fixed < budget and per_pair > 0:
        fitting = int((budget - fixed) // per_pair)
        if 1 <= fitting < s["batch_size"]:
            tips.append(
                f"lower batch_size to {fitting} and raise gradient_accumulation_steps to keep the effective batch"
            )
    if est.video_tokens_per_pair > 64:
        tips.append(
            f"lower video_max_pixels or max_frames (the videos cost {est.video_tokens_per_pair} tokens per pair; "
            "halving either about halves them)"
        )
    if s["max_pixels"] and est.image_tokens_per_image > 64:
        tips.append(
            f"lower max_pixels (now {s['max_pixels']:,} px = {est.tokens_per_image}); "
            "halving it about halves the image tokens"
        )
    if est.attn_implementation == "eager" and est.attention_bytes > 0.05 * GIB:
        tips.append(f"set attn_implementation: auto (eager keeps attention matrices: "
                    f"{est.attention_bytes / GIB:.1f} GiB)")
    tips.append(f"lower max_context_length (now {s['max_context_length']})")
    if not s.get("packing"):
        tips.append("turn on packing (one row per pair: the prompt and images go through the model once)")
    if s.get("strategy") != "fsdp":
        tips.append("with several GPUs, distributed: fsdp shards weights and optimizer state across them")
    if s["quantization"] is None:
        q4 = weight_bytes(counts, s["precision"], "4bit")
        tips.append(f"load the base model in 4-bit (QLoRA): weights {est.weights_bytes / GIB:.1f} -> {q4 / GIB:.1f} GiB")
    if fixed >= budget:
        tips.insert(0, f"the weights alone ({est.weights_bytes / GIB:.1f} GiB) do not fit: use a smaller model, "
                       "4-bit loading or a larger GPU")
    return tips
