"""The stripes tasks: "which way do the stripes run?" on short clips (the video task) and on pictures (the
image-contrast task, whose rejected side sees the same stripes turned, with the same answer text)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from nbtools.samples.clips import CLIP_FRAMES, CLIP_SIZE, encode_lossless_video
from nbtools.samples.drawing import check_choice, png_bytes
from nbtools.samples.rows import pair_row, write_jsonl

# Stripe orientation is a texture cue: it survives the random patch embedding of the built-in
# tiny-qwen3-vl (colour and position do not), so a tiny model with a random frozen vision tower
# can learn a stripes question. benchmarks/stripes_spread.py measures how reliably.

ORIENTATIONS: tuple[str, ...] = ("horizontal", "vertical")
STRIPE_QUESTIONS: tuple[str, ...] = (
    "Which way do the stripes run?",
    "Are the stripes horizontal or vertical?",
    "In which direction do the stripes run?",
)
STRIPE_ANSWERS: tuple[str, ...] = (
    "The stripes are {orientation}.",
    "They run {orientation}ly.",
    "These are {orientation} stripes.",
)

# 4x4 merged tokens. At 64x64 (2x2 tokens) training on image-contrast pairs alone taught the ordinary
# preference less reliably (benchmarks/stripes_spread.py: 0.84-1.0 after 60 steps, one collapse at 80).
STRIPES_IMAGE_SIZE = (128, 128)


def _stripe_colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A dark and a light grey, in random order and at random levels: only the layout carries the cue.

    Grey rather than colours: per-channel colour differences add nuisance variation that the random
    vision tower mixes into the orientation signal (benchmarks/stripes_spread.py measured the task
    learning more slowly and less reliably with random colours).
    """
    dark, light = rng.randint(0, 70), rng.randint(185, 255)
    first, second = (dark, light) if rng.random() < 0.5 else (light, dark)
    return (first,) * 3, (second,) * 3  # type: ignore[return-value]


@dataclass(frozen=True)
class StripePattern:
    """Everything but the orientation of a stripes picture or clip, so one pattern draws both ways."""

    colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    period: int  # pixels per dark+light cycle
    phase: float  # offset of the first stripe, in pixels
    speed: float  # pixels per frame, across the stripes (a clip's stripes drift)

    @classmethod
    def draw_random(cls, rng: random.Random) -> "StripePattern":
        # Stripes at least 6 px wide, drifting at most a sixth of a period per frame: the tiny models'
        # vision patch is 16 px and spans 2 frames, and finer stripes, or ones that move by half a
        # period between the two frames of a patch (dark over light), blur into flat grey there.
        period = rng.randint(12, 24)
        return cls(colours=_stripe_colours(rng), period=period, phase=rng.uniform(0, period),
                   speed=rng.choice((-1, 1)) * rng.uniform(0.05, 0.16) * period)

    def frame(self, orientation: str, size: tuple[int, int], t: int = 0):
        """Frame ``t`` as a (H, W, 3) uint8 array: square-wave stripes across ``orientation``."""
        import numpy as np

        check_choice(orientation, ORIENTATIONS, "orientation")
        width, height = size
        # Horizontal stripes vary down the picture (along y); vertical ones across it (along x).
        axis = np.arange(height if orientation == "horizontal" else width, dtype=np.float64)
        light = ((axis + self.phase + self.speed * t) % self.period) < self.period / 2
        line = np.where(light[:, None], np.array(self.colours[1]), np.array(self.colours[0])).astype(np.uint8)
        if orientation == "horizontal":
            return np.ascontiguousarray(np.broadcast_to(line[:, None, :], (height, width, 3)))
        return np.ascontiguousarray(np.broadcast_to(line[None, :, :], (height, width, 3)))

    def clip(self, orientation: str, size: tuple[int, int] = CLIP_SIZE, frames: int = CLIP_FRAMES):
        """A (T, H, W, 3) uint8 clip of the stripes drifting across themselves."""
        import numpy as np

        return np.stack([self.frame(orientation, size, t) for t in range(frames)])

    def image(self, orientation: str, size: tuple[int, int] = STRIPES_IMAGE_SIZE) -> Image.Image:
        return Image.fromarray(self.frame(orientation, size))


