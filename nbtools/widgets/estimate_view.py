"""The memory/time estimate as the form shows it: one HTML block, recomputed on change.

Memory comes from ``nbtools.estimate`` (exact parameter arithmetic, approximate activations)
for the longest pair of the training file; the length of the run is counted in optimizer
steps and tokens, which are exact, rather than guessed in seconds (the progress bar's ETA
measures it once the run starts).
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Optional

from nbtools.config import RunConfig
from nbtools.errors import UserError

if TYPE_CHECKING:
    from nbtools.data.tokens import EpochTokens

# GPU sizes users pick from (GiB); None = no fit check.
GPU_SIZES = (("no GPU check", None), ("16 GiB (T4, Colab)", 16.0), ("24 GiB (L4, A10, RTX 4090)", 24.0),
             ("40 GiB (A100 40G)", 40.0), ("80 GiB (A100/H100 80G)", 80.0), ("141 GiB (H200)", 141.0))
DEFAULT_GPU_GIB = 16.0


@dataclass(frozen=True)
class DataFacts:
    """What the estimate needs from the training file (text tokens exclude image tokens)."""

    pairs: int
    max_prompt_text_tokens: int
    max_answer_tokens: int
    max_images_per_pair: int
    largest_image: Optional[tuple[int, int]]  # (width, height) with the most pixels
    counted: str  # how tokens were counted
    epoch: EpochTokens  # the pairs' tokens per epoch, counted as 01_inspect_data counts them
    max_video_tokens_per_pair: int = 0  # what the pairs' videos cost at the config's fps/max_frames/video_max_pixels
    max_rejected_images_per_pair: int = 0  # image-contrast rows: images of the rejected answer's own prompt


FACT_PAIRS = 10_000  # the estimate reads at most the first this many pairs (a big dataset is not read whole)


@lru_cache(maxsize=8)
def _data_facts(train_file: str, mtime: float, model: str, max_pixels: Optional[int], video=None,
                columns: str = "") -> DataFacts:
    from nbtools.data import TokenCounter
    from nbtools.data.media import inspect_all
    from nbtools.data.tokens import epoch_tokens
    from nbtools.data.source import open_data
    from nbtools.models.loading import ModelNotAvailableOfflineError

    records = []
    for chunk, _problems, _rows in open_data(train_file, columns or None).chunks():
        records += chunk[:FACT_PAIRS - len(records)]
        if len(records) >= FACT_PAIRS:
            break
    if not records:
        raise UserError(f"{train_file} holds no readable pairs (fix: check it with 01_inspect_data.ipynb or "
                        "`python -m nbtools validate`)")
    try:
        counter = TokenCounter.for_model(model, max_pixels=max_pixels, video=video)
        counted = f"counted with the tokenizer of {model}"
    except (UserError, OSError) as exc:  # not cached offline, or e.g. a folder without tokenizer files: say which
        counter = TokenCounter(max_pixels=max_pixels, video=video)
        offline = isinstance(exc, ModelNotAvailableOfflineError) or isinstance(exc.__cause__,
                                                                               ModelNotAvailableOfflineError)
        counted = (f"estimated at ~4 characters per token: the tokenizer of {model} "
                   + ("is not available offline" if offline else f"could not be loaded ({exc})"))
    video_paths = [p for r in records for p in r.videos]
    media = inspect_all([p for r in records for p in (*r.images, *(r.rejected_images or ()))], videos=video_paths)
    sizes = {p: (i.width, i.height) for p, i in media.items() if not i.error and i.width}
    tokens = counter.count(records, sizes, {p: media[p] for p in video_paths})
    prompt_text = [t.prompt - t.image_tokens - t.video_tokens for t in tokens]
    largest = max(sizes.values(), key=lambda s: s[0] * s[1]) if sizes else None
    return DataFacts(len(records), max(prompt_text), max(max(t.chosen, t.rejected) for t in tokens),
                     max(len(r.images) for r in records), largest, counted, epoch_tokens(records, tokens),
                     max(t.video_tokens for t in tokens), max(len(r.rejected_images or []) for r in records))


def data_facts(config: RunConfig) -> Optional[DataFacts]:
    """Facts about ``config.train_file`` (cached per file version), or None when there is no file."""
    path = config.train_file
    if not path or not os.path.exists(path):  # a Hub id or a glob: known once validated, not estimated here
        return None
    from nbtools.video import VideoSettings

    return _data_facts(os.path.abspath(path), os.path.getmtime(path), config.model, config.max_pixels,
                       VideoSettings.from_config(config), config.columns)


@lru_cache(maxsize=8)
def _count_pairs(train_file: str, mtime: float, columns: str = "") -> int:
    from nbtools.data.source import open_data

    return open_data(train_file, columns or None).count_pairs()


def pair_count(config: RunConfig) -> Optional[int]:
    """Pairs in a local ``config.train_file`` (all of them, counted without parsing where the format allows,
    cached per file version), else None."""
    path = config.train_file
    if not path or not os.path.exists(path):
        return None
    try:
        return _count_pairs(os.path.abspath(path), os.path.getmtime(path), config.columns)
    except (UserError, OSError):  # an unreadable file: the validator (01) says why; no count here
        return None


def run_length_note(config: RunConfig, pairs: Optional[int]) -> str:
    """Which field decides the run's length (max_steps overrides epoch), and that length in steps and pairs."""
    per_step = config.batch_size * config.gradient_accumulation_steps
    if config.max_steps > 0:
        seen = config.max_steps * per_step
        epochs = f" ({seen / training_pairs(config, pairs):.1f} epochs)" if pairs else ""
        return (f"max_steps {config.max_steps} decides the length: {config.max_steps:,} steps, {seen:,} pairs "
                f"seen{epochs}; epoch is ignored (set max_steps to 0 to train by epoch)")
    if not pairs:
        return (f"epoch {config.epoch:g} decides the length (max_steps is 0); the steps show once train_file "
                "names a local file")
    train = training_pairs(config, pairs)
    steps = optimizer_steps(config, train)
    return (f"epoch {config.epoch:g} decides the length: {steps:,} steps, about {math.ceil(config.epoch * train):,} "
            f"pairs seen ({train:,} training pairs; max_steps 0 = off)")


