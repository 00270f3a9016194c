"""Take a trained run to production: the adapter alone, or a merged standalone model.

A merged export is an ordinary Hugging Face model folder (safetensors weights, processor
with the run's ``max_pixels`` and video settings — frames sampled at ``fps``, at most
``max_frames``, each under ``video_max_pixels`` —, tokenizer, chat template, generation config)
plus a model card, so plain transformers and vLLM load it with no nbtools installed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import shlex
import shutil
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional

from nbtools import atomic
from nbtools import markdown as md
from nbtools.errors import UserError, first_few
from nbtools.public_text import file_name, public_value
from nbtools.evaluate.generation import Decoding, generate_text
from nbtools.evaluate.report import read_evaluation, table_markdown
from nbtools.evaluate.run_model import (
    adapter_dir,
    attach_adapter,
    load_run_config,
    load_run_model,
    load_run_processor,
    read_run_record,
)
from nbtools.run_folder.record import RUN_FILE, write_json_atomic

EXPORT_DIR = "export"
CARD_FILE = "README.md"
EXPORT_INFO_FILE = "nbtools_export.json"


def default_export_dir(run_dir, merged: bool) -> Path:
    return Path(run_dir) / EXPORT_DIR / ("merged" if merged else "adapter")


def _record_export(run_dir, out_dir: Path) -> None:
    """Note the export in run.json so the run list shows where the model went."""
    path = Path(run_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())  # as stored: no inferred status written back
    except (OSError, ValueError):
        return
    record["export_path"] = str(out_dir.resolve())
    write_json_atomic(path, record)


class ExportFolderError(UserError, FileExistsError):
    """``--out`` cannot receive the export (a file, a link, a folder of other files)."""


def check_out_dir(out_dir) -> Path:
    """``out_dir`` if an export may go there: a new or empty folder, or a previous nbtools export holding only
    the files it wrote (listed in its nbtools_export.json). It is replaced whole, so no file of an older export
    (e.g. an adapter next to merged weights) survives, and no file of the user's is lost: a folder with anything
    else in it is refused, untouched, before any work is done."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        raise ExportFolderError(f"{out_dir}: is a symbolic link; an export replaces its folder whole, which would "
                                "replace the link, not its target (fix: pass the folder the link points to, or a new "
                                "--out folder)")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportFolderError(f"{out_dir}: exists and is not a folder (fix: choose a new or empty --out folder)")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return out_dir
    info = out_dir / EXPORT_INFO_FILE
    if info.is_symlink() or not info.is_file():
        raise ExportFolderError(
            f"{out_dir}: exists and holds files that are not an nbtools export; refusing to overwrite them "
            "(fix: choose an empty or new --out folder)"
        )
    written = _written_files(info)
    if written is None:
        raise ExportFolderError(
            f"{out_dir}: an nbtools export whose {EXPORT_INFO_FILE} lists no files (written by an older nbtools, or "
            "damaged), so files you added cannot be told from the export's own; refusing to replace it (fix: move "
            "out what you want to keep and delete the folder, or choose another --out folder)"
        )
    foreign = _foreign_entries(out_dir, written)
    if foreign:
        raise ExportFolderError(
            f"{out_dir}: holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} the previous export did not "
            f"write ({first_few(foreign, SHOW_FOREIGN)}); an export replaces its folder whole, so refusing to delete "
            "them (fix: move them out, or choose another --out folder)"
        )
    return out_dir


SHOW_FOREIGN = 10


def _written_files(info: Path) -> Optional[set[str]]:
    """The files (relative paths) the export in ``info``'s folder wrote, or None when it does not say."""
    try:
        files = json.loads(info.read_bytes()).get("files")
    except (OSError, ValueError, RecursionError, AttributeError):
        return None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return None
    return set(files)


def _raise(exc: OSError) -> None:
    raise exc


