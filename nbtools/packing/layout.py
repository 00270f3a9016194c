"""One packed row per preference pair: ``[prompt, chosen, rejected, padding]``, or
``[prompt, chosen, rejected_prompt, rejected, padding]`` when the rejected side sees other images.

Why: TRL builds two rows per pair (``[prompt, chosen]`` and ``[prompt, rejected]``), so the
prompt — usually dominated by hundreds of image or video tokens — goes through the model twice
and the images and videos are encoded twice. Packing keeps one copy of the prompt; the
attention mask (:mod:`nbtools.packing.mask`) and positions (:mod:`nbtools.packing.positions`)
make the rejected answer see exactly what it would see in its own row.

Layout API (segment ids per token, in the batch's ``segment_ids``):

- ``SEGMENT_PROMPT`` (1), ``SEGMENT_CHOSEN`` (2), ``SEGMENT_REJECTED`` (3), padding ``SEGMENT_PAD`` (0).
- Image-contrast pairs: an example with ``"rejected_images"`` (the same conversation with those
  images in place of ``images``) has two prompts that differ from their first image on. Its row is
  ``[prompt, chosen_prompt, chosen, rejected_prompt, rejected]``: ``SEGMENT_PROMPT`` holds what
  the two prompts share before their first image (system prompt, earlier text turns, the
  template's header, videos placed before the first image), ``SEGMENT_CHOSEN_PROMPT`` (5) and
  ``SEGMENT_REJECTED_PROMPT`` (4) the rest of each prompt. Each side sees the shared part and
  only its own part (block mask); the rejected side's positions are those of a separate
  ``[prompt, rejected_prompt, rejected]`` row, and the first rejected token is predicted from the
  last rejected-prompt token. Each image is encoded once (``images`` in the chosen prompt,
  ``rejected_images`` in the rejected one), a shared video once; a video after the first image
  sits in both own parts (its tokens follow different images there) and is encoded once when the vision
  tower is frozen (batch key ``video_copies``, see :func:`nbtools.packing.vision_cache.encode_images`).
- mDPO contrast rows (:mod:`nbtools.packing.contrast`: the chosen answer with the real images vs with corrupted
  ones) whose real pair is in the same batch are *lean*: ``[prompt with the corrupted images, chosen answer]``
  as the rejected side, with no chosen side (``chosen_lengths`` 0). Their chosen side would be exactly the real
  pair's, so its log-prob is taken from that row (batch key ``auxiliary_sources``, :func:`borrow_chosen`):
  a contrast row has half the tokens and pictures it had.
  ``PackedPreferenceCollator(lean_auxiliary=False)`` lays them out whole, as image-contrast rows.
- Rows of all kinds mix freely in one batch. Build rows with :class:`PackedPieces` (split rows:
  ``chosen_prompt_ids`` / ``rejected_prompt_ids`` set) and :func:`pack_pieces`, or let
  :class:`PackedPreferenceCollator` do it from examples. Batch keys: ``prompt_lengths`` (the
  shared part), ``chosen_prompt_lengths`` / ``rejected_prompt_lengths`` (0 for shared-prompt
  rows), ``chosen_lengths``, ``rejected_lengths``.
- Videos: examples may carry ``"videos": [nbtools.video.Clip]``; the processor gets the frames
  with their metadata (``nbtools.video.processor_video_kwargs``), each clip once per prompt part it appears in;
  ``image_copies`` / ``video_copies`` say which of them are the same picture or clip (encoded once).

Tokenisation goes through TRL's own chat-template helpers so the token ids are the ones TRL
would train on; only the layout differs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from nbtools.video import processor_video_kwargs

# Segment ids stored per token in the packed batch ("segment_ids").
SEGMENT_PAD = 0
SEGMENT_PROMPT = 1
SEGMENT_CHOSEN = 2
SEGMENT_REJECTED = 3
SEGMENT_REJECTED_PROMPT = 4
SEGMENT_CHOSEN_PROMPT = 5

# Batch key: per row, the row whose chosen log-prob this row's chosen log-prob is (-1: its own). Set for lean
# mDPO contrast rows (``[corrupted prompt, chosen answer]`` as the rejected side, no chosen side of their own).
AUXILIARY_SOURCES = "auxiliary_sources"
# Batch keys: per image / video of the batch (a grid row), the first one that is the same picture or clip, when
# some are repeated (a video after the first image of an image-contrast row, media a contrast row shares with its
# pair): nbtools.packing.vision_cache.encode_images encodes each once.
MEDIA_COPIES = {"image": "image_copies", "video": "video_copies"}

# Batch keys that describe the layout and are never passed to the model itself.
LAYOUT_KEYS = ("segment_ids", "prompt_lengths", "chosen_prompt_lengths", "chosen_lengths", "rejected_prompt_lengths",
               "rejected_lengths", "auxiliary_rows", AUXILIARY_SOURCES, *MEDIA_COPIES.values())
# Keys the caller may attach (precomputed reference values, cache keys); not model inputs.
EXTRA_KEYS = ("ref_chosen_logps", "ref_rejected_logps", "pair_keys")


@dataclass
class PackedPieces:
    """Token ids of one pair before packing (prompts already contain expanded image/video tokens).

    Shared-prompt pair: ``prompt_ids`` is the whole prompt. Image-contrast pair: ``prompt_ids`` is the
    text both prompts share, ``chosen_prompt_ids`` / ``rejected_prompt_ids`` the rest of each
    (both set; the rejected part must not be empty).
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    prompt_mm_token_type_ids: list[int] | None = None
    rejected_prompt_ids: list[int] | None = None
    rejected_prompt_mm_token_type_ids: list[int] | None = None
    chosen_prompt_ids: list[int] | None = None
    chosen_prompt_mm_token_type_ids: list[int] | None = None

    @property
    def split(self) -> bool:
        """True when the rejected answer has its own prompt part (image-contrast pair)."""
        return self.rejected_prompt_ids is not None


