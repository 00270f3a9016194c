"""Videos: frame sampling, per-frame sizing, the processor hand-off and exact token counts per family."""

import io
import logging

import av
import numpy as np
import pytest

from nbtools.data import to_training_example, validate_dataset
from nbtools.data.media import inspect_video
from nbtools.data.tokens import TokenCounter
from nbtools.images import geometry
from nbtools.models import load_processor
from nbtools.video import (
    VideoError,
    VideoSettings,
    load_clip,
    processor_video_geometry,
    processor_video_kwargs,
    video_geometry,
    video_tokens,
)

FAMILIES = {"tiny-qwen3-vl": "qwen3_vl", "tiny-qwen2.5-vl": "qwen2_5_vl", "tiny-qwen2-vl": "qwen2_vl"}
SETTINGS = VideoSettings(fps=2.0, max_frames=5, video_max_pixels=6000)


def write_clip(path, frames=10, width=96, height=64, rate=5, codec="ffv1"):
    """A small clip whose frames differ (a moving bar), encoded single-threaded."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        for i in range(frames):
            pixels = np.full((height, width, 3), 30, np.uint8)
            pixels[:, (i * 7) % width:(i * 7) % width + 6] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        # Matroska stores no frame count: it is counted from the packets
        "short": write_clip(root / "short.mkv", frames=10, rate=5),  # 2 s at 5 fps -> 4 frames at fps 2
        "odd": write_clip(root / "odd.mp4", frames=15, width=160, height=90, rate=6, codec="mpeg4"),  # 2.5 s -> 5
        "long": write_clip(root / "long.avi", frames=40, width=320, height=240, rate=10),  # 4 s -> 8, capped at 5
    }


# --- sampling and sizing ------------------------------------------------------------------------

def test_frames_are_sampled_at_fps_of_the_videos_own_time(clips):
    clip = load_clip(str(clips["short"]), SETTINGS, "qwen3_vl")
    # 5 fps source, 2 fps wanted: frames on screen at 0, 0.5, 1.0 and 1.5 s
    assert clip.metadata.frames_indices == [0, 2, 5, 7]
    assert clip.metadata.fps == 5.0 and clip.metadata.total_num_frames == 10
    assert clip.frames.shape[0] == 4 and clip.frames.dtype == np.uint8
    assert not np.array_equal(clip.frames[0], clip.frames[1])  # real, distinct frames

    faster = load_clip(str(clips["short"]), VideoSettings(fps=5.0, max_frames=16, video_max_pixels=6000))
    assert faster.metadata.frames_indices == list(range(10))  # every frame at the source rate


def test_max_frames_caps_by_spreading_over_the_whole_clip(clips):
    clip = load_clip(str(clips["long"]), SETTINGS, "qwen3_vl")
    # 4 s at 2 fps would be 8 frames; max_frames=5 spreads 5 over all 40, first and last included
    assert clip.sampled_indices == [0, 10, 20, 29, 39]
    # the odd count is padded with the last frame, as the processor pads its temporal patch
    assert clip.metadata.frames_indices == [0, 10, 20, 29, 39, 39]
    assert clip.frames.shape[0] == 6 and np.array_equal(clip.frames[4], clip.frames[5])
    uncapped = load_clip(str(clips["long"]), VideoSettings(fps=2.0, max_frames=16, video_max_pixels=6000))
    assert uncapped.metadata.frames_indices == [0, 5, 10, 15, 20, 25, 30, 35]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl", "qwen2_vl"])
def test_each_frame_is_resized_under_video_max_pixels(clips, family):
    geo = video_geometry(family, SETTINGS)
    for name in clips:
        clip = load_clip(str(clips[name]), SETTINGS, family)
        _, height, width, _ = clip.frames.shape
        assert height * width <= SETTINGS.video_max_pixels
        assert height % geo.factor == 0 and width % geo.factor == 0
    big = load_clip(str(clips["long"]), VideoSettings(2.0, 5, 320 * 240), family)
    assert big.frames.shape[1] * big.frames.shape[2] > 6000  # the knob, not a fixed size, decides


def test_unreadable_videos_are_one_clear_error_naming_the_file(tmp_path, clips):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(VideoError, match=r"broken\.mp4: not a readable video .*\(fix: re-encode it"):
        load_clip(str(broken), SETTINGS)
    with pytest.raises(VideoError, match=r"missing\.mp4: video file not found \(fix: check the path"):
        load_clip(str(tmp_path / "missing.mp4"), SETTINGS)
    data = clips["odd"].read_bytes()  # MP4 keeps its index at the end: a cut file does not open
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match=r"cut\.mp4: .*\(fix: "):
        load_clip(str(tmp_path / "cut.mp4"), SETTINGS)
    assert load_clip(str(clips["odd"]), SETTINGS).frames.shape[0] == 6  # the intact file loads


def test_inspect_video_reports_fps_frames_and_duration(clips):
    short = inspect_video(str(clips["short"]))
    assert (short.fps, short.frames, short.duration, short.width, short.height) == (5.0, 10, 2.0, 96, 64)
    odd = inspect_video(str(clips["odd"]))
    assert (odd.fps, odd.frames, odd.duration) == (6.0, 15, 2.5)


# --- the processor hand-off ---------------------------------------------------------------------

def _transformers_log():
    from transformers.utils import logging as hf_logging

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    hf_logging.get_logger("transformers").addHandler(handler)
    for name in ("transformers.models.qwen3_vl.processing_qwen3_vl",):
        logger = hf_logging.get_logger(name)
        if hasattr(logger.warning_once, "cache_clear"):
            logger.warning_once.cache_clear()  # a warning given before must be able to show again
    return buffer, handler


def test_metadata_gives_qwen3_vl_the_videos_own_timestamps(clips):
    from transformers.utils import logging as hf_logging

    processor = load_processor("tiny-qwen3-vl", video=SETTINGS)
    clip = load_clip(str(clips["short"]), SETTINGS, "qwen3_vl")
    turn = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}]
    text = processor.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    buffer, handler = _transformers_log()
    try:
        kwargs = processor_video_kwargs([clip])
        assert set(kwargs) == {"videos", "video_metadata", "do_sample_frames"} and kwargs["do_sample_frames"] is False
        inputs = processor(text=[text], **kwargs, return_tensors="pt")
        decoded = processor.tokenizer.decode(inputs["input_ids"][0])
        # frames 0, 2 (0.0 s, 0.4 s) and 5, 7 (1.0 s, 1.4 s) at 5 fps: group means 0.2 s and 1.2 s
        assert "<0.2 seconds>" in decoded and "<1.2 seconds>" in decoded
        assert "24" not in buffer.getvalue() and "fps" not in buffer.getvalue()
        assert clip.metadata.frames_indices == [0, 2, 5, 7]  # the clip is not changed by the call
        # negative check: without the metadata transformers warns and times the frames at 24 fps
        processor(text=[text], videos=[clip.frames], do_sample_frames=False, return_tensors="pt")
        assert "Defaulting to `fps=24`" in buffer.getvalue()
    finally:
        hf_logging.get_logger("transformers").removeHandler(handler)


def test_video_settings_go_on_the_processor_and_are_saved(tmp_path):
    processor = load_processor("tiny-qwen3-vl", max_pixels=64 * 64, video=SETTINGS)
    vp = processor.video_processor
    assert processor.image_processor.size.longest_edge == 64 * 64
    # Qwen3-VL: a per-frame cap of 6000 px = 5 tokens of 32x32, total budget never binding under max_frames
    assert (vp.cap_pixels_per_frame, vp.max_video_tokens, vp.fps, vp.max_frames) == (True, 5, 2.0, 5)
    assert vp.size.longest_edge == 5 * 1024 * 6 and vp.size.shortest_edge == 2 * 1024
    processor.save_pretrained(tmp_path / "saved")
    again = load_processor(str(tmp_path / "saved"))
    assert processor_video_geometry(again, "qwen3_vl") == video_geometry("qwen3_vl", SETTINGS)
    qwen2 = load_processor("tiny-qwen2-vl", video=SETTINGS).video_processor
    assert (qwen2.size.longest_edge, qwen2.size.shortest_edge, qwen2.cap_pixels_per_frame) == (6000, 28 * 28, False)
    untouched = load_processor("tiny-qwen3-vl").video_processor  # no settings given: as the model ships
    assert untouched.size.longest_edge == 256 * 256


# --- exact token counts -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_rows(clips, tmp_path_factory):
    from PIL import Image

    def pair(prompt, chosen="Red.", images=(), videos=()):
        return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
                "images": list(images), "videos": list(videos), "rejected_response": "Blue."}

    root = tmp_path_factory.mktemp("rows")
    Image.new("RGB", (300, 200), "teal").save(root / "photo.png")
    rows = [
        pair(prompt="<video>What happens?", images=[], videos=[str(clips["short"])]),
        pair(prompt="<image>Look at this. <video>And what moves here?", chosen="A bar.", images=["photo.png"],
             videos=[str(clips["odd"])]),
        pair(prompt="<video><video>Compare the two.", chosen="The second is longer.", images=[],
             videos=[str(clips["short"]), str(clips["long"])]),
    ]
    import json

    path = root / "videos.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("model", list(FAMILIES))
def test_validator_counts_video_tokens_exactly_as_the_processor(video_rows, model):
    family = FAMILIES[model]
    report = validate_dataset(video_rows, model=model, max_pixels=16384, video=SETTINGS)
    assert [p for p in report.problems if p.severity == "error"] == []
    processor = load_processor(model, max_pixels=16384, video=SETTINGS)
    merge = processor.video_processor.merge_size
    pad = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    # the validator without a model uses the same video geometry (only the text is estimated)
    without_model = TokenCounter(geometry(family), 16384, video=SETTINGS)
    assert without_model.video_geo == processor_video_geometry(processor, family)
    for record in report.records:
        counted = report.tokens[record.line]
        example = to_training_example(record, 16384, family, video=SETTINGS)
        media = {"images": example["images"] or None, **processor_video_kwargs(example["videos"])}
        prompt = processor.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
        full = processor.apply_chat_template(example["prompt"] + example["chosen"], tokenize=False)
        prompt_inputs = processor(text=[prompt], **media, return_tensors="pt")
        full_inputs = processor(text=[full], **media, return_tensors="pt")
        grid = prompt_inputs["video_grid_thw"]
        from_grid = int(grid.prod(-1).sum()) // merge**2
        assert int((prompt_inputs["input_ids"][0] == pad).sum()) == from_grid
        predicted = sum(video_tokens(len(c.sampled_indices), report.media[c.path].height, report.media[c.path].width,
                                     processor_video_geometry(processor, family)) for c in example["videos"])
        assert predicted == from_grid, record.line
        assert counted.prompt == prompt_inputs["input_ids"].shape[1], record.line
        assert counted.prompt + counted.chosen == full_inputs["input_ids"].shape[1], record.line
        assert counted.video_tokens >= from_grid + 2 * len(record.videos)
    if family == "qwen3_vl":  # timestamps are text in the prompt: 2 frame groups of the short clip, 3 of the others
        assert report.tokens[1].video_tokens > int(from_grid) // 4


def test_too_long_video_rows_get_advice_that_makes_them_fit(video_rows):
    sharp = VideoSettings(2.0, 5, 40000)
    report = validate_dataset(video_rows, max_pixels=16384, max_context_length=120, video=sharp)
    problem = next(p for p in report.problems if p.line == 3 and p.field == "prompt+chosen")
    assert "video tokens at fps=2, max_frames=5, video_max_pixels=40000" in problem.message
    assert "(estimated)" in problem.message and "lower video_max_pixels to" in problem.fix
    assert not [p for p in report.problems if p.line in (1, 2) and p.field.startswith("prompt+")]
    fit = int(problem.fix.split("lower video_max_pixels to ")[1].split()[0])
    assert fit < 40000
    fixed = validate_dataset(video_rows, max_pixels=16384, max_context_length=120, video=VideoSettings(2.0, 5, fit))
    assert not [p for p in fixed.problems if p.line == 3 and p.field.startswith("prompt+")]
    # more video pixels cost more tokens, fewer frames fewer
    more = validate_dataset(video_rows, video=VideoSettings(2.0, 5, 76800)).tokens[3].video_tokens
    fewer = validate_dataset(video_rows, video=VideoSettings(2.0, 2, 40000)).tokens[3].video_tokens
    assert fewer < report.tokens[3].video_tokens < more


def test_llava_refuses_videos_with_one_message_naming_the_video_families(video_rows):
    report = validate_dataset(video_rows, model="tiny-llava", max_pixels=16384, video=SETTINGS)
    refusals = [p for p in report.problems if p.field == "videos"]
    assert sorted(p.line for p in refusals) == [1, 2, 3]
    assert len({p.message.split(" video(s)")[1] for p in refusals}) == 1  # the same message on every row
    assert "tiny-llava cannot take videos" in refusals[0].message
    assert "Qwen3-VL, Qwen2.5-VL, Qwen2-VL" in refusals[0].message
    qwen = validate_dataset(video_rows, model="tiny-qwen3-vl", max_pixels=16384, video=SETTINGS)
    assert not [p for p in qwen.problems if p.field == "videos"]  # negative check


def test_validate_cli_takes_the_video_knobs(video_rows, capsys):
    from nbtools.__main__ import main

    code = main(["validate", str(video_rows), "--json", "--fps", "1", "--max-frames", "4",
                 "--video-max-pixels", "4096"])
    import json

    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["stats"]["video_settings"] == {"fps": 1.0, "max_frames": 4, "video_max_pixels": 4096}
    assert out["stats"]["video_seconds"]["max"] == 4.0
    with pytest.raises(SystemExit) as usage:  # argparse's usage error: exit 2 with the reason
        main(["validate", str(video_rows), "--fps", "0"])
    assert usage.value.code == 2 and "--fps: must be a positive number" in capsys.readouterr().err


# --- the estimate -------------------------------------------------------------------------------

def test_estimate_counts_the_videos_tokens(video_rows):
    from nbtools.config import RunConfig
    from nbtools.estimate import estimate_memory
    from nbtools.widgets.estimate_view import data_facts, estimate_html

    config = RunConfig(model="tiny-qwen3-vl", train_file=str(video_rows), fps=2.0, max_frames=5,
                       video_max_pixels=6000, max_pixels=16384)
    facts = data_facts(config)
    report = validate_dataset(video_rows, model="tiny-qwen3-vl", max_pixels=16384, video=SETTINGS)
    per_row = [t.video_tokens for t in report.tokens.values()]
    assert facts.max_video_tokens_per_pair == max(per_row) > 0
    assert facts.epoch.packed == report.stats["packed_tokens_per_epoch"]  # videos counted as 01 counts them
    assert facts.epoch.rows == report.stats["training_tokens_per_epoch"]
    common = dict(batch_size=1, max_context_length=4096, max_pixels=16384, lora_rank=8, gradient_checkpointing=True,
                  precision="fp32", prompt_text_tokens=20, answer_tokens=10)
    plain = estimate_memory("tiny-qwen3-vl", **common)
    with_video = estimate_memory("tiny-qwen3-vl", **common, video_tokens_per_pair=300)
    assert with_video.tokens_per_sequence == plain.tokens_per_sequence + 300
    assert with_video.activation_bytes > plain.activation_bytes
    assert "300 video tokens per pair" in with_video.format()
    shown = estimate_html(config, gpu_memory_gib=None)
    assert f"up to {max(per_row)} video tokens per pair at fps=2, max_frames=5, video_max_pixels=6,000" in shown
    sharper = RunConfig(model="tiny-qwen3-vl", train_file=str(video_rows), fps=2.0, max_frames=5,
                        video_max_pixels=40000, max_pixels=16384)
    assert data_facts(sharper).max_video_tokens_per_pair > facts.max_video_tokens_per_pair  # the knobs count


def test_form_shows_the_video_knobs_with_their_help_under_videos():
    import dataclasses

    import ipywidgets as widgets

    from nbtools.config import RunConfig
    from nbtools.widgets import form_from_config

    form = form_from_config(RunConfig(train_file="t.jsonl"), estimator=lambda config: "")
    advanced = form.sections.children[2]
    children = list(advanced.children)
    start = next(i for i, c in enumerate(children) if isinstance(c, widgets.HTML) and c.value == "<b>Videos</b>")
    rows = []
    for child in children[start + 1:]:
        if isinstance(child, widgets.HTML):
            break  # the next group's heading
        rows += [c[len("nbtools-field-"):] for c in child.children[0]._dom_classes if c.startswith("nbtools-field-")]
    assert rows == ["fps", "max_frames", "video_max_pixels"]
    help_of = {f.name: f.metadata["help"] for f in dataclasses.fields(RunConfig)}
    for name in rows:
        assert form.fields[name].control.tooltip.startswith(help_of[name])
        assert "video" in help_of[name].lower()


def test_remote_videos_load_and_validate_through_fsspec(clips, tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe("/videos/short.mkv", clips["short"].read_bytes())
    url = "memory://videos/short.mkv"
    clip = load_clip(url, SETTINGS, "qwen3_vl")
    assert clip.path == url and clip.metadata.frames_indices == [0, 2, 5, 7]
    info = inspect_video(url)
    assert (info.error, info.fps, info.frames) == ("", 5.0, 10)
    memory.pipe("/videos/broken.mp4", b"not a video at all")
    with pytest.raises(VideoError, match=r"memory://videos/broken\.mp4: not a readable video"):
        load_clip("memory://videos/broken.mp4", SETTINGS)
    assert "not a readable video" in inspect_video("memory://videos/broken.mp4").error


def test_one_frame_video_is_padded_to_the_temporal_patch(tmp_path):
    still = write_clip(tmp_path / "still.mkv", frames=1, rate=25)
    clip = load_clip(str(still), SETTINGS, "qwen3_vl")
    assert clip.frames.shape[0] == 2 and clip.metadata.frames_indices == [0, 0] and clip.sampled_indices == [0]
    processor = load_processor("tiny-qwen3-vl", video=SETTINGS)
    grid = processor.video_processor(**processor_video_kwargs([clip]), return_tensors="pt")["video_grid_thw"]
    h, w = clip.frames.shape[1:3]
    assert grid.tolist() == [[1, h // 16, w // 16]]


def test_qwen2_5_vl_times_frame_groups_by_the_real_sampling_rate(clips):
    processor = load_processor("tiny-qwen2.5-vl", video=SETTINGS)
    clip = load_clip(str(clips["long"]), SETTINGS, "qwen2_5_vl")  # 5 of 40 frames at 10 fps: 1.25 frames/s
    inputs = processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], **processor_video_kwargs([clip]),
                       return_tensors="pt")
    # 2 frames per group at 1.25 frames/s; counting the padding copy would say 2 / 1.5
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([1.6])


@pytest.mark.parametrize("model", list(FAMILIES))
def test_the_model_takes_the_processed_video(video_rows, model):
    import torch

    from nbtools.models import load_model_and_processor

    family = FAMILIES[model]
    net, processor = load_model_and_processor(model, max_pixels=16384, video=SETTINGS, dtype="float32", device="cpu")
    record = validate_dataset(video_rows, model=model, max_pixels=16384, video=SETTINGS).records[1]  # image + video
    example = to_training_example(record, 16384, family, video=SETTINGS)
    text = processor.apply_chat_template(example["prompt"] + example["chosen"], tokenize=False)
    inputs = processor(text=[text], images=example["images"], **processor_video_kwargs(example["videos"]),
                       return_tensors="pt")
    with torch.no_grad():
        logits = net(**inputs).logits
    assert logits.shape[1] == inputs["input_ids"].shape[1] and torch.isfinite(logits).all()


@pytest.mark.parametrize("model", list(FAMILIES))
def test_frame_sizes_match_the_processor_and_it_keeps_them(model):
    """Seeded shapes and settings: our size is what the processor's resize gives, and a clip
    already at that size passes through unchanged (so the validator's count is the processor's)."""
    import random

    import torch
    from transformers.image_utils import SizeDict

    from nbtools.models.loading import apply_video_settings
    from nbtools.video import frame_size, padded_count, processor_frame_size

    processor = load_processor(model)
    vp = processor.video_processor
    rng = random.Random(0)
    stable = 0  # shapes where one pass of the processor is not yet its fixed point
    for _ in range(60):
        settings = VideoSettings(2.0, rng.randint(2, 20), rng.choice([3136, 6000, 16384, 50000, 200704]))
        apply_video_settings(processor, settings)
        geo = processor_video_geometry(processor, FAMILIES[model])
        frames = padded_count(rng.randint(1, settings.max_frames))
        height, width = rng.randint(8, 700), rng.randint(8, 700)

        def resized(h, w):
            video = torch.zeros(1, frames, 3, h, w, dtype=torch.uint8)
            out = vp.resize(video, size=SizeDict(**dict(vp.size)), resample=vp.resample, factor=geo.factor,
                            temporal_factor=geo.temporal_patch_size, cap_pixels_per_frame=vp.cap_pixels_per_frame)
            return tuple(out.shape[-2:])

        assert resized(height, width) == processor_frame_size(frames, height, width, geo), (settings, height, width)
        ours = frame_size(frames, height, width, geo)
        assert resized(*ours) == ours, (settings, frames, height, width)  # frames we resized are kept as they are
        stable += ours != processor_frame_size(frames, height, width, geo)
        assert ours[0] * ours[1] <= max(settings.video_max_pixels, geo.factor * max(ours)), (settings, ours)
    assert stable  # the seeded shapes include elongated ones, where a second pass changes the size


def test_image_contrast_rows_count_the_rejected_side_with_its_own_images(tmp_path):
    """A rejected side that sees larger images is longer: counted with them, equal to the processor."""
    import json

    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(tmp_path / "small.png")
    Image.new("RGB", (128, 96), "green").save(tmp_path / "large.png")
    row = {"messages": [{"role": "user", "content": "<image>Which colour?"}, {"role": "assistant", "content": "Red."}],
           "images": ["small.png"], "rejected_images": ["large.png"], "rejected_response": "Red."}
    path = tmp_path / "contrast.jsonl"
    path.write_text(json.dumps(row) + "\n")
    processor = load_processor("tiny-qwen3-vl", max_pixels=16384)
    report = validate_dataset(path, model="tiny-qwen3-vl", max_pixels=16384)
    assert [p for p in report.problems if p.severity == "error"] == []
    counted = report.tokens[1]
    example = to_training_example(report.records[0], 16384, "qwen3_vl")
    for side, images, answer in (("chosen", example["images"], counted.chosen),
                                 ("rejected", example["rejected_images"], counted.rejected)):
        prompt = processor.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
        length = processor(text=[prompt], images=images, return_tensors="pt")["input_ids"].shape[1]
        assert (counted.prompt if side == "chosen" else counted.rejected_prompt) == length, side
    assert counted.rejected_prompt > counted.prompt and counted.longest == counted.rejected_prompt + counted.rejected
    short = validate_dataset(path, model="tiny-qwen3-vl", max_pixels=16384, max_context_length=counted.longest - 1)
    assert [p.field for p in short.problems if p.severity == "error"] == ["prompt+rejected"]
