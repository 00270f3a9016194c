"""One counter, one source (issue 25, points 6 and 7): the figures 01, 02 and 03 show of the same data and the
same run agree, and the size warning meant for training data is not given to held-out pairs. No model trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from nbtools.config import RunConfig
from nbtools.data import validate_dataset
from nbtools.data.tokens import PairTokens, epoch_tokens
from nbtools.images import tokens_per_image_label
from nbtools.live import _series
from nbtools.train.callbacks import RunCallback
from nbtools.train.health import validation_points
from nbtools.train.history import evaluation_rows
from nbtools.widgets.estimate_view import estimate_html
from nbtools.widgets.notebook import data_summary, run_outcome

SHAPES = Path(__file__).resolve().parents[1] / "data_samples" / "shapes"
MODEL = "tiny-qwen3-vl"  # the demo's processor family; the warm demo model only has trained weights on top


def test_01_and_02_give_the_same_tokens_per_epoch_and_per_image_for_the_demo_data():
    # 01 validates the training file; 02's estimate reads the same file for the demo's config
    report = validate_dataset(SHAPES / "train.jsonl", model=MODEL, max_pixels=262144, max_context_length=1024)
    config = RunConfig(model=MODEL, train_file=str(SHAPES / "train.jsonl"),
                       validation_file=str(SHAPES / "validation.jsonl"), max_pixels=262144, max_context_length=1024,
                       max_steps=40, batch_size=4)
    summary = data_summary(report)
    for packing, key, layout in ((True, "packed_tokens_per_epoch", "packed"),
                                 (False, "training_tokens_per_epoch", "unpacked")):
        figure = report.stats[key]
        assert f"about {figure:,} tokens per epoch ({layout}:" in estimate_html(config.replace(packing=packing), None)
        assert f"{figure:,} {layout} (packing: {str(packing).lower()}" in summary
    assert report.stats["packed_tokens_per_epoch"] < report.stats["training_tokens_per_epoch"]
    # what one picture costs: the run record's per-pair figure (one picture per pair here) is 02's per-image one
    per_pair = report.stats["image_tokens_per_pair"]
    assert report.stats["images_per_row"] == {"1": 240} and per_pair["min"] == per_pair["max"]
    label = tokens_per_image_label(per_pair["max"])
    assert label == f"{per_pair['max']} tokens per image ({per_pair['max'] - 2} image tokens + vision start/end)"
    assert label in estimate_html(config, None)


def test_02_counts_pictures_under_max_pixels_and_rejected_images_as_01_does(tmp_path):
    from PIL import Image

    from nbtools.widgets.estimate_view import data_facts

    Image.new("RGB", (640, 480), "red").save(tmp_path / "big.png")  # over max_pixels: shrunk before counting
    Image.new("RGB", (320, 240), "blue").save(tmp_path / "other.png")
    rows = [{"prompt": "<image>What colour?", "chosen": "Red.", "rejected": "Blue.", "images": ["big.png"]},
            {"prompt": "<image>What colour?", "chosen": "Red.", "rejected": "Red.", "images": ["big.png"],
             "rejected_images": ["other.png"]}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = RunConfig(model=MODEL, train_file=str(train), validation_split=0.0, max_pixels=128 * 128)
    report = validate_dataset(train, model=MODEL, max_pixels=config.max_pixels)
    epoch = data_facts(config).epoch
    assert (epoch.packed, epoch.rows) == (report.stats["packed_tokens_per_epoch"],
                                          report.stats["training_tokens_per_epoch"])


def _tokens(prompt, delta=0):
    return PairTokens(prompt=prompt, chosen=8, rejected=9, image_tokens=18, estimated=True,
                      rejected_image_delta=delta)


def test_epoch_tokens_count_each_layout_pair_by_pair():
    pairs = [SimpleNamespace(images=["a.png"], rejected_images=None),  # a plain pair with a picture
             SimpleNamespace(images=["a.png"], rejected_images=["b.png"]),  # image contrast: its own prompt
             SimpleNamespace(images=[], rejected_images=None)]  # text only
    counted = epoch_tokens(pairs, [_tokens(36), _tokens(36, delta=4), _tokens(20)])
    assert counted.rows == (36 + 8 + 36 + 9) + (36 + 8 + 40 + 9) + (20 + 8 + 20 + 9)
    assert counted.packed == (36 + 8 + 9) + (36 + 8 + 9 + 40) + (20 + 8 + 9)
    assert counted.contrast_side == 2 * (36 + 8)  # mDPO: the pairs with pictures, [corrupted prompt, chosen]
    assert counted.total(packing=True, contrast_sides=2) == counted.packed + 4 * (36 + 8)
    assert counted.total(packing=False) == counted.rows
    assert (counted + counted).packed == 2 * counted.packed  # chunks and worker processes add up


class _Record:
    def update(self, **fields):
        pass


class _Monitor:
    def __init__(self):
        self.rows = []

    def log(self, row):
        self.rows.append(row)

    def message(self, text):
        pass

    def alarm(self, text):
        pass

    def diagnosis(self, verdict, text, step):
        pass


def _closing(tmp_path, last_step, **args):
    """A run's callback fed evaluations at steps 20 and 40, then its closing evaluation at ``last_step``."""
    from transformers import TrainerControl, TrainerState

    tmp_path.mkdir()
    callback = RunCallback(tmp_path, _Record(), _Monitor(), SimpleNamespace(beta=0.1, adapter_path=None))
    state, control = TrainerState(), TrainerControl()
    state.max_steps = last_step
    for step, loss in ((10, 0.69), (20, 0.6), (30, 0.5), (40, 0.4)):
        state.global_step, state.epoch = step, step / 40
        callback.on_log(None, state, control, logs={"loss": loss})
        if step % 20 == 0:
            callback.on_log(None, state, control, logs={"eval_loss": loss + 0.05})
    state.global_step = last_step
    state.best_model_checkpoint = args.pop("best", None)
    callback.final = True
    callback.on_log(SimpleNamespace(**args), state, control, logs={"eval_loss": 0.44})
    callback.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == callback.history
    return rows


