"""The shapes task: "what colour is the shape?" pairs whose chosen answer names the right colour and whose
rejected answer names a wrong one, balanced so that only the picture decides (see nbtools.samples)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PIL import Image

from nbtools.samples.drawing import COLOURS, IMAGE_SIZE, SHAPES, draw_shape, png_bytes
from nbtools.samples.rows import write_jsonl

# Question phrasings and answer templates. The answer template is shared by chosen and
# rejected within a pair, so the two answers differ only in the colour word.
SHAPE_QUESTIONS: tuple[str, ...] = (
    "What colour is the shape?",
    "Describe the shape in the picture.",
    "Which colour does the object have?",
    "What do you see in this image?",
)
SHAPE_ANSWERS: tuple[str, ...] = (
    "It is a {colour} {shape}.",
    "The picture shows a {colour} {shape}.",
    "A {colour} {shape} on a light background.",
    "I can see a {colour} {shape}.",
)

# The colour each colour is mistaken for: a shapes pair rejects the true colour's partner.
CONFUSABLE_COLOURS: dict[str, str] = {"red": "green", "green": "red", "blue": "yellow", "yellow": "blue"}


@dataclass(frozen=True)
class ShapeQuestion:
    """One pair of the shapes task, before it is drawn and written."""

    split: str
    index: int  # 0-based position in the split
    colour: str  # the true colour: named by the chosen answer
    rejected_colour: str  # the confusable wrong colour: named by the rejected answer
    shape: str
    question: str
    answer_template: str
    image_seed: str  # seeds the drawing; contains the split, so splits never share a stream

    @property
    def chosen(self) -> str:
        return self.answer_template.format(colour=self.colour, shape=self.shape)

    @property
    def rejected(self) -> str:
        return self.answer_template.format(colour=self.rejected_colour, shape=self.shape)

    def draw(self, size: tuple[int, int] = IMAGE_SIZE) -> Image.Image:
        return draw_shape(self.colour, self.shape, random.Random(self.image_seed), size)


def shape_questions(n: int, seed: int = 0, split: str = "train", rejected: str = "any") -> list[ShapeQuestion]:
    """``n`` balanced shapes-task pairs for ``split`` (``n`` must be a multiple of 12).

    ``rejected`` says which wrong colour a pair's rejected answer names: ``"any"`` spreads the
    rejected answers evenly over all three wrong colours (training pairs: the model learns the
    right colour against every wrong one), ``"confusable"`` always names the true colour's
    partner, red <-> green or blue <-> yellow (validation pairs: they test exactly the mistake
    built into ``tiny-qwen3-vl-warm``, which calls red shapes green and green shapes red).

    Pairs come in twins: the same question, shape and answer template, once with colour A
    chosen over B and once with B chosen over A (each twin has its own picture). So every
    colour is chosen exactly as often as it is rejected, in every context, and any scorer
    that reads only the text gets exactly one of each twin right: chance. Only the picture
    decides. Use a ``split`` name of your own (e.g. "warmstart") for extra data that must not
    share drawings with the committed splits.
    """
    if rejected == "any":
        unordered = [(a, b) for i, a in enumerate(COLOURS) for b in COLOURS[i + 1 :]]
    elif rejected == "confusable":
        unordered = sorted({tuple(sorted(p)) for p in CONFUSABLE_COLOURS.items()})
    else:
        raise ValueError(f"rejected={rejected!r}: choose 'any' or 'confusable'")
    per_block = 12  # a multiple of twins x colour pairs x shapes for both designs
    if n <= 0 or n % per_block:
        raise ValueError(f"n={n}: the shapes task needs a positive multiple of {per_block} pairs to stay balanced")
    rng = random.Random(f"nbtools-shapes/{split}/{seed}/layout")
    rows: list[tuple[str, str, str, str, str]] = []
    for block in range(n // per_block):
        if rejected == "any":  # the 6 colour pairs, the shape turning with the block
            twins = [(SHAPES[(block + i) % len(SHAPES)], a, b) for i, (a, b) in enumerate(unordered)]
        else:  # the 2 confusable pairs on each of the 3 shapes
            twins = [(shape, a, b) for shape in SHAPES for a, b in unordered]
        for shape, a, b in twins:
            question, template = rng.choice(SHAPE_QUESTIONS), rng.choice(SHAPE_ANSWERS)
            rows += [(a, b, shape, question, template), (b, a, shape, question, template)]
    rng.shuffle(rows)
    return [
        ShapeQuestion(
            split=split,
            index=i,
            colour=colour,
            rejected_colour=rejected,
            shape=shape,
            question=question,
            answer_template=template,
            image_seed=f"nbtools-shapes/{split}/{seed}/image/{i}",
        )
        for i, (colour, rejected, shape, question, template) in enumerate(rows)
    ]


@dataclass(frozen=True)
class ShapesTaskFiles:
    train: Path
    validation: Path
    images_dir: Path
    colour_questions: Optional[Path] = None


# The answer-level benchmark on the validation pictures (short-answer layout, nbtools.evaluate.benchmark): one
# question per picture, the true colour as the reference, the four colours as the exclusive terms.
COLOUR_QUESTION = "What colour is the shape?"
COLOUR_QUESTIONS_FILE = "colour_questions.jsonl"


def _colour_question(question: "ShapeQuestion", image_name: str) -> dict:
    return {"question_id": question.index + 1, "image": f"images/{image_name}", "text": COLOUR_QUESTION,
            "answer": question.colour, "terms": list(COLOURS)}


def _shape_record(question: ShapeQuestion, image_name: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": "<image>" + question.question},
            {"role": "assistant", "content": question.chosen},
        ],
        "images": [f"images/{image_name}"],
        "rejected_response": question.rejected,
    }


def write_shapes_task(
    out_dir: str | Path, n_train: int = 240, n_val: int = 60, seed: int = 0, size: tuple[int, int] = IMAGE_SIZE
) -> ShapesTaskFiles:
    """Writes ``train.jsonl``, ``validation.jsonl`` and ``images/*.png`` of the shapes task, and
    ``colour_questions.jsonl``: "What colour is the shape?" about every validation picture (short answers)."""
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}  # sha256 -> file: no image may repeat, within or across splits
    files = {}
    colour_rows: list[dict] = []
    for split, n, rejected in (("train", n_train, "any"), ("validation", n_val, "confusable")):
        records = []
        for question in shape_questions(n, seed, split, rejected):
            name = f"{split}_{question.index + 1:04d}.png"
            data = png_bytes(question.draw(size))
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:  # astronomically unlikely; refuse rather than leak a duplicate
                raise RuntimeError(f"{name} repeats {seen[digest]}; choose another seed")
            seen[digest] = name
            (images_dir / name).write_bytes(data)
            records.append(_shape_record(question, name))
            if split == "validation":
                colour_rows.append(_colour_question(question, name))
        files[split] = out / f"{split}.jsonl"
        write_jsonl(files[split], records)
    write_jsonl(out / COLOUR_QUESTIONS_FILE, colour_rows)
    return ShapesTaskFiles(train=files["train"], validation=files["validation"], images_dir=images_dir,
                           colour_questions=out / COLOUR_QUESTIONS_FILE)