def _foreign_entries(out_dir: Path, written: set[str]) -> list[str]:
    """What in ``out_dir`` the export did not write: a file not in ``written``, a link, or a folder holding none of
    ``written`` (shown with a trailing ``/``, its content not listed)."""
    folders = {parent.as_posix() for name in written for parent in PurePosixPath(name).parents} - {"."}
    foreign = []
    for root, dirs, files in os.walk(out_dir, onerror=_raise):  # an unreadable folder stops the check
        base = Path(root).relative_to(out_dir)
        for name in sorted(dirs):
            relative = (base / name).as_posix()
            if os.path.islink(os.path.join(root, name)) or relative not in folders:
                foreign.append(relative + "/")
                dirs.remove(name)
        for name in sorted(files):
            relative = (base / name).as_posix()
            path = os.path.join(root, name)
            if relative not in written or os.path.islink(path) or not os.path.isfile(path):
                foreign.append(relative)
    return sorted(foreign)


@contextlib.contextmanager
def staged_export(out_dir) -> Iterator[Path]:
    """A temporary sibling folder to build the export in; it replaces ``out_dir`` only once complete.

    Until the swap (two renames, nbtools.atomic) the previous export stays untouched, so a failure at
    any point (a full disk, an interrupted merge) leaves it as it was and no temporary folder behind.
    ``out_dir`` is checked (:func:`check_out_dir`) before and once more just before the swap, so a file put
    there while the export was built (or a previous export put back after a killed one) is not lost either.
    """
    out_dir = check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # an export killed mid-way: its temporary removed, or the previous export it had moved aside put back
    atomic.remove_dead_leftovers(out_dir.parent, out_dir.name)
    with atomic.replacing_dir(out_dir) as staging:
        yield staging
        check_out_dir(out_dir)


def served_processor(processor):
    """The processor as an export saves it: like training's, and a server that gets a whole video samples
    its frames itself at the run's ``fps`` (at most ``max_frames``, each under ``video_max_pixels``, all
    set by ``load_run_processor``). Training hands the processor frames it sampled already (and says
    ``do_sample_frames=False`` on each call), so this changes nothing nbtools does."""
    video_processor = getattr(processor, "video_processor", None)
    if video_processor is not None and hasattr(video_processor, "do_sample_frames"):
        video_processor.do_sample_frames = True
    return processor


def _write_info(out_dir: Path, run_dir, kind: str, config) -> None:
    """nbtools_export.json, written last: it lists every file of the export (itself included), which is what
    a later export into the same folder may replace (see :func:`check_out_dir`)."""
    files = sorted({path.relative_to(out_dir).as_posix() for path in out_dir.rglob("*") if path.is_file()}
                   | {EXPORT_INFO_FILE})
    info = {
        "kind": kind,
        "run_dir": Path(run_dir).resolve().name,  # the name only: the export folder is what gets shared
        "base_model": config.model,
        "model_name": config.model_name,
        "max_pixels": config.max_pixels,
        # how the processor saved here samples and sizes video frames (what training did)
        "video": {"fps": config.fps, "max_frames": config.max_frames, "video_max_pixels": config.video_max_pixels},
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }
    atomic.write_json(out_dir / EXPORT_INFO_FILE, info, indent=2)


def _checked_run(run_dir):
    """``(config, adapter folder, run record)``, each checked before any work: a run with a missing or damaged
    file is refused (a UserError naming it and the fix), never exported half or without its metrics."""
    return load_run_config(run_dir), adapter_dir(run_dir), read_run_record(run_dir)


def save_adapter(run_dir, out_dir=None) -> Path:
    """Copy the LoRA adapter and the run's processor into ``out_dir``, with a model card.

    Built in a temporary sibling folder and swapped in when complete (see :func:`staged_export`).
    """
    config, source, record = _checked_run(run_dir)
    out_dir = Path(out_dir or default_export_dir(run_dir, merged=False))
    with staged_export(out_dir) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        served_processor(load_run_processor(run_dir, config)).save_pretrained(staging)
        write_model_card(run_dir, staging, kind="adapter", final_dir=out_dir, record=record)
        _write_info(staging, run_dir, "adapter", config)
    _record_export(run_dir, out_dir)
    return out_dir


