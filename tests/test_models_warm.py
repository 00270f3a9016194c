"""The warm-started tiny Qwen3-VL: disjoint from the sample data, readable, mostly (not always) right."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nbtools.models import load_model_and_processor
from nbtools.models.warm import (
    WarmStartConfig,
    measure_attribute_accuracy,
    shapes_validation_items,
    warm_examples,
)

SHAPES_DIR = Path(__file__).resolve().parents[1] / "data_samples" / "shapes"


def test_warm_training_images_never_overlap_the_sample_data():
    sample_hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (SHAPES_DIR / "images").glob("*.png")}
    assert len(sample_hashes) >= 300  # train + validation pictures are all there
    examples = warm_examples(WarmStartConfig())
    warm_hashes = {ex.image_sha256 for ex in examples}
    assert len(warm_hashes) == len(examples)
    assert warm_hashes.isdisjoint(sample_hashes)
    # no (question, image, answer) of the validation split appears in the warm-start set
    validation = {(it["question"], hashlib.sha256(Path(it["image"]).read_bytes()).hexdigest())
                  for it in shapes_validation_items(SHAPES_DIR / "validation.jsonl")}
    assert not validation & {(ex.question, ex.image_sha256) for ex in examples}


def test_rare_colour_is_rare_in_the_warm_start_set():
    examples = warm_examples(WarmStartConfig())
    counts = {c: sum(ex.colour == c for ex in examples) for c in ("red", "green", "blue", "yellow")}
    assert counts["red"] == counts["green"] == counts["blue"] == 120
    assert 0 < counts["yellow"] < 10


@pytest.mark.slow
def test_warm_model_answers_mostly_right():
    model, processor = load_model_and_processor("tiny-qwen3-vl-warm")  # builds once (~1.5 min), then cached
    folder = Path(model.name_or_path)
    record = json.loads((folder / "warm_start.json").read_text())
    assert record["stats"]["final_loss"] < record["stats"]["first_loss"] / 10

    accuracy = measure_attribute_accuracy(model, processor, shapes_validation_items(SHAPES_DIR / "validation.jsonl"))
    assert accuracy.n == 60
    # most but not all: DPO on the colour task has something to improve
    assert 0.6 <= accuracy.colour_accuracy < 1.0, accuracy.summary()
    assert accuracy.shape_accuracy > 0.4, accuracy.summary()  # chance is 1/3
    readable = [a["answer"] for a in accuracy.answers if a["answer"].endswith(".") and len(a["answer"].split()) >= 4]
    assert len(readable) >= 55, accuracy.answers[:5]


@pytest.mark.slow
def test_random_model_is_not_already_right():
    """The baseline the warm start is measured against: the random tiny model names nothing right."""
    model, processor = load_model_and_processor("tiny-qwen3-vl")
    items = shapes_validation_items(SHAPES_DIR / "validation.jsonl")[:20]
    accuracy = measure_attribute_accuracy(model, processor, items, max_new_tokens=8)
    assert accuracy.colour_accuracy < 0.5
