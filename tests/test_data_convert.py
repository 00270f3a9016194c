"""Records -> TRL's conversational vision examples, checked by structure and with the real collator."""

from __future__ import annotations


import pytest
from PIL import Image

from nbtools.data import load_records, to_training_example
from nbtools.data.records import PreferenceRecord
from nbtools.images import image_tokens



def record(prompt, chosen="Red.", rejected="Blue.", images=(), **extra):
    return PreferenceRecord(file="t.jsonl", line=7, prompt=prompt, chosen=chosen, rejected=rejected,
                            images=list(images), **extra)


@pytest.fixture
def pics(tmp_path):
    paths = []
    for i, (size, colour) in enumerate([((640, 480), "red"), ((120, 100), "blue")]):
        path = tmp_path / f"p{i}.png"
        Image.new("L" if i else "RGB", size, colour if not i else 128).save(path)
        paths.append(str(path))
    return paths


def test_single_image_pair(pics):
    ex = to_training_example(record([{"role": "user", "content": "<image>What colour?"}], images=pics[:1]))
    assert ex["prompt"] == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]}]
    assert ex["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "Red."}]}]
    assert ex["rejected"] == [{"role": "assistant", "content": [{"type": "text", "text": "Blue."}]}]
    assert len(ex["images"]) == 1 and ex["images"][0].mode == "RGB" and ex["images"][0].size == (640, 480)


def test_multi_image_blocks_sit_where_the_tags_were_and_images_are_resized(pics):
    rec = record([{"role": "user", "content": "Left <image> and right <image>: same colour?"}], images=pics)
    ex = to_training_example(rec, max_pixels=128 * 128, family="qwen3_vl")
    assert ex["prompt"][0]["content"] == [
        {"type": "text", "text": "Left "}, {"type": "image"}, {"type": "text", "text": " and right "},
        {"type": "image"}, {"type": "text", "text": ": same colour?"}]
    # second is under the cap: untouched; the first is handed over at 160x128, which Qwen3-VL's processor (its
    # min_pixels over this cap: min == max) makes 128x96 (see test_images: no 4:3 size is kept as it is)
    assert [im.size for im in ex["images"]] == [(160, 128), (120, 100)]
    assert all(im.mode == "RGB" for im in ex["images"])


def test_text_only_pair_has_no_images():
    ex = to_training_example(record([{"role": "user", "content": "Say hi."}], chosen="Hi!", rejected="No."))
    assert ex["images"] == []
    assert ex["prompt"][0]["content"] == [{"type": "text", "text": "Say hi."}]


def test_multi_turn_pair_keeps_history_and_system(pics):
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>Colour?"},
              {"role": "assistant", "content": "Red."}, {"role": "user", "content": "And the shape?"}]
    ex = to_training_example(record(prompt, chosen="A square.", rejected="A circle.", images=pics[:1]))
    assert [m["role"] for m in ex["prompt"]] == ["system", "user", "assistant", "user"]
    assert ex["prompt"][0]["content"] == [{"type": "text", "text": "Be brief."}]
    assert ex["prompt"][2]["content"] == [{"type": "text", "text": "Red."}]
    assert ex["prompt"][3]["content"] == [{"type": "text", "text": "And the shape?"}]
    assert ex["chosen"][0]["content"][0]["text"] == "A square."


def test_video_tags_become_video_blocks_and_rejected_images_travel_as_paths():
    rec = record([{"role": "user", "content": "<video>What happens? <image>"}], videos=["v.mp4"],
                 images=["a.png"], rejected_images=["r.png"])
    ex = to_training_example(rec, load_images=False)
    assert ex["prompt"][0]["content"] == [{"type": "video"}, {"type": "text", "text": "What happens? "},
                                          {"type": "image"}]
    assert ex["videos"] == ["v.mp4"] and ex["images"] == ["a.png"] and ex["rejected_images"] == ["r.png"]
    plain = to_training_example(record([{"role": "user", "content": "<image>Hi"}], images=["a.png"]),
                                load_images=False)
    assert "videos" not in plain and "rejected_images" not in plain  # image-only rows keep TRL's shape


@pytest.fixture(scope="module")
def qwen3_processor():
    from nbtools.models import load_processor

    return load_processor("tiny-qwen3-vl", max_pixels=128 * 128)


def test_trl_collator_fills_the_image_blocks_in_order(pics, qwen3_processor):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    processor = qwen3_processor
    rec = record([{"role": "user", "content": "Left <image> and right <image>: same colour?"}], images=pics)
    ex = to_training_example(rec, max_pixels=128 * 128)
    batch = DataCollatorForVisionPreference(processor)([ex])
    geo_patch = processor.image_processor.patch_size
    grids = batch["image_grid_thw"].tolist()
    assert len(grids) == 4  # two images, repeated for the chosen and the rejected sequence
    min_px = processor.image_processor.size.shortest_edge
    expected = [image_tokens(im.height, im.width, "qwen3_vl", 128 * 128, min_pixels=min_px) for im in ex["images"]]
    assert [g[1] * g[2] // 4 for g in grids[:2]] == expected
    text = processor.tokenizer.decode(batch["input_ids"][0])
    first, second = text.index("<|vision_start|>"), text.rindex("<|vision_start|>")
    assert first < text.index(" and right ") < second < text.index(": same colour?")
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((batch["input_ids"][0] == pad_id).sum()) == sum(expected)


def test_model_token_counts_match_the_collator(data_dir, make_pair, qwen3_processor):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from nbtools.data.tokens import TokenCounter
    from nbtools.images import processor_geometry

    data_dir.image("img.jpg", (640, 480))
    path = data_dir.jsonl([make_pair(), make_pair(prompt="Say hi.", chosen="Hello there, friend.", images=[])])
    records = load_records(path).records
    counter = TokenCounter(processor_geometry(qwen3_processor), max_pixels=128 * 128, processor=qwen3_processor)
    counts = counter.count(records, {records[0].images[0]: (640, 480)})
    assert not counts[0].estimated
    for rec, count in zip(records, counts):
        batch = DataCollatorForVisionPreference(qwen3_processor)([to_training_example(rec, max_pixels=128 * 128)])
        prompt_len = int((batch["attention_mask"][0] * (1 - batch["completion_mask"][0])).sum())
        chosen_len = int(batch["completion_mask"][0].sum())
        rejected_len = int(batch["completion_mask"][1].sum())
        assert (count.prompt, count.chosen, count.rejected) == (prompt_len, chosen_len, rejected_len)
