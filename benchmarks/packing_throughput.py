"""Work per DPO step: plain TRL vs packed pairs (+ image reuse, + precomputed reference).

Runs on CPU with a tiny model (default ``tiny-qwen3-vl``, fp32, LoRA r=8 on the language
model) or on a GPU with any supported model. For each variant it runs the same pairs through
``steps`` optimizer steps and reports:

- LM tokens per step: real tokens through the language model, all passes (policy + reference);
  "padded" counts the padding too;
- image encodings per distinct image per step (vision tower calls x images);
- pairs/s, and the max |log-prob| difference against TRL's own computation.

Plain TRL is TRL 1.16's ``DPOTrainer.compute_loss`` on its own vision collator's batches.

    python benchmarks/packing_throughput.py --image-size 896 --answer-words 60 --steps 4
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from nbtools.packing import (  # noqa: E402
    EncodingCounter,
    PackedPreferenceCollator,
    ReferenceLogpsStore,
    packed_dpo_step,
    packed_logps,
    precompute_reference_logps,
    reference_fingerprint,
    separate_logps,
)
from nbtools.packing.logps import count_tokens  # noqa: E402

BETA = 0.1
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "brown"]


def make_pairs(count: int, image_size: int, answer_words: int, seed: int = 0) -> list[dict]:
    """Image-dependent pairs with ~answer_words-word answers (chosen and rejected of unequal length)."""
    import random

    rng = random.Random(seed)
    palette = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
               "orange": (240, 140, 20), "purple": (130, 30, 160), "pink": (240, 150, 190), "brown": (120, 70, 30)}
    pairs = []
    for index in range(count):
        right, wrong = rng.sample(COLOURS, 2)
        image = Image.new("RGB", (image_size, image_size), (245, 245, 245))
        side = image_size // 3
        image.paste(palette[right], (side, side, 2 * side, 2 * side))
        filler = " ".join(rng.choice(["the", "shape", "is", "in", "the", "middle", "of", "image", "and", "it", "looks"])
                          for _ in range(answer_words))
        pairs.append({
            "images": [image],
            "prompt": [{"role": "user", "content": f"What colour is the shape in picture {index}?"}],
            "chosen": [{"role": "assistant", "content": f"It is {right}. {filler}"}],
            "rejected": [{"role": "assistant", "content": f"It is {wrong}. {filler} {filler[: len(filler) // 3]}"}],
        })
    return pairs


def lora(model):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)")
    return get_peft_model(model, config)


def trl_trainer(model, processor, pairs, output_dir):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=output_dir, bf16=False, per_device_train_batch_size=4, report_to="none",
                     max_length=None, beta=BETA, logging_steps=1000, save_strategy="no")
    dataset = Dataset.from_list([{k: v for k, v in p.items()} for p in pairs[:4]])
    return DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)


def _clock(cpu_time: bool) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    # CPU time of this process: robust when other jobs share the cores (wall time is not)
    return time.process_time() if cpu_time else time.perf_counter()


def timed_steps(step_fn, batches, optimizer, warmup: int, cpu_time: bool):
    """Seconds per optimizer step (forward, backward, update) after ``warmup`` steps."""
    times = []
    for index, batch in enumerate(batches):
        start = _clock(cpu_time)
        loss = step_fn(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= warmup:
            times.append(_clock(cpu_time) - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen3-vl")
    parser.add_argument("--image-size", type=int, default=896, help="square image side in pixels (max_pixels = side^2)")
    parser.add_argument("--answer-words", type=int, default=60, help="filler words per answer (~100 tokens at 60)")
    parser.add_argument("--pairs-per-step", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="same setting for every variant")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None,
                        help="cpu: process CPU time (default on CPU, where cores are shared); wall: elapsed (default on GPU)")
    args = parser.parse_args(argv)
    cpu_time = (args.clock or ("wall" if args.device.startswith("cuda") else "cpu")) == "cpu"
    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)

    from nbtools.models import load_model_and_processor, resolve_model_path

    torch.manual_seed(0)
    max_pixels = args.image_size * args.image_size
    model, processor = load_model_and_processor(args.model, max_pixels=max_pixels, dtype=getattr(torch, args.dtype),
                                                device=args.device, attn_implementation="sdpa")
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = lora(model)
    total_steps = args.warmup + args.steps
    pairs = make_pairs(args.pairs_per_step * total_steps, args.image_size, args.answer_words)
    groups = [pairs[i : i + args.pairs_per_step] for i in range(0, len(pairs), args.pairs_per_step)]
    device = torch.device(args.device)

    def to_device(batch):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    params = [p for p in model.parameters() if p.requires_grad]
    results = {}

    # --- plain TRL -------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trl_trainer(model, processor, pairs, tmp)
        collator = trainer.data_collator
        trl_batches = [to_device(collator(copy.deepcopy(group))) for group in groups]
        optimizer = torch.optim.AdamW(params, lr=0.0)  # lr 0: every variant sees the same weights
        counter = EncodingCounter()
        model.train()
        with counter.watch(model):
            times = timed_steps(lambda b: trainer.compute_loss(trainer.model, b), trl_batches, optimizer, args.warmup, cpu_time)
        images = sum(int(b["image_grid_thw"].shape[0]) for b in trl_batches) // 2  # TRL repeats each image
        tokens = statistics.mean(2 * int(b["attention_mask"].sum()) for b in trl_batches)  # policy + reference pass
        padded = statistics.mean(2 * b["input_ids"].numel() for b in trl_batches)
        results["plain TRL"] = dict(tokens=tokens, padded=padded, encodings=counter.images / images, times=times)
        with torch.no_grad():
            trl_logps = [torch.cat(separate_logps(model, b)) for b in trl_batches]

    # --- packed variants -----------------------------------------------------------------
    packed_collator = PackedPreferenceCollator(processor)
    packed_batches = [to_device(packed_collator(copy.deepcopy(group))) for group in groups]
    with torch.no_grad():
        packed_all = [torch.cat([(o := packed_logps(model, b)).chosen, o.rejected]) for b in packed_batches]
    diff = max((p - t).abs().max().item() for p, t in zip(packed_all, trl_logps))
    relative = max(((p - t).abs() / t.abs()).max().item() for p, t in zip(packed_all, trl_logps))

    store = ReferenceLogpsStore(tempfile.mkdtemp(prefix="ref_logps_bench_"))
    fingerprint = reference_fingerprint(resolve_model_path(args.model), processor, max_pixels=max_pixels, dtype=args.dtype)
    start = time.perf_counter()
    precompute_reference_logps(model, pairs, packed_collator, store, fingerprint, batch_size=args.pairs_per_step)
    precompute_s = time.perf_counter() - start
    cached_collator = PackedPreferenceCollator(processor, reference_lookup=store.lookup_for(fingerprint))
    cached_batches = [to_device(cached_collator(copy.deepcopy(group))) for group in groups]

    variants = {
        "packed": (packed_batches, False, 2),
        "packed + image reuse": (packed_batches, True, 2),
        "packed + image reuse + precomputed ref": (cached_batches, True, 1),
    }
    for name, (batches, reuse, passes) in variants.items():
        optimizer = torch.optim.AdamW(params, lr=0.0)
        counter = EncodingCounter()
        model.train()
        with counter.watch(model):
            times = timed_steps(lambda b: packed_dpo_step(model, b, beta=BETA, reuse_vision=reuse).loss, batches,
                                optimizer, args.warmup, cpu_time)
        images = sum(int(b["image_grid_thw"].shape[0]) for b in batches)
        results[name] = dict(
            tokens=statistics.mean(passes * count_tokens(b) for b in batches),
            padded=statistics.mean(passes * b["input_ids"].numel() for b in batches),
            encodings=counter.images / images,
            times=times,
        )

    base = results["plain TRL"]
    base_rate = args.pairs_per_step / statistics.median(base["times"])
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, device={args.device}, "
          f"torch {torch.__version__}, threads={torch.get_num_threads()}, clock={'cpu' if cpu_time else 'wall'}, "
          f"model={args.model} ({args.dtype}, sdpa, LoRA r=8 on LM, "
          f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'})")
    print(f"{args.pairs_per_step} pairs/step, {args.image_size}x{args.image_size} images, "
          f"~{args.answer_words}-word answers; timed {args.steps} steps after {args.warmup} warm-up")
    header = f"{'variant':42s} {'LM tokens/step':>14s} {'x TRL':>6s} {'padded':>8s} {'enc/image':>9s} {'pairs/s':>8s} {'x TRL':>6s}"
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        rate = args.pairs_per_step / statistics.median(row["times"])
        print(f"{name:42s} {row['tokens']:14.0f} {row['tokens'] / base['tokens']:6.2f} {row['padded']:8.0f} "
              f"{row['encodings']:9.2f} {rate:8.2f} {rate / base_rate:6.2f}")
    print(f"max |packed - TRL| summed log-prob: {diff:.2e} (relative {relative:.1e}); one-time reference precompute: "
          f"{precompute_s:.2f}s for {len(pairs)} pairs ({len(pairs) / precompute_s:.1f} pairs/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
