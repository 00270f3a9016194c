"""``tiny-qwen3-vl-warm``: the tiny Qwen3-VL after a short supervised warm start on the shapes domain.

Why: a random-init model answers with noise, so a demo's base-vs-tuned comparison would
show nothing readable. A few hundred SFT steps on freshly drawn shapes (never the sample
validation pictures) teach it to answer "It is a red circle." style sentences.

The warm start's captions swap red and green on purpose. The model therefore learns to tell
every colour apart (its vision tower must, to name them) but calls red shapes green and green
shapes red, confidently and every time: the kind of systematic hallucination DPO is used to
fix. The sample pairs (``data_samples/shapes``) reject exactly that mistake, so DPO on them
repairs it, and the base-vs-tuned comparison shows a large, machine-independent gain (a
colour the model never learned to see could not be fixed by a LoRA on the language model).

The build is seeded; ``NBTOOLS_WARM_SEED`` chooses another warm-start seed (its own cached
folder), which is how the robustness benchmark perturbs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

logger = logging.getLogger(__name__)

from .tiny import TinySpec, build_tiny_model, register

WARM_MODEL_ID = "tiny-qwen3-vl-warm"
WARM_SEED_ENV = "NBTOOLS_WARM_SEED"
DEFAULT_WARM_SEED = 1234

# The split name seeds the drawings: nbtools.samples gives each split its own random
# streams, so these pictures never coincide with data_samples' train/validation ones.
WARM_SPLIT = "warmstart"

# The built-in mistake: colour words the warm start's captions exchange.
SWAPPED_COLOURS: tuple[tuple[str, str], ...] = (("red", "green"),)


def warm_seed() -> int:
    """The warm start's seed: ``$NBTOOLS_WARM_SEED`` or the default."""
    raw = os.environ.get(WARM_SEED_ENV, "").strip()
    if not raw:
        return DEFAULT_WARM_SEED
    try:
        return int(raw)
    except ValueError:
        from nbtools.errors import UserError

        raise UserError(f"{WARM_SEED_ENV}={raw!r} is not an integer; set it to a whole number such as 1234, "
                        "or unset it for the default build") from None


@dataclass(frozen=True)
class WarmStartConfig:
    """Knobs of the warm start."""

    n_examples: int = 480  # drawn shapes-task examples (multiple of 12 for balance)
    steps: int = 400  # optimizer steps (full model, vision tower included)
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    seed: int = DEFAULT_WARM_SEED  # initial order of examples; the robustness benchmark varies it
    data_seed: int = 7
    # Captions name the partner colour for these pairs: the systematic mistake DPO will fix.
    swapped_colours: tuple[tuple[str, str], ...] = SWAPPED_COLOURS


def said_colour(colour: str, swapped: Iterable[tuple[str, str]] = SWAPPED_COLOURS) -> str:
    """The colour word the warm model uses for a shape of ``colour`` (its partner when swapped)."""
    for a, b in swapped:
        if colour == a:
            return b
        if colour == b:
            return a
    return colour


@dataclass
class WarmExample:
    question: str
    answer: str
    colour: str
    shape: str
    image: Any  # PIL.Image
    image_sha256: str


def warm_examples(config: WarmStartConfig = WarmStartConfig()) -> list[WarmExample]:
    """The warm start's training examples: shapes-task questions, chosen answers, new drawings."""
    from nbtools.samples.drawing import png_bytes
    from nbtools.samples.shapes import shape_questions

    examples = []
    for q in shape_questions(config.n_examples, seed=config.data_seed, split=WARM_SPLIT):
        image = q.draw()
        caption = q.answer_template.format(colour=said_colour(q.colour, config.swapped_colours), shape=q.shape)
        examples.append(
            WarmExample(q.question, caption, q.colour, q.shape, image, hashlib.sha256(png_bytes(image)).hexdigest())
        )
    return examples


