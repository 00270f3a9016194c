"""The bundled sample data: reproducible, well-formed, and image-dependent by construction."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbtools.samples.clips import encode_lossless_video
from nbtools.samples.drawing import COLOUR_RGB, COLOURS, SHAPES, draw_shape
from nbtools.samples.shapes import shape_questions
from nbtools.samples.stripes import ORIENTATIONS, StripePattern, stripe_questions

ROOT = Path(__file__).resolve().parents[1] / "data_samples"
SHAPES_DIR = ROOT / "shapes"
SHOWCASE = ROOT / "showcase" / "pairs.jsonl"
MIXED_MEDIA = ROOT / "showcase" / "mixed_media.jsonl"
STRIPES_VIDEO = ROOT / "stripes_video"
STRIPES_CONTRAST = ROOT / "stripes_contrast"
SPLITS = ("train", "validation")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def chosen(row: dict) -> str:
    return row["messages"][-1]["content"]


def prompt_text(row: dict) -> str:
    return "\n".join(m["content"] for m in row["messages"][:-1])


def colour_word(answer: str) -> str:
    (word,) = [c for c in COLOURS if re.search(rf"\b{c}\b", answer)]
    return word


@pytest.fixture(scope="session")
def regenerated(tmp_path_factory) -> Path:
    """Runs the committed script's regenerate() into a fresh folder."""
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("samples")
    module.regenerate(out)
    return out


@pytest.fixture(scope="session")
def shapes_rows() -> dict[str, list[dict]]:
    return {split: read_jsonl(SHAPES_DIR / f"{split}.jsonl") for split in SPLITS}


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("subset", ["shapes", "stripes_video", "stripes_contrast", "showcase"])
def test_regenerating_gives_byte_identical_files(regenerated, subset):
    committed, fresh = files_under(ROOT / subset), files_under(regenerated / subset)
    assert sorted(fresh) == sorted(committed), "file lists differ: run python data_samples/make_samples.py"
    differing = [name for name in committed if committed[name] != fresh[name]]
    pixels_equal = [
        name
        for name in differing
        if name.endswith(".png")
        and Image.open(ROOT / subset / name).tobytes() == Image.open(regenerated / subset / name).tobytes()
    ]
    assert not differing, (
        f"{len(differing)} files differ, e.g. {differing[:3]}; {len(pixels_equal)} of them have equal pixels "
        "(then the PNG encoder changed: check the pinned pillow version)"
    )


def test_split_sizes(shapes_rows):
    assert len(shapes_rows["train"]) >= 200
    assert len(shapes_rows["validation"]) >= 50


@pytest.mark.parametrize("split", SPLITS)
def test_each_colour_is_chosen_as_often_as_rejected(shapes_rows, split):
    rows = shapes_rows[split]
    chosen_counts = Counter(colour_word(chosen(r)) for r in rows)
    rejected_counts = Counter(colour_word(r["rejected_response"]) for r in rows)
    assert set(chosen_counts) == set(COLOURS)
    assert chosen_counts == rejected_counts
    assert len(set(chosen_counts.values())) == 1, chosen_counts  # and every colour equally often


@pytest.mark.parametrize("split", SPLITS)
def test_answers_differ_only_in_a_wrong_colour(shapes_rows, split):
    for row in shapes_rows[split]:
        good, bad = chosen(row), row["rejected_response"]
        assert colour_word(good) != colour_word(bad)
        assert good.replace(colour_word(good), "#") == bad.replace(colour_word(bad), "#")
        assert sum(re.search(rf"\b{s}\b", good) is not None for s in SHAPES) == 1


def test_every_pair_has_a_twin_with_swapped_answers(shapes_rows):
    """The structural reason no text-only scorer can beat chance."""
    for split in SPLITS:
        texts = Counter((prompt_text(r), chosen(r), r["rejected_response"]) for r in shapes_rows[split])
        for (prompt, good, bad), count in texts.items():
            assert texts[(prompt, bad, good)] == count, (split, prompt, good)


