"""A short ``nbtools.train.train`` run on a random Qwen3-VL-4B-shaped model (GPU), and the GPU check's summary.

Part of ``benchmarks/gpu_check.sh``:

    python benchmarks/gpu_train_run.py --work DIR --out train_bf16.json --steps 8
    python benchmarks/gpu_train_run.py --work DIR --out train_fsdp.json --steps 4 --distributed fsdp
    python benchmarks/gpu_train_run.py --summarise OUT_DIR      # markdown table of the check's JSON files

The model has Qwen3-VL-4B's real dimensions and random bf16 weights, built directly on the GPU:
``train()`` runs unchanged except for its loader (``runner.load_policy``), which is replaced so that
no 9 GB checkpoint has to be written and read back first. ``--distributed fsdp`` relaunches itself
under ``torchrun`` (one process per visible GPU, at most ``--processes``) so the Trainer's FSDP2 path,
the packed step inside FSDP's forward and the adapter gather run end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

IMAGE_SIZE = 896
BATCH_SIZE = 4


def prepare(work: Path, pairs: int) -> tuple[Path, Path]:
    """(model folder with Qwen3-VL-4B's config + the tiny processor, training file) under ``work``."""
    from train_throughput import gpu_dataset, gpu_model_folder

    model_dir, data_dir = work / "model", work / "data"
    if not (model_dir / "config.json").is_file():
        gpu_model_folder(model_dir, IMAGE_SIZE)
    train_file = data_dir / "train.jsonl"
    if not train_file.is_file() or len(train_file.read_text().splitlines()) < pairs:
        gpu_dataset(data_dir, count=pairs, image_size=IMAGE_SIZE, answer_tokens=100)
    return model_dir, train_file


def random_weights_loader():
    """A stand-in for ``runner.load_policy``: the same return value, weights random instead of read from disk."""
    import torch

    from nbtools.models import detect_family, load_processor
    from nbtools.train import runner

    def load_policy(cfg, precision, device, rank_zero_loading=False):
        from transformers import AutoConfig, AutoModelForImageTextToText

        config = AutoConfig.from_pretrained(cfg.model)
        config._attn_implementation = "sdpa"
        torch.manual_seed(cfg.seed)
        with torch.device(device):
            model = AutoModelForImageTextToText.from_config(config, dtype=runner._dtype_for(precision))
        if rank_zero_loading:  # distributed: fsdp: the model reaches the Trainer's wrapping from host memory, as loaded
            model.to("cpu")
        processor = load_processor(cfg.model, max_pixels=cfg.max_pixels)
        return model, processor, detect_family(model).name, runner.build_lora_config(model, cfg)

    return load_policy


def run(args) -> int:
    import torch

    from nbtools.config import RunConfig
    from nbtools.train import runner

    work = Path(args.work)
    model_dir, train_file = prepare(work, BATCH_SIZE * args.steps * 2)
    out_dir = work / f"run-{args.distributed}"
    if int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(out_dir, ignore_errors=True)
    cfg = RunConfig(model=str(model_dir), train_file=str(train_file), validation_split=0.0, output_dir=str(out_dir),
                    task_display_name=f"gpu-check-{args.distributed}", max_steps=args.steps, batch_size=BATCH_SIZE,
                    gradient_accumulation_steps=1, learning_rate=1e-5, lora_rank=8, lora_dropout=0.0,
                    max_pixels=IMAGE_SIZE * IMAGE_SIZE, max_context_length=4096, gradient_checkpointing=True,
                    precision="bf16" if torch.cuda.is_bf16_supported() else "fp16", logging_steps=1,
                    save_steps=1000, eval_steps=1000, num_workers=2, packing=True, distributed=args.distributed)
    runner.load_policy = random_weights_loader()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    result = runner.train(cfg, live="headless")
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    record = json.loads((out_dir / "run.json").read_text())
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r and "train_runtime" not in r]
    adapter = out_dir / "adapter" / "adapter_model.safetensors"
    summary = {
        "distributed": args.distributed,
        "status": result.status,
        "world_size": record["process"]["world_size"],
        "precision": record["precision"],
        "packing": record.get("packing"),
        "reference_logps": record.get("reference_logps"),
        "losses": losses,
        "losses_finite": all(isinstance(x, float) and x == x and abs(x) != float("inf") for x in losses),
        "adapter_bytes": adapter.stat().st_size if adapter.is_file() else 0,
        "seconds": round(time.time() - t0, 1),
        "timings": record.get("timings"),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "device": torch.cuda.get_device_name(0),
    }
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0 if result.status == "finished" and summary["losses_finite"] and summary["adapter_bytes"] > 0 else 1


def relaunch_under_torchrun(argv: list[str], processes: int) -> int:
    import torch

    count = max(1, min(processes, torch.cuda.device_count()))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    command = [torchrun, "--nproc_per_node", str(count), "--master_port", "29561", __file__, *argv]
    return subprocess.run(command, env=dict(os.environ, NBTOOLS_UNDER_TORCHRUN="1")).returncode


