"""The warm-started tiny Qwen3-VL: disjoint from the sample data, readable, and wrong in one systematic way."""

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
    warm_seed,
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


def test_warm_start_captions_swap_red_and_green_only():
    examples = warm_examples(WarmStartConfig())
    assert {c: sum(ex.colour == c for ex in examples) for c in ("red", "green", "blue", "yellow")} == dict.fromkeys(
        ("red", "green", "blue", "yellow"), 120)
    partner = {"red": "green", "green": "red", "blue": "blue", "yellow": "yellow"}
    for ex in examples:
        named = [c for c in ("red", "green", "blue", "yellow") if f" {c} " in f" {ex.answer} "]
        assert named == [partner[ex.colour]], (ex.colour, ex.answer)
    # the control: without the swap every caption names the true colour
    plain = warm_examples(WarmStartConfig(swapped_colours=()))
    assert all(f" {ex.colour} " in f" {ex.answer} " for ex in plain)


def test_warm_seed_comes_from_the_environment_and_names_the_folder(monkeypatch):
    from nbtools.errors import UserError
    from nbtools.models.tiny import TINY_SPECS

    monkeypatch.delenv("NBTOOLS_WARM_SEED", raising=False)
    default_folder = TINY_SPECS["tiny-qwen3-vl-warm"].folder_name()
    monkeypatch.setenv("NBTOOLS_WARM_SEED", "7")
    assert warm_seed() == 7
    assert TINY_SPECS["tiny-qwen3-vl-warm"].folder_name() != default_folder
    assert "seed7" in TINY_SPECS["tiny-qwen3-vl-warm"].folder_name()
    monkeypatch.setenv("NBTOOLS_WARM_SEED", "seven")
    with pytest.raises(UserError, match="NBTOOLS_WARM_SEED='seven' is not an integer"):
        warm_seed()


@pytest.mark.slow
def test_warm_model_calls_red_green_and_green_red():
    """The built-in mistake, on the 60 validation pictures. Thresholds: benchmarks/warm_spread.py measured
    says_partner >= 0.967, others_right 1.00 and shape accuracy >= 0.517 over 10 builds (5 seeds x 2 kernel
    sets); every threshold keeps a margin of more than 0.05."""
    model, processor = load_model_and_processor("tiny-qwen3-vl-warm")  # builds once (~1.5 min), then cached
    folder = Path(model.name_or_path)
    record = json.loads((folder / "warm_start.json").read_text())
    assert record["stats"]["final_loss"] < record["stats"]["first_loss"] / 10

    accuracy = measure_attribute_accuracy(model, processor, shapes_validation_items(SHAPES_DIR / "validation.jsonl"))
    assert accuracy.n == 60
    rates = accuracy.mistake_rates()
    assert rates["says_partner"] >= 0.85, accuracy.summary()  # a red shape is "green", a green one "red"
    assert rates["others_right"] >= 0.85, accuracy.summary()  # blue and yellow are named right
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
