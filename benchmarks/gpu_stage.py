"""What the stages of ``benchmarks/gpu_check.sh`` share: the CPU rehearsal, the device, memory figures,
goals and verdicts.

**Rehearsal.** ``gpu_check.sh --rehearse`` sets ``NBTOOLS_GPU_REHEARSE=1`` and runs the same stage scripts,
with smaller numbers on their command lines, on the CPU. Each script then builds its Qwen3-VL-4B model
from :func:`shrink`: the 4B config with small widths and few layers but **the real vocabulary (151,936) and
the real special-token ids** (image 151655, video 151656, vision start/end 151652/151653), and the real
patch geometry (16-px patches merged 2×2, so a picture costs the 4B's number of image tokens). A stage that
forgets to re-point those ids to the tiny processor's, or that mixes up the vocabulary, fails on the CPU
as it would on the GPU. What the CPU cannot measure (CUDA peak memory, GPU speed) is recorded as "not
judged" in the rehearsal; every other goal is judged as on the GPU.

**Verdicts.** Each stage writes its figures and a ``verdicts`` list into its JSON: one entry per goal
(``goal``: what is promised, ``shown``: the figure as the summary prints it, ``met``: True / False / None
for not judged, ``note``). A stage whose goal is missed exits 1 (:func:`exit_code`); ``gpu_check.sh``
renders every stage's verdicts into ``summary.md`` (:func:`summary_lines`).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
from pathlib import Path

REHEARSE_ENV = "NBTOOLS_GPU_REHEARSE"
REHEARSAL_NOTE = "not judged: CPU rehearsal"  # a goal the CPU cannot measure (speed, CUDA memory)
INFO_NOTE = "shown, no goal"
IMPORTS_ENV = "NBTOOLS_RECORD_IMPORTS"  # tests: append this process's top-level imports to that file at exit

# Relative tolerance of a packed log-prob sum against TRL's two-row one: the unit roundoff of the step's
# half precision (bf16 keeps 8 significant bits, fp16 11), times the largest |sum| compared. In fp32 the
# project's CPU tests see ~5e-7; 1e-5 leaves room for summing hundreds of tokens in another order.
LOGP_RELATIVE_TOLERANCE = {"bf16": 2.0**-8, "fp16": 2.0**-11, "fp32": 1e-5}
SPEED_GOAL = 3.0  # nbtools' pairs/s over TRL's at 896x896 (train() as it runs: reference precomputed)
MEMORY_GOAL = 0.6  # nbtools' memory above the weights over TRL's
ESTIMATE_GOAL = 0.10  # |measured / estimated peak - 1|

# The shrunken 4B: widths and depths a CPU trains in seconds. Everything a stage's data path depends on
# stays: vocabulary, special-token ids, patch size, spatial/temporal merge, deepstack on three layers.
SHRUNK_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2,
               "num_key_value_heads": 1, "head_dim": 32}
SHRUNK_MROPE = [6, 5, 5]  # sums to head_dim / 2, split over (time, height, width) like the 4B's [24, 20, 20]
SHRUNK_VISION = {"depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                 "deepstack_visual_indexes": [0, 1, 2]}


def rehearsing() -> bool:
    return os.environ.get(REHEARSE_ENV, "") == "1"


def device() -> str:
    return "cpu" if rehearsing() else "cuda"


def precision() -> str:
    """bf16 where the GPU has it (fp16 else); fp32 in the rehearsal (the CPU's own training precision)."""
    if rehearsing():
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def device_name() -> str:
    if rehearsing():
        return "cpu (rehearsal: shrunken 4B)"
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def shrink(config):
    """``config`` (a Qwen3-VL config object), shrunken in place for the rehearsal; returned.

    Vocabulary size, special-token ids, patch geometry and tied embeddings are left as they are.
    """
    text, vision = config.text_config, config.vision_config
    for key, value in SHRUNK_TEXT.items():
        setattr(text, key, value)
    text.rope_parameters = dict(text.rope_parameters, mrope_section=list(SHRUNK_MROPE))
    for key, value in SHRUNK_VISION.items():
        setattr(vision, key, value)
    vision.out_hidden_size = text.hidden_size
    return config


def reference_4b_config():
    """Qwen3-VL-4B's config as the stages build it: real, or shrunken when rehearsing."""
    from nbtools.models.reference_configs import reference_config

    config = reference_config("Qwen/Qwen3-VL-4B-Instruct")
    return shrink(config) if rehearsing() else config


def point_vision_tokens_at(config, tokenizer):
    """Re-point the config's image/video/vision-start/end ids to ``tokenizer``'s (the tiny processor's):
    the 4B config names the real tokenizer's ids, which the tiny tokenizer gives other tokens."""
    tokens = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
              "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
    for key, token in tokens.items():
        setattr(config, key, tokenizer.convert_tokens_to_ids(token))
    return config


def random_model(config, dtype_name: str, seed: int | None = None):
    """A model with random weights for ``config``, built on the stage's device (on the GPU: minutes faster
    than building on the CPU and moving)."""
    import torch
    from transformers import AutoModelForImageTextToText

    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device()):
        return AutoModelForImageTextToText.from_config(config, dtype=torch_dtype(dtype_name))


# --- memory ------------------------------------------------------------------------------------------

