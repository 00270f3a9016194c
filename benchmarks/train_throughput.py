"""Training-step throughput: nbtools' trainer vs a plain TRL DPOTrainer, same model/data/settings.

Both sides run in this one process, one after the other, each on a fresh copy of the model:

- baseline: TRL 1.16 ``DPOTrainer`` with a ``datasets.Dataset`` of PIL images held in memory
  and TRL's own vision collator (what a TRL tutorial does);
- nbtools: ``NbDPOTrainer`` fed the way ``nbtools.train.train`` feeds it (validated records,
  images opened and resized by the collator per batch, packed pairs when ``packing`` is on and
  verified for the model, atomic checkpoints, NaN guard).

Sides: TRL; nbtools with the reference pass run in every step (packing + images encoded once
per step); nbtools as ``train()`` runs it (+ reference log-probs precomputed before training,
so steps skip the reference pass; the one-off precompute is timed separately).

Reported per side: s/step, pairs/s, CPU s/step (process CPU time: steadier than wall time on a
shared machine), LM tokens/s (real tokens in the policy's input batch: a packed row holds the
prompt once, so packing lowers this count for the same pairs), peak memory (CUDA peak allocated
on GPU; on CPU the peak RSS of a child process per side), on GPU the memory above the weights
(peak allocated minus what was allocated before the first step: weights + LoRA), the largest
difference between nbtools' packed log-probs and TRL's two-row ones on the first batch (before
training, so both see the same weights), and the work per step: positions
through the language model (all passes, padding included, counted by a hook on the language
model) and image encodings per image (counted by a hook on the vision tower); then ratios to TRL.

    python benchmarks/train_throughput.py                # CPU, tiny-qwen3-vl, shapes sample data
    python benchmarks/train_throughput.py --gpu          # random Qwen3-VL-4B-shaped model, 896x896
                                                         # images, ~100-token answers, bf16, sdpa,
                                                         # gradient checkpointing, LoRA r=8, 4 pairs/step

With ``--gpu`` the JSON also holds the verdicts on the goals (``gpu_stage``): nbtools as ``train()`` runs
it at >= 3x TRL's pairs/s with its one-off reference precompute amortised over one epoch (the ratio
without the precompute and the reference-pass-per-step side are shown next to it), <= 0.6x TRL's memory
above the weights, and packed log-probs equal to TRL's two rows within the precision's tolerance; exit 1
when a goal is missed. Under ``gpu_check.sh --rehearse`` (``NBTOOLS_GPU_REHEARSE=1``) ``--gpu`` runs on
the CPU with the shrunken 4B (``gpu_stage.shrink``: real vocabulary and token ids), fp32; speed and memory
are then not judged.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_stage  # noqa: E402
from nbtools.config import RunConfig  # noqa: E402


# --- data ---------------------------------------------------------------------------------------

ANSWER_FILLER = "the shape sits on a light textured background and nothing else in the picture has a strong colour"


def gpu_dataset(folder: Path, count: int, image_size: int, answer_tokens: int, seed: int = 0) -> Path:
    """Image-dependent pairs at ``image_size`` with answers of about ``answer_tokens`` words (the tiny
    tokenizer makes about 1.7 tokens of one of these words)."""
    from nbtools.samples.drawing import COLOURS, SHAPES, draw_shape

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    filler = ANSWER_FILLER
    words = (filler.split() * (answer_tokens // len(filler.split()) + 1))[: max(1, answer_tokens - 6)]
    rows = []
    for i in range(count):
        colour, wrong = rng.sample(list(COLOURS), 2)
        shape = rng.choice(list(SHAPES))
        name = f"images/{i:04d}.png"
        draw_shape(colour, shape, rng, size=(image_size, image_size)).save(folder / name)
        tail = " ".join(words)
        rows.append({"messages": [{"role": "user", "content": "<image>Describe the shape and its colour."},
                                  {"role": "assistant", "content": f"It is a {colour} {shape}; {tail}."}],
                     "images": [name], "rejected_response": f"It is a {wrong} {shape}; {tail}."})
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gpu_model_folder(folder: Path, image_size: int) -> Path:
    """Config of Qwen3-VL-4B (real dimensions; shrunken when rehearsing) + the tiny model's processor, its
    image/video token ids re-pointed to that processor's: no weights, no download."""
    from nbtools.models import build_tiny_model, load_processor

    config = gpu_stage.reference_4b_config()
    processor = load_processor(str(build_tiny_model("tiny-qwen3-vl")), max_pixels=image_size * image_size)
    gpu_stage.point_vision_tokens_at(config, processor.tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# --- measuring ----------------------------------------------------------------------------------

class TokenCounting:
    """Wraps a collator; counts the real LM tokens (attention mask) of the batches the trainer steps on.

    Counted where the trainer receives each batch (:meth:`attach`), not in the collator: with
    ``dataloader_num_workers`` > 0 the collator runs in worker processes, whose counts never reach this one.
    """

    def __init__(self, collator):
        self.collator = collator
        self.tokens = []

    def __call__(self, rows):
        return self.collator(rows)

    def attach(self, trainer) -> None:
        step = trainer.training_step

        def counted(model, inputs, *args, **kwargs):
            self.tokens.append(int(inputs["attention_mask"].sum()))
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = counted


class LanguageModelPositions:
    """Counts positions (batch x length, padding included) that enter the language model, every pass."""

    def __init__(self):
        self.positions = 0

    def _hook(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        ids = kwargs.get("input_ids") if embeds is None else None
        shape = embeds.shape if embeds is not None else (ids.shape if ids is not None else args[0].shape)
        self.positions += int(shape[0]) * int(shape[1])

    def attach(self, model):
        from nbtools.packing.logps import unwrap_model

        language_model = unwrap_model(model).model.language_model
        return language_model.register_forward_pre_hook(self._hook, with_kwargs=True)


def timed_steps(trainer, warmup: int, steps: int, counter: TokenCounting, device: str,
                images_per_pair: float) -> dict:
    """Train warmup + steps optimizer steps; time and count the work of the last ``steps`` only."""
    from transformers import TrainerCallback

    from nbtools.packing import EncodingCounter

    marks = {}
    positions, encodings = LanguageModelPositions(), EncodingCounter()

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            marks[state.global_step] = (time.perf_counter(), time.process_time(), positions.positions,
                                        encodings.images)

    trainer.add_callback(Clock())
    counter.attach(trainer)
    before_steps = 0
    if device == "cuda":
        torch.cuda.synchronize()
        before_steps = torch.cuda.memory_allocated()  # weights + LoRA, nothing of a step yet
        torch.cuda.reset_peak_memory_stats()
    handle = positions.attach(trainer.model)
    try:
        with encodings.watch(trainer.model):
            trainer.train()
    finally:
        handle.remove()
    start, end = marks[warmup], marks[warmup + steps]
    elapsed = end[0] - start[0]
    args = trainer.args
    pairs = args.per_device_train_batch_size * args.gradient_accumulation_steps * steps
    # one training_step per micro-batch (eval off); skip the warmup batches
    micro = args.gradient_accumulation_steps
    tokens = sum(counter.tokens[warmup * micro:(warmup + steps) * micro])
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:  # whole-process peak RSS; each side runs in its own process on CPU (see --side)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"s_per_step": elapsed / steps, "pairs_per_s": pairs / elapsed,
            "cpu_s_per_step": (end[1] - start[1]) / steps, "tokens_per_s": tokens / elapsed,
            "peak_memory_gib": peak / 2**30,
            "memory_above_weights_gib": (peak - before_steps) / 2**30 if device == "cuda" else 0.0,
            "lm_positions_per_step": (end[2] - start[2]) / steps,
            "encodings_per_image": (end[3] - start[3]) / (pairs * images_per_pair)}


def dpo_args(cfg: RunConfig, out: Path, precision: str, device: str, steps: int):
    from nbtools.train.runner import build_dpo_config

    args = build_dpo_config(cfg.replace(max_steps=steps), out, precision, has_validation=False,
                            on_cpu=device == "cpu")
    args.save_strategy = "no"
    args.logging_steps = 1000
    args.logging_first_step = False
    return args


def run_baseline(cfg, make_model, processor, records, family, out, precision, device, warmup, steps):
    from datasets import Dataset
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from nbtools.data import to_training_example
    from nbtools.train.runner import build_lora_config

    # All images decoded up front and kept in memory, as in TRL's examples.
    examples = [to_training_example(r, cfg.max_pixels, family) for r in records]
    dataset = Dataset.from_list(examples)
    model = make_model()
    counter = TokenCounting(DataCollatorForVisionPreference(processor=processor, max_length=None))
    args = dpo_args(cfg, out, precision, device, warmup + steps)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                         data_collator=counter, peft_config=build_lora_config(model, cfg))
    result = timed_steps(trainer, warmup, steps, counter, device, _images_per_pair(records))
    del trainer, model, dataset, examples
    return result


