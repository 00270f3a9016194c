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
from conftest import shapes_rows
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


def test_exports_save_the_processor_with_the_runs_video_settings(video_run, clip_file, tmp_path, eval_run_model):
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
    # nbtools' generate() on the export samples a video path with the export's settings, as the tuned model saw it
    from nbtools.evaluate import adapter_enabled, generate_text
    from nbtools.export import generate

    prompt = "Which way do the stripes move?"
    answer = generate(merged, [], prompt, videos=[str(clip_file)], max_new_tokens=6)
    with adapter_enabled(eval_run_model.model, True):
        tuned = generate_text(eval_run_model.model, eval_run_model.processor, [], prompt, Decoding(max_new_tokens=6),
                              videos=[trained])
    assert answer == tuned






def test_the_rejected_answer_is_scored_on_the_rejected_images(eval_run_model):
    """An image-contrast pair's rejected sequence is the same conversation with rejected_images in place of
    images: its log-prob is the one the chosen answer gets on those images as an ordinary pair."""
    from nbtools.data import PreferenceRecord, to_training_example
    from nbtools.evaluate import score_pairs

    run = eval_run_model
    first, second = shapes_rows(2)
    prompt = [{"role": "user", "content": first["messages"][0]["content"]}]
    answer = first["messages"][1]["content"]
    record = lambda images, rejected, rejected_images=None: PreferenceRecord(
        "pairs.jsonl", 1, prompt, answer, rejected, images=images, rejected_images=rejected_images)
    contrast = record(first["images"], answer, second["images"])  # same text, other picture for the rejected side
    on_second = record(second["images"], first["rejected_response"])
    on_first = record(first["images"], first["rejected_response"])
    examples = [to_training_example(r, run.config.max_pixels, run.family) for r in (contrast, on_second, on_first)]
    scores = score_pairs(run.model, run.processor, examples, batch_size=1, progress=False)
    assert scores.rejected[0] == pytest.approx(scores.chosen[1], abs=1e-4)
    assert scores.chosen[0] == pytest.approx(scores.chosen[2], abs=1e-4)
    assert abs(scores.chosen[0] - scores.rejected[0]) > 1e-2  # the pictures differ, so do the log-probs
    together = score_pairs(run.model, run.processor, examples, batch_size=3, progress=False)  # padded in one batch
    assert together.chosen == pytest.approx(scores.chosen, abs=1e-4)
    assert together.rejected == pytest.approx(scores.rejected, abs=1e-4)


@pytest.fixture(scope="module")
def media_pairs(tmp_path_factory, clip_file) -> Path:
    """Lines 1-2 ordinary; 3 asks about a video; 4 an image-contrast pair (same answer text)."""
    folder = tmp_path_factory.mktemp("media_pairs")
    rows = shapes_rows(3)
    video = json.loads(json.dumps(rows[0]))
    video["messages"][0]["content"] = "<video>Which way do the stripes move?"
    video["messages"][1]["content"] = "They move left."
    video["rejected_response"] = "They move right."
    video["images"], video["videos"] = [], [str(clip_file)]
    contrast = json.loads(json.dumps(rows[0]))
    contrast["rejected_response"] = contrast["messages"][1]["content"]
    contrast["rejected_images"] = rows[2]["images"]
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + [video, contrast]))
    return path


def test_video_and_image_contrast_pairs_are_scored_with_the_runs_video_settings(eval_run_model, media_pairs):
    from nbtools.evaluate import evaluate_run

    def evaluate(**video):
        run = dataclasses.replace(eval_run_model, config=eval_run_model.config.replace(**video))
        return evaluate_run(run.run_dir, media_pairs, run=run, n_resamples=200, progress=False, write=False)

    two = evaluate(fps=2.0, max_frames=2)
    payload = two.payload
    assert payload["n_pairs"] == 4 and payload["pairs"]["lines"] == [1, 2, 3, 4]
    assert payload["left_out"] == {"count": 0, "pairs": []}
    [video] = [two.examples[k] for k, i in enumerate(two.order) if i == 2]
    [clip] = video["videos"]
    assert clip.settings == VideoSettings(2.0, 2, eval_run_model.config.video_max_pixels)
    assert clip.sampled_indices == [0, 15]  # 4 s at 2 fps = 8 frames, capped at max_frames=2: first and last
    [contrast] = [two.examples[k] for k, i in enumerate(two.order) if i == 3]
    assert len(contrast["rejected_images"]) == 1 and contrast["chosen"] == contrast["rejected"]
    four = evaluate(fps=1.0, max_frames=16)
    [clip] = [four.examples[k] for k, i in enumerate(four.order) if i == 2][0]["videos"]
    assert clip.sampled_indices == [0, 4, 8, 12]  # one frame a second
    base_two, base_four = payload["pairs"]["base"], four.payload["pairs"]["base"]
    assert base_two["chosen"][:2] == pytest.approx(base_four["chosen"][:2], abs=1e-4)  # images: same scores
    assert abs(base_two["chosen"][2] - base_four["chosen"][2]) > 1e-3  # other frames, another score
    # the image-contrast pair: same text on both sides, so its margin is all the pictures' doing
    assert abs(base_two["chosen"][3] - base_two["rejected"][3]) > 1e-2