def model_problem(model: str) -> Optional[str]:
    """Why ``model`` cannot be estimated here (not cached offline, a folder that holds no model), or None.

    Models whose dimensions nbtools knows (nbtools.models.reference_configs) are estimated without files."""
    from nbtools.models.loading import resolve_model_folder
    from nbtools.models.reference_configs import REFERENCE_CONFIGS

    if model in REFERENCE_CONFIGS:
        return None
    try:
        resolve_model_folder(model)
    except UserError as exc:
        return str(exc)
    return None


def training_pairs(config: RunConfig, pairs: int) -> int:
    return pairs if config.validation_file else max(1, int(round(pairs * (1 - config.validation_split))))


def optimizer_steps(config: RunConfig, pairs: int) -> int:
    """Steps the run will take on one process: max_steps, else epoch x ceil(pairs / effective batch)."""
    if config.max_steps > 0:
        return config.max_steps
    per_epoch = math.ceil(pairs / (config.batch_size * config.gradient_accumulation_steps))
    return max(1, math.ceil(config.epoch * per_epoch))


def auxiliary_pairs(config: RunConfig, facts: Optional[DataFacts]) -> float:
    """mDPO image-contrast pairs per pair in the worst step: with mdpo_conditional, one for each pair with images."""
    if "mdpo_conditional" not in config.loss_type or not config.packing:
        return 0.0
    return 1.0 if facts is None or facts.max_images_per_pair else 0.0


def epoch_tokens_estimate(config: RunConfig, facts: DataFacts) -> int:
    """Tokens one epoch of this run puts through the model: the training pairs' ``EpochTokens`` in the run's layout
    (01_inspect_data shows the same figures), scaled to the pairs training keeps when validation_split holds
    some out, with mDPO's image-contrast rows as the collator lays them out."""
    from nbtools.estimate import collator_lays_out_lean_contrast_rows

    sides = 0
    if auxiliary_pairs(config, facts):
        sides = 1 if collator_lays_out_lean_contrast_rows() else 2
    total = facts.epoch.total(config.packing, sides)
    return round(total * training_pairs(config, facts.pairs) / facts.pairs)


