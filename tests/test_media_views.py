"""Videos and image-contrast pairs as people see them: the preview gallery, the side by side, the lab's media.

No model here: the clips are tiny files PyAV encodes under tmp_path, or clips built in memory.
"""

from __future__ import annotations

import re

import pytest
from PIL import Image
from video_files import make_clip, write_clip

from nbtools.data import preview, preview_html, validate_dataset
from nbtools.data.records import PreferenceRecord
from nbtools.media_view import browser_mime, clip_timestamps, frame_strip_html, strip_frames, video_element_html
from nbtools.video import VideoSettings


def test_frame_strip_shows_a_handful_of_frames_with_their_times():
    clip = make_clip(frames=32, fps=4.0, step=2)  # 16 sampled frames: 0, 0.5, ... 7.5 s
    assert clip_timestamps(clip)[:3] == [0.0, 0.5, 1.0]
    picked = strip_frames(clip, count=6)
    assert [t for _, t in picked] == [0.0, 1.5, 3.0, 4.5, 6.0, 7.5]  # evenly spread, first and last kept
    assert all(image.size == (64, 64) for image, _ in picked)
    html = frame_strip_html(clip)
    assert html.count("<img ") == 6 and html.count('src="data:image/jpeg;base64,') == 6
    assert ">0.0 s</figcaption>" in html and ">7.5 s</figcaption>" in html
    assert "video clip.mkv: 16 frames sampled of a 4 fps video, 6 shown" in html
    short = frame_strip_html(make_clip(frames=4, step=1))
    assert short.count("<img ") == 4 and ", 4 shown" not in short  # nothing left out, nothing said


def test_frames_without_a_known_fps_have_no_time():
    clip = make_clip(frames=4, step=1)
    clip.metadata.fps = None
    assert clip_timestamps(clip) == [None] * 4
    assert "<figcaption style=\"font-size:11px;color:#555\"></figcaption>" in frame_strip_html(clip)


@pytest.fixture
def media_rows(data_dir, make_pair, tmp_path):
    data_dir.image("red.png", (64, 64), "red")
    data_dir.image("blue.png", (64, 64), "blue")
    write_clip(tmp_path / "stripes.mkv", "ffv1", frames=8, rate=4)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 4)
    rows = [
        make_pair(prompt="<video>Which way do the stripes move?", images=[], videos=["stripes.mkv"],
                  chosen="Left.", rejected="Right."),
        make_pair(prompt="<image>What colour is the shape?", images=["red.png"], rejected_images=["blue.png"],
                  chosen="Red.", rejected="Red."),
        make_pair(prompt="<video>What happens?", images=[], videos=["broken.mp4"], chosen="A.", rejected="B."),
    ]
    return data_dir.jsonl(rows)


def test_preview_shows_a_video_as_a_strip_of_the_frames_the_model_sees(media_rows):
    records = validate_dataset(media_rows).records
    html = preview_html(records[:1], video=VideoSettings(fps=2.0, max_frames=16, video_max_pixels=64 * 64))
    strip = re.search(r'<div class="nbt-frames".*?</div></div>', html, re.S).group(0)
    # 8 frames at 4 fps = 2 s; sampled at 2 fps: 4 frames, at 0, 0.5, 1.0, 1.5 s
    assert re.findall(r">([\d.]+) s</figcaption>", strip) == ["0.0", "0.5", "1.0", "1.5"]
    assert "stripes.mkv: 4 frames sampled of a 4 fps video" in strip
    capped = preview_html(records[:1], video=VideoSettings(fps=4.0, max_frames=2, video_max_pixels=64 * 64))
    assert capped.count("</figcaption>") == 2  # max_frames caps the strip, as it caps training


def test_preview_labels_the_images_of_an_image_contrast_pair(media_rows):
    records = validate_dataset(media_rows).records
    html = preview_html(records[1:2])
    chosen, rejected = html.index("images (chosen answer)"), html.index("rejected_images (rejected answer)")
    assert chosen < rejected
    assert html[chosen:rejected].count('<img src="data:image/jpeg;base64,') == 1
    assert html[rejected:].count('<img src="data:image/jpeg;base64,') == 1
    plain = preview_html([PreferenceRecord("f.jsonl", 1, [{"role": "user", "content": "<image>?"}], "A.", "B.",
                                           images=records[1].images)])
    assert "chosen answer" not in plain and plain.count("<img ") == 1  # an ordinary pair is unlabelled


