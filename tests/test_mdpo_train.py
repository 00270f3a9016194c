"""A short run with loss_type [sigmoid, mdpo_conditional, mdpo_anchor]: trains, logs the mDPO metrics next to
TRL's, and precomputes the reference log-probs of the image-contrast pairs too."""

from __future__ import annotations

import json

import pytest

from nbtools.packing import ReferenceLogpsStore
from nbtools.train import read_run, train

pytestmark = pytest.mark.slow


@pytest.fixture
def ref_cache(tmp_path, monkeypatch):
    folder = tmp_path / "ref_cache"
    monkeypatch.setattr("nbtools.packing.ref_cache.cache_dir", lambda: folder)
    return folder / "ref_logps"


def test_a_short_mdpo_run_logs_the_new_metrics(shapes_config, small_shapes, ref_cache, tmp_path):
    config = shapes_config(tmp_path / "run", train_file=str(small_shapes / "train.jsonl"),
                           validation_file=str(small_shapes / "validation.jsonl"), max_steps=3, batch_size=2,
                           eval_steps=3, save_steps=3, logging_steps=1, loss_type=["sigmoid", "mdpo_conditional",
                                                                                   "mdpo_anchor"],
                           loss_weights=[1.0, 1.0, 1.0])
    result = train(config, live=False)

    assert result.status == "finished"
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_rows = [row for row in rows if "loss" in row]
    assert len(train_rows) == 3
    for row in train_rows:
        for name in ("mdpo/conditional", "mdpo/conditional_accuracy", "mdpo/anchor", "rewards/accuracies",
                     "rewards/margins", "logps/chosen"):
            assert name in row, (name, row)
        assert 0 < row["mdpo/conditional"] < 5 and 0 < row["mdpo/anchor"] < 5
    assert "eval_mdpo/conditional" in result.metrics and "eval_mdpo/anchor" in result.metrics
    # every pair of the shapes task has an image, so each gets an image-contrast pair: 2 x (12 + 4) reference values
    record = read_run(result.run_dir)
    assert record["reference_logps"]["computed"] == 2 * (12 + 4), record["reference_logps"]
    assert len(ReferenceLogpsStore(ref_cache)) == 2 * (12 + 4)
    assert record["packing"]["on"] is True


def test_a_run_where_packing_turns_out_off_stops_with_the_reason(shapes_config, small_shapes, tmp_path, monkeypatch):
    from nbtools.config import ConfigError
    from nbtools.packing.support import PackingSupport

    reason = "packing is off with attn_implementation='flash_attention_2': it needs a 4-D attention mask"
    monkeypatch.setattr("nbtools.packing.trainer_hook.packing_plan", lambda model, args: PackingSupport(False, reason))
    config = shapes_config(tmp_path / "run", train_file=str(small_shapes / "train.jsonl"),
                           validation_file=str(small_shapes / "validation.jsonl"), max_steps=1,
                           loss_type=["sigmoid", "mdpo_anchor"], loss_weights=None)
    with pytest.raises(ConfigError) as caught:
        train(config, live=False)
    assert str(caught.value) == (f"loss_type: only the packed step implements mdpo_anchor, and {reason} (fix: remove "
                                 "mdpo_anchor from loss_type, or change what turns packing off)")
    assert read_run(tmp_path / "run")["status"] == "failed"
