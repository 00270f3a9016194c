"""Export: the merged model reloads in plain transformers and behaves like the adapter model."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from nbtools.__main__ import main
from nbtools.config import RunConfig
from nbtools.evaluate import Decoding, adapter_enabled, generate_text
from nbtools.evaluate.logprobs import collate_pairs
from nbtools.export import check_out_dir, export_merged, generate, save_adapter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def merged_dir(eval_run_dir, evaluation_result, colour_answers, tmp_path_factory):
    # after both evaluations, so the card has the Evaluation and Answers sections and the plot to copy
    return export_merged(eval_run_dir, tmp_path_factory.mktemp("export") / "merged", device="cpu")


@pytest.fixture(scope="module")
def plain(merged_dir):
    """The export as anyone would load it: transformers only, no nbtools code involved."""
    model = AutoModelForImageTextToText.from_pretrained(merged_dir)
    return model.eval(), AutoProcessor.from_pretrained(merged_dir)


def test_merged_folder_is_a_standalone_model(merged_dir, eval_run_model, plain):
    names = {p.name for p in merged_dir.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja",
            "README.md"} <= names
    assert not {"adapter_config.json", "adapter_model.safetensors"} & names
    assert check_out_dir(merged_dir) == merged_dir  # it lists every file it wrote: a re-export may replace it
    _, processor = plain
    max_pixels = eval_run_model.config.max_pixels
    assert processor.image_processor.size["longest_edge"] == max_pixels
    assert processor.tokenizer.chat_template == eval_run_model.processor.tokenizer.chat_template
    generation = json.loads((merged_dir / "generation_config.json").read_text())
    assert generation["pad_token_id"] == eval_run_model.processor.tokenizer.pad_token_id


def test_merged_logits_match_the_adapter_model(plain, eval_run_model, evaluation_result):
    model, processor = plain
    batch = collate_pairs(processor, evaluation_result.examples[:4])
    inputs = {k: v for k, v in batch.items() if k != "completion_mask"}
    with torch.no_grad():
        merged = model(**inputs).logits
        with adapter_enabled(eval_run_model.model, True):
            adapter = eval_run_model.model(**inputs).logits
        with adapter_enabled(eval_run_model.model, False):
            base = eval_run_model.model(**inputs).logits
    assert torch.allclose(merged, adapter, atol=1e-4, rtol=1e-4), (merged - adapter).abs().max()
    assert (merged - base).abs().max() > 1e-2  # the merge changed the model: the test can fail


def test_greedy_answers_identical_to_the_adapter_model(merged_dir, eval_run_model, evaluation_result):
    run = eval_run_model
    for example in evaluation_result.examples[:4]:
        question = example["prompt"][0]["content"][1]["text"]
        exported = generate(merged_dir, example["images"], question, max_new_tokens=16)
        with adapter_enabled(run.model, True):
            tuned = generate_text(run.model, run.processor, example["images"], question, Decoding(max_new_tokens=16))
        assert exported == tuned
        assert exported


def test_generate_helper_accepts_paths_and_decoding(merged_dir, tmp_path, evaluation_result):
    image = evaluation_result.examples[0]["images"][0]
    path = tmp_path / "shape.png"
    image.save(path)
    from_path = generate(merged_dir, [str(path)], "What colour is the shape?", max_new_tokens=8)
    assert from_path == generate(merged_dir, image, "What colour is the shape?", max_new_tokens=8)
    sampled = generate(merged_dir, image, "What colour is the shape?", max_new_tokens=8, temperature=1.2, seed=4)
    assert sampled == generate(merged_dir, image, "What colour is the shape?", max_new_tokens=8, temperature=1.2,
                               seed=4)
    with pytest.raises(TypeError):
        generate(merged_dir, image, "What colour?", beams=3)


def test_model_card_sections(merged_dir, eval_run_dir):
    card = (merged_dir / "README.md").read_text()
    config_text = (eval_run_dir / "config.yaml").read_text()
    for section in ("## Base model", "## Training data", "## Training configuration", "## Final metrics",
                    "## Evaluation", "## Plots", "## Use it", "### In transformers",
                    "### Serve with vLLM, SGLang or nbtools"):
        assert section in card, section
    assert "base_model: " in card.split("---")[1]
    assert "| `preference_accuracy` |" in card
    answers = card.split("## Answers\n", 1)[1].split("\n## ", 1)[0]  # one table per benchmark the run answered
    colour = answers.split("### colour\\_questions\n", 1)[1].split("\n### ", 1)[0]  # colour accuracy, intervals
    assert "60 questions of" in colour and "terms: red, green, blue, yellow" in colour
    assert colour.count("| `accuracy` |") == 1 and "Flipped: " in colour
    record = json.loads((eval_run_dir / "run.json").read_text())
    train_file = Path(record['data']['train']['file']).name  # the card is shared: file names, no local paths
    assert f"| train | `{train_file}` | {record['data']['train']['pairs']} |" in card
    assert f"vllm serve {merged_dir.name} " in card and str(merged_dir.parent) not in card
    # the three servers: one model name, one max_pixels (SGLang and nbtools read it from the export's processor)
    name, path = RunConfig.from_yaml(eval_run_dir / "config.yaml").model_name, merged_dir.name
    assert (f"vllm serve {path} --served-model-name {name} --max-model-len 4096 "
            """--mm-processor-kwargs '{"max_pixels": 16384}'""") in card
    assert f"python -m sglang.launch_server --model-path {path} --served-model-name {name} --port 8000" in card
    assert f"python -m nbtools serve {path} --port 8000" in card
    assert "Run: `python -m nbtools serve`" in card and "Not run: the vLLM and SGLang commands" in card
    assert json.loads((merged_dir / "nbtools_export.json").read_text())["model_name"] == name  # what serve answers as
    assert "AutoModelForImageTextToText.from_pretrained" in card
    assert "max_pixels:" in card and "max_pixels:" in config_text
    assert (merged_dir / "plots" / "evaluation.png").is_file()
    record = json.loads((eval_run_dir / "run.json").read_text())  # re-read: export noted its path
    assert record["export_path"] == str(merged_dir.resolve())


def test_adapter_export_generates_like_the_merged_one(eval_run_dir, merged_dir, tmp_path, evaluation_result):
    out = save_adapter(eval_run_dir, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "--enable-lora" in card and "PeftModel.from_pretrained" in card
    image = evaluation_result.examples[1]["images"][0]
    assert generate(out, image, "What colour is the shape?", max_new_tokens=10) == generate(
        merged_dir, image, "What colour is the shape?", max_new_tokens=10)


def test_cli_export_exit_codes(eval_run_dir, tmp_path, capsys):
    assert main(["export", str(eval_run_dir), "--out", str(tmp_path / "a"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"kind": "adapter", "path": str(tmp_path / "a")}
    # exporting again into a previous export replaces it whole: no adapter file next to merged weights
    assert main(["export", str(eval_run_dir), "--merged", "--out", str(tmp_path / "a")]) == 0
    assert "merged export written to" in capsys.readouterr().out
    assert (tmp_path / "a" / "model.safetensors").is_file()
    assert not (tmp_path / "a" / "adapter_config.json").exists()
    assert json.loads((tmp_path / "a" / "nbtools_export.json").read_text())["kind"] == "merged"
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    assert main(["export", str(eval_run_dir), "--merged", "--out", str(occupied)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (occupied / "notes.txt").read_text() == "mine"
    assert main(["export", str(tmp_path / "missing"), "--merged", "--out", str(tmp_path / "b")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_model_card_transformers_snippet_runs(merged_dir, tmp_path, evaluation_result, capsys, monkeypatch):
    """The card's own 'In transformers' code, run as written (with a real picture) beside the export's folder."""
    monkeypatch.chdir(merged_dir.parent)
    card = (merged_dir / "README.md").read_text()
    code = card.split("### In transformers\n\n```python\n", 1)[1].split("```", 1)[0]
    picture = tmp_path / "photo.png"
    evaluation_result.examples[0]["images"][0].save(picture)
    code = code.replace('"photo.png"', repr(str(picture))).replace('device_map="auto"', 'device_map="cpu"')
    exec(compile(code, "model card", "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed == generate(merged_dir, picture, "What colour is the shape?", max_new_tokens=128)
