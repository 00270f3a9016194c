"""One test per validation rule: each asserts the line, field and severity reported."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from nbtools.data import validate_dataset
from nbtools.data.rules import check_size
from nbtools.data.validate import ValidationReport

def problems_at(report: ValidationReport, line, field=None):
    return [p for p in report.problems if p.line == line and (field is None or p.field == field)]


def the_problem(report: ValidationReport, line, field, severity):
    found = problems_at(report, line, field)
    assert [p.severity for p in found] == [severity], report.problems
    return found[0]


@pytest.fixture
def img(data_dir):
    return data_dir.image("img.jpg", (64, 48))


def run(data_dir, rows, **kwargs):
    return validate_dataset(data_dir.jsonl(rows), **kwargs)


# --------------------------------------------------------------------------- a clean file

def test_valid_rows_give_no_line_problems(data_dir, img, make_pair):
    report = run(data_dir, [make_pair(), make_pair(chosen="Red, it is red.", rejected="Green.")])
    assert [p for p in report.problems if p.line is not None] == []
    assert (report.rows, report.valid, len(report.valid_records)) == (2, 2, 2)
    assert report.records[0].images == [str(img)]


# --------------------------------------------------------------------------- parsing

def test_not_json_reports_the_column(data_dir, img, make_pair):
    report = run(data_dir, [make_pair(), '{"messages": [}'])
    p = the_problem(report, 2, "line", "error")
    assert "not valid JSON" in p.message and "column 15" in p.message
    assert report.valid == 1


def test_trailing_comma_gets_a_hint(data_dir, img, make_pair):
    report = run(data_dir, ['{"messages": [], "images": [],}'])
    p = the_problem(report, 1, "line", "error")
    assert "trailing comma" in p.message
    assert p.fix == "remove the comma at column 30"


def test_comma_after_the_object_gets_a_hint(data_dir, img, make_pair):
    line = json.dumps(make_pair()) + ","
    report = run(data_dir, [make_pair(chosen="Red!"), line])
    p = the_problem(report, 2, "line", "error")
    assert "trailing comma after the object" in p.message
    assert p.fix.startswith(f"remove the comma at column {len(line)}")
    assert [r.line for r in report.valid_records] == [1]


def test_pretty_printed_object_is_one_problem_at_its_first_line(data_dir, img, make_pair):
    pretty = json.dumps(make_pair(), indent=2).splitlines()
    report = run(data_dir, [make_pair(chosen="Red!")] + pretty + [make_pair(chosen="It is red.")])
    end = 1 + len(pretty)
    p = the_problem(report, 2, "line", "error")
    assert f"lines 2-{end}" in p.message and "pretty-printed" in p.message
    assert [p.line for p in report.problems if p.line is not None] == [2]
    assert [r.line for r in report.valid_records] == [1, end + 1]


def test_broken_pretty_printed_fragment_gets_the_multiline_hint(data_dir):
    report = run(data_dir, ['  "images": ["a.jpg"],'])
    assert "pretty-printed" in the_problem(report, 1, "line", "error").message


def test_line_that_is_not_an_object(data_dir):
    report = run(data_dir, ['["a", "b"]', '"text"'])
    assert "JSON array, not an object" in the_problem(report, 1, "line", "error").message
    assert "JSON string" in the_problem(report, 2, "line", "error").message


def test_blank_lines_are_skipped_and_line_numbers_kept(data_dir, img, make_pair):
    report = run(data_dir, ["", make_pair(), "   ", make_pair(chosen="Red it is.", images=["missing.jpg"])])
    assert report.rows == 2
    assert the_problem(report, 4, "images[0]", "error")


def test_invalid_utf8(data_dir, img, make_pair):
    path = data_dir.jsonl([make_pair()])
    with open(path, "ab") as handle:
        handle.write(b'{"messages": "caf\xe9"}\n')
    report = validate_dataset(path)
    p = the_problem(report, 2, "line", "error")
    assert "not valid UTF-8" in p.message and "0xe9" in p.message
    assert report.valid == 1


# --------------------------------------------------------------------------- messages

@pytest.mark.parametrize("messages, field, words", [
    (None, "messages", "missing"),
    ([], "messages", "empty"),
    ("hello", "messages", "not a list"),
])
def test_messages_missing_empty_or_not_a_list(data_dir, messages, field, words):
    row = {"rejected_response": "no"} if messages is None else {"messages": messages, "rejected_response": "no"}
    report = run(data_dir, [row])
    assert words in the_problem(report, 1, field, "error").message


def test_unknown_role(data_dir, make_pair):
    row = make_pair(images=[], prompt="Hi")
    row["messages"][0]["role"] = "human"
    report = run(data_dir, [row])
    assert "'human'" in the_problem(report, 1, "messages[0].role", "error").message


def test_system_not_first(data_dir, make_pair):
    row = make_pair(images=[], prompt="Hi")
    row["messages"].insert(1, {"role": "system", "content": "Be brief."})
    report = run(data_dir, [row])
    assert "not the first" in the_problem(report, 1, "messages[1].role", "error").message


def test_system_first_is_fine(data_dir, make_pair):
    row = make_pair(images=[], prompt="Hi")
    row["messages"].insert(0, {"role": "system", "content": "Be brief."})
    report = run(data_dir, [row])
    assert problems_at(report, 1) == []
    assert report.records[0].prompt[0] == {"role": "system", "content": "Be brief."}


def test_last_message_not_from_assistant(data_dir, make_pair):
    row = make_pair(images=[], prompt="Hi")
    row["messages"].append({"role": "user", "content": "and?"})
    report = run(data_dir, [row])
    assert "not the assistant" in the_problem(report, 1, "messages[2].role", "error").message


def test_content_not_a_string(data_dir, make_pair):
    row = make_pair(images=[], prompt="Hi")
    row["messages"][0]["content"] = ["Hi"]
    report = run(data_dir, [row])
    assert "not a string" in the_problem(report, 1, "messages[0].content", "error").message


def test_no_user_message(data_dir):
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
           "rejected_response": "b"}
    assert "no user message" in the_problem(run(data_dir, [row]), 1, "messages", "error").message


# --------------------------------------------------------------------------- answers

def test_rejected_response_missing(data_dir, make_pair):
    row = make_pair(images=[], prompt="Hi")
    del row["rejected_response"]
    renamed = {**row, "rejected": "Blue."}
    report = run(data_dir, [row, renamed])
    assert "missing" in the_problem(report, 1, "rejected_response", "error").message
    assert the_problem(report, 2, "rejected_response", "error").fix == 'rename "rejected" to "rejected_response"'


@pytest.mark.parametrize("rejected", ["", "   \n"])
def test_rejected_response_empty_or_whitespace(data_dir, make_pair, rejected):
    report = run(data_dir, [make_pair(images=[], prompt="Hi", rejected=rejected)])
    assert "empty" in the_problem(report, 1, "rejected_response", "error").message


def test_chosen_empty(data_dir, make_pair):
    report = run(data_dir, [make_pair(images=[], prompt="Hi", chosen="  ")])
    assert "chosen answer" in the_problem(report, 1, "messages[1].content", "error").message


def test_chosen_identical_to_rejected_after_whitespace_normalisation(data_dir, make_pair):
    report = run(data_dir, [make_pair(images=[], prompt="Hi", chosen="A  red\nsquare.", rejected=" A red square. ")])
    assert "identical" in the_problem(report, 1, "rejected_response", "error").message


def test_identical_answers_are_accepted_when_the_rejected_side_sees_other_images(data_dir, make_pair):
    data_dir.image("a.png")
    data_dir.image("b.png")
    report = run(data_dir, [make_pair(images=["a.png"], chosen="Red.", rejected="Red.", rejected_images=["b.png"])])
    assert not [p for p in report.problems if p.field == "rejected_response"]
    assert report.records[0].rejected_images and report.records[0].rejected == report.records[0].chosen


def test_identical_answers_with_the_same_rejected_images_are_still_flagged(data_dir, make_pair):
    data_dir.image("a.png")
    report = run(data_dir, [make_pair(images=["a.png"], chosen="Red.", rejected="Red.", rejected_images=["a.png"])])
    message = the_problem(report, 1, "rejected_response", "error").message
    assert message == ("the rejected answer is identical to the chosen one (ignoring whitespace) and "
                       "rejected_images are the same as images")


# --------------------------------------------------------------------------- tags and lists

def test_image_tag_count_differs_from_images(data_dir, img, make_pair):
    report = run(data_dir, [make_pair(prompt="<image><image>Compare.", images=["img.jpg"])])
    p = the_problem(report, 1, "images", "error")
    assert "2 <image> tag(s)" in p.message and "1 entry" in p.message


def test_image_tag_outside_user_content(data_dir, img, make_pair):
    row = make_pair(prompt="<image>What?", chosen="<image> red")
    report = run(data_dir, [row])
    assert "assistant message" in the_problem(report, 1, "messages[1].content", "error").message


def test_video_tag_count_differs_from_videos(data_dir, make_pair):
    report = run(data_dir, [make_pair(prompt="What happens?", images=[], videos=["clip.mp4"])])
    assert "0 <video> tag(s)" in the_problem(report, 1, "videos", "error").message


def test_images_not_a_list_of_strings(data_dir, make_pair):
    report = run(data_dir, [make_pair(images="img.jpg"), make_pair(images=[3])])
    assert "not a list" in the_problem(report, 1, "images", "error").message
    assert "not a path" in the_problem(report, 2, "images[0]", "error").message


def test_videos_not_a_list(data_dir, make_pair):
    report = run(data_dir, [make_pair(prompt="Hi", images=[], videos={"a": 1})])
    assert "not a list" in the_problem(report, 1, "videos", "error").message


def test_rejected_images_count_must_match_tags(data_dir, img, make_pair):
    report = run(data_dir, [make_pair(rejected_images=["img.jpg", "img.jpg"])])
    assert "rejected_images has 2" in the_problem(report, 1, "rejected_images", "error").message


# --------------------------------------------------------------------------- image files

def test_image_missing(data_dir, make_pair):
    p = the_problem(run(data_dir, [make_pair(images=["nope.jpg"])]), 1, "images[0]", "error")
    assert "not found" in p.message and "nope.jpg" in p.message


def test_image_is_a_folder(data_dir, make_pair):
    (data_dir.root / "folder").mkdir()
    assert "folder" in the_problem(run(data_dir, [make_pair(images=["folder"])]), 1, "images[0]", "error").message


def test_image_empty(data_dir, make_pair):
    (data_dir.root / "empty.jpg").write_bytes(b"")
    assert "empty" in the_problem(run(data_dir, [make_pair(images=["empty.jpg"])]), 1, "images[0]", "error").message


def test_not_an_image(data_dir, make_pair):
    (data_dir.root / "notes.jpg").write_text("just text")
    p = the_problem(run(data_dir, [make_pair(images=["notes.jpg"])]), 1, "images[0]", "error")
    assert "not an image" in p.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_found_without_deep(data_dir, make_pair, fmt):
    good = data_dir.image(f"whole.{fmt.lower()}", (200, 150), fmt=fmt)
    data = good.read_bytes()
    (data_dir.root / f"cut.{fmt.lower()}").write_bytes(data[: len(data) // 2])
    report = run(data_dir, [make_pair(images=[f"whole.{fmt.lower()}"]),
                            make_pair(chosen="Red!", images=[f"cut.{fmt.lower()}"])])
    assert problems_at(report, 1) == []
    assert "truncated" in the_problem(report, 2, "images[0]", "error").message


def test_corrupt_image_data_needs_deep(data_dir, make_pair):
    import io

    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 50).convert("RGB").save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"IDAT") + 200
    data[start: start + 300] = bytes(300)  # zeroed compressed pixels; header and IEND intact
    (data_dir.root / "noisy.png").write_bytes(bytes(data))
    shallow = run(data_dir, [make_pair(images=["noisy.png"])])
    assert problems_at(shallow, 1, "images[0]") == []
    deep = run(data_dir, [make_pair(images=["noisy.png"])], deep=True)
    assert "corrupt" in the_problem(deep, 1, "images[0]", "error").message


def test_path_escaping_root(data_dir, make_pair, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "x.jpg"
    Image.new("RGB", (64, 64)).save(outside)
    sub = data_dir.root / "data"
    sub.mkdir()
    Image.new("RGB", (64, 64)).save(sub / "in.jpg")
    rows = [make_pair(images=["data/in.jpg"]), make_pair(chosen="Red!", images=[str(outside)]),
            make_pair(chosen="Red?", images=["data/../../x.jpg"])]
    report = run(data_dir, rows, root=sub)
    assert problems_at(report, 1) == []
    assert "outside the allowed root" in the_problem(report, 2, "images[0]", "error").message
    assert the_problem(report, 3, "images[0]", "error")
    assert problems_at(run(data_dir, rows[1:2]), 1) == []  # without --root the outside file is fine


def test_home_relative_path_is_expanded(data_dir, make_pair, monkeypatch):
    monkeypatch.setenv("HOME", str(data_dir.root))
    data_dir.image("pics/h.jpg", (64, 64))
    report = run(data_dir, [make_pair(images=["~/pics/h.jpg"])])
    assert problems_at(report, 1) == []
    assert report.records[0].images == [str(data_dir.root / "pics" / "h.jpg")]


def test_remote_image_without_backend_names_the_package(data_dir, make_pair):
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed here")
    except ImportError:
        pass
    p = the_problem(run(data_dir, [make_pair(images=["s3://bucket/a.jpg"])]), 1, "images[0]", "error")
    assert "s3://" in p.message and "pip install s3fs" in p.fix


def test_remote_image_through_fsspec(data_dir, make_pair):
    import io

    import fsspec

    fs = fsspec.filesystem("memory")
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), "blue").save(buffer, format="PNG")
    fs.pipe("/nbtools-test/remote.png", buffer.getvalue())
    report = run(data_dir, [make_pair(images=["memory://nbtools-test/remote.png"]),
                            make_pair(chosen="Red!", images=["memory://nbtools-test/absent.png"])])
    assert problems_at(report, 1) == []
    assert report.media["memory://nbtools-test/remote.png"].width == 80
    assert "not found" in the_problem(report, 2, "images[0]", "error").message


def test_rejected_images_are_checked_like_images(data_dir, img, make_pair):
    report = run(data_dir, [make_pair(rejected_images=["gone.jpg"])])
    assert "not found" in the_problem(report, 1, "rejected_images[0]", "error").message


# --------------------------------------------------------------------------- image sizes

def test_image_smaller_than_a_vision_patch_is_an_error(data_dir, make_pair):
    data_dir.image("dot.png", (10, 40))
    p = the_problem(run(data_dir, [make_pair(images=["dot.png"])]), 1, "images[0]", "error")
    assert "smaller than one 16x16 vision patch" in p.message
    p2 = the_problem(run(data_dir, [make_pair(images=["dot.png"])], family="qwen2_vl"), 1, "images[0]", "error")
    assert "14x14" in p2.message


def test_very_small_image_is_a_warning(data_dir, make_pair):
    data_dir.image("small.png", (40, 20))
    assert "very small" in the_problem(run(data_dir, [make_pair(images=["small.png"])]), 1, "images[0]",
                                       "warning").message


def test_image_above_max_pixels_is_info_with_the_new_size(data_dir, make_pair):
    data_dir.image("big.jpg", (640, 480))
    report = run(data_dir, [make_pair(images=["big.jpg"])], max_pixels=128 * 128)
    p = the_problem(report, 1, "images[0]", "info")
    assert "will be resized to 128x96" in p.message  # smart_resize(480, 640, 32, 16384, 16384)
    assert problems_at(run(data_dir, [make_pair(images=["big.jpg"])]), 1) == []


def test_extreme_aspect_ratio_is_an_error(data_dir, make_pair):
    data_dir.image("strip.png", (5000, 20))
    assert "aspect ratio" in the_problem(run(data_dir, [make_pair(images=["strip.png"])]), 1, "images[0]",
                                         "error").message


# --------------------------------------------------------------------------- videos

@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    import av
    import numpy as np

    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_videos_open_as_containers_with_a_video_stream(data_dir, make_pair, tiny_video):
    (data_dir.root / "fake.mp4").write_text("not a video")
    rows = [make_pair(prompt="<video>What happens?", images=[], videos=[str(tiny_video)]),
            make_pair(prompt="<video>What happens?", chosen="Red!", images=[], videos=["fake.mp4"]),
            make_pair(prompt="<video>What happens?", chosen="Red?", images=[], videos=["none.mp4"])]
    report = run(data_dir, rows)
    assert problems_at(report, 1) == []
    assert "not a readable video" in the_problem(report, 2, "videos[0]", "error").message
    assert "not found" in the_problem(report, 3, "videos[0]", "error").message


# --------------------------------------------------------------------------- sequence length

def test_pair_longer_than_max_context_length_names_the_knobs(data_dir, make_pair):
    data_dir.image("big.jpg", (640, 480))
    report = run(data_dir, [make_pair(images=["big.jpg"]), make_pair(prompt="Hi", chosen="Red.", images=[])],
                 max_context_length=200)
    chosen = the_problem(report, 1, "prompt+chosen", "error")
    assert "302 of them image tokens" in chosen.message  # 640x480 at 32 px per token: 20 x 15, + start/end
    assert "over max_context_length=200" in chosen.message and "(estimated)" in chosen.message
    assert "raise max_context_length to at least" in chosen.fix and "lower max_pixels to" in chosen.fix
    assert the_problem(report, 1, "prompt+rejected", "error")
    assert problems_at(report, 2) == []
    # following the advice makes the pair fit
    fit = int(chosen.fix.split("lower max_pixels to ")[1].split()[0])
    fixed = run(data_dir, [make_pair(images=["big.jpg"])], max_context_length=200, max_pixels=fit)
    assert problems_at(fixed, 1, "prompt+chosen") == [] and problems_at(fixed, 1, "prompt+rejected") == []


def test_text_only_pair_too_long(data_dir, make_pair):
    report = run(data_dir, [make_pair(prompt="word " * 200, chosen="ok", rejected="no", images=[])],
                 max_context_length=50)
    p = the_problem(report, 1, "prompt+chosen", "error")
    assert "0 of them image tokens" in p.message and "shorten the prompt" in p.fix


# --------------------------------------------------------------------------- dataset-level rules

def test_duplicate_pairs(data_dir, img, make_pair):
    report = run(data_dir, [make_pair(), make_pair(chosen="Red!"), make_pair(chosen=" Red. ")])
    p = the_problem(report, 3, "messages", "warning")
    assert "line 1" in p.message
    assert problems_at(report, 2) == []


def test_leakage_between_train_and_validation(data_dir, img, make_pair):
    data_dir.jsonl([make_pair(chosen="Other.")] + [make_pair()], name="validation.jsonl")
    report = run(data_dir, [make_pair(chosen="Red!"), make_pair()],
                 validation_file=data_dir.root / "validation.jsonl")
    p = the_problem(report, 2, "messages", "warning")
    assert "leakage" in p.message and "line 2" in p.message
    assert problems_at(report, 1) == []


def test_dataset_size_outside_recommended_range(data_dir, img, make_pair):
    report = run(data_dir, [make_pair()])
    p = the_problem(report, None, "dataset", "warning")
    assert "only 1 valid pairs" in p.message
    assert "above 100,000" in check_size("f.jsonl", 100_001)[0].message
    assert check_size("f.jsonl", 100) == [] and check_size("f.jsonl", 100_000) == []


def test_chosen_systematically_longer_than_rejected(data_dir, make_pair):
    long_rows = [make_pair(prompt=f"Q{i}", images=[], chosen=f"A long and detailed answer number {i}.",
                           rejected=f"No {i}.") for i in range(12)]
    report = run(data_dir, long_rows)
    p = [p for p in report.problems if p.line is None and "verbose" in p.message]
    assert len(p) == 1 and p[0].severity == "warning" and p[0].field == "dataset"
    balanced = [make_pair(prompt=f"Q{i}", images=[], chosen=f"Answer {i}.", rejected=f"Reply {i}.")
                for i in range(12)]
    assert not [p for p in run(data_dir, balanced).problems if "verbose" in p.message]


# --------------------------------------------------------------------------- TRL format

def test_trl_format_with_structured_content(data_dir, img):
    row = {"prompt": [{"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image"},
                                                   {"type": "text", "text": " colour?"}]}],
           "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Red."}]}],
           "rejected": [{"role": "assistant", "content": "Blue."}], "images": ["img.jpg"]}
    report = run(data_dir, [row, {**row, "images": ["gone.jpg"]}])
    assert problems_at(report, 1) == []
    record = report.records[0]
    assert record.source_format == "trl"
    assert record.prompt == [{"role": "user", "content": "Look: <image> colour?"}]
    assert (record.chosen, record.rejected) == ("Red.", "Blue.")
    assert the_problem(report, 2, "images[0]", "error")


def test_trl_string_prompt_gets_image_before_the_text(data_dir, img):
    row = {"prompt": [{"role": "user", "content": "Colour?"}], "chosen": [{"role": "assistant", "content": "Red"}],
           "rejected": [{"role": "assistant", "content": "Blue"}], "images": ["img.jpg"]}
    report = run(data_dir, [row])
    assert report.records[0].prompt[0]["content"] == "<image>Colour?"


def test_trl_bad_block_and_missing_rejected(data_dir):
    row = {"prompt": [{"role": "user", "content": [{"type": "audio"}]}],
           "chosen": [{"role": "assistant", "content": "Red"}]}
    report = run(data_dir, [row])
    assert the_problem(report, 1, "prompt[0].content[0]", "error")
    assert the_problem(report, 1, "rejected", "error")


def test_json_list_file(data_dir, img, make_pair):
    path = data_dir.root / "pairs.json"
    path.write_text(json.dumps([make_pair(), {"messages": 3}]))
    report = validate_dataset(path)
    assert report.rows == 2 and report.valid == 1
    assert the_problem(report, 2, "messages", "error")