def logp_difference(model, processor, examples: list[dict], device: str, autocast_dtype=None) -> dict:
    """Largest |packed - TRL two-row| summed log-prob over chosen and rejected of ``examples``, same weights.

    Returns the difference and the size of the values it compares (sums over the answer tokens).
    """
    import copy

    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from nbtools.packing import PackedPreferenceCollator, packed_logps, separate_logps

    def to_device(batch):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    packed_batch = to_device(PackedPreferenceCollator(processor)(copy.deepcopy(examples)))
    two_rows = to_device(DataCollatorForVisionPreference(processor=processor, max_length=None)(copy.deepcopy(examples)))
    was_training = model.training
    model.eval()
    try:
        context = (torch.autocast(device_type=device, dtype=autocast_dtype) if autocast_dtype is not None
                   else torch.autocast(device_type=device, enabled=False))
        with torch.no_grad(), context:
            packed = packed_logps(model, packed_batch)
            chosen, rejected = separate_logps(model, two_rows)
    finally:
        model.train(was_training)
    difference = torch.cat([(packed.chosen - chosen).abs(), (packed.rejected - rejected).abs()]).max()
    scale = torch.cat([chosen.abs(), rejected.abs()]).max()
    return {"logp_max_abs_diff": float(difference), "logp_max_abs_value": float(scale)}


