"""Tokens and vision patches one packed step carries, per kind of pair, relative to a plain pair.

For each picture set (1–4 pictures of 448–1024 px) and each kind of step it builds one batch with
``PackedPreferenceCollator`` (plus the mDPO contrast row where the kind has one) and runs one packed
step (tiny Qwen3-VL, fp32, frozen vision tower: the pictures are encoded once for both passes) with a
hook on the vision tower. Per step:

- ``lm_tokens``: real tokens through the language model in one pass (the step runs two: policy and
  reference; both see the same batch);
- ``padded_tokens``: rows x width of the batch (what the attention actually spans);
- ``vision_patches``: patches the vision tower encoded in the step (16 x 16 pixels; a video's two
  frames per temporal patch count once), ``vision_inputs`` the pictures and videos it encoded;
- ``x_plain``: each of these divided by the plain pair's of the same picture set; ``x_own_pair`` (mDPO
  steps): divided by the step of the same pair without its contrast row (``plain`` / ``plain_video``).
  Counts only: no timings (the tiny model's seconds say little about a real model's).

Kinds: ``plain`` (one pair, shared prompt), ``contrast`` (``rejected_images``: every picture
replaced on the rejected side), ``contrast_video_before`` / ``contrast_video_after`` (the same with
a 16-frame video before the first picture / right after it), ``plain_video`` (a plain pair with that
video after its first picture), ``mdpo`` / ``mdpo_video`` (``plain`` / ``plain_video`` in a step with
``mdpo_conditional``: the pair and its image-contrast row).

Layouts: ``lean`` is what the tree does; with ``--layouts full lean`` the mDPO rows are also laid
out the way they were before the lean contrast rows (``PackedPreferenceCollator(lean_auxiliary=False)``:
the contrast row repeats the pair's prompt and chosen answer) and the shared video is also encoded
once per occurrence (``--layouts full``: the batch's ``video_copies`` dropped), on the same examples.

    python benchmarks/layout_tokens.py [--layouts lean full] [--frame-size 448] [--out FILE] [--run-name after]

Writes ``benchmarks/results/layout_tokens.json``: one entry per ``--run-name`` under ``runs``, each with the
tree's commit and the machine. ``before``: this script run with ``--layouts full`` from a checkout of the
commit before the lean layouts (``git worktree add``; the script falls back to the only layout it has).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from scale import machine_facts, tree_facts  # noqa: E402

PICTURE_SETS = {
    "1 picture 448x448": [(448, 448)],
    "2 pictures 768x576, 1024x768": [(768, 576), (1024, 768)],
    "4 pictures 448x448 - 1024x1024": [(448, 448), (640, 480), (1024, 768), (1024, 1024)],
}
KINDS = ("plain", "contrast", "contrast_video_before", "contrast_video_after", "plain_video", "mdpo", "mdpo_video")
WORDS = ("the", "red", "shape", "sits", "left", "of", "a", "blue", "square", "while", "two", "stripes", "cross",
         "behind", "it", "and", "nothing", "moves")


def _picture(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    array = (rng.rand(size[1], size[0], 3) * 255).astype(np.uint8)
    return Image.fromarray(array)


def _clip(frames: int, side: int, seed: int):
    from transformers.video_utils import VideoMetadata

    from nbtools.video import Clip, VideoSettings

    rng = np.random.RandomState(seed)
    array = (rng.rand(frames, side, side, 3) * 255).astype(np.uint8)
    metadata = VideoMetadata(total_num_frames=frames * 15, fps=30.0, frames_indices=list(range(0, frames * 15, 15)),
                             width=side, height=side, duration=frames / 2)
    return Clip("clip.mp4", array, metadata, VideoSettings(max_frames=frames, video_max_pixels=side * side))


def _text(words: int, seed: int) -> str:
    rng = np.random.RandomState(seed)
    return " ".join(WORDS[i] for i in rng.randint(0, len(WORDS), size=words)) + "."


def example(kind: str, sizes: list[tuple[int, int]], args) -> dict:
    """One pair of ``kind``: the pictures of ``sizes``, a question, answers of --answer-words words."""
    pictures = [{"type": "image"} for _ in sizes]
    video = "video" in kind
    blocks = list(pictures)
    if video:
        blocks.insert(0 if kind.endswith("_before") else 1, {"type": "video"})
    pair = {
        "prompt": [{"role": "user", "content": blocks + [{"type": "text", "text": _text(30, 1)}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": _text(args.answer_words, 2)}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": _text(args.answer_words + 20, 3)}]}],
        "images": [_picture(size, index) for index, size in enumerate(sizes)],
    }
    if video:
        pair["videos"] = [_clip(args.frames, args.frame_size, 7)]
    if kind.startswith("contrast"):
        pair["rejected_images"] = [_picture(size, 100 + index) for index, size in enumerate(sizes)]
    return pair


def collate(processor, kind: str, pair: dict, layout: str) -> tuple[dict, list]:
    from nbtools.packing import PackedPreferenceCollator
    from nbtools.packing.contrast import AUXILIARY_ROWS, auxiliary_rows, with_auxiliary

    examples = with_auxiliary([pair], seed=0) if kind.startswith("mdpo") else [pair]
    try:
        collator = PackedPreferenceCollator(processor, lean_auxiliary=layout == "lean")
    except TypeError:  # a tree from before the lean layout: there is only the full one
        if layout == "lean":
            raise
        collator = PackedPreferenceCollator(processor)
    batch = collator(copy.deepcopy(examples))
    if kind.startswith("mdpo"):
        batch[AUXILIARY_ROWS] = auxiliary_rows(examples)
    if layout == "full":
        batch.pop("video_copies", None)
        batch.pop("image_copies", None)
    return batch, examples


class PatchCounter:
    """Patches (grid t*h*w) and inputs (grid rows) through the vision tower's forward."""

    def __init__(self):
        self.patches = self.inputs = 0

    def hook(self, module, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.patches += int(grid.prod(dim=-1).sum())
        self.inputs += int(grid.shape[0])


def measure(model, processor, kind: str, sizes, layout: str, args) -> dict:
    from nbtools.packing import packed_dpo_step
    from nbtools.packing.logps import count_tokens

    batch, _ = collate(processor, kind, example(kind, sizes, args), layout)
    losses = ["sigmoid", "mdpo_conditional"] if kind.startswith("mdpo") else ["sigmoid"]
    counter = PatchCounter()
    handle = model.model.visual.register_forward_pre_hook(counter.hook, with_kwargs=True)
    try:
        with torch.no_grad():
            packed_dpo_step(model, batch, beta=0.1, loss_type=losses)
    finally:
        handle.remove()
    return {"rows": int(batch["input_ids"].shape[0]), "lm_tokens": count_tokens(batch),
            "padded_tokens": int(batch["input_ids"].numel()), "vision_patches": counter.patches,
            "vision_inputs": counter.inputs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="+", default=["lean", "full"], choices=["lean", "full"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--sets", nargs="+", default=list(PICTURE_SETS), choices=list(PICTURE_SETS))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--frame-size", type=int, default=448)
    parser.add_argument("--answer-words", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "layout_tokens.json")
    parser.add_argument("--run-name", default="after",
                        help="the key this run is stored under in --out (other runs there are kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from nbtools.models import load_model_and_processor
    from nbtools.video import VideoSettings

    torch.manual_seed(0)
    model, processor = load_model_and_processor(
        "tiny-qwen3-vl", max_pixels=1024 * 1024, dtype=torch.float32, device="cpu", attn_implementation="sdpa",
        video=VideoSettings(max_frames=args.frames, video_max_pixels=args.frame_size ** 2))
    model.eval()
    for parameter in model.model.visual.parameters():  # as in training: the tower is frozen, so a step encodes
        parameter.requires_grad_(False)                # its pictures once for both passes
    results: dict = {}
    for name in args.sets:
        sizes = PICTURE_SETS[name]
        rows: dict = {}
        for layout in args.layouts:
            for kind in args.kinds:
                if layout == "full" and "lean" in args.layouts and kind not in ("mdpo", "mdpo_video", "contrast_video_after"):
                    continue  # the same batch in both layouts
                row = measure(model, processor, kind, sizes, layout, args)
                rows[f"{kind} ({layout})" if len(args.layouts) > 1 else kind] = row
        def row_of(kind):
            return rows.get(f"{kind} (lean)") or rows.get(kind)

        plain = row_of("plain")
        for label, row in rows.items():
            # an mDPO step against the same pair's step without its contrast row
            own = row_of({"mdpo": "plain", "mdpo_video": "plain_video"}.get(label.split()[0], ""))
            for key in ("lm_tokens", "padded_tokens", "vision_patches"):
                if plain:
                    row[f"{key}_x_plain"] = round(row[key] / plain[key], 2)
                if own:
                    row[f"{key}_x_own_pair"] = round(row[key] / own[key], 2)
        results[name] = rows
        for label, row in rows.items():
            print(f"{name:32s} {label:32s} tokens {row['lm_tokens']:6d} ({row.get('lm_tokens_x_plain', 1):4.2f}x) "
                  f"padded {row['padded_tokens']:6d} ({row.get('padded_tokens_x_plain', 1):4.2f}x) "
                  f"patches {row['vision_patches']:6d} ({row.get('vision_patches_x_plain', 1):4.2f}x) "
                  f"inputs {row['vision_inputs']}", flush=True)
    run = {
        "settings": {"model": "tiny-qwen3-vl (fp32, sdpa, frozen vision tower)", "frames": args.frames,
                     "frame_size": args.frame_size, "answer_words": args.answer_words,
                     "picture_sets": {k: PICTURE_SETS[k] for k in args.sets}, "max_pixels": 1024 * 1024,
                     "per_step": "lm_tokens: one pass (the step's policy and reference passes see the same batch); "
                                 "vision_patches: the whole step"},
        "results": results,
        "tree": tree_facts(REPO),
        "machine": machine_facts(),
    }
    payload = json.loads(args.out.read_text()) if args.out.exists() else {}
    payload.setdefault("runs", {})[args.run_name] = run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