def export_merged(run_dir, out_dir=None, *, device: Optional[str] = None, dtype="auto") -> Path:
    """Merge the adapter into the base weights and save a standalone model folder.

    Built in a temporary sibling folder and swapped in when complete (see :func:`staged_export`).
    """
    out_dir = check_out_dir(out_dir or default_export_dir(run_dir, merged=True))  # before minutes of loading
    _, _, record = _checked_run(run_dir)
    run = load_run_model(run_dir, device=device, dtype=dtype, with_reference=False)
    merged = run.model.merge_and_unload()
    tokenizer = getattr(run.processor, "tokenizer", run.processor)
    if merged.generation_config.pad_token_id is None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    with staged_export(out_dir) as staging:
        merged.save_pretrained(staging)  # safetensors + config.json + generation_config.json
        # tokenizer, chat template, image (max_pixels) and video processors (fps, max_frames, video_max_pixels)
        served_processor(copy.deepcopy(run.processor)).save_pretrained(staging)
        write_model_card(run_dir, staging, kind="merged", final_dir=out_dir, record=record)
        _write_info(staging, run_dir, "merged", run.config)
    _record_export(run_dir, out_dir)
    return out_dir


# --- model card ------------------------------------------------------------------------------

def _number_or_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return md.text(value)


def _metrics_table(metrics: dict) -> str:
    rows = [f"| {md.code(k, in_table=True)} | {_number_or_text(v)} |" for k, v in sorted(metrics.items())]
    return "| metric | value |\n|---|---|\n" + "\n".join(rows) if rows else "_none recorded_"


def _data_section(data: Optional[dict], config) -> str:
    """Pairs per split at a glance, the full statistics folded away below."""
    if not data:
        return (f"Training file: {md.code(file_name(config.train_file))}; validation: "
                f"{md.code(file_name(config.validation_file) or config.validation_split)}.\n")
    rows = ["| split | file | pairs | dropped (too long) | warnings |", "|---|---|---|---|---|"]
    for split in ("train", "validation"):
        info = data.get(split)
        if info:
            cells = [split, md.code(info.get("file"), in_table=True)] + [
                md.text(info.get(key, default)) for key, default in
                (("pairs", ""), ("dropped_too_long", 0), ("warnings", 0))]
            rows.append("| " + " | ".join(cells) + " |")
    extra = (f"\nLongest pair: {md.text(data['longest_pair_tokens'])} tokens.\n"
             if data.get("longest_pair_tokens") else "\n")
    return ("\n".join(rows) + "\n" + extra + "\n<details><summary>All data statistics</summary>\n\n"
            + md.fenced(json.dumps(data, indent=2), "json") + "\n</details>\n")


def _copy_plots(run_dir, out_dir: Path) -> list[str]:
    """The run's plots, each picture once: the single-panel PNGs repeat training.png's four panels."""
    from nbtools.live import PANEL_FILES

    plots = sorted((Path(run_dir) / "plots").glob("*.png"))
    if any(p.name == "training.png" for p in plots):
        plots = [p for p in plots if p.name not in PANEL_FILES]
    if not plots:
        return []
    (out_dir / "plots").mkdir(exist_ok=True)
    for plot in plots:
        shutil.copy2(plot, out_dir / "plots" / plot.name)
    return [f"plots/{p.name}" for p in plots]


def _python_str(value: str) -> str:
    """A Python string literal for ``value`` (a JSON string is one: same escapes, double quotes, one line)."""
    return json.dumps(str(value), ensure_ascii=False)


def _shell_command(*argv: str) -> str:
    """One shell command line; every argument quoted, so pasting it runs exactly ``argv``."""
    return " ".join(shlex.quote(str(arg)) for arg in argv)


CURL_IMAGE = "$(base64 -w0 photo.png)"  # the one shell expansion the printed curl command means to do


def curl_command(model_name: str, base_url: str = "http://localhost:8000/v1") -> str:
    """The chat-completions call of the server at ``base_url`` for ``model_name``; the name goes into the JSON
    body as JSON, and the body into the command shell-quoted, with only the picture's base64 substituted by the
    shell."""
    head = ('{\n  "model": ' + json.dumps(model_name, ensure_ascii=False) + ',\n'
            '  "messages": [{"role": "user", "content": [\n'
            '    {"type": "image_url", "image_url": {"url": "data:image/png;base64,')
    tail = ('"}},\n'
            '    {"type": "text", "text": "What colour is the shape?"}]}],\n'
            '  "max_tokens": 128, "temperature": 0}')
    return ("curl " + shlex.quote(base_url.rstrip("/") + "/chat/completions")
            + " -H 'Content-Type: application/json' -d "
            + shlex.quote(head) + f'"{CURL_IMAGE}"' + shlex.quote(tail))


