"""A packed training step at ~8k tokens per pair: the block-mask kernel vs sdpa (dense mask) vs TRL's own step.

Part of ``benchmarks/gpu_check.sh`` (stage "long pairs 8k"). One pair per step, about half of it image
tokens (one S×S picture: (S/32)² tokens on Qwen3-VL, S = 2,048 at 8k), each answer about a quarter. Model,
data and settings as ``train_throughput.py --gpu`` builds them: a random Qwen3-VL-4B-shaped model built on
the GPU, bf16, LoRA r=8, gradient checkpointing; the reference pass runs in every step (as in TRL's default,
so the three sides do the same work). Sides, one after another in this process, each on a fresh model,
each a real ``trainer.train()`` (``train_throughput.run_baseline`` / ``run_nbtools``):

    nbtools block mask    one packed row per pair, FlexAttention with a BlockMask (attn_implementation: block-mask)
    nbtools sdpa          one packed row per pair, sdpa with the dense (1, 1, L, L) mask
    TRL DPOTrainer        two rows per pair ([prompt, chosen], [prompt, rejected]), sdpa

The JSON is written again after each side, so a stage stopped by its time limit keeps the sides it finished;
a side that fails (out of memory, say) is recorded with its error and the next one runs (exit status 1).

Per side: s/step, peak memory (CUDA peak allocated) and memory above the weights, tokens per pair (real
tokens in the step's batch), and for the packed sides the largest log-prob difference from TRL's two rows on
the first pair (before training). Then the ratios block / sdpa and block / TRL of memory above the weights
and of s/step. The timed steps follow ``--warmup`` steps (default 2: the block-mask kernel is compiled at
the first step and once more, for any length, at the first step of another length); the sdpa and TRL
sides compile nothing and take ``--plain-warmup`` steps (default 1).

Goals (``verdicts`` in the JSON; exit 1 when one is missed). There is no measured baseline at this length
to set sharper ratios, so the goals are what the block mask is there for, as "no worse than" comparisons:
every side completes (no out-of-memory); both packed sides' log-probs equal TRL's two rows within the
precision's tolerance; the block mask's memory above the weights and its s/step at most sdpa's (it drops
the dense L×L mask and skips the masked blocks) and at most TRL's (one row holds the prompt and its
picture once).

    python benchmarks/gpu_long_step.py --json OUT/long_pairs_8k.json [--tokens 8192] [--steps 2] [--warmup 2]
    python benchmarks/gpu_long_step.py --rehearse --json FILE   # CPU: the shrunken 4B (gpu_stage.shrink: real
                                                                # vocabulary and token ids), ~512 tokens, fp32,
                                                                # TRL and sdpa only (no FlexAttention backward
                                                                # on the CPU); the same as NBTOOLS_GPU_REHEARSE=1
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_stage  # noqa: E402

# the block mask first: if the stage runs out of time, the figure it is there for is already written
SIDES = ("nbtools block mask", "nbtools sdpa", "TRL DPOTrainer")
TOKENS_PER_PICTURE_SIDE = 32  # Qwen3-VL: 16-px patches merged 2x2


def picture_side(tokens: int) -> int:
    """The side in pixels of a square picture of about tokens / 2 image tokens."""
    return TOKENS_PER_PICTURE_SIDE * max(1, round(math.sqrt(tokens / 2)))


def tokens_per_word(tokenizer) -> float:
    """How many tokens one word of the answers' filler text makes (gpu_dataset counts words)."""
    from train_throughput import ANSWER_FILLER

    text = " ".join([ANSWER_FILLER] * 10)
    return len(tokenizer(text).input_ids) / len(text.split())


def ratio(numerator, denominator):
    return round(numerator / denominator, 3) if numerator is not None and denominator else None


