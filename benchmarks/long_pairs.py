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

    python benchmarks/long_pairs.py [--cases mask_build logprobs padding] [--lengths 2048 8192 16384 32768]
                                    [--baseline-tree DIR] [--out FILE]

Writes ``benchmarks/results/long_pairs.json`` (merged by case).
"""

from __future__ import annotations

import argparse
import json
import sys
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
    print("padding", json.dumps(result), flush=True)
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
    parser.add_argument("--cases", nargs="+", default=["mask_build", "logprobs", "padding"],
                        choices=["mask_build", "logprobs", "padding"])
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
            "padding": lambda: padding(tree)}
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