SERVE_PORT = 8000  # every serve command below listens here, so the one curl call fits them all


def nbtools_serve_command(path: str) -> str:
    """``python -m nbtools serve`` for this export: transformers serve, under the export's model name."""
    return _shell_command("python", "-m", "nbtools", "serve", path, "--port", str(SERVE_PORT))


def _processor_kwargs(max_pixels: Optional[int]) -> tuple[str, ...]:
    return ("--mm-processor-kwargs", json.dumps({"max_pixels": int(max_pixels)})) if max_pixels else ()


def serve_command(model_name: str, path: str, kind: str, base_model: str, lora_rank: int,
                  max_pixels: Optional[int] = None) -> str:
    """The ``vllm serve`` command line for this export; images capped at the run's ``max_pixels`` (an adapter is
    served on the base model, whose own processor does not know the run's cap)."""
    if kind == "merged":
        return _shell_command("vllm", "serve", path, "--served-model-name", model_name, "--max-model-len", "4096",
                              *_processor_kwargs(max_pixels))
    return _shell_command("vllm", "serve", base_model, "--enable-lora", "--max-lora-rank", str(lora_rank),
                          "--lora-modules", f"{model_name}={path}", "--max-model-len", "4096",
                          *_processor_kwargs(max_pixels))


def sglang_command(model_name: str, path: str) -> str:
    """SGLang's server on a merged export (its processor, saved in the folder, carries the run's ``max_pixels``)."""
    return _shell_command("python", "-m", "sglang.launch_server", "--model-path", path, "--served-model-name",
                          model_name, "--port", str(SERVE_PORT))


def usage_section(model_name: str, out_dir: Path, kind: str, base_model: str, lora_rank: int,
                  max_pixels: Optional[int] = None) -> str:
    """How to load and serve the export: transformers, nbtools, and an OpenAI-compatible server (nbtools serve,
    which is run by nbtools' tests, and vLLM and SGLang, which are not), all under the one model name.

    Names and paths are user text: Python literals in the code, shell-quoted in the commands. The export is
    named by its folder's name (the card is shared: no path of this machine), which a reader replaces with
    the folder's place or the model's Hub id.
    """
    path = Path(out_dir).resolve().name
    if kind == "merged":
        load = (
            "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
            f'model = AutoModelForImageTextToText.from_pretrained({_python_str(path)}, dtype="auto", '
            'device_map="auto")\n'
            f'processor = AutoProcessor.from_pretrained({_python_str(path)})'
        )
    else:
        load = (
            "from peft import PeftModel\n"
            "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
            f'base = AutoModelForImageTextToText.from_pretrained({_python_str(base_model)}, dtype="auto", '
            'device_map="auto")\n'
            f'model = PeftModel.from_pretrained(base, {_python_str(path)})\n'
            f'processor = AutoProcessor.from_pretrained({_python_str(path)})'
        )
    messages = (
        'messages = [{"role": "user", "content": [\n'
        '    {"type": "image", "image": "photo.png"},\n'
        '    {"type": "text", "text": "What colour is the shape?"}]}]\n'
        "inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,\n"
        '                                       return_dict=True, return_tensors="pt").to(model.device)\n'
        "out = model.generate(**inputs, max_new_tokens=128, do_sample=False)\n"
        'print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))'
    )
    serve = serve_command(model_name, path, kind, base_model, lora_rank, max_pixels)
    nbtools_code = ("from nbtools.export import generate\n\n"
                    f'print(generate({_python_str(path)}, ["photo.png"], "What colour is the shape?", '
                    "max_new_tokens=128))")
    if kind == "merged":
        sglang = ("With SGLang:\n\n"
                  + md.fenced('pip install "sglang[all]"\n' + sglang_command(model_name, path), "bash"))
    else:
        sglang = ("With SGLang: serve a merged export (`python -m nbtools export RUN_DIR --merged`), whose "
                  "processor carries the run's max_pixels.\n")
    return (
        f"## Use it\n\n{md.code(path)} below is this folder: run the code beside it, or put its path or the model's "
        "Hub id in its place.\n\n"
        "### In transformers\n\n" + md.fenced(load + "\n\n" + messages, "python") + "\n"
        "### With nbtools\n\n" + md.fenced(nbtools_code, "python") + "\n"
        "### Serve with vLLM, SGLang or nbtools (OpenAI-compatible API)\n\n"
        f"Each command serves the model as {md.code(model_name)} on port {SERVE_PORT}, images sized under the run's "
        f"max_pixels ({md.text(max_pixels) if max_pixels else 'the processor default'}). "
        "Run: `python -m nbtools serve` (transformers serve; nbtools' tests run it on the CPU, and its answers "
        "equal in-process generation). Not run: the vLLM and SGLang commands (nbtools is tested without a GPU); "
        "they are a starting point.\n\n"
        "With nbtools (transformers serve; a GPU is used when there is one; videos sampled as training did):\n\n"
        + md.fenced(nbtools_serve_command(path), "bash") + "\n"
        "With vLLM:\n\n" + md.fenced("pip install vllm\n" + serve, "bash") + "\n" + sglang + "\n"
        "Then call it like any OpenAI chat endpoint (images as data URLs or http URLs):\n\n"
        + md.fenced(curl_command(model_name), "bash")
    )


