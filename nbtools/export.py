"""Take a trained run to production: the adapter alone, or a merged standalone model.

A merged export is an ordinary Hugging Face model folder (safetensors weights, processor
with the run's ``max_pixels``, tokenizer, chat template, generation config) plus a model
card, so plain transformers and vLLM load it with no nbtools installed.
"""

from __future__ import annotations

import functools
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from nbtools.evaluate.generation import Decoding, generate_text
from nbtools.evaluate.report import read_evaluation, table_markdown
from nbtools.evaluate.run_model import adapter_dir, attach_adapter, load_run_config, load_run_model, load_run_processor
from nbtools.train.run_record import RUN_FILE, read_run, write_json_atomic

EXPORT_DIR = "export"
CARD_FILE = "README.md"
EXPORT_INFO_FILE = "nbtools_export.json"


def default_export_dir(run_dir, merged: bool) -> Path:
    return Path(run_dir) / EXPORT_DIR / ("merged" if merged else "adapter")


def _read_run_record(run_dir) -> dict:
    try:
        return read_run(run_dir)
    except (OSError, ValueError):
        return {}


def _record_export(run_dir, out_dir: Path) -> None:
    """Note the export in run.json so the run list shows where the model went."""
    path = Path(run_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())  # as stored: no inferred status written back
    except (OSError, ValueError):
        return
    record["export_path"] = str(out_dir.resolve())
    write_json_atomic(path, record)


