"""Is the stripes task learnable by the random tiny model, and how reliably? (issue 12)

A hand-written DPO loop (not the trainer: this measures the *data*, independent of the code
under test) on the random built-in ``tiny-qwen3-vl``: LoRA r=8 on the language model, AdamW
lr 5e-3 with the trainer's schedule (10% warmup, linear decay), batch 4, beta 0.1, sigmoid loss,
fp32 on the CPU, reference log-probs from the base (adapter B = 0). Three experiments, each repeated
over data seeds (which pictures / clips are drawn) and LoRA seeds (the adapter's init and
the batch order):

* ``video``     - train on the stripes video task, held-out preference accuracy before/after;
* ``control``   - the same with every clip replaced by one plain grey clip (must stay at chance);
* ``contrast``  - train ONLY on pure image-contrast pairs (chosen text == rejected text, the
                  rejected side sees the stripes turned), test on ordinary pairs of the task.

Preference accuracy = share of held-out pairs with log p(chosen) > log p(rejected) (summed
over answer tokens), like ``nbtools.evaluate``.

``--trainer`` runs the same experiments through ``nbtools.train`` (packing on, the tests' recipe)
and ``nbtools.evaluate`` instead, with ``--lora-seeds`` as the run config's seed.

    python benchmarks/stripes_spread.py --experiments video control --seeds 0 1 2 --lora-seeds 0 1 --steps 40
    python benchmarks/stripes_spread.py --trainer --experiments contrast --lora-seeds 42 1 7 --steps 60

Each run takes 5-20 s on 2 idle cores. Rows: ``benchmarks/results/stripes_spread.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BETA = 0.1


def _examples(jsonl: Path, plain: bool = False) -> list[dict]:
    """Rows as (prompt text, chosen, rejected, media for chosen side, media for rejected side)."""
    import numpy as np
    from PIL import Image
    from transformers.video_utils import VideoMetadata

    from nbtools.samples.clips import CLIP_FPS, plain_clip

    out = []
    for line in jsonl.read_text().splitlines():
        row = json.loads(line)
        media_c, media_r = {}, {}
        if row.get("videos"):
            import av

            with av.open(str(jsonl.parent / row["videos"][0])) as container:
                frames = [np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])]
            if plain:  # the control: one flat grey clip of the same shape for every row
                frames = [plain_clip((frames[0].shape[2], frames[0].shape[1]), len(frames[0]))]
            count = len(frames[0])
            meta = [VideoMetadata(total_num_frames=count, fps=CLIP_FPS, frames_indices=list(range(count)))]
            media_c = media_r = {"videos": frames, "video_metadata": meta}
        if row.get("images"):
            media_c = {"images": [Image.open(jsonl.parent / p).convert("RGB") for p in row["images"]]}
            media_r = media_c
            if row.get("rejected_images"):
                media_r = {"images": [Image.open(jsonl.parent / p).convert("RGB") for p in row["rejected_images"]]}
        out.append(dict(user=row["messages"][0]["content"], chosen=row["messages"][-1]["content"],
                        rejected=row["rejected_response"], media_c=media_c, media_r=media_r))
    return out


def _texts(processor, ex: dict, answer: str) -> tuple[str, str]:
    from nbtools.data.convert import structured_content

    prompt = [{"role": "user", "content": structured_content(ex["user"])}]
    head = processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return head, head + answer + "<|im_end|>\n"


def _sequence_logps(model, processor, items: list[tuple[dict, str, dict]]):
    """Summed answer log-probs of each (example, answer, media) item, one forward per item batch."""
    import torch

    logps = []
    for ex, answer, media in items:  # one at a time: media kwargs differ per sequence, items are tiny
        head, full = _texts(processor, ex, answer)
        kwargs = dict(media)
        if "videos" in kwargs:
            kwargs["do_sample_frames"] = False
        prompt_len = processor(text=[head], return_tensors="pt", **kwargs)["input_ids"].shape[1]
        batch = processor(text=[full], return_tensors="pt", **kwargs)
        out = model(**batch)
        logits = out.logits[0, prompt_len - 1 : -1].float()
        targets = batch["input_ids"][0, prompt_len:]
        logps.append(torch.log_softmax(logits, -1).gather(1, targets[:, None]).sum())
    return torch.stack(logps)


def _pair_logps(model, processor, examples):
    chosen = _sequence_logps(model, processor, [(e, e["chosen"], e["media_c"]) for e in examples])
    rejected = _sequence_logps(model, processor, [(e, e["rejected"], e["media_r"]) for e in examples])
    return chosen, rejected


def preference_accuracy(model, processor, examples) -> float:
    import torch

    with torch.no_grad():
        chosen, rejected = _pair_logps(model, processor, examples)
    return float((chosen > rejected).float().mean())


def _write_task(folder: Path, experiment: str, data_seed: int, size: Optional[int], frames: int):
    """The task's files with the committed defaults (clips 64 px, pictures 128 px) unless ``size`` is given."""
    from nbtools.samples.clips import CLIP_SIZE
    from nbtools.samples.stripes import STRIPES_IMAGE_SIZE, write_stripes_contrast_task, write_stripes_video_task

    if experiment == "contrast":
        side = size or STRIPES_IMAGE_SIZE[0]
        return write_stripes_contrast_task(folder, seed=data_seed, size=(side, side)), side
    side = size or CLIP_SIZE[0]
    return write_stripes_video_task(folder, seed=data_seed, size=(side, side), frames=frames), side