def bag_of_words_features(prompt: str, answer: str) -> list[str]:
    """Answer words, word pairs (e.g. shape with colour) and question-word/answer-word crosses."""
    words = re.findall(r"[a-z]+", answer.lower())
    pairs = [f"{a}&{b}" for a, b in itertools.combinations(sorted(set(words)), 2)]
    crosses = [f"{q}|{a}" for q in re.findall(r"[a-z]+", prompt.lower()) for a in words]
    return words + pairs + crosses


def fit_text_only_scorer(rows: list[dict]) -> Counter:
    weights: Counter = Counter()
    for row in rows:
        weights.update(bag_of_words_features(prompt_text(row), chosen(row)))
        weights.subtract(bag_of_words_features(prompt_text(row), row["rejected_response"]))
    return weights


def text_only_accuracy(weights: Counter, rows: list[dict]) -> float:
    def score(prompt: str, answer: str) -> int:
        return sum(weights[f] for f in bag_of_words_features(prompt, answer))

    total = 0.0
    for row in rows:
        good, bad = score(prompt_text(row), chosen(row)), score(prompt_text(row), row["rejected_response"])
        total += 1.0 if good > bad else 0.5 if good == bad else 0.0
    return total / len(rows)


def test_text_only_scorer_cannot_beat_chance(shapes_rows):
    weights = fit_text_only_scorer(shapes_rows["train"])
    assert text_only_accuracy(weights, shapes_rows["validation"]) <= 0.6


def test_text_only_scorer_does_find_a_text_bias_when_there_is_one(shapes_rows):
    """Control: the same scorer exploits an unbalanced set, so the test above can fail."""
    biased = [r for r in shapes_rows["train"] if colour_word(chosen(r)) == "red" or colour_word(r["rejected_response"]) == "blue"]
    weights = fit_text_only_scorer(biased)
    held_out = [r for r in shapes_rows["validation"] if colour_word(chosen(r)) == "red"]
    assert text_only_accuracy(weights, held_out) >= 0.9


