"""What the notebooks show, checked without a browser: the card view, tables, paths and the readable summaries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from nbtools.data.records import PreferenceRecord
from nbtools.display import path_html, short_path
from nbtools.widgets.model_card import model_card_html, model_card_view, split_front_matter, split_sections
from nbtools.widgets.notebook import (
    compare_answers,
    data_summary,
    evaluation_outcome,
    run_folder,
    run_outcome,
    run_result_html,
)

CARD = """---
base_model: Qwen/Qwen3-VL-2B-Instruct
library_name: peft
tags:
- dpo
- nbtools
---
# shapes <b>dpo</b>

A LoRA adapter trained from the run `shapes`.

## Base model

`Qwen/Qwen3-VL-2B-Instruct`

## Training data

| split | pairs |
|---|---|
| train | 240 |

<details><summary>All data statistics</summary>

```json
{"rows": 240}
```

</details>

## Training configuration

```yaml
beta: 0.1
## a comment, not a heading
```

## Evaluation

Base vs tuned on 60 held-out pairs.

## Plots

![loss](plots/loss.png)
![reward\\_accuracy](plots/reward_accuracy.png)
![outside](../secret.png)

## Use it

```bash
vllm serve exports/shapes
```

## Provenance

```json
{"python": "3.11"}
```
"""


@pytest.fixture
def card(tmp_path):
    folder = tmp_path / "export"
    (folder / "plots").mkdir(parents=True)
    Image.new("RGB", (900, 450), "red").save(folder / "plots" / "loss.png")
    Image.new("RGB", (600, 300), "blue").save(folder / "plots" / "reward_accuracy.png")
    Image.new("RGB", (10, 10), "green").save(tmp_path / "secret.png")  # outside the card's folder
    (folder / "README.md").write_text(CARD)
    return folder


def test_card_header_becomes_a_metadata_table_not_a_rule(card):
    front, body = split_front_matter(CARD)
    assert front == {"base_model": "Qwen/Qwen3-VL-2B-Instruct", "library_name": "peft", "tags": ["dpo", "nbtools"]}
    assert body.startswith("# shapes")
    html = model_card_html(card)
    assert "<hr" not in html and "library_name: peft" not in html
    assert "<tr><th>base_model</th><td>Qwen/Qwen3-VL-2B-Instruct</td></tr>" in html
    assert "<tr><th>tags</th><td>dpo, nbtools</td></tr>" in html


def test_card_plots_are_embedded_from_the_cards_own_folder(card):
    html = model_card_html(card)
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == 2  # loss and reward_accuracy; never a relative src that resolves elsewhere
    assert 'src="plots/' not in html
    assert "outside: not found next to the card" in html  # ../secret.png is not read
    assert html.index("loss") < html.index("reward_accuracy")
    # the card escapes markdown in alt text (reward\_accuracy); the caption shows the plain name
    assert "<figcaption>reward_accuracy</figcaption>" in html and "reward\\_accuracy" not in html


def test_card_keeps_the_short_parts_open_and_folds_the_long_ones(card):
    html = model_card_html(card)
    opened = re.findall(r"<h3>(.*?)</h3>", html)
    folded = re.findall(r"<details><summary>(.*?)</summary>", html)
    assert opened == ["Base model", "Evaluation", "Plots"]
    assert folded == ["Training data", "All data statistics", "Training configuration", "Use it", "Provenance"]
    assert html.count("<details>") == html.count("</details>")
    assert "## a comment, not a heading" in html  # a # line inside a code block is not a section
    assert "Exported to" in html and "README.md" in html  # where the full card is


def test_card_text_is_shown_never_run(card):
    html = model_card_html(card)
    assert "<b>dpo</b>" not in html and "&lt;b&gt;dpo&lt;/b&gt;" in html


def test_card_view_displays_as_html_and_reads_a_file_or_a_folder(card, tmp_path):
    view = model_card_view(card)
    assert view._repr_html_() == model_card_html(card)
    assert repr(view) == f"model card {card / 'README.md'}"
    assert "<h1>" in model_card_html(card / "README.md")
    assert "No model card" in model_card_html(tmp_path / "nothing")


def test_sections_split_at_level_two_headings_outside_code():
    intro, sections = split_sections("# T\nintro\n## A\na\n```\n## x\n```\n## B\nb\n")
    assert intro == "# T\nintro\n"
    assert [title for title, _ in sections] == ["A", "B"]


def test_paths_are_shown_relative_to_the_project_with_the_full_path_on_hover(tmp_path):
    project = tmp_path / "project"
    inside = project / "runs" / "a" / "export"
    assert short_path(inside, project) == "runs/a/export"
    assert short_path(project, project) == "."
    assert short_path("relative/x.jsonl", project) == "relative/x.jsonl"
    assert short_path("s3://bucket/x.jsonl", project) == "s3://bucket/x.jsonl"
    assert short_path("/elsewhere/x", project) == "/elsewhere/x"
    html = path_html(inside, project, ":12")
    assert f'title="{inside}"' in html and "runs/<wbr>a/<wbr>export:12" in html


def test_runs_table_left_aligned_with_short_headers_and_export_paths(tmp_path, monkeypatch):
    from nbtools.runs import list_runs, runs_table_html

    run = tmp_path / "runs" / "done"
    run.mkdir(parents=True)
    export = tmp_path / "runs" / "done" / "export" / "merged"
    (run / "run.json").write_text(json.dumps({
        "task_display_name": "shapes", "custom_model_name": "shapes-v1", "model": "Qwen/Qwen3-VL-2B-Instruct",
        "status": "finished", "started_at": "2026-11-27T10:15:00+00:00", "heartbeat_at": "2026-11-27T10:20:00+00:00",
        "finished_at": "2026-11-27T10:20:00+00:00", "duration_s": 300, "best": {}, "export_path": str(export)}))
    html = runs_table_html(list_runs(tmp_path / "runs"), root=tmp_path)
    assert "text-align:left !important" in html and "word-break:normal !important" in html
    assert ">base model</th>" in html and ">export</th>" in html
    assert f'title="{export}"' in html and "runs/<wbr>done/<wbr>export/<wbr>merged" in html
    assert '<td class="nbt-nowrap">Qwen/Qwen3-VL-2B-Instruct</td>' in html  # the model name on one line


def test_flipped_pairs_show_the_file_relative_and_thumbnails_with_room(tmp_path):
    from nbtools.data.preview import THUMB_PX
    from nbtools.evaluate.report import flipped_pairs_html

    image = tmp_path / "data" / "images" / "a.png"
    image.parent.mkdir(parents=True)
    Image.new("RGB", (128, 128), "red").save(image)
    record = PreferenceRecord(file=str(tmp_path / "data" / "val.jsonl"), line=7,
                              prompt=[{"role": "user", "content": "<image>What colour?"}], chosen="Red.",
                              rejected="Blue.", images=[str(image)])
    html = flipped_pairs_html([{"index": 0, "direction": "fixed", "base_margin": -0.5, "tuned_margin": 0.7}],
                              [record], root=tmp_path)
    assert "data/<wbr>val.jsonl:7" in html and f'title="{tmp_path / "data" / "val.jsonl"}"' in html
    assert f"width:{THUMB_PX}px" in html and "max-width:none !important" in html
    assert "1 pairs flipped: 1 fixed by tuning, 0 broken" in html


def test_preview_is_left_aligned_proportional_and_wraps_between_words(tmp_path):
    from nbtools.data.preview import preview_html

    record = PreferenceRecord(file="t.jsonl", line=1, prompt=[{"role": "user", "content": "What colour is the square?"}],
                              chosen="It is a red square.", rejected="It is a blue square.")
    html = preview_html([record])
    assert "text-align:left !important" in html
    assert "word-break:normal !important" in html and "font-family:inherit !important" in html


def test_data_summary_reads_as_sentences_without_paths_or_metrics():
    report = SimpleNamespace(
        rows=240, valid=238, stats={"images_per_row": {"1": 200, "2": 38}, "training_tokens_per_epoch": 71040,
                                    "packed_tokens_per_epoch": 40120,
                                    "token_counting": "counted with /home/me/.cache/model"},
        count=lambda severity: {"error": 2, "warning": 1}.get(severity, 0))
    assert data_summary(report) == (
        "240 rows, 238 valid; 2 errors, 1 warnings.\nPairs: 200 with 1 image; 38 with 2 images.\n"
        "Training tokens per epoch: 40,120 packed (packing: true, one row per pair) or 71,040 unpacked "
        "(packing: false); counted with the model's tokenizer, image tokens and their vision start/end markers "
        "included.")
    report.stats["token_counting"] = "estimate (~4 characters per token ...)"
    assert "estimated at ~4 characters per token" in data_summary(report)


def test_run_summaries_name_steps_and_evaluations_not_metric_values(tmp_path):
    history = [{"step": 1, "loss": 0.69}, {"step": 2, "eval_loss": 0.68}, {"step": 4, "eval_loss": 0.5123}]
    result = SimpleNamespace(status="finished", history=history, adapter_dir=tmp_path / "adapter", run_dir=tmp_path,
                             duration_s=75.4, metrics={"eval_loss": 0.5123, "eval_rewards/accuracies": 0.75,
                                                       "eval_runtime": 2.9, "eval_samples_per_second": 4.1},
                             best={"step": 4, "eval_loss": 0.5123}, resumed_from_step=None)
    text = run_outcome(result)
    assert text == ("The run finished after 4 optimizer steps and 2 evaluations on the validation pairs; "
                    "the adapter is in adapter/ of the run folder.")
    assert "0.51" not in text
    html = run_result_html(result)
    assert "Run finished</b> in 1 min 15 s" in html and "<td>validation loss</td><td>0.5123</td>" in html
    assert "Best checkpoint: step 4, eval_loss 0.5123" in html
    assert "eval_runtime" not in html and "per_second" not in html  # timings are not about the model


def test_the_run_result_shows_as_html_in_a_notebook(tmp_path):
    from nbtools.train.runner import RunResult

    result = RunResult(run_dir=tmp_path, status="finished", metrics={"eval_loss": 0.5}, duration_s=3)
    assert result._repr_html_().startswith("<p><b style='color:#15803d'>Run finished</b>")
    assert "RunResult(" not in result._repr_html_()


def test_evaluation_and_export_summaries(tmp_path):
    result = SimpleNamespace(payload={"n_pairs": 12}, paths={"evaluation": tmp_path / "evaluation.json",
                                                             "plot": tmp_path / "plots" / "evaluation.png"})
    assert evaluation_outcome(result) == (
        "Scored 12 held-out pairs with the base and the tuned model (one model, adapter off and on). Written to the "
        "run folder: the numbers in evaluation.json, the plot in evaluation.png.")
    assert compare_answers("It is red.", "It is red.") == "The export answers exactly as the tuned model did."
    assert "differs" in compare_answers("It is red.", "It is blue.")


def test_run_folder_sizes_stay_on_one_line(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"x" * 5000)
    html = str(run_folder(tmp_path))
    assert "<td class='nbt-nowrap'>4.9 KB</td>" in html and "text-align:left !important" in html


def test_token_histogram_bins_are_whole_tokens_shared_by_the_three_series():
    from nbtools.data.stats import token_bins

    assert token_bins([5, 6, 7]) == [4.5, 5.5, 6.5, 7.5]
    edges = token_bins(list(range(8, 100)))  # answers of ~8 tokens and prompts of ~90: one set of bins
    widths = {round(b - a, 6) for a, b in zip(edges, edges[1:])}
    assert len(edges) - 1 <= 30 and widths == {4} and edges[0] == 7.5 and edges[-1] >= 99.5


def test_model_lab_labels_fit_and_answers_are_legible():
    from nbtools.evaluate.lab import LAB_STYLE

    assert "opacity: 1" in LAB_STYLE and "-webkit-text-fill-color: currentColor" in LAB_STYLE
