"""Shared test setup: offline, CPU-only, headless."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


# --- data layer fixtures (issue 2, data helper) -------------------------------------------

import json as _json

import pytest as _pytest


class DataDir:
    """Builds small datasets in a temporary folder: images with PIL, JSONL from objects or raw text."""

    def __init__(self, root):
        self.root = root

    def image(self, name="img.jpg", size=(64, 48), colour="red", fmt=None):
        from PIL import Image

        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, colour).save(path, format=fmt)
        return path

    def jsonl(self, rows, name="data.jsonl"):
        """``rows``: dicts (dumped as one line) or raw strings (written as they are)."""
        path = self.root / name
        text = "\n".join(r if isinstance(r, str) else _json.dumps(r) for r in rows) + "\n"
        path.write_text(text, encoding="utf-8")
        return path


def pair(prompt="<image>What colour is the shape?", chosen="Red.", rejected="Blue.", images=("img.jpg",), **extra):
    """One valid row in our JSONL format (``images`` default to one tag, one image)."""
    row = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
           "images": images if isinstance(images, str) else list(images), "rejected_response": rejected}
    row.update(extra)
    return row


@_pytest.fixture
def data_dir(tmp_path):
    return DataDir(tmp_path)


@_pytest.fixture
def make_pair():
    return pair


# --- evaluation / export fixtures (issue 5, evaluate helper) ----------------------------------
# One copy of the shared trained run, one loaded model and one evaluation for every
# evaluation, lab and export test: loading and scoring are the expensive parts.


@_pytest.fixture(scope="session")
def eval_run_dir(trained_run, tmp_path_factory):
    """A copy of the trained run (checkpoints left out) that evaluation and export may write into."""
    import shutil as _shutil

    target = tmp_path_factory.mktemp("evaluated") / "run"
    _shutil.copytree(trained_run, target, ignore=_shutil.ignore_patterns("checkpoints"))
    return target


@_pytest.fixture(scope="session")
def eval_run_model(eval_run_dir):
    from nbtools.evaluate import load_run_model

    return load_run_model(eval_run_dir, device="cpu")


@_pytest.fixture(scope="session")
def evaluation_result(eval_run_dir, eval_run_model):
    """evaluate_run on the run's validation pairs (writes evaluation.json into the copy)."""
    from nbtools.evaluate import evaluate_run

    return evaluate_run(eval_run_dir, run=eval_run_model, batch_size=16, progress=False)


@_pytest.fixture(scope="session")
def colour_answers(eval_run_dir, eval_run_model):
    """evaluate_answers on the demo's colour questions (60 validation pictures; writes answers/ into the copy)."""
    from nbtools.evaluate import evaluate_answers

    return evaluate_answers(eval_run_dir, SHAPES_DIR / "colour_questions.jsonl", run=eval_run_model, batch_size=60,
                            progress=False)  # one batch: the tiny model's steps cost little, their number a lot


# --- training fixtures (issue 4, training helper) ---------------------------------------------
# ONE trained run on the shapes sample task serves every test that needs a trained run
# (training, evaluation, export, run list); a blank-image control run is built only on demand.

from pathlib import Path as _Path

TRAIN_REPO = _Path(__file__).resolve().parent.parent
SHAPES_DIR = TRAIN_REPO / "data_samples" / "shapes"


def shapes_run_config(output_dir, **changes):
    """The shared recipe: the demo's training (tiny warm-started Qwen3-VL, LoRA r=8, lr 5e-3, 40 steps of
    4 pairs, eval every 20), whose outcome benchmarks/warm_spread.py measured over seeds, kernels and threads."""
    from nbtools.config import RunConfig
    from nbtools.demo import DEMO_TRAINING

    settings = dict(
        model="tiny-qwen3-vl-warm", train_file=str(SHAPES_DIR / "train.jsonl"),
        validation_file=str(SHAPES_DIR / "validation.jsonl"), output_dir=str(output_dir),
        task_display_name="shapes-test", custom_model_name="shapes-tiny", save_total_limit=2,
        gradient_checkpointing=False, num_workers=0, max_pixels=128 * 128, max_context_length=256,
    )
    settings.update(DEMO_TRAINING, logging_steps=5)
    settings.update(changes)
    return RunConfig(**settings)


@_pytest.fixture(scope="session")
def shapes_config():
    return shapes_run_config


@_pytest.fixture(scope="session")
def trained_shapes(tmp_path_factory):
    """RunResult of the shared shapes run (in-memory model included)."""
    from nbtools.train import train

    return train(shapes_run_config(tmp_path_factory.mktemp("trained") / "shapes"), live=False)


@_pytest.fixture(scope="session")
def trained_run(trained_shapes):
    """The shared run's folder (config.yaml, run.json, metrics.jsonl, adapter/, processor/, ...)."""
    return trained_shapes.run_dir