def test_an_unreadable_video_is_a_placeholder_not_a_traceback(media_rows, tmp_path):
    report = validate_dataset(media_rows)
    html = preview(report, n=3)._repr_html_()
    placeholder = re.search(r'<div class="nbt-unreadable"[^>]*>(.*?)</div>', html, re.S)
    message = placeholder.group(1)
    assert message.startswith("cannot read video broken.mp4: ") and "(fix: " in message
    assert not message.startswith(f"cannot read video broken.mp4: {tmp_path}")  # not named twice in a row
    assert "Traceback" not in html
    assert html.count('class="nbt-frames"') == 1  # the readable clip still shows its frames
    missing = PreferenceRecord("f.jsonl", 1, [{"role": "user", "content": "<video>?"}], "A.", "B.",
                               videos=[str(tmp_path / "gone.mkv")])
    assert "cannot read video gone.mkv: video file not found (fix: " in preview_html([missing])


def test_preview_takes_video_settings_or_a_run_config_and_refuses_other_things(media_rows):
    from nbtools.config import RunConfig

    report = validate_dataset(media_rows)
    assert preview(report, video=RunConfig(max_frames=3)).video == VideoSettings(2.0, 3, RunConfig().video_max_pixels)
    with pytest.raises(TypeError, match="video: pass nbtools.video.VideoSettings"):
        preview(report, video=16)


def test_only_files_browsers_can_play_get_a_video_element(tmp_path):
    h264 = write_clip(tmp_path / "a.mp4", "libx264")
    ffv1 = write_clip(tmp_path / "b.mkv", "ffv1")
    mpeg4 = write_clip(tmp_path / "c.mp4", "mpeg4")  # MPEG-4 part 2: an .mp4 browsers do not play
    assert browser_mime(h264) == "video/mp4"
    assert browser_mime(ffv1) is None and browser_mime(mpeg4) is None
    element = video_element_html(h264)
    assert element.startswith("<video controls") and 'src="data:video/mp4;base64,' in element
    assert video_element_html(ffv1) == "" and video_element_html(mpeg4) == ""
    assert video_element_html(h264, max_bytes=10) == ""  # too big to embed: the frames stay
    assert video_element_html(tmp_path / "gone.mp4") == ""


def test_side_by_side_shows_frames_and_both_image_sets():
    from nbtools.evaluate import Decoding
    from nbtools.evaluate.lab import side_by_side_html
    from nbtools.widgets.notebook import side_by_side_view

    red, blue = Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")
    rows = [
        {"prompt": "Which way?", "images": [], "videos": [make_clip(frames=8, step=2)], "rejected_images": [],
         "base": "Left.", "tuned": "Right.", "chosen": "Right.", "rejected": "Left."},
        {"prompt": "Colour?", "images": [red], "videos": [], "rejected_images": [blue],
         "base": "Red.", "tuned": "Red.", "chosen": "Red.", "rejected": "Red."},
        {"prompt": "Old row", "images": [red], "base": "a", "tuned": "b"},  # rows from before videos still show
    ]
    seen = []
    page = side_by_side_html(rows, Decoding(), lambda i: lambda image: seen.append((i, image.size)) or f"r{i}.png")
    cells = page.split("<tr>")[2:]
    assert len(cells) == 3
    assert cells[0].count('src="r0.png"') == 4 and ">1.5 s</figcaption>" in cells[0]  # the clip's 4 frames
    assert "rejected_images (rejected answer)" in cells[1] and cells[1].count('src="r1.png"') == 2
    assert cells[2].count('src="r2.png"') == 1 and "chosen answer" not in cells[2]
    inline = str(side_by_side_view(rows))
    assert inline.count('src="data:image/png;base64,') == 4 + 2 + 1


def test_save_side_by_side_writes_every_picture_next_to_the_page(tmp_path):
    from nbtools.evaluate import Decoding, save_side_by_side

    red, blue = Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")
    rows = [{"prompt": "p", "images": [red], "videos": [make_clip(frames=8, step=2)], "rejected_images": [blue],
             "base": "a", "tuned": "b", "chosen": "a", "rejected": "b"}]
    page = save_side_by_side(tmp_path, rows, Decoding()).read_text()
    names = re.findall(r'src="(images/[^"]+)"', page)
    assert names == [f"images/sample_000_{n}.png" for n in range(6)]  # image, rejected image, 4 frames
    assert all((tmp_path / "lab" / name).is_file() for name in names)
    assert Image.open(tmp_path / "lab" / names[1]).getpixel((5, 5)) == (0, 0, 255)  # the rejected image


