"""One packed row per preference pair: ``[prompt, chosen, rejected, padding]``.

Why: TRL builds two rows per pair (``[prompt, chosen]`` and ``[prompt, rejected]``), so the
prompt — usually dominated by hundreds of image tokens — goes through the model twice and the
images are encoded twice. Packing keeps one copy of the prompt; the attention mask
(:mod:`nbtools.packing.mask`) and positions (:mod:`nbtools.packing.positions`) make the
rejected answer see exactly what it would see in its own row.

Tokenisation goes through TRL's own chat-template helpers so the token ids are the ones TRL
would train on; only the layout differs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

# Segment ids stored per token in the packed batch ("segment_ids").
SEGMENT_PAD = 0
SEGMENT_PROMPT = 1
SEGMENT_CHOSEN = 2
SEGMENT_REJECTED = 3

# Batch keys that describe the layout and are never passed to the model itself.
LAYOUT_KEYS = ("segment_ids", "prompt_lengths", "chosen_lengths", "rejected_lengths", "auxiliary_rows")
# Keys the caller may attach (precomputed reference values, cache keys); not model inputs.
EXTRA_KEYS = ("ref_chosen_logps", "ref_rejected_logps", "pair_keys")


@dataclass
class PackedPieces:
    """Token ids of one pair before packing (prompt already contains expanded image tokens)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    prompt_mm_token_type_ids: list[int] | None = None


def pack_pieces(pieces: list[PackedPieces], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Lay out pairs as right-padded rows ``[prompt, chosen, rejected]``.

    Returns ``input_ids``, ``attention_mask`` (2-D, 1 = real token; for token counting, the
    model gets the 4-D mask), ``segment_ids``, ``prompt_lengths``, ``chosen_lengths``,
    ``rejected_lengths`` and, when the prompts carry them, ``mm_token_type_ids``.
    """
    if not pieces:
        raise ValueError("cannot pack an empty batch")
    for index, piece in enumerate(pieces):
        if not piece.prompt_ids:
            raise ValueError(f"pair {index}: the prompt is empty; the first answer token needs a prompt token before it")
    lengths = [len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pieces]
    width = max(lengths)
    batch = len(pieces)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    segment_ids = torch.full((batch, width), SEGMENT_PAD, dtype=torch.long)
    with_mm = any(p.prompt_mm_token_type_ids is not None for p in pieces)
    mm_types = torch.zeros((batch, width), dtype=torch.long) if with_mm else None
    for row, piece in enumerate(pieces):
        p, c, r = len(piece.prompt_ids), len(piece.chosen_ids), len(piece.rejected_ids)
        input_ids[row, : p + c + r] = torch.tensor(piece.prompt_ids + piece.chosen_ids + piece.rejected_ids)
        segment_ids[row, :p] = SEGMENT_PROMPT
        segment_ids[row, p : p + c] = SEGMENT_CHOSEN
        segment_ids[row, p + c : p + c + r] = SEGMENT_REJECTED
        if with_mm and piece.prompt_mm_token_type_ids is not None:
            mm_types[row, :p] = torch.tensor(piece.prompt_mm_token_type_ids)
    out = {
        "input_ids": input_ids,
        "attention_mask": (segment_ids != SEGMENT_PAD).long(),
        "segment_ids": segment_ids,
        "prompt_lengths": torch.tensor([len(p.prompt_ids) for p in pieces]),
        "chosen_lengths": torch.tensor([len(p.chosen_ids) for p in pieces]),
        "rejected_lengths": torch.tensor([len(p.rejected_ids) for p in pieces]),
    }
    if with_mm:
        out["mm_token_type_ids"] = mm_types
    return out


def render_pair(example: dict[str, Any], processor) -> tuple[str, str, str, list]:
    """Chat-templated (prompt, chosen, rejected) strings and the pair's images, exactly as TRL renders them."""
    from trl.data_utils import apply_chat_template, is_conversational, prepare_multimodal_messages

    example = copy.copy(example)
    images = list(example.get("images") or ([example["image"]] if example.get("image") is not None else []))
    if is_conversational(example):
        rendered = apply_chat_template(
            {
                "prompt": prepare_multimodal_messages(copy.deepcopy(example["prompt"]), images=images),
                "chosen": prepare_multimodal_messages(copy.deepcopy(example["chosen"])),
                "rejected": prepare_multimodal_messages(copy.deepcopy(example["rejected"])),
            },
            processor,
        )
        return rendered["prompt"], rendered["chosen"], rendered["rejected"], images
    return example["prompt"], example["chosen"], example["rejected"], images


@dataclass
class PackedPreferenceCollator:
    """Collate TRL conversational vision preference examples into packed rows.

    Output keys: the model inputs the processor produces for the prompts (``pixel_values``,
    ``image_grid_thw``, ``mm_token_type_ids``, … — each image once, in pair order) plus the
    layout keys of :func:`pack_pieces`. With ``reference_lookup`` set (a callable
    ``examples -> (chosen, rejected) tensors or None``), precomputed reference log-probs are
    attached as ``ref_chosen_logps`` / ``ref_rejected_logps``. ``max_length`` truncates like
    TRL: each answer is cut so that ``prompt + answer`` fits (the prompt itself is never cut).
    """

    processor: Any
    reference_lookup: Any = None
    max_length: int | None = None
    extra_processor_kwargs: dict = field(default_factory=dict)

    @property
    def pad_token_id(self) -> int:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        pad = tokenizer.pad_token_id
        return pad if pad is not None else tokenizer.eos_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rendered = [render_pair(example, self.processor) for example in examples]
        prompts = [r[0] for r in rendered]
        images = [r[3] for r in rendered]
        has_images = any(images)
        processed = self.processor(
            images=images if has_images else None,
            text=prompts,
            padding=True,
            padding_side="right",
            return_tensors="pt",
            add_special_tokens=False,
            **self.extra_processor_kwargs,
        )
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        completions = tokenizer(
            [r[1] for r in rendered] + [r[2] for r in rendered], add_special_tokens=False
        )["input_ids"]
        chosen_ids, rejected_ids = completions[: len(examples)], completions[len(examples) :]
        pieces = []
        for row in range(len(examples)):
            real = processed["attention_mask"][row].bool()
            mm = processed.get("mm_token_type_ids")
            prompt_ids = processed["input_ids"][row][real].tolist()
            room = None if self.max_length is None else self.max_length - len(prompt_ids)
            if room is not None and room <= 0:
                raise ValueError(
                    f"pair {row} of the batch: its prompt has {len(prompt_ids)} tokens (images included), which leaves "
                    f"no room for an answer within max_length={self.max_length}; raise max_length or drop the pair"
                )
            pieces.append(
                PackedPieces(
                    prompt_ids=prompt_ids,
                    chosen_ids=list(chosen_ids[row])[:room],
                    rejected_ids=list(rejected_ids[row])[:room],
                    prompt_mm_token_type_ids=mm[row][real].tolist() if mm is not None else None,
                )
            )
        batch = {k: v for k, v in processed.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
        batch.update(pack_pieces(pieces, self.pad_token_id))
        if self.reference_lookup is not None:
            found = self.reference_lookup(examples)
            if found is not None:
                batch["ref_chosen_logps"], batch["ref_rejected_logps"] = found
        return batch
