"""Image sizing must match the Qwen-VL processors exactly: we predict what training sees."""

from __future__ import annotations

import itertools
import random

import pytest
from PIL import Image

from nbtools.images import (
    FAMILIES,
    MAX_ASPECT_RATIO,
    RemoteBackendMissing,
    geometry,
    image_tokens,
    open_image,
    remote_filesystem,
    resize_to_max_pixels,
    resized_size,
    smart_resize,
)


def _sizes():
    rng = random.Random(0)
    fixed = [(1, 1), (3, 200), (13, 2000), (27, 28), (28, 28), (56, 56), (480, 640), (1080, 1920), (4000, 3000),
             (7, 1400), (8000, 8000), (29, 5000)]
    return fixed + [(rng.randint(1, 5000), rng.randint(1, 5000)) for _ in range(400)]


@pytest.mark.parametrize("factor", [28, 32])
@pytest.mark.parametrize("bounds", [(56 * 56, 28 * 28 * 1280), (65536, 16777216), (3136, 200_704), (256, 12_544)])
def test_smart_resize_matches_transformers(factor, bounds):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as reference

    min_pixels, max_pixels = bounds
    for height, width in _sizes():
        try:
            expected = reference(height, width, factor, min_pixels, max_pixels)
        except ValueError:
            with pytest.raises(ValueError, match="aspect ratio"):
                smart_resize(height, width, factor, min_pixels, max_pixels)
            continue
        assert smart_resize(height, width, factor, min_pixels, max_pixels) == expected, (height, width)


def test_family_geometry():
    assert geometry("qwen2_vl").factor == 28 and geometry("qwen2.5-vl").factor == 28
    assert geometry("qwen3_vl").factor == 32 and geometry().family == "qwen3_vl"
    with pytest.raises(ValueError, match="unknown model family"):
        geometry("gpt")


def test_image_tokens_per_family():
    # 640x480 capped at 28*28*1280 px: 644x476 -> 23 x 17 tokens for Qwen2-VL
    assert image_tokens(480, 640, "qwen2_vl") == (476 // 28) * (644 // 28) == 391
    assert image_tokens(480, 640, "qwen3_vl") == 15 * 20
    # a max_pixels cap lowers the count and never exceeds the budget in pixels
    for h, w in itertools.product([300, 480, 1080, 2000], [400, 640, 1920]):
        capped = image_tokens(h, w, "qwen3_vl", max_pixels=256 * 32 * 32)
        assert capped <= 256 and capped <= image_tokens(h, w, "qwen3_vl")


def test_image_tokens_agree_with_the_real_processor():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    for family in ("qwen2_vl", "qwen3_vl"):
        geo = FAMILIES[family]
        processor = Qwen2VLImageProcessor(patch_size=geo.patch_size, merge_size=geo.merge_size,
                                          min_pixels=geo.min_pixels, max_pixels=200_000)
        for h, w in [(480, 640), (100, 900), (1000, 1000)]:
            patches = processor.get_number_of_image_patches(h, w, {})
            assert image_tokens(h, w, family, max_pixels=200_000) == patches // geo.merge_size ** 2


def test_resize_to_max_pixels_keeps_aspect_and_never_enlarges():
    img = Image.new("RGB", (640, 480))
    out = resize_to_max_pixels(img, 256 * 256, "qwen2_vl")
    assert out.size == (280, 196)  # smart_resize(480, 640, 28, 3136, 65536) -> (196, 280), which it keeps
    assert out.width * out.height <= 256 * 256
    # Qwen3-VL's min_pixels (65536) is over this cap, so min == max and no 4:3 size is kept as it is: the
    # processor makes 128x96 (12 tokens, within the cap) of the 160x128 handed over, and 160x128 of 128x96
    out = resize_to_max_pixels(img, 128 * 128, "qwen3_vl")
    assert out.size == (160, 128) and resized_size(480, 640, "qwen3_vl", 128 * 128) == (96, 128)
    assert image_tokens(480, 640, "qwen3_vl", 128 * 128) == 12
    small = Image.new("RGB", (50, 40))
    assert resize_to_max_pixels(small, 128 * 128, "qwen3_vl") is small
    assert resize_to_max_pixels(img, None) is img


def test_apply_max_pixels_travels_with_the_saved_processor(tmp_path):
    from types import SimpleNamespace

    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from nbtools.models.loading import apply_max_pixels  # the one implementation (load_processor uses it)

    processor = Qwen2VLImageProcessor(patch_size=16, merge_size=2, min_pixels=65536, max_pixels=16777216)
    apply_max_pixels(SimpleNamespace(image_processor=processor), 128 * 128)
    assert processor.size.longest_edge == 16384
    assert processor.size.shortest_edge == 16384  # min_pixels lowered so it cannot upscale past the cap
    processor.save_pretrained(tmp_path)
    reloaded = Qwen2VLImageProcessor.from_pretrained(tmp_path)
    out = reloaded(images=[Image.new("RGB", (640, 480))], return_tensors="pt")
    t, h, w = out["image_grid_thw"][0].tolist()
    assert (h * 16, w * 16) == (96, 128)  # the same size our smart_resize predicts
    with pytest.raises(ValueError, match="positive"):
        apply_max_pixels(SimpleNamespace(image_processor=processor), 0)


def test_open_image_local_home_and_memory(tmp_path, monkeypatch):
    import io

    import fsspec

    Image.new("L", (20, 10)).save(tmp_path / "grey.png")
    monkeypatch.setenv("HOME", str(tmp_path))
    img = open_image("~/grey.png")
    assert (img.mode, img.size) == ("RGB", (20, 10))
    buffer = io.BytesIO()
    Image.new("RGB", (7, 9)).save(buffer, format="PNG")
    fsspec.filesystem("memory").pipe("/nbtools-images/x.png", buffer.getvalue())
    assert open_image("memory://nbtools-images/x.png").size == (7, 9)


def test_missing_remote_backend_names_the_package():
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed here")
    except ImportError:
        pass
    with pytest.raises(RemoteBackendMissing, match="pip install s3fs"):
        remote_filesystem("s3://bucket/key.jpg")


# (width, height): very elongated ones, whose one pass of the resize rule is not stable (issue "Nothing lost,
# nothing false", item 10), one a little under the 200:1 limit, one under max_pixels, and ordinary ones
PROCESSED_SIZES = [(2000, 28), (28, 3000), (60, 4000), (4000, 33), (9000, 47), (300, 7000), (27300, 140),
                   (1500, 20), (640, 480), (1000, 1000), (170, 100), (33, 57)]
PROCESSED_MAX_PIXELS = [128 * 128, 28 * 28 * 40, 786432]


def _qwen3_defaults(max_pixels):
    """Qwen3-VL's shipped image processor (min_pixels 65536): a cap under it leaves min == max."""
    from types import SimpleNamespace

    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    from nbtools.models.loading import apply_max_pixels

    processor = SimpleNamespace(image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, min_pixels=65536,
                                                                      max_pixels=16777216))
    apply_max_pixels(processor, max_pixels)
    return processor


