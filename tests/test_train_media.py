"""End to end: a run on pairs with a video and with rejected_images trains with packing on
(reference log-probs precomputed and cached) and with packing off (TRL's two rows per pair)."""

from __future__ import annotations

import math

import pytest

from nbtools.packing import ReferenceLogpsStore

pytestmark = pytest.mark.slow


def write_clip(path, frames: int = 6, size: int = 64, fps: int = 4) -> None:
    """A small lossless clip (ffv1 in Matroska) of stripes moving right, written with PyAV."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for t in range(frames):
            array = np.full((size, size, 3), 30, dtype=np.uint8)
            array[:, (4 * t) % 9 :: 9] = (230, 210, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def media_rows(data_dir, make_pair):
    data_dir.image("red.png", (64, 64), "red")
    data_dir.image("blue.png", (48, 80), "blue")
    write_clip(data_dir.root / "stripes.mkv")
    return [
        make_pair(images=["red.png"]),
        make_pair(prompt="<video>Which way do the stripes move?", chosen="Right.", rejected="Left.", images=[],
                  videos=["stripes.mkv"]),
        make_pair(prompt="<image>What colour is the shape?", chosen="Red.", rejected="Red, I think.",
                  images=["red.png"], rejected_images=["blue.png"]),
        make_pair(prompt="<image><video>Does the clip match the picture?", chosen="No.", rejected="Yes.",
                  images=["blue.png"], videos=["stripes.mkv"], rejected_images=["red.png"]),
    ]


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "unpacked"])
def test_two_steps_on_video_and_image_contrast_pairs(shapes_config, data_dir, make_pair, tmp_path, monkeypatch,
                                                     packing):
    from nbtools.train import read_run, train

    monkeypatch.setattr("nbtools.packing.ref_cache.cache_dir", lambda: tmp_path / "cache")
    rows = media_rows(data_dir, make_pair)
    train_file = data_dir.jsonl(rows, "train.jsonl")
    validation_file = data_dir.jsonl(rows[1:3], "validation.jsonl")
    config = shapes_config(tmp_path / "run", train_file=str(train_file), validation_file=str(validation_file),
                           packing=packing, max_steps=2, eval_steps=2, save_steps=2, logging_steps=1, batch_size=4,
                           fps=4.0, max_frames=4, video_max_pixels=64 * 64,
                           max_context_length=2048, too_long="error")  # every pair trains: none may be dropped
    result = train(config, live=False)
    record = read_run(result.run_dir)
    assert result.status == "finished", (result.status, record.get("error"))
    assert record["packing"]["on"] is packing, record["packing"]
    losses = [row["loss"] for row in result.history if row.get("loss") is not None]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses), result.history
    assert math.isfinite(result.metrics["eval_loss"]) and "eval_rewards/accuracies" in result.metrics
    if packing:  # precomputed for every pair, videos and rejected images included; the validation pairs are
        # copies of two training pairs (same video bytes and frame settings): found in the cache, not recomputed
        assert (record["reference_logps"]["computed"], record["reference_logps"]["reused"]) == (4, 2)
        assert len(ReferenceLogpsStore(tmp_path / "cache" / "ref_logps")) == 4
    else:
        assert not record.get("reference_logps")