def _prepare_out_dir(out_dir) -> Path:
    """An empty folder to export into. A previous nbtools export there is replaced whole (so no
    file of an older export, e.g. an adapter next to merged weights, survives); anything else
    is refused."""
    from nbtools.paths import check_output_folder

    out_dir = check_output_folder(out_dir, "--out", allow_symlink=False)  # a file, a symlink: refused
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / EXPORT_INFO_FILE).is_file():
            raise FileExistsError(
                f"{out_dir}: exists and holds files that are not an nbtools export; refusing to overwrite them "
                "(fix: choose an empty or new --out folder)"
            )
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _write_info(out_dir: Path, run_dir, kind: str, config) -> None:
    info = {
        "kind": kind,
        "run_dir": str(Path(run_dir).resolve()),
        "base_model": config.model,
        "model_name": config.model_name,
        "max_pixels": config.max_pixels,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out_dir / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def save_adapter(run_dir, out_dir=None) -> Path:
    """Copy the LoRA adapter and the run's processor into ``out_dir``, with a model card."""
    config = load_run_config(run_dir)
    source = adapter_dir(run_dir)
    out_dir = _prepare_out_dir(out_dir or default_export_dir(run_dir, merged=False))
    shutil.copytree(source, out_dir, dirs_exist_ok=True)
    load_run_processor(run_dir, config).save_pretrained(out_dir)
    _write_info(out_dir, run_dir, "adapter", config)
    write_model_card(run_dir, out_dir, kind="adapter")
    _record_export(run_dir, out_dir)
    return out_dir


def export_merged(run_dir, out_dir=None, *, device: Optional[str] = None, dtype="auto") -> Path:
    """Merge the adapter into the base weights and save a standalone model folder."""
    run = load_run_model(run_dir, device=device, dtype=dtype, with_reference=False)
    out_dir = _prepare_out_dir(out_dir or default_export_dir(run_dir, merged=True))
    merged = run.model.merge_and_unload()
    tokenizer = getattr(run.processor, "tokenizer", run.processor)
    if merged.generation_config.pad_token_id is None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(out_dir)  # safetensors + config.json + generation_config.json
    run.processor.save_pretrained(out_dir)  # tokenizer, chat template, image processor (max_pixels)
    _write_info(out_dir, run_dir, "merged", run.config)
    write_model_card(run_dir, out_dir, kind="merged")
    _record_export(run_dir, out_dir)
    return out_dir


# --- model card ------------------------------------------------------------------------------

def _metrics_table(metrics: dict) -> str:
    rows = [f"| `{k}` | {v:.4g} |" if isinstance(v, (int, float)) else f"| `{k}` | {v} |"
            for k, v in sorted(metrics.items())]
    return "| metric | value |\n|---|---|\n" + "\n".join(rows) if rows else "_none recorded_"


def _data_section(data: Optional[dict], config) -> str:
    """Pairs per split at a glance, the full statistics folded away below."""
    if not data:
        return f"Training file: `{config.train_file}`; validation: `{config.validation_file or config.validation_split}`.\n"
    rows = ["| split | file | pairs | dropped (too long) | warnings |", "|---|---|---|---|---|"]
    for split in ("train", "validation"):
        info = data.get(split)
        if info:
            rows.append(f"| {split} | `{info.get('file')}` | {info.get('pairs')} | {info.get('dropped_too_long', 0)} "
                        f"| {info.get('warnings', 0)} |")
    extra = f"\nLongest pair: {data['longest_pair_tokens']} tokens.\n" if data.get("longest_pair_tokens") else "\n"
    return ("\n".join(rows) + "\n" + extra + "\n<details><summary>All data statistics</summary>\n\n```json\n"
            + json.dumps(data, indent=2) + "\n```\n\n</details>\n")


def _copy_plots(run_dir, out_dir: Path) -> list[str]:
    plots = sorted((Path(run_dir) / "plots").glob("*.png"))
    if not plots:
        return []
    (out_dir / "plots").mkdir(exist_ok=True)
    for plot in plots:
        shutil.copy2(plot, out_dir / "plots" / plot.name)
    return [f"plots/{p.name}" for p in plots]


def usage_section(model_name: str, out_dir: Path, kind: str, base_model: str, lora_rank: int) -> str:
    """How to load and serve the export: transformers, nbtools, vLLM (OpenAI-compatible)."""
    path = str(out_dir.resolve())
    if kind == "merged":
        load = (
            "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
            f'model = AutoModelForImageTextToText.from_pretrained("{path}", dtype="auto", device_map="auto")\n'
            f'processor = AutoProcessor.from_pretrained("{path}")'
        )
        serve = f"vllm serve {path} --served-model-name {model_name} --max-model-len 4096"
    else:
        load = (
            "from peft import PeftModel\n"
            "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
            f'base = AutoModelForImageTextToText.from_pretrained("{base_model}", dtype="auto", device_map="auto")\n'
            f'model = PeftModel.from_pretrained(base, "{path}")\n'
            f'processor = AutoProcessor.from_pretrained("{path}")'
        )
        serve = (f"vllm serve {base_model} --enable-lora --max-lora-rank {lora_rank} "
                 f"--lora-modules {model_name}={path} --max-model-len 4096")
    messages = (
        'messages = [{"role": "user", "content": [\n'
        '    {"type": "image", "image": "photo.png"},\n'
        '    {"type": "text", "text": "What colour is the shape?"}]}]\n'
        "inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,\n"
        '                                       return_dict=True, return_tensors="pt").to(model.device)\n'
        "out = model.generate(**inputs, max_new_tokens=128, do_sample=False)\n"
        'print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))'
    )
    curl = (
        "curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{\n"
        f'  "model": "{model_name}",\n'
        '  "messages": [{"role": "user", "content": [\n'
        '    {"type": "image_url", "image_url": {"url": "data:image/png;base64,'
        "'$(base64 -w0 photo.png)'" + '"}},\n'
        '    {"type": "text", "text": "What colour is the shape?"}]}],\n'
        '  "max_tokens": 128, "temperature": 0}\''
    )
    return (
        "## Use it\n\n### In transformers\n\n```python\n" + load + "\n\n" + messages + "\n```\n\n"
        "### With nbtools\n\n```python\nfrom nbtools.export import generate\n\n"
        f'print(generate("{path}", ["photo.png"], "What colour is the shape?", max_new_tokens=128))\n```\n\n'
        "### Serve with vLLM (OpenAI-compatible API)\n\n```bash\npip install vllm\n" + serve + "\n```\n\n"
        "Then call it like any OpenAI chat endpoint (images as data URLs or http URLs):\n\n"
        "```bash\n" + curl + "\n```\n"
    )


def write_model_card(run_dir, out_dir, kind: str = "merged") -> Path:
    """README.md with base model, data statistics, config, final metrics, evaluation, plots, usage."""
    import yaml

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = load_run_config(run_dir)
    record = _read_run_record(run_dir)
    evaluation = read_evaluation(run_dir)
    name = config.model_name
    what = "merged standalone model" if kind == "merged" else "LoRA adapter"
    front = {"base_model": config.model, "library_name": "transformers" if kind == "merged" else "peft",
             "pipeline_tag": "image-text-to-text", "tags": ["dpo", "nbtools", "vision-language"]}
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n",
        f"# {name}\n",
        f"A {what} trained with Direct Preference Optimization (DPO, LoRA) by nbtools "
        f"from the run `{record.get('task_display_name', config.task_display_name)}`.\n",
        f"## Base model\n\n`{config.model}`\n",
        "## Training data\n\n" + _data_section(record.get("data"), config),
        "## Training configuration\n\n```yaml\n" + yaml.safe_dump(config.to_dict(), sort_keys=False) + "```\n",
        "## Final metrics\n\n" + _metrics_table(record.get("metrics") or {}) + "\n",
    ]
    best = record.get("best") or {}
    if best:
        shown = (f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}" for k, v in best.items())
        parts.append("Best checkpoint: " + ", ".join(shown) + "\n")
    if evaluation:
        parts.append(
            f"## Evaluation\n\nBase vs tuned on {evaluation['n_pairs']} held-out pairs "
            f"(`{evaluation.get('data', '')}`), {evaluation['confidence']:.0%} paired bootstrap intervals:\n\n"
            + table_markdown(evaluation) + "\n"
            + "".join(f"\n> **Warning:** {w}\n" for w in evaluation.get("warnings", []))
        )
    else:
        parts.append(f"## Evaluation\n\nNot evaluated yet: `python -m nbtools evaluate {run_dir}`.\n")
    plots = _copy_plots(run_dir, out_dir)
    if plots:
        parts.append("## Plots\n\n" + "\n".join(f"![{Path(p).stem}]({p})" for p in plots) + "\n")
    parts.append(usage_section(name, out_dir, kind, config.model, config.lora_rank))
    if record.get("provenance"):
        parts.append("## Provenance\n\n```json\n" + json.dumps(record["provenance"], indent=2) + "\n```\n")
    path = out_dir / CARD_FILE
    path.write_text("\n".join(parts))
    return path


# --- using an export ----------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def load_export(model_dir: str, device: Optional[str] = None):
    """``(model, processor)`` for a merged export, or for an adapter export on its base model."""
    from nbtools.models import load_model_and_processor, load_processor

    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such export folder (fix: run `python -m nbtools export RUN --out DIR`)")
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        base_name = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        base, _ = load_model_and_processor(base_name, device=device)
        model = attach_adapter(base, folder)
        processor = load_processor(folder)
    else:
        model, processor = load_model_and_processor(folder, device=device)
    model.eval()
    return model, processor


def generate(model_dir, images, prompt: str, **decoding) -> str:
    """The exported model's answer to ``prompt`` about ``images`` (paths or PIL images).

    ``decoding``: ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``seed``.
    The loaded model is cached, so repeated calls are fast.
    """
    model, processor = load_export(str(Path(model_dir).resolve()))
    return generate_text(model, processor, images, prompt, Decoding(**decoding))