def answers_section(run_dir) -> str:
    """Base vs tuned on their answers, one table per benchmark the run was evaluated on (``answers/*.json``, written
    by ``python -m nbtools evaluate RUN --benchmark FILE``); empty when there is none. Names, paths and terms are
    user text, shown as text."""
    from nbtools.evaluate.answers import answers_table_markdown, flipped_line, read_answer_evaluations, unread_line

    payloads = [public_value(payload) for payload in read_answer_evaluations(run_dir)]
    if not payloads:
        return ""
    parts = ["## Answers\n\nBase vs tuned on the answers they give (greedy, the same settings for both), with "
             f"{payloads[0].get('confidence', 0.95):.0%} paired bootstrap intervals.\n"]
    for payload in payloads:
        what = f"{md.text(payload['n_items'])} questions of {md.code(payload.get('benchmark', payload['name']))} " \
               f"({md.text(payload.get('mode_help', payload.get('mode', '')))}"
        if payload.get("terms"):
            what += "; terms: " + ", ".join(md.text(t) for t in payload["terms"])
        suffix = f"; each question followed by {md.code(payload['suffix'])}" if payload.get("suffix") else ""
        lines = [line for line in (unread_line(payload), flipped_line(payload)) if line]
        parts.append(f"### {md.text(payload['name'])}\n\n{what}{suffix}):\n\n" + answers_table_markdown(payload)
                     + "\n\n" + " ".join(md.text(line) for line in lines) + "\n")
    return "\n".join(parts)


def shared_provenance(provenance: dict) -> dict:
    """run.json's provenance as a shared card shows it: each data file by name and sha256, no command line (a
    kernel's names its runtime files), nothing else that names a path of this machine."""
    shown = {key: value for key, value in provenance.items() if key not in ("command", "data_files")}
    files = provenance.get("data_files")
    if isinstance(files, dict):
        shown["data_files"] = {name: {"file": file_name(entry.get("path")), "sha256": entry.get("sha256")}
                               for name, entry in files.items() if isinstance(entry, dict)}
    return public_value(shown)


def _front_matter(front: dict) -> str:
    import yaml

    # PyYAML quotes what needs it and indents a multi-line value's continuation lines, so no value
    # can put a `---` at the start of a line and end the front matter early.
    return "---\n" + yaml.safe_dump(front, sort_keys=False, width=float("inf")) + "---\n"