def measure(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="nbtools-long-step-"))
    try:
        return measure_in(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_in(work: Path, args) -> dict:
    """The three sides, with the model folder and data under ``work``."""
    import torch

    from nbtools.config import RunConfig
    from nbtools.models import detect_family, load_processor
    from nbtools.train.dataset import prepare_data
    from nbtools.train.runner import policy_attention
    from train_throughput import gpu_dataset, gpu_model_folder, run_baseline, run_nbtools

    device, precision = gpu_stage.device(), gpu_stage.precision()
    side = picture_side(args.tokens)
    answer_tokens = max(8, args.tokens // 4)
    model_name = str(gpu_model_folder(work / "model", side))
    processor = load_processor(model_name, max_pixels=side * side)
    warmups = {name: args.warmup if name == "nbtools block mask" else args.plain_warmup for name in SIDES}
    train_file = gpu_dataset(work / "data", count=max(warmups.values()) + args.steps, image_size=side,
                             answer_tokens=round(answer_tokens / tokens_per_word(processor.tokenizer)))
    cfg = RunConfig(model=model_name, train_file=str(train_file), validation_split=0.0, max_pixels=side * side,
                    max_context_length=2 * args.tokens + 512, batch_size=1, gradient_accumulation_steps=1,
                    lora_rank=8, lora_dropout=0.0, learning_rate=1e-5, gradient_checkpointing=True,
                    num_workers=2, precision=precision, load_best_model_at_end=False,
                    precompute_ref_log_probs=False)

    def make_model(attention: str):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_name)
        config._attn_implementation = "sdpa"
        model = gpu_stage.random_model(config, precision)
        model.set_attn_implementation(attention)
        return model

    from transformers import AutoConfig

    from nbtools.models import resolve_model_path

    family = detect_family(AutoConfig.from_pretrained(resolve_model_path(model_name))).name
    data = prepare_data(cfg, family)
    summary = {"device": gpu_stage.device_name(), "precision": precision, "tokens_target": args.tokens,
               "picture_side": side, "answer_tokens": answer_tokens, "warmup": args.warmup,
               "plain_warmup": args.plain_warmup, "steps": args.steps, "attention": {}, "results": {}, "ratios": {}}
    for name in SIDES:
        if name == "nbtools block mask" and device == "cpu":
            summary["results"][name] = {"skipped": "FlexAttention has no backward pass on the CPU"}
            continue
        side_cfg = cfg.replace(attn_implementation="block-mask" if name == "nbtools block mask" else "sdpa")
        attention = policy_attention(side_cfg, precision, device).implementation  # the decision train() makes
        summary["attention"][name] = attention
        torch.manual_seed(0)
        out = work / name.replace(" ", "-")
        try:
            if name == "TRL DPOTrainer":
                figures = run_baseline(side_cfg, lambda: make_model(attention), processor, data.train.records,
                                       family, out, precision, device, warmups[name], args.steps)
            else:
                figures = run_nbtools(side_cfg, lambda: make_model(attention), processor, data, family, out,
                                      precision, device, warmups[name], args.steps)
            figures["tokens_per_pair"] = round(figures["tokens_per_s"] * figures["s_per_step"])  # one pair a step
        except Exception as exc:  # e.g. out of memory: the other sides are still measured
            figures = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        summary["results"][name] = figures
        summary["ratios"] = ratios(summary["results"])
        summary["verdicts"] = long_verdicts(summary)
        Path(args.json).write_text(json.dumps(summary, indent=1))  # a stage cut short keeps the sides done
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return summary


def ratios(results: dict) -> dict:
    """Block mask against sdpa and TRL: memory above the weights and s/step (None where a side is missing)."""
    block, sdpa, trl = (results.get(name, {}) for name in SIDES)
    return {"memory_block_vs_sdpa": ratio(block.get("memory_above_weights_gib"), sdpa.get("memory_above_weights_gib")),
            "memory_block_vs_trl": ratio(block.get("memory_above_weights_gib"), trl.get("memory_above_weights_gib")),
            "memory_sdpa_vs_trl": ratio(sdpa.get("memory_above_weights_gib"), trl.get("memory_above_weights_gib")),
            "time_block_vs_sdpa": ratio(block.get("s_per_step"), sdpa.get("s_per_step")),
            "time_block_vs_trl": ratio(block.get("s_per_step"), trl.get("s_per_step"))}


def long_verdicts(summary: dict) -> list[dict]:
    """The stage's goals (see the module doc) from the sides measured so far; a side not reached yet (the
    stage ran out of time) or failed misses its goals."""
    results, ratio_of, precision = summary["results"], summary["ratios"], summary["precision"]
    verdicts = []
    for name in SIDES:
        side = results.get(name, {})
        if "skipped" in side:
            verdicts.append(gpu_stage.verdict(f"{name}: completes", f"skipped: {side['skipped']}", None,
                                              gpu_stage.REHEARSAL_NOTE))
            continue
        if "error" in side:
            shown = f"failed: {side['error'][:200]}"
        elif side:
            shown = f"{side['s_per_step']:.2f} s/step, {side['tokens_per_pair']:,} tokens per pair"
        else:
            shown = "not reached"
        verdicts.append(gpu_stage.verdict(f"{name}: completes", shown, bool(side) and "error" not in side))
        if name != "TRL DPOTrainer":
            verdicts.append(gpu_stage.logp_goal(name, side, precision))
    block_ran = "skipped" not in results.get("nbtools block mask", {})
    for key, goal in (("memory_block_vs_sdpa", "block mask memory above weights <= sdpa's"),
                      ("time_block_vs_sdpa", "block mask s/step <= sdpa's"),
                      ("memory_block_vs_trl", "block mask memory above weights <= TRL's"),
                      ("time_block_vs_trl", "block mask s/step <= TRL's")):
        if not block_ran:
            verdicts.append(gpu_stage.verdict(goal, "n/a", None, gpu_stage.REHEARSAL_NOTE + " (no block-mask "
                                              "side: FlexAttention has no backward on the CPU)"))
        else:
            verdicts.append(gpu_stage.judged(goal, ratio_of.get(key), lambda r: r <= 1.0, ".2f", unit="x",
                                             gpu_only=key.startswith("memory")))
    return verdicts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the figures here")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per packed pair (default 8192; 512 rehearsing)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2,
                        help="block-mask side: untimed steps first (compiling its kernel)")
    parser.add_argument("--plain-warmup", type=int, default=1, help="sdpa and TRL sides: untimed steps first")
    parser.add_argument("--rehearse", action="store_true",
                        help="CPU, the shrunken 4B: TRL and sdpa sides only (as NBTOOLS_GPU_REHEARSE=1)")
    args = parser.parse_args(argv)
    if args.rehearse:
        os.environ[gpu_stage.REHEARSE_ENV] = "1"
    args.rehearse = gpu_stage.rehearsing()
    args.tokens = args.tokens or (512 if args.rehearse else 8192)
    import torch

    if not args.rehearse and not torch.cuda.is_available():
        print("gpu_long_step: needs a CUDA GPU (or --rehearse)", file=sys.stderr)
        return 2
    summary = measure(args)
    print(json.dumps(summary))
    gpu_stage.print_verdicts("long pairs", summary["verdicts"])
    measured = [figures for figures in summary["results"].values() if "skipped" not in figures]
    ok = all("error" not in figures and math.isfinite(figures["s_per_step"]) for figures in measured)
    return 1 if not (measured and ok) else gpu_stage.exit_code(summary["verdicts"])


if __name__ == "__main__":
    sys.exit(main())