def _images_per_pair(records) -> float:
    return sum(len(r.images) for r in records) / len(records)


def run_nbtools(cfg, make_model, processor, data, family, out, precision, device, warmup, steps):
    from nbtools.train.dataset import LazyImageCollator, records_dataset
    from nbtools.train.runner import build_lora_config
    from nbtools.train.trainer import NbDPOTrainer

    from nbtools.train.runner import decide_packing

    model = make_model()
    args = dpo_args(cfg, out, precision, device, warmup + steps)
    packing = decide_packing(cfg, model, args)  # the same decision train() makes
    print(f"nbtools: {packing['note']}", file=sys.stderr)
    counter = TokenCounting(LazyImageCollator(processor, cfg.max_pixels, family, packed=packing["on"]))
    trainer = NbDPOTrainer(model=model, args=args, train_dataset=records_dataset(data.train),
                           processing_class=processor, data_collator=counter,
                           peft_config=build_lora_config(model, cfg))
    precompute_s = 0.0
    difference = {}
    if packing["on"]:  # before any step: the adapter is still the identity, the weights those of the base
        rows = [trainer.train_dataset[i] for i in range(min(cfg.batch_size, len(trainer.train_dataset)))]
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        difference = logp_difference(trainer.model, processor, counter.collator.examples(rows), device, autocast_dtype)
    if cfg.precompute_ref_log_probs and packing["on"]:
        # As train() does it, into a fresh cache so the one-off cost is measured, not a cache hit.
        from nbtools.packing import ReferenceLogpsStore
        from nbtools.train.reference import precompute_for_run

        done = precompute_for_run(trainer, cfg, processor, precision, store=ReferenceLogpsStore(out / "ref_cache"),
                                  collator=counter.collator)
        precompute_s = done.seconds / max(1, done.computed)
    result = timed_steps(trainer, warmup, steps, counter, device, _images_per_pair(data.train.records))
    result["precompute_s_per_pair"] = precompute_s
    result.update(difference)
    del trainer, model
    return result


# (column name, --side flag); the first is the baseline every ratio is taken against
SIDES = (("TRL DPOTrainer", "baseline"), ("nbtools ref/step", "nbtools-ref-per-step"), ("nbtools", "nbtools"))