@dataclass(frozen=True)
class StripeQuestion:
    """One pair of a stripes task, before it is drawn and written."""

    split: str
    index: int
    orientation: str  # the true orientation: named by the chosen answer
    question: str
    answer_template: str
    twin: int  # the two pairs of a twin share question, template and pattern
    pattern_seed: str  # seeds the pattern; contains the split, so splits never share a stream

    @property
    def other(self) -> str:
        return ORIENTATIONS[1 - ORIENTATIONS.index(self.orientation)]

    @property
    def chosen(self) -> str:
        return self.answer_template.format(orientation=self.orientation)

    @property
    def rejected(self) -> str:
        return self.answer_template.format(orientation=self.other)

    @property
    def pattern(self) -> StripePattern:
        return StripePattern.draw_random(random.Random(self.pattern_seed))


def stripe_questions(n: int, seed: int = 0, split: str = "train", task: str = "video") -> list[StripeQuestion]:
    """``n`` balanced stripes pairs (``n`` even). Twins share the question, the answer template and
    the stripe pattern, once horizontal and once vertical: text alone scores exactly 50%, and
    the two pictures of a twin differ only in orientation."""
    if n <= 0 or n % 2:
        raise ValueError(f"n={n}: a stripes task needs a positive even number of pairs (twins) to stay balanced")
    rng = random.Random(f"nbtools-stripes-{task}/{split}/{seed}/layout")
    rows = []
    for twin in range(n // 2):
        question, template = rng.choice(STRIPE_QUESTIONS), rng.choice(STRIPE_ANSWERS)
        rows += [(o, question, template, twin) for o in ORIENTATIONS]
    rng.shuffle(rows)
    return [
        StripeQuestion(split=split, index=i, orientation=o, question=q, answer_template=t, twin=twin,
                       pattern_seed=f"nbtools-stripes-{task}/{split}/{seed}/pattern/{twin}")
        for i, (o, q, t, twin) in enumerate(rows)
    ]


@dataclass(frozen=True)
class TaskFiles:
    train: Path
    validation: Path
    media_dir: Path


def write_stripes_video_task(out_dir: str | Path, n_train: int = 128, n_val: int = 32, seed: int = 0,
                             size: tuple[int, int] = CLIP_SIZE, frames: int = CLIP_FRAMES) -> TaskFiles:
    """``train.jsonl``, ``validation.jsonl`` and ``clips/*.avi``: "which way do the stripes run?" on
    short clips of drifting stripes. The answer is in the frames and nowhere else."""
    out = Path(out_dir)
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)

    def row(split: str, q: StripeQuestion) -> dict:
        name = f"{split}_{q.index + 1:04d}.avi"
        (clips / name).write_bytes(encode_lossless_video(q.pattern.clip(q.orientation, size, frames)))
        return pair_row("<video>" + q.question, q.chosen, q.rejected, videos=[f"clips/{name}"])

    return _write_splits(out, clips, (n_train, n_val), seed, "video", row)


def write_stripes_contrast_task(out_dir: str | Path, n_train: int = 128, n_val: int = 32, seed: int = 0,
                                size: tuple[int, int] = STRIPES_IMAGE_SIZE) -> TaskFiles:
    """The image-contrast task: ``train.jsonl`` holds only pure image-contrast pairs (the rejected
    answer *equals* the chosen one; the rejected side sees the same stripes turned the other way
    in ``rejected_images``), ``validation.jsonl`` ordinary pairs of the same question (one picture,
    the right orientation chosen over the wrong one)."""
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)

    def row(split: str, q: StripeQuestion) -> dict:
        # A twin's two pictures are one pattern turned both ways: each is the other's rejected image.
        picture, turned = (f"images/{split}_{q.twin + 1:04d}_{o}.png" for o in (q.orientation, q.other))
        (out / picture).write_bytes(png_bytes(q.pattern.image(q.orientation, size)))
        prompt = "<image>" + q.question
        if split == "train":
            return pair_row(prompt, q.chosen, q.chosen, images=[picture], rejected_images=[turned])
        return pair_row(prompt, q.chosen, q.rejected, images=[picture])

    return _write_splits(out, images, (n_train, n_val), seed, "contrast", row)


def _write_splits(out: Path, media_dir: Path, sizes: tuple[int, int], seed: int, task: str,
                  row: Callable[[str, StripeQuestion], dict]) -> TaskFiles:
    """``train.jsonl`` and ``validation.jsonl`` of ``row(split, question)`` for each of the task's questions."""
    files = {}
    for split, n in zip(("train", "validation"), sizes):
        files[split] = out / f"{split}.jsonl"
        write_jsonl(files[split], [row(split, q) for q in stripe_questions(n, seed, split, task=task)])
    return TaskFiles(train=files["train"], validation=files["validation"], media_dir=media_dir)