def estimate_html(config: RunConfig, gpu_memory_gib: Optional[float] = DEFAULT_GPU_GIB) -> str:
    """Peak GPU memory, tokens and steps for ``config``, as HTML for the form."""
    from nbtools.estimate import estimate_memory

    problem = model_problem(config.model)
    if problem:  # the nbtools message says what is wrong and the fix (never a raw transformers one)
        return f"<p class='nbtools-estimate-body'><i>Estimate unavailable: {html.escape(problem)}</i></p>"
    facts = data_facts(config)
    precision = "fp32" if config.precision == "fp32" else "bf16"  # auto: bf16 (fp16 on a T4: same bytes)
    memory = estimate_memory(
        config.model, batch_size=config.batch_size, max_context_length=config.max_context_length,
        max_pixels=config.max_pixels, lora_rank=config.lora_rank,
        gradient_checkpointing=config.gradient_checkpointing, precision=precision,
        quantization=None if config.quantization == "none" else config.quantization,
        target_modules=config.target_modules, gpu_memory_gib=gpu_memory_gib, lora_dropout=config.lora_dropout,
        images_per_pair=facts.max_images_per_pair if facts else 1,
        prompt_text_tokens=facts.max_prompt_text_tokens if facts else None,
        answer_tokens=facts.max_answer_tokens if facts else None,
        image_size=facts.largest_image if facts else None,
        packing=config.packing, precompute_reference=config.precompute_ref_log_probs,
        strategy=config.distributed, video_tokens_per_pair=facts.max_video_tokens_per_pair if facts else 0,
        attn_implementation=config.attn_implementation,
        rejected_images_per_pair=facts.max_rejected_images_per_pair if facts else 0,
        auxiliary_pairs=auxiliary_pairs(config, facts),
    )
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(label)}</td><td>{_size(gib)}</td></tr>"
                   for label, gib in memory.rows())
    parts = [f"<b>Estimated peak GPU memory per device: {_size(memory.total_gib)}</b>"]
    if memory.fits is not None:
        verdict = "fits" if memory.fits else "does NOT fit"
        colour = "#15803d" if memory.fits else "#c62828"
        parts.append(f" — <b style='color:{colour}'>{verdict} in {gpu_memory_gib:g} GiB</b>")
    parts.append(f"<table>{rows}</table>")
    layout = "one packed row per pair: prompt, chosen, rejected" if config.packing else "chosen + rejected rows"
    if memory.second_prompt_tokens:
        layout += ", and the rejected answer's own prompt where a pair has rejected_images"
    if memory.auxiliary_rows:
        layout += f"; {memory.auxiliary_rows} of them mDPO image-contrast pairs"
    parts.append(f"<p>{memory.sequences_per_step} sequences per step ({layout}) x up to "
                 f"{memory.tokens_per_sequence} tokens, {memory.tokens_per_image} at "
                 f"max_pixels={config.max_pixels:,}"
                 + (f", up to {memory.video_tokens_per_pair:,} video tokens per pair at fps={config.fps:g}, "
                    f"max_frames={config.max_frames}, video_max_pixels={config.video_max_pixels:,}"
                    if memory.video_tokens_per_pair else "")
                 + f"; attention kernel {html.escape(memory.attn_implementation)}; activations are approximate.</p>")
    if memory.advice:
        items = "".join(f"<li>{html.escape(a)}</li>" for a in memory.advice)
        parts.append(f"<p>To fit:</p><ul>{items}</ul>")
    if facts is not None:
        pairs = training_pairs(config, facts.pairs)
        tokens = epoch_tokens_estimate(config, facts)
        steps = optimizer_steps(config, pairs)
        per_step = config.batch_size * config.gradient_accumulation_steps
        epochs = steps * per_step / pairs
        parts.append(f"<p><b>Length of the run:</b> {steps:,} optimizer steps x {per_step} pairs = "
                     f"{epochs:.2f} epochs of {pairs:,} training pairs; about {tokens:,} tokens per epoch "
                     f"({facts.epoch.label(config.packing)}; image tokens and their vision start/end markers "
                     f"included), {html.escape(facts.counted)}. The progress bar shows the time once the run "
                     "starts.</p>")
    else:
        parts.append("<p>Set train_file to see the number of steps and tokens.</p>")
    return "<div class='nbtools-estimate-body'>" + "".join(parts) + "</div>"


def _size(gib: float) -> str:
    return f"{gib:.2f} GiB" if gib >= 0.1 else f"{gib * 1024:.1f} MiB"
