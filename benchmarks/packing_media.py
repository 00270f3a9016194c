"""Packed vs unpacked DPO steps on video pairs and image-contrast (``rejected_images``) pairs.

For each kind of batch (video pairs; image-contrast pairs; a mix of plain, video and
image-contrast pairs) it runs the same LoRA DPO step (policy pass with gradients, reference
pass with the adapter disabled) in both layouts and reports, per step:

- LM tokens: real tokens through the language model over both passes ("padded": with padding);
- vision encodings: image / video grids through the vision tower over both passes, and per
  distinct image or video of the batch;
- CPU seconds per step (median; forward + backward) and the ratio to the unpacked layout;
- the largest |packed - unpacked| summed log-prob (and relative to it: float noise on sums of ~100 tokens).

Unpacked = ``nbtools.packing.VisionPreferenceCollator`` (TRL's two rows per pair) scored like
TRL (``separate_logps`` + the DPO loss); packed = ``PackedPreferenceCollator`` + ``packed_dpo_step``.

    python benchmarks/packing_media.py --steps 3 [--out FILE]

``--out`` writes the figures as JSON (committed: ``benchmarks/results/packing_media.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from nbtools.packing import (  # noqa: E402
    EncodingCounter,
    PackedPreferenceCollator,
    VisionPreferenceCollator,
    packed_dpo_step,
    packed_logps,
    pair_losses,
    separate_logps,
)
from nbtools.packing.logps import count_tokens  # noqa: E402

BETA = 0.1
WORDS = ["the", "stripes", "move", "to", "the", "left", "while", "the", "shape", "stays", "in", "place", "and"]


def _image(side: int, seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    array = (rng.rand(side, side, 3) * 60).astype(np.uint8)
    array[:, seed % 7 :: 11] = (200, 40 * seed % 255, 90)
    return Image.fromarray(array)


def _clip(frames: int, side: int, seed: int):
    from transformers.video_utils import VideoMetadata

    from nbtools.video import Clip, VideoSettings

    rng = np.random.RandomState(seed)
    array = (rng.rand(frames, side, side, 3) * 60).astype(np.uint8)
    for t in range(frames):
        array[t, :, (3 * t + seed) % side :: 13] = (220, 200, 30)
    metadata = VideoMetadata(total_num_frames=frames * 15, fps=30.0, frames_indices=list(range(0, frames * 15, 15)),
                             width=side, height=side, duration=frames / 2)
    return Clip(f"clip{seed}.mkv", array, metadata, VideoSettings())


def _answer(rng, words: int, lead: str) -> str:
    return lead + " " + " ".join(rng.choice(WORDS) for _ in range(words))


def _pair(kind: str, index: int, args, rng) -> dict:
    text = {"video": "What happens in the clip?", "contrast": "What colour are the stripes?",
            "image": "Describe the picture."}[kind]
    blocks = {"video": [{"type": "video"}], "contrast": [{"type": "image"}], "image": [{"type": "image"}]}[kind]
    chosen = _answer(rng, args.answer_words, "Yes.")
    system = []
    if args.system_words:
        system = [{"role": "system", "content": [{"type": "text", "text": " ".join(
            rng.choice(WORDS) for _ in range(args.system_words))}]}]
    pair = {
        "prompt": system + [{"role": "user", "content": blocks + [{"type": "text", "text": text}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": (
            chosen if kind == "contrast" else _answer(rng, args.answer_words + 7, "No."))}]}],
        "images": [_image(args.image_size, index)] if kind in ("contrast", "image") else [],
    }
    if kind == "video":
        pair["videos"] = [_clip(args.frames, args.frame_size, index)]
    if kind == "contrast":
        pair["rejected_images"] = [_image(args.image_size, index + 1000)]
    return pair


def batches_of(kind: str, args) -> list[list[dict]]:
    import random

    rng = random.Random(0)
    mix = ["image", "video", "contrast", "video"]
    out = []
    for step in range(args.warmup + args.steps):
        count = args.pairs_per_step
        kinds = [mix[i % len(mix)] for i in range(count)] if kind == "mixed" else [kind] * count
        out.append([_pair(k, step * 100 + i, args, rng) for i, k in enumerate(kinds)])
    return out


def grids(batch: dict) -> int:
    return sum(int(batch[k].shape[0]) for k in ("image_grid_thw", "video_grid_thw") if batch.get(k) is not None)


def unpacked_loss(model, batch):
    chosen, rejected = separate_logps(model, batch)
    with torch.no_grad(), model.disable_adapter():
        ref_chosen, ref_rejected = separate_logps(model, batch)
    return pair_losses(chosen, rejected, ref_chosen, ref_rejected, beta=BETA).mean()


def run(model, batches, step, cpu_time: bool, warmup: int):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.0)  # lr 0: both layouts see the same weights
    counter = EncodingCounter()
    times = []
    with counter.watch(model):
        for index, batch in enumerate(batches):
            start = time.process_time() if cpu_time else time.perf_counter()
            step(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index >= warmup:
                times.append((time.process_time() if cpu_time else time.perf_counter()) - start)
    return counter.images / len(batches), times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen3-vl")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--frame-size", type=int, default=128)
    parser.add_argument("--answer-words", type=int, default=30)
    parser.add_argument("--system-words", type=int, default=0,
                        help="a system message of this many words before each prompt (shared by an image-contrast "
                             "pair's two prompts)")
    parser.add_argument("--pairs-per-step", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", default="video,contrast,mixed")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "cpus": os.cpu_count(), "kinds": {}}
    torch.set_num_threads(args.threads)

    from peft import LoraConfig, get_peft_model

    from nbtools.models import load_model_and_processor

    torch.manual_seed(0)
    model, processor = load_model_and_processor(args.model, max_pixels=args.image_size ** 2, dtype=torch.float32,
                                                device="cpu", attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"))
    model.train()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, clock=cpu, model={args.model} (fp32, sdpa, LoRA r=8 on LM)")
    print(f"{args.pairs_per_step} pairs/step, images {args.image_size}px, clips {args.frames} frames of "
          f"{args.frame_size}px, ~{args.answer_words}-word answers, {args.system_words}-word system message; "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    header = (f"{'batch':9s} {'layout':9s} {'LM tokens':>9s} {'padded':>7s} {'x unp.':>6s} {'encodings':>9s} "
              f"{'per item':>8s} {'s/step':>7s} {'x unp.':>6s}")
    print(header)
    print("-" * len(header))
    for kind in args.kinds.split(","):
        groups = batches_of(kind, args)
        unpacked = [VisionPreferenceCollator(processor)(copy.deepcopy(g)) for g in groups]
        packed = [PackedPreferenceCollator(processor)(copy.deepcopy(g)) for g in groups]
        items = statistics.mean(grids(b) for b in packed)  # distinct images + videos per batch (a video in
        # both prompts of an image-contrast pair counts twice: the packed layout encodes it twice)
        diff = relative = 0.0
        with torch.no_grad():
            for u, p in zip(unpacked, packed):
                reference = torch.cat(separate_logps(model, u))
                got = packed_logps(model, p)
                gap = (torch.cat([got.chosen, got.rejected]) - reference).abs()
                diff, relative = max(diff, gap.max().item()), max(relative, (gap / reference.abs()).max().item())
        rows = {}
        rows["unpacked"] = (2 * statistics.mean(int(b["attention_mask"].sum()) for b in unpacked),
                            2 * statistics.mean(b["input_ids"].numel() for b in unpacked),
                            *run(model, unpacked, lambda b: unpacked_loss(model, b), True, args.warmup))
        rows["packed"] = (2 * statistics.mean(count_tokens(b) for b in packed),
                          2 * statistics.mean(b["input_ids"].numel() for b in packed),
                          *run(model, packed, lambda b: packed_dpo_step(model, b, beta=BETA).loss, True, args.warmup))
        base_tokens, base_time = rows["unpacked"][0], statistics.median(rows["unpacked"][3])
        figures["kinds"][kind] = {"max_logp_diff": diff, "max_logp_relative_diff": relative, "distinct_items": items}
        for layout, (tokens, padded, encodings, times) in rows.items():
            seconds = statistics.median(times)
            print(f"{kind:9s} {layout:9s} {tokens:9.0f} {padded:7.0f} {tokens / base_tokens:6.2f} {encodings:9.1f} "
                  f"{encodings / items:8.2f} {seconds:7.3f} {seconds / base_time:6.2f}")
            figures["kinds"][kind][layout] = {"lm_tokens": tokens, "padded_tokens": padded, "encodings": encodings,
                                              "seconds_per_step": seconds, "tokens_x_unpacked": tokens / base_tokens,
                                              "seconds_x_unpacked": seconds / base_time}
        print(f"{kind:9s} max |packed - unpacked| summed log-prob: {diff:.1e} (relative {relative:.1e})")
    if args.out:
        from nbtools import atomic

        atomic.write_text(args.out, json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