def summarise(out: Path) -> str:
    """Markdown: the throughput goal (>= 3x TRL pairs/s, <= 0.6x memory above weights), estimate, training runs."""
    lines = ["", "| image size | TRL pairs/s | nbtools pairs/s | ratio (goal >= 3) | TRL mem above weights GiB | "
             "nbtools GiB | ratio (goal <= 0.6) | max abs log-prob diff (of sums up to) |", "|---|---|---|---|---|---|---|---|"]
    for side in (896, 1280):
        file = out / f"throughput_{side}.json"
        if not file.is_file():
            lines.append(f"| {side} | not measured | | | | | | |")
            continue
        results = json.loads(file.read_text())["results"]
        trl, ours = results["TRL DPOTrainer"], results["nbtools"]
        speed = ours["pairs_per_s"] / trl["pairs_per_s"]
        memory = ours["memory_above_weights_gib"] / trl["memory_above_weights_gib"]
        lines.append(f"| {side}x{side} | {trl['pairs_per_s']:.2f} | {ours['pairs_per_s']:.2f} | {speed:.2f} | "
                     f"{trl['memory_above_weights_gib']:.2f} | {ours['memory_above_weights_gib']:.2f} | {memory:.2f} | "
                     f"{ours.get('logp_max_abs_diff', float('nan')):.4f} ({ours.get('logp_max_abs_value', 0):.0f}) |")
    estimate = out / "estimate_check.json"
    if estimate.is_file() and estimate.stat().st_size:
        lines += ["", "estimate_check: `" + estimate.read_text().strip().replace("\n", " ") + "`"]
    for name in ("train_bf16", "train_fsdp"):
        file = out / f"{name}.json"
        if file.is_file():
            run_summary = json.loads(file.read_text())
            lines.append(f"\n{name}: {run_summary['status']}, {run_summary['world_size']} process(es), "
                         f"packing {'on' if (run_summary.get('packing') or {}).get('on') else 'OFF'}, losses "
                         f"{[round(x, 4) for x in run_summary['losses']]}, peak {run_summary['peak_memory_gib']} GiB, "
                         f"{run_summary['seconds']} s")
    lines += long_pairs_lines(out / "long_pairs_8k.json")
    return "\n".join(lines) + "\n"


def _figure(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def long_pairs_lines(file: Path) -> list[str]:
    """Markdown of benchmarks/gpu_long_step.py's figures: one row per side, then the block-mask ratios."""
    if not file.is_file():
        return []
    figures = json.loads(file.read_text())
    lines = ["", f"long pairs, ~{figures['tokens_target']:,} tokens per pair ({figures['device']}, {figures['precision']}, "
             f"{figures['steps']} timed steps after {figures['warmup']}):", "",
             "| side | attention | tokens per pair | s/step | peak GiB | above weights GiB | max abs log-prob diff "
             "vs TRL (of sums up to) |", "|---|---|---|---|---|---|---|"]
    for name, side in figures["results"].items():
        if "skipped" in side or "error" in side:
            why = f"not run: {side['skipped']}" if "skipped" in side else f"failed: {side['error'][:200]}"
            lines.append(f"| {name} | {why} | | | | | |")
            continue
        diff = (f"{side['logp_max_abs_diff']:.4f} ({side.get('logp_max_abs_value', 0):.0f})"
                if "logp_max_abs_diff" in side else "")
        lines.append(f"| {name} | {figures['attention'].get(name, '')} | {side['tokens_per_pair']:,} | "
                     f"{side['s_per_step']:.2f} | {side['peak_memory_gib']:.2f} | "
                     f"{side['memory_above_weights_gib']:.2f} | {diff} |")
    ratios = figures["ratios"]
    lines.append(f"\nblock mask / sdpa: memory above weights {_figure(ratios['memory_block_vs_sdpa'], '.2f')}, "
                 f"s/step {_figure(ratios['time_block_vs_sdpa'], '.2f')}; block mask / TRL: memory "
                 f"{_figure(ratios['memory_block_vs_trl'], '.2f')}, s/step {_figure(ratios['time_block_vs_trl'], '.2f')}")
    return lines


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="scratch folder (model config, data, run folders)")
    parser.add_argument("--out", help="JSON summary of the run")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--distributed", choices=("ddp", "fsdp"), default="ddp")
    parser.add_argument("--processes", type=int, default=1, help="fsdp: torchrun processes (at most the GPU count)")
    parser.add_argument("--reuse-model", action="store_true", help="keep a model folder / data already in --work")
    parser.add_argument("--summarise", metavar="OUT_DIR", help="print the check's summary table and exit")
    args = parser.parse_args(argv)
    if args.summarise:
        print(summarise(Path(args.summarise)))
        return 0
    if not (args.work and args.out):
        parser.error("--work and --out are needed for a run")
    import torch

    if not torch.cuda.is_available():
        print("gpu_train_run: needs a CUDA GPU", file=sys.stderr)
        return 2
    if args.distributed == "fsdp" and not os.environ.get("NBTOOLS_UNDER_TORCHRUN"):
        return relaunch_under_torchrun(argv, args.processes)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