def test_one_row_per_evaluation_and_the_outcome_counts_what_the_plot_shows(tmp_path):
    cases = {
        # the closing evaluation scores the weights step 40's evaluation scored: no second row
        "repeat": ((40, {}), [20, 40]),
        # load_best_model_at_end reloaded step 20's checkpoint: its evaluation is already a row
        "best": ((40, {"load_best_model_at_end": True, "best": "checkpoints/checkpoint-20"}), [20, 40]),
        # the last step had no scheduled evaluation: the closing one is a new point, marked final
        "new": ((45, {"load_best_model_at_end": False}), [20, 40, 45]),
    }
    for name, ((last_step, args), steps) in cases.items():
        rows = _closing(tmp_path / name, last_step, **args)
        logged = [r["step"] for r in rows if "eval_loss" in r]
        assert logged == steps, name
        result = SimpleNamespace(status="finished", history=rows, adapter_dir=None)
        assert f"and {len(steps)} evaluations on the validation pairs" in run_outcome(result), name
        assert _series(rows, "eval_loss")[0] == steps, name  # the plot's validation points
        assert [p.step for p in validation_points(rows, 0.1)] == steps, name
    assert rows[-1]["final"] is True


def test_a_run_that_logged_its_closing_evaluation_twice_reads_as_one_evaluation():
    # metrics.jsonl of runs made before this change: step 40's evaluation again as the closing "final" row
    rows = [{"step": 20, "eval_loss": 0.6}, {"step": 40, "loss": 0.4}, {"step": 40, "eval_loss": 0.45},
            {"step": 40, "train_runtime": 3.0}, {"step": 40, "eval_loss": 0.45, "final": True}]
    assert [r["step"] for r in evaluation_rows(rows)] == [20, 40]
    result = SimpleNamespace(status="finished", history=rows, adapter_dir=None)
    assert "and 2 evaluations" in run_outcome(result)
    assert _series(rows, "eval_loss")[0] == [20, 40]


def test_the_size_warning_is_for_training_pairs_not_held_out_ones():
    # the demo's 60 validation pairs: below the 100 DPO wants for training, which is no concern for held-out pairs
    file = SHAPES / "validation.jsonl"
    assert any("only 60 valid pairs" in p.message for p in validate_dataset(file).problems)
    held_out = validate_dataset(file, held_out=True)
    assert held_out.valid == 60 and not [p for p in held_out.problems if p.field == "dataset"]