@pytest.mark.parametrize("model", ["tiny-qwen3-vl", "tiny-qwen2.5-vl", "tiny-qwen2-vl", "qwen3-vl defaults"])
def test_counted_tokens_are_what_the_processor_makes_of_the_resized_image(model):
    """Training shrinks an image (resize_to_max_pixels) and the processor resizes the result again: the
    validator's count must be the grid the processor returns, and a size nbtools settles on is kept as is."""
    from nbtools.images import processor_geometry
    from nbtools.models import load_processor

    images = {size: Image.new("RGB", size) for size in PROCESSED_SIZES}
    kept = 0
    for max_pixels in PROCESSED_MAX_PIXELS:
        processor = _qwen3_defaults(max_pixels) if model == "qwen3-vl defaults" else load_processor(model, max_pixels)
        ip = processor.image_processor
        geo = processor_geometry(processor)
        for (width, height), image in images.items():
            small = resize_to_max_pixels(image, max_pixels, geo)
            _, grid_h, grid_w = ip(images=[small], return_tensors="pt")["image_grid_thw"][0].tolist()
            where = (model, max_pixels, (width, height), small.size)
            assert image_tokens(height, width, geo, max_pixels) == grid_h * grid_w // ip.merge_size ** 2, where
            if small is not image and resized_size(height, width, geo, max_pixels) == (small.height, small.width):
                assert (grid_h * ip.patch_size, grid_w * ip.patch_size) == (small.height, small.width), where
                kept += 1  # nbtools settled on a size the processor keeps as it is
    assert kept >= len(PROCESSED_SIZES)  # the fixed points were checked, not skipped


def test_a_shrunk_image_stays_within_the_processors_aspect_ratio():
    """One pass can make a shape more elongated than the processor takes on its input (27300x140, 195:1,
    becomes 12352x32): the size handed over keeps under 200:1, and the processor keeps it."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as reference

    for family in ("qwen2_vl", "qwen3_vl"):
        geo = geometry(family)
        for width, height in [(27300, 140), (140, 27300), (18900, 95)]:
            image = Image.new("L", (width, height))
            for max_pixels in (786432, 1003520):
                h, w = resize_to_max_pixels(image, max_pixels, family).size[::-1]
                assert max(h, w) <= MAX_ASPECT_RATIO * min(h, w), (family, width, height, max_pixels, (w, h))
                assert reference(h, w, geo.factor, min(geo.min_pixels, max_pixels), max_pixels) == (h, w)


def test_training_shrinks_images_to_the_size_the_validator_counted(data_dir, make_pair):
    """The training collator shrinks with the processor's own bounds (the tiny models' min_pixels is not
    the family's), so the processor keeps each image and makes the validator's count of it."""
    from nbtools.data import validate_dataset
    from nbtools.images import VISION_MARKERS
    from nbtools.models import load_processor
    from nbtools.train.dataset import LazyImageCollator

    max_pixels = 28 * 28 * 40
    data_dir.image("strip.png", (7000, 300))
    report = validate_dataset(data_dir.jsonl([make_pair(images=["strip.png"])]), model="tiny-qwen3-vl",
                              max_pixels=max_pixels)
    processor = load_processor("tiny-qwen3-vl", max_pixels)
    [example] = LazyImageCollator(processor, max_pixels, "qwen3_vl").examples([report.records.dataset()[0]])
    image = example["images"][0]
    _, grid_h, grid_w = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert (grid_h * 16, grid_w * 16) == (image.height, image.width)
    assert grid_h * grid_w // 4 + VISION_MARKERS == report.tokens[1].image_tokens  # + vision start and end
