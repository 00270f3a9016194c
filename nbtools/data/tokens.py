"""Token counts of a pair's prompt, chosen and rejected parts, images and videos included.

With a model, text is counted by its own tokenizer through its chat template. Without one,
we estimate (~4 characters per token plus the chat template's per-message overhead) and
say so wherever the number is shown: an estimate must never look like a measurement.
Image and video tokens are exact either way (the processors' arithmetic, see ``nbtools.images``
and ``nbtools.video``); only Qwen3-VL's per-frame-group timestamp text is estimated without a tokenizer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Optional

from nbtools.data.records import IMAGE_TAG, VIDEO_TAG, PreferenceRecord
from nbtools.errors import UserError
from nbtools.images import VISION_MARKERS, ImageGeometry, geometry, prompt_image_tokens
from nbtools.video import (VIDEO_FAMILIES, VideoGeometry, VideoSettings, processor_video_geometry, sample_indices,
                           supports_video, timestamp_texts, video_geometry, video_tokens)

CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD = 5  # "<|im_start|>role\n" ... "<|im_end|>\n" in the Qwen chat template
GENERATION_PROMPT = 3  # "<|im_start|>assistant\n"


class ModelUnusable(UserError):
    """The model named for exact token counts cannot be loaded here; the message says why (and the fix, if known)."""


@dataclass(slots=True)
class PairTokens:
    prompt: int  # prompt text + template + image tokens
    chosen: int
    rejected: int
    image_tokens: int  # the part of ``prompt`` that is image tokens (with their start/end tokens)
    estimated: bool  # True when counted without the model's tokenizer
    video_tokens: int = 0  # the part of ``prompt`` that is video tokens (frame groups, timestamps, start/end)
    rejected_image_delta: int = 0  # image-contrast pairs: rejected_images' tokens minus images' tokens

    @property
    def rejected_prompt(self) -> int:
        """The prompt the rejected answer follows (its own images when the row has rejected_images)."""
        return self.prompt + self.rejected_image_delta

    @property
    def longest(self) -> int:
        return max(self.prompt + self.chosen, self.rejected_prompt + self.rejected)


@dataclass(frozen=True)
class EpochTokens:
    """Tokens one epoch puts through the model, summed pair by pair (:func:`epoch_tokens`): the one source of the
    figure 01's report, the run record and 02's estimate show. Image tokens and their markers are included."""

    rows: int = 0  # packing: false — chosen and rejected each a row after its prompt (the rejected one after its
    # own prompt where the pair has rejected_images)
    packed: int = 0  # packing: true — one row per pair: the prompt once, both answers, and the rejected answer's
    # own prompt where the pair has rejected_images
    contrast_side: int = 0  # mDPO (mdpo_conditional, packed): one side [corrupted prompt, chosen] of the
    # image-contrast row each pair with images adds

    def __add__(self, other: "EpochTokens") -> "EpochTokens":
        return EpochTokens(self.rows + other.rows, self.packed + other.packed, self.contrast_side + other.contrast_side)

    def total(self, packing: bool, contrast_sides: int = 0) -> int:
        """The epoch's tokens in one layout; ``contrast_sides``: sides of mDPO's image-contrast rows (0: no mDPO,
        1: lean rows, 2: rows with both sides)."""
        return (self.packed if packing else self.rows) + contrast_sides * self.contrast_side

    @staticmethod
    def label(packing: bool) -> str:
        return ("packed: one row per pair, the prompt once" if packing else
                "unpacked: chosen and rejected rows, each with the prompt")


def epoch_tokens(records: list[PreferenceRecord], tokens: list[PairTokens]) -> EpochTokens:
    """The tokens of one epoch over ``records`` (``tokens``: their counts), in each layout training may use."""
    rows = packed = side = 0
    for record, t in zip(records, tokens):
        rows += t.prompt + t.chosen + t.rejected_prompt + t.rejected
        packed += t.prompt + t.chosen + t.rejected + (t.rejected_prompt if record.rejected_images else 0)
        if record.images:
            side += t.prompt + t.chosen
    return EpochTokens(rows, packed, side)


class TokenCounter:
    """Counts tokens for records; an estimate unless built with a tokenizer."""

    def __init__(self, geo: Optional[ImageGeometry] = None, max_pixels: Optional[int] = None, processor=None,
                 video: Optional[VideoSettings] = None, video_geo: Optional[VideoGeometry] = None,
                 model_name: Optional[str] = None):
        """``video``: how frames are sampled and sized (the run config's fps / max_frames /
        video_max_pixels); ``video_geo``: the video processor's geometry (read from ``processor``
        when given, else the family's with ``video`` applied; None: the model takes no videos)."""
        self.geo = geo or geometry()
        self.max_pixels = max_pixels
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor) if processor is not None else None
        self.video = video or VideoSettings()
        if video_geo is None:
            if processor is not None:
                video_geo = processor_video_geometry(processor, self.geo.family)
            elif supports_video(self.geo.family):
                video_geo = video_geometry(self.geo.family, self.video)
        self.video_geo = video_geo
        self.model_name = model_name or self.geo.family
        self._timestamp_tokens: dict[str, int] = {}
        self._image_tokens: dict[tuple[int, int], int] = {}
        self._shapes: dict[tuple, Optional[tuple]] = {}  # chat template rendered per shape of pair (_rendered)

    @property
    def supports_video(self) -> bool:
        return self.video_geo is not None

    def video_support_problem(self) -> str:
        """Why rows with videos cannot be used with this model ('' when they can)."""
        if self.supports_video:
            return ""
        names = {"qwen3_vl": "Qwen3-VL", "qwen2_5_vl": "Qwen2.5-VL", "qwen2_vl": "Qwen2-VL"}
        return (f"{self.model_name} cannot take videos (its processor has no video processor); the families that "
                f"do: {', '.join(names[f] for f in VIDEO_FAMILIES)}")

    @property
    def estimated(self) -> bool:
        return self.tokenizer is None

    @property
    def label(self) -> str:
        if self.estimated:
            return f"estimate (~{CHARS_PER_TOKEN:g} characters per token + chat-template overhead; pass a model " \
                   "for exact counts)"
        return f"counted with {getattr(self.tokenizer, 'name_or_path', 'the model tokenizer')}"

    @classmethod
    def for_model(cls, model: str, max_pixels: Optional[int] = None,
                  video: Optional[VideoSettings] = None) -> "TokenCounter":
        """Load the model's processor (tokenizer + image and video geometry) via nbtools.models."""
        from nbtools.images import processor_geometry
        from nbtools.models import load_processor  # lazy: models are optional for validation

        video = video or VideoSettings()
        try:
            processor = load_processor(model, max_pixels=max_pixels, video=video)  # applies both to the processor
        except (UserError, OSError, ValueError) as exc:  # no such folder or hub snapshot, no processor files in it,
            raise ModelUnusable(f"cannot use model {str(model)!r}: {exc}") from exc  # a config transformers refuses
        return cls(processor_geometry(processor), max_pixels=max_pixels, processor=processor, video=video,
                   model_name=str(model))

    def video_tokens(self, info, settings: Optional[VideoSettings] = None, geo: Optional[VideoGeometry] = None) -> int:
        """Tokens one video costs in the prompt (its ``MediaInfo``: size, fps, frame count): the
        frame groups' ``<|video_pad|>`` tokens, their start/end tokens and, for Qwen3-VL, the
        ``<t seconds>`` text before each group. 0 when the model takes no videos or the file is unusable.
        ``settings``/``geo`` default to this counter's (other values: what-if advice)."""
        geo = geo or self.video_geo
        if geo is None or info is None or info.error or not (info.frames and info.width and info.height):
            return 0
        indices = sample_indices(info.frames, info.fps, settings or self.video)
        try:
            total = video_tokens(len(indices), info.height, info.width, geo) + VISION_MARKERS
        except ValueError:  # extreme aspect ratio: reported as a video problem
            return 0
        if geo.timestamps:  # each frame group: "<t seconds><|vision_start|> pads <|vision_end|>"
            for text in timestamp_texts(indices, info.fps, geo.temporal_patch_size):
                total += self._timestamp_text_tokens(text) + VISION_MARKERS
        return total

    def _timestamp_text_tokens(self, text: str) -> int:
        count = self._timestamp_tokens.get(text)
        if count is None:
            count = self._timestamp_tokens[text] = self.text_tokens([text])[0]
        return count

    def prompt_image_tokens(self, width: int, height: int) -> int:
        """What one image of this size costs in the prompt (``images.prompt_image_tokens``: markers included)."""
        key = (width, height)
        count = self._image_tokens.get(key)
        if count is None:  # a few sizes recur across a whole dataset: the resize arithmetic runs once each
            if len(self._image_tokens) > 65536:
                self._image_tokens.clear()
            count = self._image_tokens[key] = prompt_image_tokens(height, width, self.geo, self.max_pixels)
        return count

    def text_tokens(self, texts: list[str]) -> list[int]:
        if not texts:  # an empty or unreadable file has no pairs; fast tokenizers fail on an empty batch
            return []
        if self.estimated:
            return [math.ceil(len(t) / CHARS_PER_TOKEN) if t else 0 for t in texts]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def count(self, records: list[PreferenceRecord], image_sizes: dict[str, tuple[int, int]],
              videos: Optional[dict] = None) -> list[PairTokens]:
        """Token counts for each record; ``image_sizes`` maps image path -> (width, height),
        ``videos`` video path -> its ``MediaInfo`` (size, fps, frame count).

        Unknown sizes (unreadable images or videos) count as 0 tokens: those rows already have errors.
        Records of identical lines share their contents (see ``load``) and are counted once.
        """
        unique: list[PreferenceRecord] = []
        position: dict[tuple, int] = {}
        order = []
        for record in records:
            key = (id(record.prompt), id(record.chosen), id(record.rejected), id(record.images), id(record.videos))
            index = position.get(key)
            if index is None:
                if len(position) >= 65536:  # bounded: distinct records gain nothing from remembering
                    position.clear()
                index = position[key] = len(unique)
                unique.append(record)
            order.append(index)
        counted = self._count_each(unique, image_sizes, videos or {})
        return [counted[i] for i in order]

    def _count_each(self, records: list[PreferenceRecord], image_sizes: dict[str, tuple[int, int]],
                    videos: dict) -> list[PairTokens]:
        img_totals = [self._media_tokens(record, image_sizes) for record in records]
        deltas = [self._media_tokens(record, image_sizes, record.rejected_images) - img_totals[i]
                  if record.rejected_images else 0 for i, record in enumerate(records)]
        per_video: dict[str, int] = {}
        for record in records:
            for path in record.videos:
                if path not in per_video:
                    per_video[path] = self.video_tokens(videos.get(path))
        vid_totals = [sum(per_video[p] for p in record.videos) for record in records]
        if not self.estimated and getattr(self.processor, "chat_template", None):
            return self._count_with_template(records, img_totals, vid_totals, deltas)
        if self.estimated:  # lengths are enough: no joined copy of every prompt in memory
            prompt_counts = [_estimate(sum(len(m["content"].replace(IMAGE_TAG, "").replace(VIDEO_TAG, ""))
                                           for m in r.prompt)) for r in records]
            chosen_counts = [_estimate(len(r.chosen)) for r in records]
            rejected_counts = [_estimate(len(r.rejected)) for r in records]
        else:
            prompt_counts = self.text_tokens(["".join(m["content"].replace(IMAGE_TAG, "").replace(VIDEO_TAG, "")
                                                      for m in r.prompt) for r in records])
            chosen_counts = self.text_tokens([r.chosen for r in records])
            rejected_counts = self.text_tokens([r.rejected for r in records])
        shared: dict[tuple, PairTokens] = {}  # equal counts share one object (a big file repeats them a lot)
        out = []
        for i, record in enumerate(records):
            prompt = (prompt_counts[i] + len(record.prompt) * MESSAGE_OVERHEAD + GENERATION_PROMPT + img_totals[i]
                      + vid_totals[i])
            # answers + "<|im_end|>\n"
            values = (prompt, chosen_counts[i] + 2, rejected_counts[i] + 2, img_totals[i], self.estimated,
                      vid_totals[i], deltas[i])
            counted = shared.get(values)
            if counted is None:
                counted = shared[values] = PairTokens(*values)
            out.append(counted)
        return out

    def _media_tokens(self, record: PreferenceRecord, image_sizes: dict[str, tuple[int, int]],
                      images: Optional[list[str]] = None) -> int:
        total = 0
        for path in record.images if images is None else images:
            size = image_sizes.get(path)
            if size and min(size) > 0:
                try:
                    total += self.prompt_image_tokens(*size)
                except ValueError:  # extreme aspect ratio: reported as an image problem
                    pass
        return total

    def _render(self, example: dict) -> tuple[str, str, str]:
        """The prompt (with the generation prompt) and each answer as the rest of the full conversation."""
        template = self.processor.apply_chat_template
        prompt = template(example["prompt"], tokenize=False, add_generation_prompt=True)
        rests = []
        for answer in (example["chosen"], example["rejected"]):
            full = template(example["prompt"] + answer, tokenize=False)
            rests.append(full[len(prompt):] if full.startswith(prompt) else answer[0]["content"][0]["text"])
        return prompt, rests[0], rests[1]

    def _rendered(self, example: dict) -> tuple[str, str, str]:
        """:meth:`_render`, the chat template run once per shape of pair (roles, image and video blocks)
        with slots for the text, then filled in: rendering every pair of a big dataset took most of
        validation's time. Used only for text a template cannot branch on (no markup, no edge
        whitespace), and a shape is trusted only once filling it reproduced a real rendering."""
        pieces = _texts(example["prompt"]) + _texts(example["chosen"]) + _texts(example["rejected"])
        if not all(_PLAIN.match(piece) for piece in pieces):
            return self._render(example)
        shape = tuple((m["role"], tuple(b.get("type") for b in m["content"]))
                      for part in ("prompt", "chosen", "rejected") for m in example[part])
        cache = self._shapes
        if shape not in cache:
            prompt_len = len(_texts(example["prompt"]))
            slotted = {"prompt": _with_slots(example["prompt"]),
                       "chosen": _with_slots(example["chosen"], prompt_len),
                       "rejected": _with_slots(example["rejected"], prompt_len + len(_texts(example["chosen"])))}
            rendered = self._render(slotted)
            real = self._render(example)
            if len(cache) > 4096:
                cache.clear()
            cache[shape] = rendered if tuple(_fill(t, pieces) for t in rendered) == real else None
            return real
        if cache[shape] is None:  # this template does not render the shape by its pieces alone
            return self._render(example)
        return tuple(_fill(t, pieces) for t in cache[shape])

    def _count_with_template(self, records: list[PreferenceRecord], img_totals: list[int],
                             vid_totals: list[int], deltas: list[int]) -> list[PairTokens]:
        """Exact counts: render each pair the way TRL's collator does (prompt with the generation
        prompt; each answer as the rest of the full conversation), tokenize, then widen each
        image and video placeholder to its real number of tokens."""
        from nbtools.data.convert import to_training_example

        prompts, chosens, rejecteds = [], [], []
        for record in records:
            prompt, chosen, rejected = self._rendered(to_training_example(record, load_images=False))
            prompts.append(prompt)
            chosens.append(chosen)
            rejecteds.append(rejected)
        prompt_counts = self.text_tokens(prompts)
        chosen_counts = self.text_tokens(chosens)
        rejected_counts = self.text_tokens(rejecteds)
        out = []
        for i in range(len(records)):
            # the rendered prompt holds start + one pad + end per image and video; the real sequence has
            # n pads per image, and per video its frame groups (Qwen3-VL: each with its timestamp)
            placeholders = (len(records[i].images) + len(records[i].videos)) * (VISION_MARKERS + 1)
            widened = prompt_counts[i] - placeholders + img_totals[i] + vid_totals[i]
            out.append(PairTokens(widened, chosen_counts[i], rejected_counts[i], img_totals[i], False, vid_totals[i],
                                  deltas[i]))
        return out


