"""Compare nbtools.estimate with the real peak memory of one TRL DPO step (needs a CUDA GPU).

    python benchmarks/estimate_check.py [--json FILE]      # real-shaped Qwen3-VL-4B, random weights, no download
    python benchmarks/estimate_check.py --model tiny-qwen3-vl --steps 1   # plumbing check (CPU ok, no memory figure)

The 4B model is instantiated from its written-in config with random weights (bf16), so no
hub access is needed; the processor is the tiny model's, and the config's image/video token ids are
re-pointed to that processor's tokens (the 4B config names the real tokenizer's, which the tiny one
does not have there). Setup mirrors the issue's reference: LoRA r=8 on the default targets,
4 pairs of 896x896 images, ~100-token answers, gradient checkpointing on. Prints one JSON
line (and writes it to --json): estimate parts, measured peak allocated, ratio measured/estimate, and
the verdict on the goal: measured within 10 % of the estimate (exit 1 when missed).
Under ``gpu_check.sh --rehearse`` (``NBTOOLS_GPU_REHEARSE=1``) the 4B config is shrunken
(``gpu_stage.shrink``: real vocabulary and token ids) and the step runs on the CPU; the goal is then
not judged (no allocator peak on the CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_stage  # noqa: E402


def _dataset(n_pairs: int, side: int, answer_words: int):
    from datasets import Dataset
    from PIL import Image

    rng = random.Random(0)
    words = "the red blue green shape circle square is a on light background and it looks".split()
    rows = []
    for i in range(n_pairs):
        image = Image.new("RGB", (side, side), tuple(rng.randrange(256) for _ in range(3)))
        answer = " ".join(rng.choice(words) for _ in range(answer_words))
        rows.append({
            "images": [image],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": answer[::-1]}]}],
        })
    return Dataset.from_list(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Qwen/Qwen3-VL-4B-Instruct")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--side", type=int, default=896)
    parser.add_argument("--answer-words", type=int, default=70)  # ~100 tokens with the real tokenizer
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", help="also write the figures and verdicts to this file")
    args = parser.parse_args(argv)

    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText
    from trl import DPOConfig, DPOTrainer

    from nbtools.estimate import GIB, estimate_memory
    from nbtools.models import load_processor
    from nbtools.models.lora import lora_config
    from nbtools.models.reference_configs import reference_config

    cuda = torch.cuda.is_available() and not gpu_stage.rehearsing()
    dtype = torch.bfloat16 if cuda else torch.float32
    max_pixels = args.side * args.side
    config = reference_config(args.model)
    if config is not None:  # random weights in the real shape; the processor comes from the tiny model
        if gpu_stage.rehearsing():
            gpu_stage.shrink(config)
        processor = load_processor("tiny-qwen3-vl", max_pixels=max_pixels)
        processor.image_processor.size.shortest_edge = 65536
        gpu_stage.point_vision_tokens_at(config, processor.tokenizer)
        with torch.device("cuda" if cuda else "cpu"):  # initialised on the GPU: minutes faster than on the CPU
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    else:
        from nbtools.models import load_model_and_processor

        model, processor = load_model_and_processor(args.model, max_pixels=max_pixels, dtype=dtype)
        config = model.config
    if cuda:
        model.to("cuda")
    peft_model = get_peft_model(model, lora_config(model, lora_rank=8))
    dataset = _dataset(args.batch_size * args.steps, args.side, args.answer_words)
    training_args = DPOConfig(
        output_dir="/tmp/estimate_check", per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        gradient_checkpointing=True, bf16=cuda, max_length=4096, report_to=[], logging_steps=1,
        save_strategy="no", remove_unused_columns=False,
    )
    trainer = DPOTrainer(model=peft_model, args=training_args, train_dataset=dataset, processing_class=processor)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trained = trainer.train()
    measured = torch.cuda.max_memory_allocated() / GIB if cuda else None
    seq_tokens = processor(text=[processor.apply_chat_template(dataset[0]["prompt"], tokenize=False)],
                           images=dataset[0]["images"], return_tensors="pt")["input_ids"].shape[1]
    answer_tokens = len(processor.tokenizer(dataset[0]["chosen"][0]["content"][0]["text"])["input_ids"])
    est = estimate_memory(
        config, batch_size=args.batch_size, max_context_length=4096, max_pixels=max_pixels, lora_rank=8,
        gradient_checkpointing=True, precision="bf16" if cuda else "fp32",
        prompt_text_tokens=seq_tokens - est_image_tokens(config, max_pixels), answer_tokens=answer_tokens,
    )
    ratio = measured / est.total_gib if measured else None
    goal = f"measured peak within {gpu_stage.ESTIMATE_GOAL:.0%} of the estimate ({est.total_gib:.2f} GiB)"
    if cuda or gpu_stage.rehearsing():
        verdicts = [gpu_stage.judged(goal, ratio, lambda r: abs(r - 1) <= gpu_stage.ESTIMATE_GOAL, ".3f",
                                     unit="x the estimate", gpu_only=True)]
    else:  # the plumbing check on a CPU machine
        verdicts = [gpu_stage.verdict(goal, "n/a", None, "not judged: no CUDA GPU, nothing measured")]
    loss = trained.training_loss
    verdicts.append(gpu_stage.judged(f"TRL's {args.steps} step(s) run on the model, loss finite", loss,
                                     math.isfinite, ".4f"))
    figures = {
        "model": args.model, "device": gpu_stage.device_name(),
        "estimate_gib": round(est.total_gib, 3), "measured_peak_allocated_gib": measured and round(measured, 3),
        "ratio_measured_over_estimate": ratio and round(ratio, 3),
        "parts_gib": {label: round(v, 3) for label, v in est.rows()},
        "verdicts": verdicts,
    }
    print(json.dumps(figures))
    if args.json:
        gpu_stage.write_json(args.json, figures)
    gpu_stage.print_verdicts("estimate check", verdicts)
    return gpu_stage.exit_code(verdicts)


def est_image_tokens(config, max_pixels):
    from nbtools.estimate import image_tokens_per_image

    return image_tokens_per_image(config, max_pixels)


if __name__ == "__main__":
    sys.exit(main())
