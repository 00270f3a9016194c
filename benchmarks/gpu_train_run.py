"""A short ``nbtools.train.train`` run on a random Qwen3-VL-4B-shaped model (GPU), and the GPU check's summary.

Part of ``benchmarks/gpu_check.sh``:

    python benchmarks/gpu_train_run.py --work DIR --out train_bf16.json --steps 8
    python benchmarks/gpu_train_run.py --work DIR --out train_fsdp.json --steps 4 --distributed fsdp
    python benchmarks/gpu_train_run.py --summarise OUT_DIR      # markdown tables of the check's JSON files

The model has Qwen3-VL-4B's real dimensions and random bf16 weights, built directly on the GPU:
``train()`` runs unchanged except for its loader (``runner.load_policy``), which is replaced so that
no 9 GB checkpoint has to be written and read back first. The run trains ``--pairs`` pairs (default two
batches) for ``--steps`` steps, so it sees each batch several times and its loss must fall.
``--distributed fsdp`` relaunches itself under ``torchrun --standalone`` (one process per visible GPU, at
most ``--processes``) so the Trainer's FSDP2 path, the packed step inside FSDP's forward and the adapter
gather run end to end.

Goals (``verdicts`` in the JSON; exit 1 when one is missed): the run finishes with packing on; every
logged loss is finite; the loss falls (the mean of the last two logged losses below the first, log 2);
the adapter reloads: ``nbtools.evaluate``'s own check of the run's adapter folder, then peft onto a fresh
model, and every LoRA tensor equals the trained model's (none missing, none extra, not all zero).

Under ``gpu_check.sh --rehearse`` (``NBTOOLS_GPU_REHEARSE=1``) the same runs go on the CPU with the shrunken
4B (``gpu_stage.shrink``: real vocabulary and token ids), fp32, and every goal is judged except peak
memory. FSDP cannot run on the CPU (accelerate would silently run DDP; ``train()`` refuses it), so the fsdp
stage rehearses its plumbing only: the torchrun relaunch with the arguments passed through, the Trainer's
FSDP2 settings as ``train()`` builds them for a GPU (rank-zero loading on), and ``train()``'s refusal on
the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_stage  # noqa: E402

IMAGE_SIZE = 896
BATCH_SIZE = 4
LEARNING_RATE = 1e-4  # a LoRA on random weights: large enough that 2-4 passes over the same pairs lower the loss


def prepare(work: Path, pairs: int, image_size: int, answer_tokens: int) -> tuple[Path, Path]:
    """(model folder with Qwen3-VL-4B's config + the tiny processor, training file) under ``work``.

    Both are reused when ``work`` already holds them (the fsdp stage after the bf16 one)."""
    from train_throughput import gpu_dataset, gpu_model_folder

    model_dir, data_dir = work / "model", work / "data"
    if not (model_dir / "config.json").is_file():
        gpu_model_folder(model_dir, image_size)
    train_file = data_dir / "train.jsonl"
    if not train_file.is_file() or len(train_file.read_text().splitlines()) != pairs:
        gpu_dataset(data_dir, count=pairs, image_size=image_size, answer_tokens=answer_tokens)
    return model_dir, train_file


def random_weights_loader():
    """A stand-in for ``runner.load_policy``: the same return value, weights random instead of read from disk."""
    from nbtools.models import detect_family, load_processor
    from nbtools.train import runner

    def load_policy(cfg, precision, device, rank_zero_loading=False):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(cfg.model)
        config._attn_implementation = "sdpa"
        model = gpu_stage.random_model(config, precision, seed=cfg.seed)
        if rank_zero_loading:  # distributed: fsdp: the model reaches the Trainer's wrapping from host memory, as loaded
            model.to("cpu")
        processor = load_processor(cfg.model, max_pixels=cfg.max_pixels)
        return model, processor, detect_family(model).name, runner.build_lora_config(model, cfg)

    return load_policy


def run_config(args, model_dir: Path, train_file: Path, out_dir: Path):
    from nbtools.config import RunConfig

    return RunConfig(model=str(model_dir), train_file=str(train_file), validation_split=0.0, output_dir=str(out_dir),
                     task_display_name=f"gpu-check-{args.distributed}", max_steps=args.steps,
                     batch_size=args.batch_size,
                     gradient_accumulation_steps=1, learning_rate=LEARNING_RATE, lora_rank=8, lora_dropout=0.0,
                     max_pixels=args.image_size * args.image_size, max_context_length=4096, gradient_checkpointing=True,
                     precision=gpu_stage.precision(), logging_steps=1, save_steps=1000, eval_steps=1000,
                     num_workers=2, packing=True, distributed=args.distributed)


def _full(tensor):
    """A plain tensor of a LoRA weight (an FSDP2 DTensor gathered; a collective with several processes)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def adapter_verdict(run_dir: Path, trained_model, config_dir: Path, precision: str) -> dict:
    """The run's adapter folder passes nbtools.evaluate's check, loads into a fresh model through the same
    call evaluation and export use, and every LoRA tensor equals the one trained in memory."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from nbtools.evaluate.run_model import adapter_dir, attach_adapter

    goal = "adapter reloads: every saved LoRA tensor = the trained one, loaded into a fresh model"
    try:
        folder = adapter_dir(run_dir)
        saved = load_file(str(folder / "adapter_model.safetensors"))
        config = AutoConfig.from_pretrained(config_dir)
        config._attn_implementation = "sdpa"
        fresh = attach_adapter(gpu_stage.random_model(config, precision, seed=1), folder)
        loaded = {k: _full(v) for k, v in get_peft_model_state_dict(fresh).items()}
        trained = {k: _full(v) for k, v in get_peft_model_state_dict(trained_model).items()}
    except Exception as exc:  # the folder is refused, peft cannot load it, ...
        return gpu_stage.verdict(goal, f"failed: {type(exc).__name__}: {str(exc)[:300]}", False)
    problems = []
    for name, names in (("loaded", loaded), ("trained", trained)):
        if set(names) != set(saved):
            problems.append(f"{len(set(saved) ^ set(names))} tensors differ in name between the file and the "
                            f"{name} model")
    worst = 0.0
    for key in set(saved) & set(loaded) & set(trained):
        reference = trained[key].detach().float().cpu()
        for other in (saved[key], loaded[key]):
            other = other.detach().float().cpu()
            if other.shape != reference.shape:
                problems.append(f"{key}: shape {tuple(other.shape)} instead of {tuple(reference.shape)}")
                break
            worst = max(worst, float((other - reference).abs().max()))
    if worst > 0:  # saved as trained (fp32 LoRA weights): nothing may change on the way
        problems.append(f"largest difference {worst:.3g}")
    lora_b = [t for k, t in saved.items() if "lora_B" in k]
    if not lora_b or all(float(t.abs().max()) == 0 for t in lora_b):
        problems.append("every lora_B is zero: nothing was trained")
    shown = f"{len(saved)} tensors" + (": " + "; ".join(problems[:3]) if problems else ", all equal")
    del fresh
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return gpu_stage.verdict(goal, shown, not problems, figure=len(saved))


def run_verdicts(summary: dict) -> list[dict]:
    losses = summary["losses"]
    finite = bool(losses) and all(isinstance(x, (int, float)) and math.isfinite(x) for x in losses)
    tail = sum(losses[-2:]) / len(losses[-2:]) if losses else None
    shown_losses = ", ".join(f"{x:.4f}" for x in losses) or "none logged"
    return [
        gpu_stage.verdict("the run finishes, packing on", f"{summary['status']}, packing "
                          f"{'on' if summary['packing_on'] else 'OFF'}", summary["status"] == "finished"
                          and summary["packing_on"]),
        gpu_stage.verdict("every logged loss is finite", shown_losses, finite),
        gpu_stage.verdict("the loss falls: mean of the last two below the first (log 2)",
                          f"{losses[0]:.5f} -> {tail:.5f}" if finite else "n/a",
                          finite and len(losses) >= 3 and tail < losses[0], figure=tail),
        summary.pop("_adapter_verdict"),
        gpu_stage.info("peak memory (CUDA, allocated)", summary["peak_memory_gib"], ".2f", " GiB"),
    ]


def run(args) -> int:
    from nbtools.train import runner

    work = Path(args.work)
    pairs = args.pairs or 2 * args.batch_size
    model_dir, train_file = prepare(work, pairs, args.image_size, args.answer_tokens)
    out_dir = work / f"run-{args.distributed}"
    if int(os.environ.get("RANK", "0")) == 0:
        shutil.rmtree(out_dir, ignore_errors=True)
    cfg = run_config(args, model_dir, train_file, out_dir)
    if args.distributed == "fsdp" and gpu_stage.rehearsing():
        return fsdp_plumbing(args, cfg)
    runner.load_policy = random_weights_loader()
    gpu_stage.reset_peak()
    t0 = time.time()
    result = runner.train(cfg, live="headless")
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    seconds = round(time.time() - t0, 1)
    peak = gpu_stage.peak_gib()
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
        "packing_on": bool((record.get("packing") or {}).get("on")),
        "reference_logps": record.get("reference_logps"),
        "steps": args.steps,
        "pairs": pairs,
        "losses": losses,
        "adapter_bytes": adapter.stat().st_size if adapter.is_file() else 0,
        "seconds": seconds,
        "timings": record.get("timings"),
        "peak_memory_gib": peak and round(peak, 2),
        "device": gpu_stage.device_name(),
    }
    summary["_adapter_verdict"] = adapter_verdict(out_dir, result.model, model_dir, record["precision"])
    summary["verdicts"] = run_verdicts(summary)
    gpu_stage.write_json(args.out, summary)
    print(json.dumps(summary))
    gpu_stage.print_verdicts(f"train {args.distributed}", summary["verdicts"])
    return gpu_stage.exit_code(summary["verdicts"])


def fsdp_plumbing(args, cfg) -> int:
    """The fsdp stage on the CPU: what can be checked of its way to the Trainer (see the module doc)."""
    from nbtools.config import ConfigError
    from nbtools.train import runner
    from nbtools.train.distributed import rank_zero_loading

    env = {key: os.environ.get(key) for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NBTOOLS_UNDER_TORCHRUN")}
    launched = env == {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "NBTOOLS_UNDER_TORCHRUN": "1"}
    passed = f"--steps {args.steps} --out {Path(args.out).name} --distributed {args.distributed}"
    verdicts = [gpu_stage.verdict("relaunched under torchrun, arguments passed through",
                                  f"{', '.join(f'{k}={v}' for k, v in env.items())}; {passed}", launched)]
    # the Trainer's settings as train() builds them on a GPU (fp32 here: transformers refuses bf16 without one)
    args_gpu = runner.build_dpo_config(cfg, Path(args.work) / "fsdp-args", "fp32", has_validation=False, on_cpu=False)
    fsdp = dict(args_gpu.fsdp_config or {})
    settings = (bool(args_gpu.fsdp) and fsdp.get("version") == 2 and fsdp.get("cpu_ram_efficient_loading") is True
                and fsdp.get("activation_checkpointing") is True and rank_zero_loading(args_gpu, "cuda"))
    verdicts.append(gpu_stage.verdict(
        "the Trainer gets FSDP2 settings, rank-zero loading on (as on a GPU)",
        f"fsdp={args_gpu.fsdp}, version {fsdp.get('version')}, cpu_ram_efficient_loading "
        f"{fsdp.get('cpu_ram_efficient_loading')}, activation_checkpointing {fsdp.get('activation_checkpointing')}, "
        f"rank_zero_loading {rank_zero_loading(args_gpu, 'cuda')}", settings))
    runner.load_policy = random_weights_loader()
    try:
        runner.train(cfg, live="quiet")
        refused = "train() ran: it should have refused fsdp on the CPU"
        ok = False
    except ConfigError as exc:
        refused, ok = f"ConfigError({exc.field}): {str(exc)[:120]}", exc.field == "distributed"
    verdicts.append(gpu_stage.verdict("train() receives distributed: fsdp (and refuses it on the CPU)", refused, ok))
    verdicts.append(gpu_stage.verdict("the run: finishes, losses finite and falling, adapter reloads", "n/a", None,
                                      "not judged: FSDP needs CUDA GPUs (CPU rehearsal)"))
    summary = {"distributed": "fsdp", "status": "rehearsed (plumbing only)", "device": gpu_stage.device_name(),
               "steps": args.steps, "losses": [], "verdicts": verdicts}
    gpu_stage.write_json(args.out, summary)
    gpu_stage.print_verdicts("train fsdp", verdicts)
    return gpu_stage.exit_code(verdicts)


def relaunch_under_torchrun(argv: list[str], processes: int) -> int:
    import torch

    count = max(1, min(processes, torch.cuda.device_count()))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    # --standalone: a rendezvous on a free local port (no fixed port another job may hold)
    command = [torchrun, "--standalone", "--nproc_per_node", str(count), __file__, *argv]
    return subprocess.run(command, env=dict(os.environ, NBTOOLS_UNDER_TORCHRUN="1")).returncode


def summarise(out: Path) -> str:
    """Markdown: the goals table (every stage's verdicts), then each stage's figures."""
    lines = gpu_stage.summary_lines(out)
    lines += ["", "## Figures", "", "| image size | TRL pairs/s | nbtools pairs/s | ratio | with the precompute "
              "amortised over one epoch (goal >= 3) | TRL mem above weights GiB | nbtools GiB | ratio (goal <= 0.6) | "
              "max abs log-prob diff (of sums up to) |", "|---|---|---|---|---|---|---|---|---|"]
    for file in sorted(out.glob("throughput_*.json")):
        figures = json.loads(file.read_text())
        results, size = figures["results"], file.stem.split("_")[-1]
        trl, ours = results.get("TRL DPOTrainer", {}), results.get("nbtools", {})
        if "pairs_per_s" not in trl or "pairs_per_s" not in ours:
            why = "; ".join(f"{name}: {side['error'][:150]}" for name, side in results.items() if "error" in side)
            lines.append(f"| {size}x{size} | not measured{': ' + why if why else ''} | | | | | | | |")
            continue
        speed = ours["pairs_per_s"] / trl["pairs_per_s"]
        amortised = gpu_stage.amortised_pairs_per_s(ours) / trl["pairs_per_s"]
        memory = (ours["memory_above_weights_gib"] / trl["memory_above_weights_gib"]
                  if trl.get("memory_above_weights_gib") else None)
        lines.append(f"| {size}x{size} | {trl['pairs_per_s']:.2f} | {ours['pairs_per_s']:.2f} | {speed:.2f} | "
                     f"{amortised:.2f} | {trl['memory_above_weights_gib']:.2f} | "
                     f"{ours['memory_above_weights_gib']:.2f} | {_figure(memory, '.2f')} | "
                     f"{ours.get('logp_max_abs_diff', float('nan')):.4f} "
                     f"({ours.get('logp_max_abs_value', 0):.0f}) |")
    estimate = out / "estimate_check.json"
    try:
        figures = json.loads(estimate.read_text())
        lines.append(f"\nestimate check ({figures['device']}): estimate {figures['estimate_gib']:.2f} GiB, "
                     f"measured peak {_figure(figures['measured_peak_allocated_gib'], '.2f')} GiB, ratio "
                     f"{_figure(figures['ratio_measured_over_estimate'], '.3f')}; parts: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in figures["parts_gib"].items()))
    except (OSError, ValueError, KeyError):
        pass
    for name in ("train_bf16", "train_fsdp"):
        file = out / f"{name}.json"
        if file.is_file():
            run = json.loads(file.read_text())
            if "world_size" not in run:  # the rehearsal's fsdp plumbing
                lines.append(f"\n{name}: {run['status']}")
                continue
            lines.append(f"\n{name}: {run['status']}, {run['world_size']} process(es), packing "
                         f"{'on' if run.get('packing_on') else 'OFF'}, {run['steps']} steps on {run['pairs']} pairs, "
                         f"losses {[round(x, 4) for x in run['losses']]}, peak "
                         f"{_figure(run['peak_memory_gib'], '.2f')} GiB, {run['seconds']} s")
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
    parser.add_argument("--pairs", type=int, default=0, help="pairs to train on (default: two batches)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--answer-tokens", type=int, default=100)
    parser.add_argument("--distributed", choices=("ddp", "fsdp"), default="ddp")
    parser.add_argument("--processes", type=int, default=1, help="fsdp: torchrun processes (at most the GPU count)")
    parser.add_argument("--summarise", metavar="OUT_DIR", help="print the check's summary tables and exit")
    args = parser.parse_args(argv)
    if args.summarise:
        print(summarise(Path(args.summarise)))
        return 0
    if not (args.work and args.out):
        parser.error("--work and --out are needed for a run")
    import torch

    if not torch.cuda.is_available() and not gpu_stage.rehearsing():
        print("gpu_train_run: needs a CUDA GPU (or gpu_check.sh --rehearse)", file=sys.stderr)
        return 2
    if args.distributed == "fsdp" and not os.environ.get("NBTOOLS_UNDER_TORCHRUN"):
        return relaunch_under_torchrun(argv, args.processes)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
