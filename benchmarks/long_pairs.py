"""Packed pairs at the lengths users have: what building the attention mask costs at L = 2k … 32k tokens.

One packed row is ``[prompt, chosen, rejected]`` (half prompt, a quarter each answer: a picture-heavy
prompt) of L tokens. Each measurement runs in a fresh child process (``python -c``) on the tree under
test, so its peak is its own: ``build_peak_mb`` is VmHWM after building minus VmHWM after the imports,
``kept_bytes`` the size of what is kept (the dense boolean mask, or the BlockMask's tensors).

    dense          nbtools.packing.mask.packed_allowed of the tree (the CPU / sdpa path)
    dense_before   the same function of --baseline-tree (the code before this change), when given
    block_mask     nbtools.packing.block_mask.block_mask_from_segments of the tree, when it has it

Case ``logprobs``: the answer log-probs of 2,000 tokens at Qwen3-VL's vocabulary (151,936) and Qwen3-VL-4B's
hidden size (2,560), fp32, frozen head (as under LoRA), stats on, forward + backward: the full-vocabulary
computation (``chunk_size=0``) vs TRL's chunked kernel (``nbtools.packing.logps.answer_logps``); peak RSS above
the inputs, each in its own process.

Case ``padding``: the share of padding tokens for 2,000 RLAIF-V-like pairs
(``nbtools.packing.multi.rlaif_v_like_lengths``: answers 10–400 tokens per side, 1–4 pictures of mixed sizes
at Qwen3-VL's token rule, prompts of 20–60 text tokens; seeded): one pair per row in batches of 4, each padded
to its longest pair (today), vs pairs planned into rows of a token budget (``plan_rows``), each padded to the
budget. Pure arithmetic, no model.

Case ``reference_pass``: the forward of the packed reference pass (``nbtools.packing.step.reference_logps``:
no_grad, one packed row ``[prompt, chosen, rejected]``, chosen / rejected log-probs through ``packed_logps``)
on tiny-qwen3-vl with 65,536 positions (``nbtools.models.tiny.build_tiny_qwen3_vl_long``; the built-in one
stops at 4,096), fp32, at L ≈ 2k … 32k: ``sdpa`` (the dense mask) vs the block-mask kernel (FlexAttention,
compiled on the CPU through ``block_mask.compile_on_cpu``: eager FlexAttention materialises the scores).
The inputs are pictures, not text only: the prompt is L/(2·256) random 512×512 pictures (256 image tokens
each; 4 at 2k, 64 at 32k) and one line of text, about half the row; each answer a quarter (random words,
cut to length by the collator's ``max_length``). The inputs are collated once per length in a child of their
own and saved; each kernel then runs in a fresh child that loads the model and the inputs and runs the pass
twice: ``first_forward_*`` is the first pass (for the block mask it includes compiling the kernel);
``forward_peak_mb`` / ``forward_seconds`` the second, after the high-water mark is reset
(``/proc/self/clear_refs``). Peaks are VmHWM after the pass minus VmHWM before it, i.e. above the model
and the inputs. Allocations of 64 KiB and more go straight to mmap and back to the system on free
(``mallopt``), so what the first pass freed cannot hide the second pass's peak inside kept heap. Per length
also: ``peak_ratio`` (block / sdpa, second pass; the goal: ≤ 0.6 at 16k), the BlockMask's kept bytes next to
L²/128², and the largest difference between the two kernels' log-probs (per answer sum and per token).

    python benchmarks/long_pairs.py [--cases mask_build logprobs padding reference_pass]
                                    [--lengths 2048 8192 16384 32768] [--baseline-tree DIR] [--out FILE]

Writes ``benchmarks/results/long_pairs.json`` (merged by case).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

MASK_CHILD = r'''
import json, sys, time
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import torch
import nbtools
from nbtools.packing.layout import SEGMENT_CHOSEN, SEGMENT_PROMPT, SEGMENT_REJECTED
kind, length = sys.argv[1], int(sys.argv[2])
if kind == "block_mask":
    from nbtools.packing.block_mask import block_mask_from_segments as build
else:
    from nbtools.packing.mask import packed_allowed as build
segments = torch.full((1, length), SEGMENT_PROMPT, dtype=torch.long)
segments[0, length // 2: 3 * length // 4] = SEGMENT_CHOSEN
segments[0, 3 * length // 4:] = SEGMENT_REJECTED
torch.set_num_threads(1)
base = hwm()
t0 = time.perf_counter()
mask = build(segments)
seconds = time.perf_counter() - t0
if isinstance(mask, torch.Tensor):
    kept = mask.numel() * mask.element_size()
else:  # a BlockMask: the sum of its tensors
    kept = sum(t.numel() * t.element_size() for t in vars(mask).values() if isinstance(t, torch.Tensor))
print(json.dumps({"nbtools": nbtools.__file__, "seconds": seconds, "import_mb": base, "peak_mb": hwm(),
                  "build_peak_mb": hwm() - base, "kept_bytes": int(kept)}))
'''


LOGPROBS_CHILD = r'''
import json, resource, sys, time
import torch
import nbtools
from nbtools.packing.logps import LOGPROB_VOCAB_CHUNK, answer_logps
path, vocab, hidden_size, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
head = torch.nn.Linear(hidden_size, vocab, bias=False).requires_grad_(False)
hidden = (torch.randn(tokens, hidden_size) * 0.05).requires_grad_(True)
targets = torch.randint(vocab, (tokens,))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
logps, stats = answer_logps(head, hidden, targets, with_stats=True,
                            chunk_size=0 if path == "full" else LOGPROB_VOCAB_CHUNK)
logps.sum().backward()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"nbtools": nbtools.__file__, "seconds": seconds, "peak_above_inputs_mb": peak - before,
                  "logps_sum": logps.sum().item(), "hidden_grad_sum": hidden.grad.abs().sum().item()}))
'''
QWEN3_VL_VOCAB, QWEN3_VL_4B_HIDDEN, ANSWER_TOKENS = 151_936, 2_560, 2_000


def logprobs(tree: Path, timeout: float) -> dict:
    from scale import run_child

    argv = [str(QWEN3_VL_VOCAB), str(QWEN3_VL_4B_HIDDEN), str(ANSWER_TOKENS)]
    result = {side: run_child(tree, LOGPROBS_CHILD, [side, *argv], timeout) for side in ("full", "chunked")}
    full, chunked = result["full"], result["chunked"]
    if "peak_above_inputs_mb" in full and "peak_above_inputs_mb" in chunked:
        result["peak_ratio"] = round(chunked["peak_above_inputs_mb"] / full["peak_above_inputs_mb"], 3)
        result["full_logits_mb"] = round(ANSWER_TOKENS * QWEN3_VL_VOCAB * 4 / 2**20, 1)
    print("logprobs", json.dumps(result), flush=True)
    return result


PADDING_PAIRS, PADDING_BATCH_SIZE, PADDING_BUDGETS, PADDING_SEED = 2_000, 4, (2_048, 8_192), 0


def step_padding(lengths: list[int], plan, budget: int | None) -> float:
    """Share of padding when each batch of PADDING_BATCH_SIZE consecutive pairs is laid out as the training step
    does: rows planned by ``plan`` within ``budget`` (None: the batch's longest pair), padded to the longest row."""
    slots = used = 0
    for first in range(0, len(lengths), PADDING_BATCH_SIZE):
        batch = lengths[first:first + PADDING_BATCH_SIZE]
        rows = plan(batch, max(max(batch), budget or 0))
        slots += len(rows) * max(sum(batch[i] for i in row) for row in rows)
        used += sum(batch)
    return (slots - used) / slots if slots else 0.0


def padding(tree: Path) -> dict:
    sys.path.insert(0, str(tree))  # the tree under test's planner
    from nbtools.packing.multi import padding_fraction, padding_fraction_packed, plan_rows, rlaif_v_like_lengths

    lengths = rlaif_v_like_lengths(PADDING_PAIRS, seed=PADDING_SEED)
    result = {"pairs": PADDING_PAIRS, "seed": PADDING_SEED, "tokens": sum(lengths),
              "pair_tokens": {"min": min(lengths), "median": sorted(lengths)[len(lengths) // 2],
                              "max": max(lengths)},
              "one_pair_per_row": {"batch_size": PADDING_BATCH_SIZE,
                                   "padding_fraction": round(padding_fraction(lengths, PADDING_BATCH_SIZE), 4)},
              "packed": {}}
    for budget in PADDING_BUDGETS:
        rows = plan_rows(lengths, budget)
        result["packed"][str(budget)] = {
            "rows": len(rows), "oversize_pairs": sum(length > budget for length in lengths),
            "padding_fraction": round(padding_fraction_packed(rows, lengths, budget), 4)}
    # what the training step does: the consecutive pairs of each batch share rows (plan_in_order), up to the
    # batch's width on dense masks (sdpa) and up to max_context_length on the block mask
    try:
        from nbtools.packing.multi import plan_in_order
    except ImportError:  # a tree before the step shared rows
        plan_in_order = None
    if plan_in_order is not None:
        result["training_step"] = {"batch_size": PADDING_BATCH_SIZE,
                                   "dense_batch_width": round(step_padding(lengths, plan_in_order, None), 4),
                                   "block_mask": {str(b): round(step_padding(lengths, plan_in_order, b), 4)
                                                  for b in PADDING_BUDGETS}}
    print("padding", json.dumps(result), flush=True)
    return result


BLOCK_TILE = 128  # FlexAttention's tile; the bound on what a BlockMask keeps: L²/128² bytes per row
REFERENCE_PICTURE_SIDE = 512  # 16x16 tokens of the tiny Qwen3-VL after merging (32 px per token)
REFERENCE_GOAL = {"length": 16384, "peak_ratio_max": 0.6}

REFERENCE_INPUTS_CHILD = r"""
import json, random, sys
import numpy as np
import torch
from PIL import Image
import nbtools
from nbtools.models import load_processor
from nbtools.models.tiny import build_tiny_qwen3_vl_long
from nbtools.packing import PackedPreferenceCollator
length, side, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
processor = load_processor(str(build_tiny_qwen3_vl_long()), max_pixels=side * side)
pictures = max(1, round(length / 2 / (side // 32) ** 2))
rng = np.random.RandomState(0)
images = [Image.fromarray((rng.rand(side, side, 3) * 255).astype(np.uint8)) for _ in range(pictures)]
words = "the picture shows a red square on the left a blue circle near the middle and green lines".split()
def answer(seed, count):
    pick = random.Random(seed)
    return [{"role": "assistant", "content": [{"type": "text", "text": " ".join(pick.choice(words) for _ in range(count))}]}]
def example(answer_words):
    content = [{"type": "image"}] * pictures + [{"type": "text", "text": "Describe every picture."}]
    return {"prompt": [{"role": "user", "content": content}], "chosen": answer(1, answer_words),
            "rejected": answer(2, answer_words), "images": list(images)}
prompt = int(PackedPreferenceCollator(processor)([example(1)])["prompt_lengths"][0])
room = (length - prompt) // 2  # each answer: what is left, halved; cut like TRL through max_length
batch = PackedPreferenceCollator(processor, max_length=prompt + room)([example(2 * room)])
torch.save(batch, out)
print(json.dumps({"nbtools": nbtools.__file__, "tokens": int(batch["segment_ids"].shape[1]), "prompt_tokens": prompt,
                  "image_tokens": int((batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()),
                  "pictures": pictures, "answer_tokens": [int(batch["chosen_lengths"][0]), int(batch["rejected_lengths"][0])]}))
"""

REFERENCE_CHILD = r"""
import ctypes, gc, json, os, shutil, sys, tempfile, time
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD, fixed: big allocations are mapped, and unmapped when freed
libc.mallopt(-1, 64 * 1024)  # M_TRIM_THRESHOLD
os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache = tempfile.mkdtemp(prefix="nbtools-inductor-")
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
import torch
import nbtools
from nbtools.models import load_model_and_processor
from nbtools.models.tiny import build_tiny_qwen3_vl_long
from nbtools.packing import block_mask as block_mask_module
from nbtools.packing.step import reference_logps
kernel, batch_path, logps_path = sys.argv[1:4]
if kernel == "block_mask":
    block_mask_module.compile_on_cpu(True)
attention = "sdpa" if kernel == "sdpa" else block_mask_module.BLOCK_MASK_ATTENTION
model, _ = load_model_and_processor(str(build_tiny_qwen3_vl_long()), dtype="float32", device="cpu",
                                    attn_implementation=attention)
batch = torch.load(batch_path, weights_only=False)
figures = {"nbtools": nbtools.__file__, "loaded_mb": status("VmHWM"), "torch_threads": torch.get_num_threads()}
for name in ("first_forward", "forward"):
    if name == "forward":  # the second pass: its own high-water mark, from what is resident now
        gc.collect()
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    before = status("VmHWM")
    start = time.perf_counter()
    result = reference_logps(model, batch, ref_model=model)
    figures[name + "_seconds"] = time.perf_counter() - start
    figures[name + "_peak_mb"] = status("VmHWM") - before
    if name == "first_forward":
        del result
if kernel == "block_mask":  # what the BlockMask keeps: the sum of its tensors
    mask = block_mask_module.block_mask_from_segments(batch["segment_ids"])
    figures["block_mask_bytes"] = sum(t.numel() * t.element_size() for t in vars(mask).values()
                                      if isinstance(t, torch.Tensor))
torch.save({"chosen": result.chosen, "rejected": result.rejected, "token_logps": result.token_logps}, logps_path)
shutil.rmtree(inductor_cache, ignore_errors=True)
print(json.dumps(figures))
"""


def _difference(a, b) -> float:
    """The largest absolute difference of two tensors, to 3 significant digits."""
    return float(f"{float((a - b).abs().max()):.3g}")


def compare_reference(row: dict, sdpa_logps: Path, block_logps: Path) -> None:
    """Adds to one length's row: the block / sdpa peak ratios, the BlockMask's bytes against L²/128², and
    how far apart the two kernels' log-probs are."""
    import torch

    sdpa, block = row.get("sdpa", {}), row.get("block_mask", {})
    for ratio, key in (("peak_ratio", "forward_peak_mb"), ("first_forward_peak_ratio", "first_forward_peak_mb"),
                       ("seconds_ratio", "forward_seconds")):
        if key in sdpa and key in block:
            row[ratio] = round(block[key] / sdpa[key], 3)
    tokens = row["inputs"]["tokens"]
    row["block_mask_bound_bytes"] = round(tokens * tokens / BLOCK_TILE ** 2)
    if "block_mask_bytes" in block:
        row["block_mask_bytes_within_bound"] = block["block_mask_bytes"] <= row["block_mask_bound_bytes"]
    if sdpa_logps.is_file() and block_logps.is_file():
        want, got = torch.load(sdpa_logps), torch.load(block_logps)
        row["logps_max_abs_diff"] = max(_difference(got[side], want[side]) for side in ("chosen", "rejected"))
        row["logps_max_abs_value"] = round(max(float(want[side].abs().max()) for side in ("chosen", "rejected")), 1)
        row["token_logps_max_abs_diff"] = _difference(got["token_logps"], want["token_logps"])


def reference_pass(lengths: list[int], tree: Path, timeout: float) -> dict:
    from scale import run_child

    result: dict = {"goal": REFERENCE_GOAL, "picture_side": REFERENCE_PICTURE_SIDE, "lengths": {}}
    with tempfile.TemporaryDirectory(prefix="nbtools-long-pairs-") as work:
        for length in lengths:
            batch = Path(work) / f"inputs-{length}.pt"
            row = {"inputs": run_child(tree, REFERENCE_INPUTS_CHILD,
                                       [str(length), str(REFERENCE_PICTURE_SIDE), str(batch)], timeout)}
            if "error" not in row["inputs"]:
                for kernel in ("sdpa", "block_mask"):
                    row[kernel] = run_child(tree, REFERENCE_CHILD,
                                            [kernel, str(batch), str(Path(work) / f"{kernel}-{length}.pt")], timeout)
                compare_reference(row, Path(work) / f"sdpa-{length}.pt", Path(work) / f"block_mask-{length}.pt")
            result["lengths"][str(length)] = row
            batch.unlink(missing_ok=True)
            print("reference_pass", length, json.dumps(row), flush=True)
    goal_row = result["lengths"].get(str(REFERENCE_GOAL["length"]), {})
    result["met"] = (goal_row["peak_ratio"] <= REFERENCE_GOAL["peak_ratio_max"]) if "peak_ratio" in goal_row else None
    return result


def has_module(tree: Path, relative: str) -> bool:
    return (tree / relative).is_file()


def mask_build(lengths: list[int], tree: Path, baseline: Path | None, timeout: float) -> dict:
    from scale import run_child

    results: dict = {}
    for length in lengths:
        row = {"dense": run_child(tree, MASK_CHILD, ["dense", str(length)], timeout)}
        if baseline is not None:
            row["dense_before"] = run_child(baseline, MASK_CHILD, ["dense", str(length)], timeout)
        if has_module(tree, "nbtools/packing/block_mask.py"):
            row["block_mask"] = run_child(tree, MASK_CHILD, ["block_mask", str(length)], timeout)
        results[str(length)] = row
        print(length, json.dumps(row), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cases = ["mask_build", "logprobs", "padding", "reference_pass"]
    parser.add_argument("--cases", nargs="+", default=cases, choices=cases)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384, 32768])
    parser.add_argument("--tree", type=Path, default=REPO)
    parser.add_argument("--baseline-tree", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "long_pairs.json")
    args = parser.parse_args()
    from scale import machine_facts, tree_facts

    result = json.loads(args.out.read_text()) if args.out.is_file() else {"cases": {}}
    tree = args.tree.resolve()
    baseline = args.baseline_tree.resolve() if args.baseline_tree else None
    runs = {"mask_build": lambda: mask_build(args.lengths, tree, baseline, args.timeout),
            "logprobs": lambda: logprobs(tree, args.timeout),
            "padding": lambda: padding(tree),
            "reference_pass": lambda: reference_pass(args.lengths, tree, args.timeout)}
    for case in args.cases:
        result["cases"][case] = runs[case]()
        # which code and machine measured this case (cases are rerun one by one, on different trees)
        result.setdefault("measured", {})[case] = {
            "tree": tree_facts(tree), "machine": machine_facts(),
            **({"baseline": tree_facts(baseline)} if baseline is not None and case == "mask_build" else {})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