def format_table(results: dict, gpu: bool) -> str:
    """Metrics as rows, sides as columns, then each nbtools side's ratio to TRL."""
    names = [name for name, _ in SIDES if name in results]
    base = results[SIDES[0][0]]
    rows = (("s_per_step", "s/step", 3), ("pairs_per_s", "pairs/s", 2), ("cpu_s_per_step", "CPU s/step", 3),
            ("tokens_per_s", "LM tokens/s", 0),
            ("peak_memory_gib", "peak mem GiB" + (" (alloc)" if gpu else " (RSS)"), 3),
            ("memory_above_weights_gib", "mem above weights GiB", 3),
            ("lm_positions_per_step", "LM positions/step", 0), ("encodings_per_image", "encodings/image", 2),
            ("precompute_s_per_pair", "ref precompute s/pair", 4),
            ("logp_max_abs_diff", "|logp - TRL| max", 5))
    ratio_names = [f"{name} / TRL" for name in names[1:]]
    lines = [f"{'metric':<23}" + "".join(f"{n:>18}" for n in names) + "".join(f"{n:>24}" for n in ratio_names)]
    for key, label, digits in rows:
        cells = "".join(f"{results[n].get(key, 0.0):>18.{digits}f}" for n in names)
        ratios = "".join(f"{(results[n].get(key, 0.0) / base[key]) if base.get(key) else float('nan'):>24.2f}"
                         for n in names[1:])
        lines.append(f"{label:<23}{cells}{ratios}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="random Qwen3-VL-4B-shaped model on CUDA")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 CPU / 10 GPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=896)
    parser.add_argument("--answer-tokens", type=int, default=100)
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--repeats", type=int, default=3,
                        help="CPU: runs per side, alternating order; the table shows medians")
    parser.add_argument("--side", choices=[flag for _, flag in SIDES], help=argparse.SUPPRESS)  # one side, in a child
    parser.add_argument("--same-process", action="store_true",
                        help="run both sides in this process (default on GPU; on CPU each side gets its own "
                        "process so that peak RSS is per side)")
    args = parser.parse_args(argv)

    from nbtools.models import build_tiny_model, detect_family, load_model_and_processor, load_processor
    from nbtools.train.dataset import prepare_data

    device = gpu_stage.device() if args.gpu else "cpu"
    if args.gpu and device == "cuda" and not torch.cuda.is_available():
        print("--gpu needs a CUDA device (or gpu_check.sh --rehearse)", file=sys.stderr)
        return 2
    steps = args.steps or (10 if args.gpu else 20)
    work = Path(tempfile.mkdtemp(prefix="nbtools-bench-"))
    if args.gpu:
        precision = gpu_stage.precision()
        model_dir = gpu_model_folder(work / "model", args.image_size)
        train_file = gpu_dataset(work / "data", count=args.batch_size * (args.warmup + steps),
                                 image_size=args.image_size, answer_tokens=args.answer_tokens)
        cfg = RunConfig(model=str(model_dir), train_file=str(train_file), validation_split=0.0,
                        max_pixels=args.image_size * args.image_size, max_context_length=4096,
                        batch_size=args.batch_size, gradient_accumulation_steps=1, lora_rank=8, lora_dropout=0.0,
                        learning_rate=1e-5, gradient_checkpointing=True, num_workers=2, precision=precision,
                        load_best_model_at_end=False)

        def make_model():
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model_dir)
            config._attn_implementation = "sdpa"
            return gpu_stage.random_model(config, precision)
        processor = load_processor(str(model_dir), max_pixels=cfg.max_pixels)
        label = (f"random Qwen3-VL-4B-shaped{' (shrunken: CPU rehearsal)' if gpu_stage.rehearsing() else ''}, "
                 f"{args.image_size}x{args.image_size} images, ~{args.answer_tokens}-token answers")
    else:
        precision = "fp32"
        build_tiny_model("tiny-qwen3-vl")
        cfg = RunConfig(model="tiny-qwen3-vl", train_file=str(REPO / "data_samples/shapes/train.jsonl"),
                        validation_split=0.0, max_pixels=128 * 128, max_context_length=512,
                        batch_size=args.batch_size, gradient_accumulation_steps=1, lora_rank=8, lora_dropout=0.0,
                        learning_rate=5e-3, gradient_checkpointing=False, num_workers=0,
                        load_best_model_at_end=False)

        def make_model():
            return load_model_and_processor("tiny-qwen3-vl", dtype="float32", device="cpu")[0]
        processor = load_processor("tiny-qwen3-vl", max_pixels=cfg.max_pixels)
        label = "tiny-qwen3-vl (random), shapes sample data, 128x128 images"

    from nbtools.models import resolve_model_path
    from transformers import AutoConfig

    family = detect_family(AutoConfig.from_pretrained(resolve_model_path(cfg.model))).name
    data = prepare_data(cfg, family)
    results = {}
    wanted = [(name, flag) for name, flag in SIDES if args.side in (None, flag)]
    if not (args.side or args.gpu or args.same_process):
        import statistics
        import subprocess

        runs: dict[str, list[dict]] = {name: [] for name, _ in SIDES}
        for repeat in range(args.repeats):  # alternate the order so drift in machine load hits every side
            for name, flag in (SIDES if repeat % 2 == 0 else SIDES[::-1]):
                out = work / f"{flag}-{repeat}.json"
                cmd = [sys.executable, __file__, "--side", flag, "--json", str(out), "--steps", str(steps),
                       "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                runs[name].append(json.loads(out.read_text())["results"][name])
        results = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
        wanted = []
    for name, flag in wanted:
        torch.manual_seed(0)
        try:
            if flag == "baseline":
                results[name] = run_baseline(cfg, make_model, processor, data.train.records, family, work / "base",
                                             precision, device, args.warmup, steps)
            else:
                side_cfg = cfg.replace(precompute_ref_log_probs=flag == "nbtools")
                results[name] = run_nbtools(side_cfg, make_model, processor, data, family, work / flag, precision,
                                            device, args.warmup, steps)
        except Exception as exc:
            if not args.gpu:
                raise
            # the GPU check: a side that fails (out of memory, say) is recorded; its goals are then missed
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            print(f"train_throughput: {name} failed: {results[name]['error']}", file=sys.stderr)
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    if args.side:
        Path(args.json).write_text(json.dumps({"results": results}))
        return 0
    machine = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    print(f"\ntrain_throughput: {label}; {machine}; {precision}; LoRA r=8 on the language model; "
          f"{args.batch_size} pairs/step; {steps} timed steps after {args.warmup} warm-up"
          + ("" if args.gpu or args.same_process else f"; median of {args.repeats} runs per side, in "
             "alternating order, each in its own process"))
    print(format_table(results, args.gpu))
    verdicts = throughput_verdicts(results, precision) if args.gpu else []
    if args.json:
        payload = {"label": label, "machine": machine, "precision": precision, "image_size": args.image_size,
                   "steps": steps, "warmup": args.warmup, "results": results}
        if args.gpu:
            payload["verdicts"] = verdicts
        Path(args.json).write_text(json.dumps(payload, indent=2))
    gpu_stage.print_verdicts("throughput", verdicts)
    return gpu_stage.exit_code(verdicts)


def throughput_verdicts(results: dict, precision: str) -> list[dict]:
    """The goals of the GPU check's throughput stage, from the three sides' figures (see the module doc)."""
    trl = results.get("TRL DPOTrainer", {})
    ours, per_step = results.get("nbtools", {}), results.get("nbtools ref/step", {})

    def ratio(numerator, denominator):
        return numerator / denominator if numerator is not None and denominator else None

    base = trl.get("pairs_per_s")
    speed = ratio(gpu_stage.amortised_pairs_per_s(ours), base)
    memory = ratio(ours.get("memory_above_weights_gib"), trl.get("memory_above_weights_gib"))
    return [
        gpu_stage.judged(f"pairs/s vs TRL >= {gpu_stage.SPEED_GOAL:g}x (train() as it runs: reference precomputed, "
                         f"the precompute amortised over one epoch)", speed, lambda r: r >= gpu_stage.SPEED_GOAL,
                         ".2f", unit="x", gpu_only=True),
        gpu_stage.info("pairs/s vs TRL, precompute not counted", ratio(ours.get("pairs_per_s"), base), ".2f", "x"),
        gpu_stage.info("pairs/s vs TRL, reference pass in every step", ratio(per_step.get("pairs_per_s"), base),
                       ".2f", "x"),
        gpu_stage.judged(f"memory above weights vs TRL <= {gpu_stage.MEMORY_GOAL:g}x (train() as it runs)", memory,
                         lambda r: r <= gpu_stage.MEMORY_GOAL, ".2f", unit="x", gpu_only=True),
        gpu_stage.logp_goal("train() side", ours, precision),
        gpu_stage.logp_goal("reference pass in every step", per_step, precision),
    ]


if __name__ == "__main__":
    sys.exit(main())
