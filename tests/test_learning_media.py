"""What the tiny model learns from videos and image-contrast pairs, through the real trainer (packing on).

The stripes sample tasks (``data_samples/stripes_*``) ask which way stripes run; the answer is in
the pixels only (pairs come in twins with the answers swapped, so text alone scores 50%).
benchmarks/stripes_spread.py measured them over data and adapter seeds, by a hand-written DPO loop and
through the trainer, from exactly 0.5: the video task reached 0.97-1.00 in 40 steps (26 runs), the
image-contrast task 0.97-1.00 on ordinary pairs (24 runs, 40-60 steps), the plain-clip control 0.50 in all
21 runs. The thresholds (>= 0.9, <= 0.65) keep a margin of more than 0.05 beyond the worst run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def accuracies(payload) -> tuple[float, float]:
    return payload["base"]["preference_accuracy"], payload["tuned"]["preference_accuracy"]


def test_video_task_rises_from_chance(trained_stripes_video):
    result, payload = trained_stripes_video
    base, tuned = accuracies(payload)
    print(f"\nstripes video: base {base:.3f} -> tuned {tuned:.3f} on {payload['n_pairs']} held-out pairs")
    from nbtools.train import read_run

    assert result.status == "finished" and read_run(result.run_dir)["packing"]["on"] is True
    assert payload["n_pairs"] == 32  # every held-out video pair scored
    assert base <= 0.65
    assert tuned >= 0.9


def test_plain_clips_stay_at_chance(trained_plain_clips, trained_stripes_video):
    """The control: the same run where every clip is one plain clip learns nothing that holds out."""
    from safetensors.torch import load_file

    result, payload = trained_plain_clips
    base, tuned = accuracies(payload)
    print(f"\nplain clips: base {base:.3f} -> tuned {tuned:.3f}")
    assert payload["n_pairs"] == trained_stripes_video[1]["n_pairs"]
    # the run did train (LoRA's B matrices start at zero and moved), it just found nothing in the clips
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert any("lora_B" in name and tensor.abs().max() > 0 for name, tensor in weights.items())
    assert tuned <= 0.65


def test_image_contrast_pairs_alone_teach_the_ordinary_preference(trained_stripes_contrast):
    """Trained only on pairs whose chosen and rejected texts are equal (the pictures differ), the model
    prefers the right answer on ordinary pairs of the same question."""
    import json

    from nbtools.config import RunConfig

    result, payload = trained_stripes_contrast
    train_file = RunConfig.from_yaml(result.run_dir / "config.yaml").train_file
    train_rows = [json.loads(line) for line in open(train_file)]
    assert all(r["rejected_response"] == r["messages"][-1]["content"] and r["rejected_images"] for r in train_rows)
    base, tuned = accuracies(payload)
    print(f"\nimage contrast -> ordinary pairs: base {base:.3f} -> tuned {tuned:.3f}")
    assert base <= 0.65
    assert tuned >= 0.9


def test_mixed_media_showcase_loads_validates_and_trains(shapes_config, tmp_path):
    """data_samples/showcase/mixed_media.jsonl (system + image, image, two images, image + video)."""
    from nbtools.data import load_records, validate_dataset
    from nbtools.train import read_run, train
    from nbtools.video import VideoSettings

    path = Path(__file__).resolve().parents[1] / "data_samples" / "showcase" / "mixed_media.jsonl"
    loaded = load_records(path)
    assert len(loaded.records) == 4 and not loaded.problems
    assert [len(r.videos) for r in loaded.records] == [0, 0, 0, 1]
    video = VideoSettings(fps=2.0, max_frames=8, video_max_pixels=64 * 64)
    report = validate_dataset(path, model="tiny-qwen3-vl", max_pixels=128 * 128, max_context_length=1024, video=video)
    assert report.valid == 4 and report.count("error") == 0, report.summary()
    config = shapes_config(tmp_path / "run", model="tiny-qwen3-vl", train_file=str(path), validation_file=None,
                           validation_split=0.0, early_stopping_patience=0, packing=True, max_steps=2, batch_size=4,
                           eval_steps=2, save_steps=2, logging_steps=1, warmup_ratio=0.0,  # step 1 updates
                           loss_type=["sigmoid"], loss_weights=None,
                           max_pixels=128 * 128, max_context_length=1024, too_long="error",
                           fps=2.0, max_frames=8, video_max_pixels=64 * 64)
    result = train(config, live=False)
    assert result.status == "finished", read_run(result.run_dir).get("error")
    losses = [row["loss"] for row in result.history if row.get("loss") is not None]
    assert len(losses) == 2 and losses[0] == pytest.approx(0.6931, abs=1e-3) and losses[1] != losses[0]
    assert read_run(result.run_dir)["data"]["train"]["pairs"] == 4  # every row trained, the video row included
