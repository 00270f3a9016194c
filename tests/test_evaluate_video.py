"""Videos and image-contrast pairs in the evaluation, the side by side, the lab and the export, on the trained run.

The clips are tiny files PyAV encodes under tmp_path (ffv1, single-threaded); the run is the shared
shapes run (tiny Qwen3-VL), whose config says how frames are sampled (fps, max_frames, video_max_pixels).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from video_files import write_clip

from nbtools.evaluate import Decoding, ModelLab, generate_pair, side_by_side
from nbtools.evaluate.generation import build_inputs
from nbtools.video import VideoSettings, load_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "stripes.mkv", "ffv1", frames=16, rate=4)  # 4 s


def video_sample(clip, text="Which way do the stripes move?") -> dict:
    return {"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}],
            "images": [], "videos": [clip],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Left."}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "Right."}]}]}


def test_generation_hands_the_clip_and_its_times_to_the_processor(eval_run_model, clip_file):
    run = eval_run_model
    clip = load_clip(str(clip_file), VideoSettings(fps=1.0, max_frames=16, video_max_pixels=64 * 64), run.family)
    inputs = build_inputs(run.processor, [], video_sample(clip)["prompt"], videos=[clip])
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 4]]  # 4 frames (0, 1, 2, 3 s) of 64x64: 2 x 4 x 4 patches
    text = run.processor.tokenizer.decode(inputs["input_ids"][0])
    # Qwen3-VL writes each frame pair's time from the clip's metadata (without it: 24 fps assumed, wrong times)
    assert "<0.5 seconds>" in text and "<2.5 seconds>" in text
    assert "pixel_values" not in inputs
    with pytest.raises(ValueError, match="no videos were passed"):  # the clip is what fills the video block
        build_inputs(run.processor, [], video_sample(clip)["prompt"])


def test_side_by_side_and_lab_answer_about_the_video(eval_run_model, clip_file):
    run = eval_run_model
    clip = load_clip(str(clip_file), VideoSettings.from_config(run.config), run.family)
    decoding = Decoding(max_new_tokens=6)
    sample = video_sample(clip)
    [row] = side_by_side(run.model, run.processor, [sample], decoding, progress=False)
    expected = generate_pair(run.model, run.processor, [], sample["prompt"], decoding, videos=[clip])
    assert (row["base"], row["tuned"]) == (expected["base"], expected["tuned"])
    assert row["videos"] == [clip] and row["images"] == [] and row["rejected_images"] == []
    lab = ModelLab(run.model, run.processor, [sample], decoding)
    assert lab.media.value.count("</figcaption>") == min(6, len(clip.sampled_indices))
    assert lab.current_videos() == [clip]
    lab.max_new_tokens.value = 6
    answers = lab.on_generate()
    assert answers == generate_pair(run.model, run.processor, [], lab.prompt.value, decoding, videos=[clip])


@pytest.fixture(scope="module")
def video_run(eval_run_dir, tmp_path_factory):
    """A copy of the trained run whose config samples videos at 1 fps, at most 6 frames of at most 64x64."""
    run = tmp_path_factory.mktemp("video_run") / "run"
    shutil.copytree(eval_run_dir, run, ignore=shutil.ignore_patterns("export", "lab", "evaluation*"))
    config = (run / "config.yaml").read_text()
    for name, value in (("fps", "1.0"), ("max_frames", "6"), ("video_max_pixels", "4096")):
        assert f"\n{name}: " in config
        config = "\n".join(f"{name}: {value}" if line.startswith(f"{name}: ") else line
                           for line in config.splitlines()) + "\n"
    (run / "config.yaml").write_text(config)
    return run


def served_grid(processor, clip_file) -> list:
    """What a server computes from the whole video (all 16 frames at 4 fps) with the saved processor's own sampling."""
    import av
    import numpy as np
    from transformers.video_utils import VideoMetadata

    with av.open(str(clip_file)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    metadata = VideoMetadata(total_num_frames=len(frames), fps=4.0, width=64, height=64, duration=len(frames) / 4.0)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}],
        add_generation_prompt=True, tokenize=False)
    out = processor(text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt")
    return out["video_grid_thw"].tolist()


def test_exports_save_the_processor_with_the_runs_video_settings(video_run, clip_file, tmp_path):
    from transformers import AutoProcessor

    from nbtools.export import export_merged, save_adapter
    from nbtools.models import load_processor
    from nbtools.video import processor_video_kwargs

    merged = export_merged(video_run, tmp_path / "merged", device="cpu")
    adapter = save_adapter(video_run, tmp_path / "adapter")
    settings = VideoSettings(1.0, 6, 4096)
    trained = load_clip(str(clip_file), settings, "qwen3_vl")  # how training sampled this clip: 4 frames, 64x64
    processor = AutoProcessor.from_pretrained(video_run / "processor")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}],
        add_generation_prompt=True, tokenize=False)
    training_grid = processor(text=[text], **processor_video_kwargs([trained]), return_tensors="pt")["video_grid_thw"]
    assert training_grid.tolist() == [[2, 4, 4]]
    for folder in (merged, adapter):
        saved = AutoProcessor.from_pretrained(folder)  # plain transformers, as a server loads it
        video = saved.video_processor
        assert (video.fps, video.max_frames, video.do_sample_frames) == (1.0, 6, True)
        assert video.cap_pixels_per_frame is True and video.max_video_tokens == 4096 // (32 * 32)
        assert served_grid(saved, clip_file) == training_grid.tolist()  # the server's frames match training's
        info = json.loads((folder / "nbtools_export.json").read_text())
        assert info["video"] == {"fps": 1.0, "max_frames": 6, "video_max_pixels": 4096}
    # negative check: the base model's processor as shipped samples this clip differently
    assert served_grid(load_processor("tiny-qwen3-vl-warm"), clip_file) != training_grid.tolist()