def pack_pieces(pieces: list[PackedPieces], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Lay out pairs as right-padded rows ``[prompt, (chosen_prompt,) chosen, (rejected_prompt,) rejected]``.

    Returns ``input_ids``, ``attention_mask`` (2-D, 1 = real token; for token counting, the
    model gets the 4-D mask), ``segment_ids``, the lengths of the layout keys and, when the
    prompts carry them, ``mm_token_type_ids``.
    """
    if not pieces:
        raise ValueError("cannot pack an empty batch")
    for index, piece in enumerate(pieces):
        if piece.split and not piece.rejected_prompt_ids:
            raise ValueError(f"pair {index}: the rejected prompt is empty; the first rejected token needs a prompt "
                             "token before it")
        if not piece.split and piece.chosen_prompt_ids:
            raise ValueError(f"pair {index}: chosen_prompt_ids without rejected_prompt_ids; a shared prompt goes in "
                             "prompt_ids")
        if not piece.prompt_ids and not (piece.split and piece.chosen_prompt_ids):
            raise ValueError(f"pair {index}: the prompt is empty; the first answer token needs a prompt token "
                             "before it")
    segments = []
    for piece in pieces:
        segments.append(
            [(piece.prompt_ids, SEGMENT_PROMPT, piece.prompt_mm_token_type_ids),
             (piece.chosen_prompt_ids or [], SEGMENT_CHOSEN_PROMPT, piece.chosen_prompt_mm_token_type_ids),
             (piece.chosen_ids, SEGMENT_CHOSEN, None),
             (piece.rejected_prompt_ids or [], SEGMENT_REJECTED_PROMPT, piece.rejected_prompt_mm_token_type_ids),
             (piece.rejected_ids, SEGMENT_REJECTED, None)]
        )
    width = max(sum(len(ids) for ids, _, _ in row) for row in segments)
    batch = len(pieces)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    segment_ids = torch.full((batch, width), SEGMENT_PAD, dtype=torch.long)
    with_mm = any(p.prompt_mm_token_type_ids is not None or p.rejected_prompt_mm_token_type_ids is not None
                  or p.chosen_prompt_mm_token_type_ids is not None for p in pieces)
    mm_types = torch.zeros((batch, width), dtype=torch.long) if with_mm else None
    for row, parts in enumerate(segments):
        start = 0
        for ids, segment, mm in parts:
            end = start + len(ids)
            if ids:
                input_ids[row, start:end] = torch.tensor(ids)
                segment_ids[row, start:end] = segment
                if with_mm and mm is not None:
                    mm_types[row, start:end] = torch.tensor(mm)
            start = end
    out = {
        "input_ids": input_ids,
        "attention_mask": (segment_ids != SEGMENT_PAD).long(),
        "segment_ids": segment_ids,
        "prompt_lengths": torch.tensor([len(p.prompt_ids) for p in pieces]),
        "chosen_prompt_lengths": torch.tensor([len(p.chosen_prompt_ids or []) for p in pieces]),
        "chosen_lengths": torch.tensor([len(p.chosen_ids) for p in pieces]),
        "rejected_prompt_lengths": torch.tensor([len(p.rejected_prompt_ids or []) for p in pieces]),
        "rejected_lengths": torch.tensor([len(p.rejected_ids) for p in pieces]),
    }
    if with_mm:
        out["mm_token_type_ids"] = mm_types
    return out


def placeholder_token_ids(processor, kind: str) -> set[int]:
    """Ids of the placeholder tokens that ``kind`` ("image" / "video") features replace (per the processor)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    token_id = getattr(processor, f"{kind}_token_id", None)
    token = getattr(processor, f"{kind}_token", None)
    if token_id is None and isinstance(token, str):
        token_id = tokenizer.convert_tokens_to_ids(token)
    return {token_id} if isinstance(token_id, int) and token_id >= 0 else set()


def shared_prefix_length(first: list[int], second: list[int], first_types: list[int] | None,
                         image_placeholders: set[int]) -> int:
    """Length of the common start of an image-contrast pair's two prompts: up to their first image token.

    Image placeholder tokens have the same id whatever the image, so equal ids there do not mean
    equal inputs; before the first image both prompts are the same text and the same videos (videos
    are the same on both sides), which are kept once.
    """
    length = 0
    for index, (a, b) in enumerate(zip(first, second)):
        is_image = (first_types[index] == 1) if first_types is not None else a in image_placeholders
        if a != b or is_image:
            break
        length = index + 1
    return length


def videos_within(prompt_ids: list[int], prompt_types: list[int] | None, length: int, grids: torch.Tensor,
                  merge_size: int, video_placeholders: set[int]) -> int:
    """How many of a prompt's videos (``grids``: their ``video_grid_thw`` rows, in order) lie in its first
    ``length`` tokens."""
    if prompt_types is not None:
        tokens = sum(1 for kind in prompt_types[:length] if kind == 2)
    else:
        tokens = sum(1 for token in prompt_ids[:length] if token in video_placeholders)
    count = covered = 0
    for grid in grids.tolist():
        if covered >= tokens:
            break
        covered += grid[0] * grid[1] * grid[2] // (merge_size * merge_size)
        count += 1
    if covered != tokens:  # a prefix never ends inside a video: its tokens are equal on both sides
        raise RuntimeError(f"shared prompt holds {tokens} video tokens, not a whole number of videos ({covered})")
    return count


def require_video_outputs(processed, clips: list, processor) -> None:
    """A processor that takes no videos ignores them silently: stop with the reason instead."""
    if clips and processed.get("pixel_values_videos") is None:
        raise ValueError(
            f"the batch holds videos, but {type(processor).__name__} returned no video inputs: this model "
            "family does not take videos (use a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model, or drop the videos)"
        )


def drop_videos(processed: dict, drop: list[int]) -> None:
    """Remove videos (by index in the processor call) from its outputs: pixels, grids, per-video times."""
    if not drop:
        return
    grids = processed["video_grid_thw"]
    keep = [index for index in range(grids.shape[0]) if index not in set(drop)]
    pieces = torch.split(processed["pixel_values_videos"], grids.prod(dim=-1).tolist())
    processed["pixel_values_videos"] = torch.cat([pieces[index] for index in keep])
    processed["video_grid_thw"] = grids[keep]
    if processed.get("second_per_grid_ts") is not None:
        processed["second_per_grid_ts"] = processed["second_per_grid_ts"][keep]


def copies_of(items: list) -> list[int] | None:
    """Per item, the index of the first item that is the same object; None when no item repeats."""
    first: dict[int, int] = {}
    copies = [first.setdefault(id(item), index) for index, item in enumerate(items)]
    return copies if copies != list(range(len(items))) else None


def _same_objects(first: list, second: list) -> bool:
    return len(first) == len(second) and all(a is b for a, b in zip(first, second))


def lean_auxiliary_sources(examples: list[dict[str, Any]]) -> list[int]:
    """Per example: the row of the real pair an mDPO contrast pair was made from, when that pair is in the same
    batch (-1 otherwise, and for every real pair).

    The contrast pair's chosen side (its prompt with the real images, the chosen answer) is exactly that pair's
    chosen side, so its row carries only the corrupted side and borrows the chosen log-prob (:func:`borrow_chosen`).
    """
    from .contrast import AUXILIARY_SOURCE, CONTRAST_KEY

    rows = {id(example): row for row, example in enumerate(examples) if not example.get(CONTRAST_KEY)}
    sources = []
    for example in examples:
        source = example.get(AUXILIARY_SOURCE) if example.get(CONTRAST_KEY) else None
        row = rows.get(id(source), -1) if source is not None else -1
        if row >= 0 and not (source["prompt"] == example["prompt"] and source["chosen"] == example["chosen"]
                             and _same_objects(example_images(source), example_images(example))
                             and _same_objects(source.get("videos") or [], example.get("videos") or [])):
            row = -1  # changed since it was made: score it whole
        sources.append(row)
    return sources


def borrow_chosen(chosen: torch.Tensor, batch: dict) -> torch.Tensor:
    """``chosen`` (per row) with each lean contrast row's value taken from its source row (autograd flows there)."""
    sources = batch.get(AUXILIARY_SOURCES)
    if sources is None:
        return chosen
    sources = sources.to(chosen.device)
    return torch.where(sources >= 0, chosen[sources.clamp(min=0)], chosen)


def example_images(example: dict[str, Any]) -> list:
    """The example's images (TRL accepts ``images`` or a single ``image``)."""
    return list(example.get("images") or ([example["image"]] if example.get("image") is not None else []))


def rejected_images_of(example: dict[str, Any], index: int = 0) -> list | None:
    """The images the rejected sequence sees in place of ``images``, or None when it sees the same ones.

    Raises a ValueError naming the pair when the counts differ (the rejected conversation has the
    same ``<image>`` positions, so it needs exactly as many images).
    """
    rejected = example.get("rejected_images")
    if not rejected:
        return None
    images = example_images(example)
    if len(rejected) != len(images):
        raise ValueError(
            f"pair {index} of the batch: it has {len(images)} image(s) but {len(rejected)} rejected_images; the "
            "rejected sequence puts rejected_images in place of images, so give exactly one per image"
        )
    return list(rejected)


def example_clips(example: dict[str, Any], index: int = 0) -> list:
    """The example's decoded videos (``nbtools.video.Clip``: ``frames`` + ``metadata``)."""
    clips = list(example.get("videos") or [])
    for clip in clips:
        if not (hasattr(clip, "frames") and hasattr(clip, "metadata")):
            raise ValueError(
                f"pair {index} of the batch: videos must be decoded clips (nbtools.video.Clip with frames and "
                f"metadata), got {type(clip).__name__}; build examples with nbtools.data.to_training_example"
            )
    return clips


def render_pair(example: dict[str, Any], processor) -> tuple[str, str, str, list]:
    """Chat-templated (prompt, chosen, rejected) strings and the pair's images, exactly as TRL renders them.

    The prompt string is the same for ``rejected_images``: only the images filling its placeholders differ.
    """
    from trl.data_utils import apply_chat_template, is_conversational, prepare_multimodal_messages

    example = copy.copy(example)
    images = example_images(example)
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
    ``image_grid_thw``, ``pixel_values_videos``, ``video_grid_thw``, ``mm_token_type_ids``, … —
    each image once, in row order: a row's (chosen) prompt images, then its rejected-prompt images) plus the
    layout keys of :func:`pack_pieces`. With ``reference_lookup`` set (a callable
    ``examples -> (chosen, rejected) tensors or None``), precomputed reference log-probs are
    attached as ``ref_chosen_logps`` / ``ref_rejected_logps``. ``max_length`` truncates like
    TRL: each answer is cut so that its ``prompt + answer`` fits (a prompt itself is never cut).
    ``lean_auxiliary``: mDPO contrast pairs whose real pair is in the batch get only their corrupted side
    (``auxiliary_sources`` names the row their chosen log-prob comes from); False lays them out whole.
    """

    processor: Any
    reference_lookup: Any = None
    max_length: int | None = None
    extra_processor_kwargs: dict = field(default_factory=dict)
    # mDPO contrast pairs whose real pair is in the batch: only their corrupted side (lean_auxiliary_sources)
    lean_auxiliary: bool = True

    @property
    def pad_token_id(self) -> int:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        pad = tokenizer.pad_token_id
        return pad if pad is not None else tokenizer.eos_token_id

    def _room(self, row: int, prompt_ids: list[int]) -> int | None:
        room = None if self.max_length is None else self.max_length - len(prompt_ids)
        if room is not None and room <= 0:
            raise ValueError(
                f"pair {row} of the batch: its prompt has {len(prompt_ids)} tokens (images included), which leaves "
                f"no room for an answer within max_length={self.max_length}; raise max_length or drop the pair"
            )
        return room

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rendered = [render_pair(example, self.processor) for example in examples]
        sources = lean_auxiliary_sources(examples) if self.lean_auxiliary else [-1] * len(examples)
        texts = _prompt_texts(examples, rendered, sources)
        processed = self.processor(
            images=texts.images if any(texts.images) else None,
            text=texts.texts,
            padding=True,
            padding_side="right",
            return_tensors="pt",
            add_special_tokens=False,
            **processor_video_kwargs(texts.clips),
            **self.extra_processor_kwargs,
        )
        require_video_outputs(processed, texts.clips, self.processor)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        completions = tokenizer(
            [r[1] for r in rendered] + [r[2] for r in rendered], add_special_tokens=False
        )["input_ids"]
        answers = list(zip(completions[: len(examples)], completions[len(examples) :]))
        pieces, shared_videos = self._pieces(processed, texts, answers, sources)
        drop_videos(processed, shared_videos)
        batch = {k: v for k, v in processed.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
        batch.update(pack_pieces(pieces, self.pad_token_id))
        if any(source >= 0 for source in sources):
            batch[AUXILIARY_SOURCES] = torch.tensor(sources)
        # the same picture or clip in several prompt parts: vision_cache.encode_images encodes it once
        dropped = set(shared_videos)
        kept_clips = [clip for index, clip in enumerate(texts.clips) if index not in dropped]
        for kind, items in (("image", [image for side in texts.images for image in side]), ("video", kept_clips)):
            copies = copies_of(items) if processed.get(f"{kind}_grid_thw") is not None else None
            if copies is not None and len(copies) == processed[f"{kind}_grid_thw"].shape[0]:
                batch[MEDIA_COPIES[kind]] = torch.tensor(copies)
        if self.reference_lookup is not None:
            found = self.reference_lookup(examples)
            if found is not None:
                batch["ref_chosen_logps"], batch["ref_rejected_logps"] = found
        return batch

    def _pieces(self, processed, texts: "_PromptTexts", answers: list, sources: list[int]):
        """One PackedPieces per row from the processed prompts and the answers' token ids, and the videos of
        rejected prompts that lie in the shared part (encoded once, not twice)."""
        mm = processed.get("mm_token_type_ids")

        def prompt_of(text: int) -> tuple[list[int], list[int] | None]:
            real = processed["attention_mask"][text].bool()
            return processed["input_ids"][text][real].tolist(), (mm[text][real].tolist() if mm is not None else None)

        image_placeholders = placeholder_token_ids(self.processor, "image")
        video_placeholders = placeholder_token_ids(self.processor, "video")
        merge = getattr(getattr(self.processor, "video_processor", None), "merge_size", 1)
        shared_videos: list[int] = []
        pieces = []
        for row, (chosen_text, rejected_text) in enumerate(texts.text_of):
            chosen_ids, rejected_ids = answers[row]
            prompt_ids, prompt_mm = prompt_of(chosen_text)
            room = self._room(row, prompt_ids)
            piece = PackedPieces(prompt_ids=prompt_ids, chosen_ids=list(chosen_ids)[:room],
                                 rejected_ids=list(rejected_ids)[:room], prompt_mm_token_type_ids=prompt_mm)
            if sources[row] >= 0:  # its chosen side is its source row's (borrow_chosen)
                piece.chosen_ids = []
            if rejected_text is not None:
                rejected_prompt, rejected_mm = prompt_of(rejected_text)
                piece.rejected_ids = list(rejected_ids)[: self._room(row, rejected_prompt)]
                shared = shared_prefix_length(prompt_ids, rejected_prompt, prompt_mm, image_placeholders)
                clips_here = texts.clips_per_row[row]
                if clips_here:
                    start = texts.first_video[rejected_text]
                    count = videos_within(rejected_prompt, rejected_mm, shared,
                                          processed["video_grid_thw"][start : start + clips_here], merge,
                                          video_placeholders)
                    shared_videos += range(start, start + count)
                _split_at_shared(piece, shared, rejected_prompt, rejected_mm)
            pieces.append(piece)
        return pieces, shared_videos


@dataclass
class _PromptTexts:
    """The processor's texts: one per prompt (the shared or chosen-side prompt, then the rejected prompt if any)."""

    texts: list = field(default_factory=list)
    images: list = field(default_factory=list)  # per text: its images
    clips: list = field(default_factory=list)  # every text's clips, in order
    first_video: list = field(default_factory=list)  # per text: index of its first video in the processor call
    text_of: list = field(default_factory=list)  # per row: (chosen-side text, rejected text or None)
    clips_per_row: list = field(default_factory=list)


def _prompt_texts(examples: list[dict[str, Any]], rendered: list, sources: list[int]) -> _PromptTexts:
    """A lean contrast row has one text (its corrupted images); an image-contrast row two; any other row one."""
    out = _PromptTexts()
    for row, (example, (prompt, _, _, images)) in enumerate(zip(examples, rendered)):
        row_clips = example_clips(example, row)
        out.clips_per_row.append(len(row_clips))
        rejected_images = rejected_images_of(example, row)
        if sources[row] >= 0:  # a lean contrast row: [prompt with the corrupted images, chosen answer]
            sides = [rejected_images]
        else:
            sides = [images] if rejected_images is None else [images, rejected_images]
        for side_images in sides:
            out.first_video.append(len(out.clips))
            out.texts.append(prompt)
            out.images.append(side_images)
            out.clips += row_clips
        out.text_of.append((len(out.texts) - len(sides), len(out.texts) - 1 if len(sides) == 2 else None))
    return out


def _split_at_shared(piece: PackedPieces, shared: int, rejected_prompt: list[int], rejected_mm) -> None:
    """Both prompts' common first ``shared`` tokens become the row's prompt; the rest is each side's own."""
    prompt_ids, prompt_mm = piece.prompt_ids, piece.prompt_mm_token_type_ids
    piece.prompt_ids, piece.chosen_prompt_ids = prompt_ids[:shared], prompt_ids[shared:]
    piece.rejected_prompt_ids = rejected_prompt[shared:]
    if prompt_mm is not None:
        piece.prompt_mm_token_type_ids = prompt_mm[:shared]
        piece.chosen_prompt_mm_token_type_ids = prompt_mm[shared:]
        piece.rejected_prompt_mm_token_type_ids = rejected_mm[shared:]