def test_the_lab_shows_a_samples_frames_a_player_where_the_browser_can_play_it_and_both_image_sets(tmp_path):
    from nbtools.evaluate.lab import ModelLab

    red, blue = Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")
    structured = lambda text: [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    samples = [
        {"prompt": structured("Which way?"), "images": [], "videos": [make_clip(str(tmp_path / "x.mkv"))],
         "chosen": "Left.", "rejected": "Right."},
        {"prompt": "Colour?", "images": [red], "rejected_images": [blue], "chosen": "Red.", "rejected": "Red."},
        {"prompt": "Plain?", "images": [red], "chosen": "Red.", "rejected": "Blue."},
        {"prompt": structured("Played?"), "images": [],
         "videos": [make_clip(str(write_clip(tmp_path / "h.mp4", "libx264")))], "chosen": "A.", "rejected": "B."},
    ]
    lab = ModelLab(None, None, samples)  # no model needed to look at the samples
    assert lab.prompt.value == "Which way?"
    assert lab.media.value.count("</figcaption>") == 4 and "<video" not in lab.media.value  # ffv1: frames only
    assert lab.image.layout.display == "none"  # no picture: no empty (broken-looking) image
    assert lab.current_videos() == samples[0]["videos"]
    lab.sample.value = 1
    assert "rejected_images (the rejected answer was about these)" in lab.media.value
    assert lab.image.layout.display is None and lab.current_videos() == []
    lab.sample.value = 2
    assert lab.media.value == ""
    lab.sample.value = 3
    assert lab.media.value.startswith("<video controls") and lab.media.value.count("</figcaption>") == 4


def test_the_copy_that_pads_an_odd_frame_count_is_not_shown():
    clip = make_clip(frames=6, step=2)  # 3 sampled frames (0, 2, 4), padded to 4 as the processor would
    import numpy as np

    clip.frames = np.concatenate([clip.frames, clip.frames[-1:]])
    clip.metadata.frames_indices = [0, 2, 4, 4]
    assert clip_timestamps(clip) == [0.0, 0.5, 1.0]
    html = frame_strip_html(clip)
    assert html.count("<img ") == 3 and "3 frames sampled" in html


def test_flipped_pairs_show_a_videos_frames_sampled_with_the_runs_settings_and_both_image_sets(media_rows):
    from nbtools.evaluate.report import flipped_pairs_html

    records = validate_dataset(media_rows).records
    flipped = [{"index": i, "direction": "fixed", "base_margin": -1.0, "tuned_margin": 1.0} for i in range(3)]
    page = flipped_pairs_html(flipped, records, video=VideoSettings(fps=1.0, max_frames=16, video_max_pixels=4096))
    rows = page.split("<tr>")[2:]
    assert re.findall(r">([\d.]+) s</figcaption>", rows[0]) == ["0.0", "1.0"]  # 2 s at 1 fps: 2 frames
    assert "images (chosen answer)" in rows[1] and "rejected_images (rejected answer)" in rows[1]
    assert "cannot read video broken.mp4" in rows[2]


def test_the_placeholders_catch_decoding_errors_only_a_bug_is_raised(tmp_path, monkeypatch):
    """A picture or video that does not decode is a placeholder; an error of nbtools' own is not relabelled."""
    import av

    import nbtools.images
    import nbtools.video
    from nbtools.data.preview import thumbnail_data_uri
    from nbtools.media_view import read_clip

    not_media = tmp_path / "notes.png"
    not_media.write_text("plain text, not a picture")
    assert thumbnail_data_uri(str(not_media)) is None  # PIL.UnidentifiedImageError
    assert thumbnail_data_uri(str(tmp_path / "gone.png")) is None  # FileNotFoundError
    clip, reason = read_clip(str(not_media.with_suffix(".mp4")))
    assert clip is None and reason.startswith("video file not found")
    not_media.rename(tmp_path / "notes.mp4")
    assert browser_mime(tmp_path / "notes.mp4") is None  # av.error.InvalidDataError

    def planted(*_args, **_kwargs):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(nbtools.images, "open_image", planted)
    monkeypatch.setattr(nbtools.video, "load_clip", planted)
    monkeypatch.setattr(av, "open", planted)
    for show in (lambda: thumbnail_data_uri(str(tmp_path / "gone.png")), lambda: read_clip("clip.mp4"),
                 lambda: browser_mime(tmp_path / "notes.mp4")):
        with pytest.raises(RuntimeError, match="planted bug"):
            show()