def write_small_shapes(folder, n_train=12, n_val=4):
    """The first pairs of the shapes task in ``folder`` (train.jsonl, validation.jsonl; images linked)."""
    folder.mkdir()
    (folder / "images").symlink_to(SHAPES_DIR / "images")
    for split, count in (("train", n_train), ("validation", n_val)):
        lines = (SHAPES_DIR / f"{split}.jsonl").read_text().splitlines()[:count]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@_pytest.fixture
def small_shapes(tmp_path):
    """12 training / 4 validation pairs of the shapes task (the images stay where they are)."""
    return write_small_shapes(tmp_path / "data")


# --- media learning fixtures (issue 12, samples helper) ---------------------------------------
# The stripes sample tasks trained by the real trainer (packing on) on the random tiny-qwen3-vl,
# whose vision tower can read stripe orientation: one run per task, evaluated once, shared.

STRIPES_VIDEO_DIR = TRAIN_REPO / "data_samples" / "stripes_video"
STRIPES_CONTRAST_DIR = TRAIN_REPO / "data_samples" / "stripes_contrast"


def stripes_run_config(output_dir, data_dir, **changes):
    """The demo's DPO recipe (LoRA r=8, lr 5e-3, batch 4, 40 steps, warmup 0.1) without its SFT term, on the
    random tiny-qwen3-vl; benchmarks/stripes_spread.py measured the tasks with this recipe by hand."""
    settings = dict(model="tiny-qwen3-vl", train_file=str(data_dir / "train.jsonl"),
                    validation_file=str(data_dir / "validation.jsonl"), task_display_name="stripes-test",
                    custom_model_name="stripes-tiny", loss_type=["sigmoid"], loss_weights=None, packing=True,
                    max_pixels=128 * 128, video_max_pixels=64 * 64, fps=2.0, max_frames=16,
                    eval_steps=40, save_steps=40, logging_steps=10, save_total_limit=1)
    settings.update(changes)
    return shapes_run_config(output_dir, **settings)


def train_and_evaluate(config):
    """(RunResult, evaluation payload of base vs tuned on the run's validation pairs)."""
    from nbtools.evaluate import evaluate_run, load_run_model
    from nbtools.train import train

    result = train(config, live=False)
    run = load_run_model(result.run_dir, device="cpu")
    evaluation = evaluate_run(result.run_dir, run=run, batch_size=16, n_resamples=200, progress=False, write=False)
    return result, evaluation.payload


def write_plain_clip_copy(folder):
    """The stripes video task with every clip replaced by one plain grey clip of the same size and length."""
    import json

    from nbtools.samples.clips import encode_lossless_video, plain_clip

    (folder / "clips").mkdir(parents=True)
    (folder / "clips" / "plain.avi").write_bytes(encode_lossless_video(plain_clip()))
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in (STRIPES_VIDEO_DIR / f"{split}.jsonl").read_text().splitlines()]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({**r, "videos": ["clips/plain.avi"]}) + "\n"
                                                       for r in rows))
    return folder


@_pytest.fixture(scope="session")
def trained_stripes_video(tmp_path_factory):
    """(RunResult, evaluation payload) of the stripes video task."""
    return train_and_evaluate(stripes_run_config(tmp_path_factory.mktemp("stripes") / "video", STRIPES_VIDEO_DIR))


@_pytest.fixture(scope="session")
def trained_plain_clips(tmp_path_factory):
    """The same run with every clip replaced by one plain clip: the control."""
    data = write_plain_clip_copy(tmp_path_factory.mktemp("plain") / "data")
    return train_and_evaluate(stripes_run_config(data.parent / "run", data))


@_pytest.fixture(scope="session")
def trained_stripes_contrast(tmp_path_factory):
    """(RunResult, evaluation payload): trained only on image-contrast pairs, evaluated on ordinary pairs."""
    # 60 steps, as the issue measured by hand: every measured trainer run was at 1.0 from 40 steps on
    return train_and_evaluate(stripes_run_config(tmp_path_factory.mktemp("stripes") / "contrast",
                                                 STRIPES_CONTRAST_DIR, max_steps=60, eval_steps=60, save_steps=60))


SHAPES_DIR = _Path(__file__).resolve().parent.parent / "data_samples" / "shapes"


def shapes_rows(n: int) -> list[dict]:
    """The first ``n`` bundled shapes validation rows, image paths made absolute."""
    import json

    rows = [json.loads(line) for line in (SHAPES_DIR / "validation.jsonl").read_text().splitlines()[:n]]
    for row in rows:
        row["images"] = [str(SHAPES_DIR / image) for image in row["images"]]
    return rows


def tiny_qwen3_fp32():
    """(model in eval mode, processor): the random tiny-qwen3-vl in fp32 with sdpa, seeded, for exact step checks."""
    import torch

    from nbtools.models import load_model_and_processor

    torch.manual_seed(0)
    model, processor = load_model_and_processor("tiny-qwen3-vl", dtype=torch.float32, device="cpu",
                                                attn_implementation="sdpa")
    return model.eval(), processor
