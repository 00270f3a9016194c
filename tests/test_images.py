"""Image sizing must match the Qwen-VL processors exactly: we predict what training sees."""

from __future__ import annotations

import itertools
import random

import pytest
from PIL import Image

from nbtools.images import (
    FAMILIES,
    RemoteBackendMissing,
    geometry,
    image_tokens,
    open_image,
    remote_filesystem,
    resize_to_max_pixels,
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
    out = resize_to_max_pixels(img, 128 * 128, "qwen3_vl")
    assert out.size == (128, 96)  # smart_resize(480, 640, 32, 16384, 16384) -> (96, 128)
    assert out.width * out.height <= 128 * 128
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