def write_model_card(run_dir, out_dir, kind: str = "merged", final_dir=None, record: Optional[dict] = None) -> Path:
    """README.md with base model, data statistics, config, final metrics, evaluation (preference pairs and
    answers), plots, usage.

    ``final_dir``: where the export will live, for the paths in the usage commands (default:
    ``out_dir``; differs while an export is built in a temporary folder). ``record``: run.json as the export
    checked it (read here when not given; a card is never written without it). Every name and value from
    the run is user text: escaped for Markdown, quoted for the shell and Python. Written atomically.
    """
    import yaml

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = load_run_config(run_dir)
    record = read_run_record(run_dir) if record is None else record
    evaluation = public_value(read_evaluation(run_dir))  # the card is shared: file names, not this machine's paths
    name = config.model_name
    what = "merged standalone model" if kind == "merged" else "LoRA adapter"
    front = {"base_model": file_name(config.model), "library_name": "transformers" if kind == "merged" else "peft",
             "pipeline_tag": "image-text-to-text", "tags": ["dpo", "nbtools", "vision-language"]}
    parts = [
        _front_matter(front),
        f"# {md.text(name)}\n",
        f"A {what} trained with Direct Preference Optimization (DPO, LoRA) by nbtools "
        f"from the run {md.code(record.get('task_display_name', config.task_display_name))}.\n",
        f"## Base model\n\n{md.code(file_name(config.model))}\n",
        "## Training data\n\n" + _data_section(public_value(record.get("data")), config),
        "## Training configuration\n\n" + md.fenced(yaml.safe_dump(public_value(config.to_dict()), sort_keys=False),
                                                     "yaml"),
        "## Final metrics\n\n" + _metrics_table(record.get("metrics") or {}) + "\n",
    ]
    best = record.get("best") or {}
    if best:
        parts.append("Best checkpoint: " + ", ".join(f"{md.code(k)} = {_number_or_text(v)}"
                                                     for k, v in best.items()) + "\n")
    if evaluation:
        parts.append(
            f"## Evaluation\n\nBase vs tuned on {md.text(evaluation['n_pairs'])} held-out pairs "
            f"({md.code(evaluation.get('data', ''))}), {evaluation['confidence']:.0%} paired bootstrap intervals:\n\n"
            + table_markdown(evaluation) + "\n"
            + "".join(f"\n> **Warning:** {md.text(w)}\n" for w in evaluation.get("warnings", []))
        )
    else:
        command = _shell_command("python", "-m", "nbtools", "evaluate", run_dir.resolve().name)
        parts.append(f"## Evaluation\n\nNot evaluated yet: {md.code(command)}.\n")
    answers = answers_section(run_dir)
    if answers:
        parts.append(answers)
    plots = _copy_plots(run_dir, out_dir)
    if plots:
        parts.append("## Plots\n\n" + "\n".join(f"![{md.text(Path(p).stem)}]({md.link_target(p)})"
                                                for p in plots) + "\n")
    parts.append(usage_section(name, Path(final_dir or out_dir), kind, file_name(config.model), config.lora_rank,
                               config.max_pixels))
    if record.get("provenance"):
        parts.append("## Provenance\n\n" + md.fenced(json.dumps(shared_provenance(record["provenance"]), indent=2),
                                                       "json"))
    return atomic.write_text(out_dir / CARD_FILE, "\n".join(parts))


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


def export_video_settings(model_dir):
    """The video settings an export was made with (``nbtools_export.json``), else the defaults."""
    from nbtools.video import VideoSettings

    try:
        video = json.loads((Path(model_dir) / EXPORT_INFO_FILE).read_text()).get("video") or {}
        return VideoSettings(float(video["fps"]), int(video["max_frames"]), video["video_max_pixels"])
    except (OSError, ValueError, KeyError, TypeError):
        return VideoSettings()


def generate(model_dir, images, prompt: str, videos=(), **decoding) -> str:
    """The exported model's answer to ``prompt`` about ``images`` (paths or PIL images) and ``videos``
    (paths, sampled as the run sampled them, or ``nbtools.video.Clip`` objects).

    ``decoding``: ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``seed``.
    The loaded model is cached, so repeated calls are fast.
    """
    from nbtools.models import detect_family
    from nbtools.video import load_clip

    model, processor = load_export(str(Path(model_dir).resolve()))
    settings = export_video_settings(model_dir)
    family = detect_family(model.config).name
    clips = [v if hasattr(v, "frames") else load_clip(str(v), settings, family) for v in videos or ()]
    return generate_text(model, processor, images, prompt, Decoding(**decoding), videos=clips)
