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
the first step and once more, for any length, at the first step of another length).

    python benchmarks/gpu_long_step.py --json OUT/long_pairs_8k.json [--tokens 8192] [--steps 2] [--warmup 2]
    python benchmarks/gpu_long_step.py --rehearse --json FILE   # CPU: tiny-qwen3-vl, ~512 tokens, TRL and
                                                                # sdpa only (no FlexAttention backward on the CPU)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

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
    from nbtools.models import detect_family, load_model_and_processor, load_processor
    from nbtools.train.dataset import prepare_data
    from nbtools.train.runner import policy_attention
    from train_throughput import gpu_dataset, gpu_model_folder, run_baseline, run_nbtools

    device = "cpu" if args.rehearse else "cuda"
    precision = "fp32" if args.rehearse else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    side = picture_side(args.tokens)
    answer_tokens = max(8, args.tokens // 4)
    model_name = "tiny-qwen3-vl" if args.rehearse else str(gpu_model_folder(work / "model", side))
    processor = load_processor(model_name, max_pixels=side * side)
    train_file = gpu_dataset(work / "data", count=args.warmup + args.steps, image_size=side,
                             answer_tokens=round(answer_tokens / tokens_per_word(processor.tokenizer)))
    cfg = RunConfig(model=model_name, train_file=str(train_file), validation_split=0.0, max_pixels=side * side,
                    max_context_length=2 * args.tokens + 512, batch_size=1, gradient_accumulation_steps=1,
                    lora_rank=8, lora_dropout=0.0, learning_rate=1e-5, gradient_checkpointing=not args.rehearse,
                    num_workers=0 if args.rehearse else 2, precision=precision, load_best_model_at_end=False,
                    precompute_ref_log_probs=False)

    def make_model(attention: str):
        if args.rehearse:
            return load_model_and_processor(model_name, dtype="float32", device="cpu",
                                            attn_implementation=attention)[0]
        from transformers import AutoConfig, AutoModelForImageTextToText

        config = AutoConfig.from_pretrained(model_name)
        config._attn_implementation = "sdpa"
        with torch.device("cuda"):
            model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16
                                                            if precision == "bf16" else torch.float16)
        model.set_attn_implementation(attention)
        return model

    from transformers import AutoConfig

    from nbtools.models import resolve_model_path

    family = detect_family(AutoConfig.from_pretrained(resolve_model_path(model_name))).name
    data = prepare_data(cfg, family)
    summary = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (rehearsal)",
               "precision": precision, "tokens_target": args.tokens, "picture_side": side,
               "answer_tokens": answer_tokens, "warmup": args.warmup, "steps": args.steps, "attention": {},
               "results": {}, "ratios": {}}
    for name in SIDES:
        if name == "nbtools block mask" and args.rehearse:
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
                                       family, out, precision, device, args.warmup, args.steps)
            else:
                figures = run_nbtools(side_cfg, lambda: make_model(attention), processor, data, family, out,
                                      precision, device, args.warmup, args.steps)
            figures["tokens_per_pair"] = round(figures["tokens_per_s"] * figures["s_per_step"])  # one pair a step
        except Exception as exc:  # e.g. out of memory: the other sides are still measured
            figures = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        summary["results"][name] = figures
        summary["ratios"] = ratios(summary["results"])
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the figures here")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per packed pair (default 8192; 512 rehearsing)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compiling the block-mask kernel)")
    parser.add_argument("--rehearse", action="store_true", help="CPU, tiny-qwen3-vl: TRL and sdpa sides only")
    args = parser.parse_args(argv)
    args.tokens = args.tokens or (512 if args.rehearse else 8192)
    import torch

    if not args.rehearse and not torch.cuda.is_available():
        print("gpu_long_step: needs a CUDA GPU (or --rehearse)", file=sys.stderr)
        return 2
    summary = measure(args)
    print(json.dumps(summary))
    measured = [figures for figures in summary["results"].values() if "skipped" not in figures]
    ok = all("error" not in figures and math.isfinite(figures["s_per_step"]) for figures in measured)
    return 0 if measured and ok else 1


if __name__ == "__main__":
    sys.exit(main())