def reset_peak() -> None:
    if not rehearsing():
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    """CUDA peak allocated since the last reset; None on the CPU (no allocator figure to compare)."""
    if rehearsing():
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


# --- verdicts ------------------------------------------------------------------------------------------

def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def verdict(goal: str, shown: str, met: bool | None, note: str = "", figure=None) -> dict:
    return {"goal": goal, "figure": figure, "shown": shown, "met": met, "note": note}


def judged(goal: str, figure, ok, spec: str, *, gpu_only: bool = False, unit: str = "", note: str = "") -> dict:
    """A goal on one figure. ``ok(figure)`` decides; a missing figure is a missed goal (the side that should
    have produced it failed), except for ``gpu_only`` goals in the rehearsal, which are not judged."""
    shown = _fmt(figure, spec) + (unit if figure is not None else "")
    if gpu_only and rehearsing():
        return verdict(goal, shown, None, REHEARSAL_NOTE + (f"; {note}" if note else ""), figure)
    if figure is None or (isinstance(figure, float) and not math.isfinite(figure)):
        return verdict(goal, shown, False, note or "no figure: the measurement failed", figure)
    return verdict(goal, shown, bool(ok(figure)), note, figure)


def info(what: str, figure, spec: str, unit: str = "", note: str = "") -> dict:
    """A figure shown next to the goals, with no goal of its own."""
    return verdict(what, _fmt(figure, spec) + (unit if figure is not None else ""), None, note or INFO_NOTE, figure)


def logp_goal(side: str, figures: dict, precision_name: str) -> dict:
    """Packed log-probs against TRL's two rows on the same batch and weights, within the precision's tolerance."""
    tolerance = LOGP_RELATIVE_TOLERANCE[precision_name]
    diff, scale = figures.get("logp_max_abs_diff"), figures.get("logp_max_abs_value")
    bound = tolerance * scale if scale else None
    goal = f"{side}: packed log-probs = TRL's within {precision_name} tolerance ({tolerance:.2g} of the largest sum)"
    shown = (f"{diff:.4g} (bound {bound:.3g}, sums up to {scale:.0f})" if diff is not None and bound is not None
             else "n/a")
    if diff is None or bound is None or not math.isfinite(diff):
        return verdict(goal, shown, False, "no figure: the measurement failed", diff)
    return verdict(goal, shown, diff <= bound, "", diff)


def amortised_pairs_per_s(side: dict) -> float | None:
    """pairs/s over one epoch when the one-off reference precompute (s/pair, every pair once) is counted."""
    pairs_per_s = side.get("pairs_per_s")
    if not pairs_per_s:
        return None
    return 1.0 / (1.0 / pairs_per_s + side.get("precompute_s_per_pair", 0.0))


def exit_code(verdicts: list[dict]) -> int:
    """1 when some goal was missed, else 0 (goals not judged do not fail a stage)."""
    return 1 if any(v["met"] is False for v in verdicts) else 0


def print_verdicts(stage: str, verdicts: list[dict]) -> None:
    for v in verdicts:
        mark = {True: "met", False: "MISSED", None: "-"}[v["met"]]
        print(f"{stage}: {v['goal']}: {v['shown']} [{mark}]{' ' + v['note'] if v['note'] else ''}", file=sys.stderr)


def write_json(path, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=1, default=str))


# --- summary.md -----------------------------------------------------------------------------------------

# The files the check writes, in stage order, with the stage name the summary shows.
STAGE_FILES = (("install", "install.json"), ("throughput 896x896", "throughput_896.json"),
               ("estimate check", "estimate_check.json"), ("train bf16", "train_bf16.json"),
               ("train fsdp", "train_fsdp.json"), ("long pairs 8k", "long_pairs_8k.json"))


def summary_lines(out: Path) -> list[str]:
    """The goals table: every stage's verdicts; a stage without its JSON is named as such (it crashed or
    ran out of time before writing it: gpu_check.log says why)."""
    lines = ["", "## Goals", "", "| stage | goal | figure | verdict |", "|---|---|---|---|"]
    for stage, name in STAGE_FILES:
        file = out / name
        try:
            payload = json.loads(file.read_text())
        except (OSError, ValueError):
            lines.append(f"| {stage} | the stage's figures | no {name}: the stage crashed or ran out of time "
                         f"(see gpu_check.log) | **MISSED** |")
            continue
        for v in payload.get("verdicts") or [verdict("the stage's figures", "no verdicts recorded", False)]:
            mark = {True: "met", False: "**MISSED**", None: v["note"] or "—"}[v["met"]]
            if v["met"] is not None and v["note"]:
                mark += f" ({v['note']})"
            lines.append(f"| {stage} | {_cell(v['goal'])} | {_cell(v['shown'])} | {_cell(mark)} |")
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


# --- what a stage imported (tests compare it with the install stage's list) ------------------------------

def _record_imports(path: str) -> None:
    """One line: this process's script, then every top-level module it imported."""
    names = sorted({name.split(".")[0] for name in list(sys.modules)})
    with open(path, "a") as handle:
        handle.write(" ".join([Path(sys.argv[0]).name or "-"] + names) + "\n")


if os.environ.get(IMPORTS_ENV):
    atexit.register(_record_imports, os.environ[IMPORTS_ENV])