_SLOT = "\ue000{}\ue001"  # private-use characters: a stand-in for one text piece of a rendered pair
_PLAIN = re.compile(r"\A[^<>{}%\ue000\ue001\s](?:[^<>{}%\ue000\ue001]*[^<>{}%\ue000\ue001\s])?\Z", re.S)


def _texts(messages: list[dict]) -> list[str]:
    return [block["text"] for m in messages for block in m["content"] if block.get("type") == "text"]


def _with_slots(messages: list[dict], start: int = 0) -> list[dict]:
    """The messages with each text piece replaced by a numbered slot (same roles, same image/video blocks)."""
    count = start
    out = []
    for message in messages:
        blocks = []
        for block in message["content"]:
            if block.get("type") == "text":
                blocks.append({"type": "text", "text": _SLOT.format(count)})
                count += 1
            else:
                blocks.append(block)
        out.append({**message, "content": blocks})
    return out


def _fill(text: str, pieces: list[str]) -> str:
    return re.sub("\ue000(\\d+)\ue001", lambda m: pieces[int(m.group(1))], text)


def _estimate(characters: int) -> int:
    return math.ceil(characters / CHARS_PER_TOKEN) if characters else 0


def max_pixels_to_fit(sizes: list[tuple[int, int]], budget: int, geo: ImageGeometry) -> Optional[int]:
    """Largest max_pixels (a multiple of one token's area) whose images fit in ``budget`` tokens."""
    if not sizes:
        return None
    unit = geo.factor * geo.factor
    def cost(max_pixels: int) -> int:
        return sum(prompt_image_tokens(h, w, geo, max_pixels, min_pixels=min(geo.min_pixels, max_pixels))
                   for w, h in sizes)
    tokens = largest_within(1, max(2, max(w * h for w, h in sizes) // unit + 1), lambda n: cost(n * unit), budget)
    return None if tokens is None else tokens * unit


def largest_within(low: int, high: int, cost: Callable[[int], int], budget: int) -> Optional[int]:
    """The largest ``n`` in ``[low, high]`` with ``cost(n) <= budget`` (None when even ``low`` costs more);
    ``cost`` must not decrease as ``n`` grows (a binary search)."""
    if cost(low) > budget:
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid) <= budget else (low, mid - 1)
    return low
