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

    return evaluate_run(eval_run_dir, run=eval_run_model, batch_size=8, progress=False)