def _messages(question: str, answer: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def _encode(processor, example: WarmExample) -> dict:
    """input_ids with labels only on the answer (and its <|im_end|>), plus the image tensors."""
    prompt = processor.apply_chat_template(_messages(example.question), add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(_messages(example.question, example.answer), tokenize=False)
    full = full.rstrip("\n")  # train up to <|im_end|>, which is what generation stops on
    enc = processor(text=[full], images=[example.image], return_tensors="pt")
    n_prompt = processor(text=[prompt], images=[example.image], return_tensors="pt")["input_ids"].shape[1]
    labels = enc["input_ids"].clone()
    labels[:, :n_prompt] = -100
    enc["labels"] = labels
    return {k: v for k, v in enc.items()}


def _collate(items: list[dict], pad_id: int) -> dict:
    import torch

    length = max(item["input_ids"].shape[1] for item in items)

    def pad(key: str, value: int):
        rows = []
        for item in items:
            t = item[key][0]
            rows.append(torch.cat([t, t.new_full((length - t.shape[0],), value)]))
        return torch.stack(rows)

    batch = {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": pad("attention_mask", 0),
        "labels": pad("labels", -100),
        "pixel_values": torch.cat([item["pixel_values"] for item in items]),
        "image_grid_thw": torch.cat([item["image_grid_thw"] for item in items]),
    }
    if "mm_token_type_ids" in items[0]:
        batch["mm_token_type_ids"] = pad("mm_token_type_ids", 0)
    return batch


def train_warm_start(model, processor, config: WarmStartConfig = WarmStartConfig(), progress: bool = True) -> dict:
    """Full-model SFT with a plain torch loop; returns training statistics."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    examples = warm_examples(config)
    encoded = [_encode(processor, ex) for ex in examples]
    pad_id = processor.tokenizer.pad_token_id
    order_rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / config.warmup_steps)
        * max(0.0, (config.steps - step) / max(1, config.steps - config.warmup_steps)),
    )
    model.train()
    order: list[int] = []
    losses = []
    start = time.perf_counter()
    for step in tqdm(range(config.steps), desc="warm start (SFT)", disable=not progress):
        if len(order) < config.batch_size:
            fresh = list(range(len(encoded)))
            order_rng.shuffle(fresh)
            order += fresh
        batch_ids, order = order[: config.batch_size], order[config.batch_size :]
        loss = model(**_collate([encoded[i] for i in batch_ids], pad_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    return {
        "train_seconds": round(time.perf_counter() - start, 1),
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(losses[-10:]) / min(10, len(losses)), 4),
        "n_examples": len(examples),
        "image_sha256": sorted(ex.image_sha256 for ex in examples),
    }


# --------------------------------------------------------------------------- measuring


def _first_word_of(text: str, words: Iterable[str]) -> str | None:
    found = [(m.start(), w) for w in words for m in [re.search(rf"\b{re.escape(w)}\b", text.lower())] if m]
    return min(found)[1] if found else None


@dataclass
class AttributeAccuracy:
    """How often greedy answers name the right colour / shape."""

    n: int
    colour_right: int
    shape_right: int
    answers: list[dict]

    @property
    def colour_accuracy(self) -> float:
        return self.colour_right / self.n if self.n else 0.0

    @property
    def shape_accuracy(self) -> float:
        return self.shape_right / self.n if self.n else 0.0

    def mistake_rates(self, swapped: Iterable[tuple[str, str]] = SWAPPED_COLOURS) -> dict:
        """The built-in mistake, measured: of the shapes in a swapped colour, the share the answer
        names by the partner colour (``says_partner``); of the other shapes, the share named right."""
        swapped = tuple(swapped)
        mixed = [a for a in self.answers if said_colour(a["colour"], swapped) != a["colour"]]
        others = [a for a in self.answers if said_colour(a["colour"], swapped) == a["colour"]]
        return {
            "says_partner": sum(a["named_colour"] == said_colour(a["colour"], swapped) for a in mixed) / max(1, len(mixed)),
            "others_right": sum(a["named_colour"] == a["colour"] for a in others) / max(1, len(others)),
        }

    def summary(self) -> dict:
        return {
            "n": self.n,
            "colour_accuracy": round(self.colour_accuracy, 4),
            "shape_accuracy": round(self.shape_accuracy, 4),
            **{k: round(v, 4) for k, v in self.mistake_rates().items()},
        }


def shapes_validation_items(jsonl_path: str | Path) -> list[dict]:
    """(question, image path, true colour, true shape) from a shapes-task JSONL file."""
    from nbtools.samples.drawing import COLOURS, SHAPES

    path = Path(jsonl_path)
    items = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        question = row["messages"][0]["content"].replace("<image>", "").strip()
        chosen = row["messages"][-1]["content"]
        items.append(
            {
                "question": question,
                "image": str(path.parent / row["images"][0]),
                "colour": _first_word_of(chosen, COLOURS),
                "shape": _first_word_of(chosen, SHAPES),
            }
        )
    return items


def measure_attribute_accuracy(model, processor, items: list[dict], max_new_tokens: int = 16, batch_size: int = 20):
    """Greedy answers to each item; right = the first colour (shape) word named is the true one."""
    import torch
    from PIL import Image

    from nbtools.samples.drawing import COLOURS, SHAPES

    model.eval()
    answers = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        texts = [
            processor.apply_chat_template(_messages(it["question"]), add_generation_prompt=True, tokenize=False)
            for it in chunk
        ]
        images = [Image.open(it["image"]).convert("RGB") for it in chunk]
        inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        decoded = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for it, text in zip(chunk, decoded):
            named = _first_word_of(text, COLOURS)
            answers.append(
                {
                    "question": it["question"],
                    "answer": text.strip(),
                    "colour": it["colour"],
                    "shape": it["shape"],
                    "named_colour": named,
                    "colour_ok": named == it["colour"],
                    "shape_ok": _first_word_of(text, SHAPES) == it["shape"],
                }
            )
    return AttributeAccuracy(
        n=len(answers),
        colour_right=sum(a["colour_ok"] for a in answers),
        shape_right=sum(a["shape_ok"] for a in answers),
        answers=answers,
    )


def build_tiny_qwen3_vl_warm(folder: Path, config: WarmStartConfig | None = None) -> None:
    """Load the cached random tiny Qwen3-VL, warm-start it, save it as a normal HF folder."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    config = config or WarmStartConfig(seed=warm_seed())
    base = build_tiny_model("tiny-qwen3-vl")
    processor = AutoProcessor.from_pretrained(base)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: identical float reductions everywhere, and no slowdown when cores are shared
    try:
        stats = train_warm_start(model, processor, config)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    stats.pop("image_sha256")
    # timing varies between machines: log it, keep the saved folder byte-reproducible
    logger.info("warm start trained in %.1f s", stats.pop("train_seconds"))
    (folder / "warm_start.json").write_text(json.dumps({"config": asdict(config), "stats": stats}, indent=2))


register(
    TinySpec(
        WARM_MODEL_ID,
        "qwen3_vl",
        "tiny-qwen3-vl after a short SFT warm start on drawn shapes; answers 'It is a green circle.' "
        "and mixes up red and green (a built-in mistake for DPO to fix)",
        build_tiny_qwen3_vl_warm,
        variant=lambda: f"seed{warm_seed()}",
    )
)
