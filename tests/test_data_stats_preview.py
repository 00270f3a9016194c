"""Statistics (dict + figure) and the HTML preview."""

from __future__ import annotations

import json

import pytest

from nbtools.data import dataset_stats, load_records, plot_stats, preview, preview_html, validate_dataset


@pytest.fixture
def dataset(data_dir, make_pair):
    data_dir.image("wide.jpg", (640, 480))
    data_dir.image("sq.png", (64, 64))
    rows = [
        make_pair(images=["wide.jpg"], chosen="It is red, clearly.", rejected="Blue."),
        make_pair(prompt="<image> vs <image>", images=["wide.jpg", "sq.png"], chosen="Same.", rejected="Different."),
        make_pair(prompt="Say hi", images=[], chosen="Hi <b>there</b>", rejected="Go away"),
        make_pair(images=["gone.jpg"], chosen="Red?", rejected="Blue?"),
    ]
    return data_dir.jsonl(rows)


def test_stats_from_validation(dataset):
    report = validate_dataset(dataset, max_pixels=128 * 128)
    stats = report.stats
    json.dumps(stats)  # serialisable for --json and run.json
    assert (stats["rows"], stats["valid_rows"], stats["pairs_loaded"]) == (4, 3, 4)
    assert stats["images_per_row"] == {"0": 1, "1": 2, "2": 1}
    assert stats["resolutions"] == {"640x480": 1, "64x64": 1}
    # max_pixels 16384 (min_pixels lowered to it): 640x480 -> 128x96 = 4x3 tokens (+2 start/end);
    # 64x64 is upscaled to the 16384 px floor -> 128x128 = 4x4 tokens (+2)
    assert stats["image_tokens_per_pair"]["max"] == 12 + 2 + 16 + 2
    assert stats["tokens"]["chosen"]["count"] == 4
    assert stats["chosen_longer_share"] == 0.5
    tokens = list(report.tokens.values())
    assert stats["training_tokens_per_epoch"] == sum(2 * t.prompt + t.chosen + t.rejected for t in tokens)
    assert stats["packed_tokens_per_epoch"] == sum(t.prompt + t.chosen + t.rejected for t in tokens)  # no contrast rows
    assert "estimate" in stats["token_counting"]
    assert stats["problems"]["error"] == 1


def test_stats_without_validation_reads_headers(dataset):
    records = load_records(dataset).records
    stats = dataset_stats(records)
    # qwen3 defaults: 640x480 -> 20x15 tokens; min_pixels 65536 upsizes 64x64 to 256x256 = 8x8 tokens
    assert stats["distinct_images"] == 2 and stats["image_tokens_per_pair"]["max"] == 300 + 2 + 64 + 2


def test_plot_stats_returns_a_figure(dataset):
    report = validate_dataset(dataset)
    fig = plot_stats(report.stats, list(report.tokens.values()))
    assert len(fig.axes) == 4
    assert fig.axes[0].get_title() == "images per row"
    assert "(estimated)" in fig.axes[1].get_title()


def test_preview_html_has_thumbnails_answers_and_problems(dataset):
    report = validate_dataset(dataset)
    html = preview_html(report.records, report.problems, n=4)
    assert html.count('<img src="data:image/jpeg;base64,') == 3  # row 1: one, row 2: two; row 4's image is gone
    assert "cannot open" in html and "image file not found" in html
    assert "Hi &lt;b&gt;there&lt;/b&gt;" in html  # answers are escaped, never injected
    assert 'class="nbt-chosen"' in html and 'class="nbt-rejected"' in html
    assert "showing 4 of 4 pairs" in html
    shown = preview(report, n=2)
    assert "showing 2 of 4 pairs" in shown._repr_html_()
    assert "line 4" in report._repr_html_()


def test_validate_with_a_model_counts_with_its_tokenizer(dataset):
    report = validate_dataset(dataset, model="tiny-qwen3-vl", max_pixels=128 * 128, max_context_length=30)
    assert report.stats["token_counting"].startswith("counted with")
    assert not any(t.estimated for t in report.tokens.values())
    too_long = [p for p in report.problems if p.field == "prompt+chosen"]
    assert too_long and all("(estimated)" not in p.message for p in too_long)