def dominant_colour(path: Path) -> str:
    """Nearest named colour to the mean of the strongly saturated pixels."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16).reshape(-1, 3)
    saturated = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) > 80]
    mean = saturated.mean(axis=0)
    return min(COLOURS, key=lambda c: float(np.sum((mean - np.array(COLOUR_RGB[c])) ** 2)))


def test_image_alone_decides_the_preference(shapes_rows):
    """Control in the other direction: reading the colour off the picture picks chosen every time."""
    for split in SPLITS:
        for row in shapes_rows[split]:
            assert dominant_colour(SHAPES_DIR / row["images"][0]) == colour_word(chosen(row)), row["images"][0]


def test_train_and_validation_images_are_distinct(shapes_rows):
    digests = {
        split: [hashlib.sha256((SHAPES_DIR / r["images"][0]).read_bytes()).hexdigest() for r in shapes_rows[split]]
        for split in SPLITS
    }
    assert len(set(digests["train"])) == len(digests["train"])
    assert len(set(digests["validation"])) == len(digests["validation"])
    assert not set(digests["train"]) & set(digests["validation"])


@pytest.mark.parametrize("path", [SHAPES_DIR / "train.jsonl", SHAPES_DIR / "validation.jsonl", SHOWCASE, MIXED_MEDIA],
                         ids=lambda p: p.name)
def test_image_tags_match_existing_image_files(path):
    for line, row in enumerate(read_jsonl(path), start=1):
        images = row.get("images", [])
        tags = sum(m["content"].count("<image>") for m in row["messages"] if m["role"] == "user")
        assert tags == len(images), f"{path.name}:{line}"
        assert not any("<image>" in m["content"] for m in row["messages"] if m["role"] != "user"), f"{path.name}:{line}"
        for name in images:
            image_file = path.parent / name
            assert image_file.is_file(), f"{path.name}:{line}: {name}"
            with Image.open(image_file) as image:
                assert image.format == "PNG" and min(image.size) >= 96


def test_showcase_covers_the_format():
    rows = read_jsonl(SHOWCASE)
    image_counts = Counter(len(r.get("images", [])) for r in rows)
    assert {0, 1, 2} <= set(image_counts)
    assert any(r["messages"][0]["role"] == "system" for r in rows)
    assert any("images" not in r for r in rows) and any(r.get("images") == [] for r in rows)
    multi_turn = [r for r in rows if [m["role"] for m in r["messages"] if m["role"] != "system"][:3] == ["user", "assistant", "user"]]
    assert any(len(r.get("images", [])) == 2 for r in multi_turn), "no pair with images spread across turns"
    assert any(m["content"].count("<image>") == 2 for r in rows for m in r["messages"]), "no two tags in one message"
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant" and row["rejected_response"].strip()
        assert chosen(row).strip() != row["rejected_response"].strip()


def test_showcase_does_not_teach_longer_is_better():
    rows = read_jsonl(SHOWCASE)
    longer = sum(len(chosen(r)) > len(r["rejected_response"]) for r in rows)
    assert 0.3 <= longer / len(rows) <= 0.7


def test_shape_questions_refuse_an_unbalanced_size():
    with pytest.raises(ValueError, match=r"n=250: the shapes task needs a positive multiple of 12 pairs"):
        shape_questions(250)


def test_draw_shape_names_the_valid_colours():
    with pytest.raises(ValueError, match=r"unknown colour 'purple'; choose one of: red, green, blue, yellow"):
        draw_shape("purple", "circle", random.Random(0))


def test_draw_shape_is_seeded_and_sized():
    first = draw_shape("green", "triangle", random.Random("x"), size=(96, 80))
    again = draw_shape("green", "triangle", random.Random("x"), size=(96, 80))
    other = draw_shape("green", "triangle", random.Random("y"), size=(96, 80))
    assert first.size == (96, 80) and first.mode == "RGB"
    assert first.tobytes() == again.tobytes() != other.tobytes()


def test_splits_of_other_names_draw_other_pictures():
    """Extra data (e.g. a warm-start split) never repeats a committed picture."""
    train = shape_questions(12, split="train")
    warm = shape_questions(12, split="warmstart")
    assert {q.draw().tobytes() for q in train}.isdisjoint(q.draw().tobytes() for q in warm)


# --------------------------------------------------------------------------- stripes tasks and videos


def decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def orientation_word(answer: str) -> str:
    (word,) = [o for o in ORIENTATIONS if o in answer]
    return word


def stripes_run(frames: np.ndarray) -> str:
    """Reads the orientation off the pixels: horizontal stripes are constant along each row."""
    grey = frames[..., 0].astype(np.int16)
    along_rows, along_columns = np.abs(np.diff(grey, axis=-1)).sum(), np.abs(np.diff(grey, axis=-2)).sum()
    assert (along_rows == 0) != (along_columns == 0), "stripes must run exactly one way"
    return "horizontal" if along_rows == 0 else "vertical"


def test_lossless_video_round_trips_and_is_byte_identical():
    clip = StripePattern.draw_random(random.Random("t")).clip("vertical", (48, 32), 6)
    first, again = encode_lossless_video(clip), encode_lossless_video(clip)
    assert first == again
    assert encode_lossless_video(clip[::-1].copy()) != first
    path = Path(__import__("tempfile").mkdtemp()) / "clip.avi"
    path.write_bytes(first)
    assert np.array_equal(decode(path), clip)  # lossless: the exact frames come back


def test_video_files_report_their_frame_count_and_fps():
    """transformers' PyAV loader reads the stream's frame count and average rate (AVI stores both)."""
    import av

    with av.open(str(ROOT / "showcase" / "clips" / "clock.avi")) as container:
        stream = container.streams.video[0]
        assert (stream.frames, float(stream.average_rate), stream.width, stream.height) == (8, 2.0, 128, 128)


@pytest.mark.parametrize("split", SPLITS)
def test_stripes_video_answer_is_in_the_frames(split):
    rows = read_jsonl(STRIPES_VIDEO / f"{split}.jsonl")
    assert len(rows) >= 32
    for line, row in enumerate(rows, 1):
        assert row["messages"][0]["content"].startswith("<video>") and len(row["videos"]) == 1, line
        frames = decode(STRIPES_VIDEO / row["videos"][0])
        assert frames.shape == (8, 64, 64, 3)
        assert stripes_run(frames) == orientation_word(chosen(row)) != orientation_word(row["rejected_response"])
        assert not np.array_equal(frames[0], frames[1]), "the stripes drift"


@pytest.mark.parametrize("folder", [STRIPES_VIDEO, STRIPES_CONTRAST], ids=lambda p: p.name)
def test_stripes_tasks_are_balanced_twins(folder):
    """Each orientation is chosen as often as rejected in every context: text alone scores 50%."""
    for split in SPLITS:
        rows = read_jsonl(folder / f"{split}.jsonl")
        answers = Counter((prompt_text(r).replace("<image>", "").replace("<video>", ""), orientation_word(chosen(r)),
                           chosen(r).replace(orientation_word(chosen(r)), "#")) for r in rows)
        for (prompt, orientation, template), count in answers.items():
            other = ORIENTATIONS[1 - ORIENTATIONS.index(orientation)]
            assert answers[(prompt, other, template)] == count, (folder.name, split, prompt)


def test_contrast_training_pairs_differ_only_in_the_picture():
    for line, row in enumerate(read_jsonl(STRIPES_CONTRAST / "train.jsonl"), 1):
        assert chosen(row) == row["rejected_response"], line  # pure image contrast
        (good,), (bad,) = row["images"], row["rejected_images"]
        good_pixels = np.asarray(Image.open(STRIPES_CONTRAST / good).convert("RGB"))
        bad_pixels = np.asarray(Image.open(STRIPES_CONTRAST / bad).convert("RGB"))
        assert stripes_run(good_pixels[None]) == orientation_word(chosen(row))
        # the same stripes turned by a quarter: the rejected picture is the chosen one transposed
        assert np.array_equal(bad_pixels, good_pixels.transpose(1, 0, 2)), line


def test_contrast_validation_pairs_are_ordinary():
    for line, row in enumerate(read_jsonl(STRIPES_CONTRAST / "validation.jsonl"), 1):
        assert "rejected_images" not in row
        pixels = np.asarray(Image.open(STRIPES_CONTRAST / row["images"][0]).convert("RGB"))
        assert stripes_run(pixels[None]) == orientation_word(chosen(row)) != orientation_word(row["rejected_response"])


def test_stripes_splits_share_no_pattern():
    train = {q.pattern for q in stripe_questions(128, split="train")}
    validation = {q.pattern for q in stripe_questions(32, split="validation")}
    assert len(train) == 64 and len(validation) == 16 and not train & validation


def test_stripe_questions_refuse_an_odd_size():
    with pytest.raises(ValueError, match=r"n=7: a stripes task needs a positive even number of pairs"):
        stripe_questions(7)


def test_mixed_media_file_has_the_documented_example_shape():
    rows = read_jsonl(MIXED_MEDIA)
    shapes = [(r["messages"][0]["role"] == "system", len(r.get("images", [])), len(r.get("videos", []))) for r in rows]
    assert shapes == [(True, 1, 0), (False, 1, 0), (False, 2, 0), (False, 1, 1)]
    for row in rows:
        videos = row.get("videos", [])
        assert sum(m["content"].count("<video>") for m in row["messages"]) == len(videos)
        assert all((MIXED_MEDIA.parent / v).is_file() for v in videos)
        assert chosen(row).strip() != row["rejected_response"].strip()