def run(experiment: str, data_seed: int, lora_seed: int, steps: int, checkpoints: list[int],
        size: Optional[int] = None, frames: int = 8) -> dict:
    import torch
    from peft import get_peft_model

    from nbtools.models import load_model_and_processor
    from nbtools.models.lora import lora_config

    with tempfile.TemporaryDirectory() as tmp:
        files, size = _write_task(Path(tmp), experiment, data_seed, size, frames)
        plain = experiment == "control"
        train, held_out = _examples(files.train, plain), _examples(files.validation, plain)
    model, processor = load_model_and_processor("tiny-qwen3-vl", dtype="float32", device="cpu")
    torch.manual_seed(lora_seed)
    model = get_peft_model(model, lora_config(model, "default", 8, None, 0.0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    # The trainer's schedule (warmup_ratio 0.1, then linear decay to zero at the last step).
    warmup = max(1, round(0.1 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    order = random.Random(lora_seed)
    row = {"experiment": experiment, "data_seed": data_seed, "lora_seed": lora_seed, "size": size, "frames": frames}
    model.eval()
    row["acc@0"] = preference_accuracy(model, processor, held_out)
    with torch.no_grad():  # the reference is the frozen base: score every training pair once
        ref_c, ref_r = _pair_logps(model, processor, train)  # (the adapter starts at B = 0: the base)
    started = time.time()
    for step in range(1, steps + 1):
        picks = order.sample(range(len(train)), 4)
        pol_c, pol_r = _pair_logps(model, processor, [train[i] for i in picks])
        margin = (pol_c - ref_c[picks]) - (pol_r - ref_r[picks])
        loss = -torch.nn.functional.logsigmoid(BETA * margin).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step in checkpoints:
            row[f"acc@{step}"] = preference_accuracy(model, processor, held_out)
    row["train_s"] = round(time.time() - started, 1)
    return row


def run_trainer(experiment: str, data_seed: int, seed: int, steps: int, size: Optional[int] = None,
                frames: int = 8) -> dict:
    """The same experiment through nbtools.train (packing on) and nbtools.evaluate, as the tests run it."""
    import shutil

    from nbtools.config import RunConfig
    from nbtools.demo import DEMO_TRAINING
    from nbtools.evaluate import evaluate_run, load_run_model
    from nbtools.samples.clips import encode_lossless_video, plain_clip
    from nbtools.train import train

    tmp = Path(tempfile.mkdtemp())
    try:
        files, size = _write_task(tmp / "data", experiment, data_seed, size, frames)
        if experiment == "control":
            plain = encode_lossless_video(plain_clip((size, size), frames))
            (tmp / "data" / "clips" / "plain.avi").write_bytes(plain)
            for path in (files.train, files.validation):
                rows = [json.loads(line) for line in path.read_text().splitlines()]
                path.write_text("".join(json.dumps({**r, "videos": ["clips/plain.avi"]}) + "\n" for r in rows))
        settings = dict(DEMO_TRAINING)
        settings.update(model="tiny-qwen3-vl", train_file=str(files.train), validation_file=str(files.validation),
                        output_dir=str(tmp / "run"), loss_type=["sigmoid"], loss_weights=None, packing=True,
                        max_pixels=size * size, video_max_pixels=size * size, fps=2.0, max_frames=16, max_steps=steps,
                        eval_steps=steps, save_steps=steps, logging_steps=10, save_total_limit=1, seed=seed,
                        gradient_checkpointing=False, num_workers=0, max_context_length=256)
        started = time.time()
        result = train(RunConfig(**settings), live=False)
        payload = evaluate_run(result.run_dir, run=load_run_model(result.run_dir, device="cpu"), batch_size=16,
                               n_resamples=200, progress=False, write=False).payload
        return {"via": "trainer", "experiment": experiment, "data_seed": data_seed, "seed": seed, "steps": steps,
                "size": size, "frames": frames,
                "base": payload["base"]["preference_accuracy"], "tuned": payload["tuned"]["preference_accuracy"],
                "seconds": round(time.time() - started, 1)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=["video", "control", "contrast"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="data seeds (which clips are drawn)")
    parser.add_argument("--lora-seeds", nargs="+", type=int,
                        help="adapter init / batch order seeds (default: the data seed)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--checkpoints", nargs="+", type=int, default=[20, 40, 60])
    parser.add_argument("--size", type=int, help="clip frame / picture side in pixels (default: as committed, "
                        "64 for clips, 128 for pictures)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--trainer", action="store_true", help="run through nbtools.train instead of the hand loop "
                        "(--lora-seeds are then the run config's seed)")
    parser.add_argument("--out", type=Path, help="JSON list to append the rows to (created if missing)")
    args = parser.parse_args()
    rows = json.loads(args.out.read_text()) if args.out and args.out.exists() else []
    for experiment in args.experiments:
        for seed, lora_seed in ((s, ls) for s in args.seeds for ls in (args.lora_seeds or [s])):
            if args.trainer:
                row = run_trainer(experiment, seed, lora_seed, args.steps, args.size, args.frames)
            else:
                row = run(experiment, seed, lora_seed, args.steps, args.checkpoints, args.size, args.frames)
            print(json.dumps(row), flush=True)
            rows.append(row)
            if args.out:  # after every run: an interrupted sweep keeps what it measured
                args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
