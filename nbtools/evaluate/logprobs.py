"""Log-probabilities of each pair's chosen and rejected answers under one model.

The base model is the tuned model with its LoRA adapter switched off, so one model sits
in memory and both are scored on exactly the same tokens. Batches are built by the collator
unpacked training uses (TRL's vision preference collator, extended with videos and
``rejected_images``: ``nbtools.packing.VisionPreferenceCollator``), so the tokens scored here
are the tokens DPO trained on and the implicit rewards match the trainer's ``rewards/*``
metrics. An image-contrast pair's rejected row is its conversation with ``rejected_images`` in
place of ``images``; a video's frames are the ones the run sampled (``nbtools.video.Clip``).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from nbtools.errors import UserError

NON_MODEL_KEYS = {"completion_mask"}


class NoAdapterError(UserError, ValueError):
    """The tuned side was asked of a model without a LoRA adapter: there is nothing to switch on."""


@dataclass
class PairLogProbs:
    """Per pair: summed log-prob and token count of the chosen and rejected answers."""

    chosen: np.ndarray  # float, summed over the answer's tokens
    rejected: np.ndarray
    chosen_tokens: np.ndarray  # int, answer length in tokens (end-of-turn token included)
    rejected_tokens: np.ndarray

    def __post_init__(self):
        self.chosen = np.asarray(self.chosen, dtype=float)
        self.rejected = np.asarray(self.rejected, dtype=float)
        self.chosen_tokens = np.asarray(self.chosen_tokens, dtype=int)
        self.rejected_tokens = np.asarray(self.rejected_tokens, dtype=int)
        lengths = {len(self.chosen), len(self.rejected), len(self.chosen_tokens), len(self.rejected_tokens)}
        if len(lengths) != 1:
            raise ValueError("chosen, rejected and token counts must have one entry per pair")

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def chosen_mean(self) -> np.ndarray:
        """Length-normalised: mean log-prob per token, so long answers are not penalised."""
        return self.chosen / np.maximum(self.chosen_tokens, 1)

    @property
    def rejected_mean(self) -> np.ndarray:
        return self.rejected / np.maximum(self.rejected_tokens, 1)

    def to_dict(self) -> dict:
        return {
            "chosen": self.chosen.tolist(),
            "rejected": self.rejected.tolist(),
            "chosen_tokens": self.chosen_tokens.tolist(),
            "rejected_tokens": self.rejected_tokens.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PairLogProbs":
        return cls(data["chosen"], data["rejected"], data["chosen_tokens"], data["rejected_tokens"])


@contextlib.contextmanager
def adapter_enabled(model, enabled: bool) -> Iterator[None]:
    """Run the block as the tuned model (adapter on) or the base model (adapter off).

    When a run started from an SFT adapter, that adapter is loaded as ``"ref"`` and is
    the base, as it was DPO's reference. A model without an adapter is the base already;
    asking it for the tuned model is a mistake worth stopping on.
    """
    peft_config = getattr(model, "peft_config", None) or {}
    if enabled:
        if not peft_config:
            raise NoAdapterError("this model has no LoRA adapter, so there is no tuned model to score (fix: pass the "
                                 "run's model with its adapter, or another model as the tuned side)")
        yield
    elif "ref" in peft_config:
        active = model.active_adapter
        model.set_adapter("ref")
        try:
            yield
        finally:
            model.set_adapter(active)
    elif peft_config:
        with model.disable_adapter():
            yield
    else:
        yield


def as_conversation(example: dict) -> dict:
    """A copy in TRL's conversational preference form (answers as assistant messages)."""
    example = copy.copy(example)
    for key in ("chosen", "rejected"):
        if isinstance(example[key], str):
            example[key] = [{"role": "assistant", "content": example[key]}]
    if isinstance(example["prompt"], str):
        example["prompt"] = [{"role": "user", "content": example["prompt"]}]
    example["prompt"] = copy.deepcopy(example["prompt"])  # the collator fills image blocks in place
    example["images"] = list(example.get("images") or [])
    return example


def collate_pairs(processor, examples: Sequence[dict], max_length: int | None = None) -> dict:
    """Chosen rows then rejected rows, prompt left-padded, with a completion mask (training's unpacked collator)."""
    from nbtools.packing import VisionPreferenceCollator

    collator = VisionPreferenceCollator(processor=processor, max_length=max_length)
    return collator.torch_call([as_conversation(e) for e in examples])


def completion_logprobs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob and token count of the completion tokens of every row."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k not in NON_MODEL_KEYS}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    targets = inputs["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].to(device).float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(dim=1).cpu(), mask.sum(dim=1).long().cpu()


@torch.no_grad()
def score_pairs(
    model,
    processor,
    examples: Sequence[dict],
    *,
    adapter: bool = True,
    batch_size: int = 4,
    max_length: int | None = None,
    progress: bool = True,
    description: str | None = None,
) -> PairLogProbs:
    """Log-probs of every example's chosen and rejected answers, adapter on or off.

    ``examples`` are training examples (``nbtools.data.to_training_example``): ``prompt``
    messages with ``{"type": "image"}`` / ``{"type": "video"}`` blocks, ``chosen``/``rejected`` text,
    ``images``, and where the pair has them ``videos`` (clips) and ``rejected_images``.
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    chosen, rejected, chosen_n, rejected_n = [], [], [], []
    starts = range(0, len(examples), batch_size)
    label = description or ("tuned" if adapter else "base")
    try:
        with adapter_enabled(model, adapter):
            for start in tqdm(starts, desc=f"scoring pairs ({label})", disable=not progress, leave=False):
                batch = collate_pairs(processor, examples[start : start + batch_size], max_length)
                logps, counts = completion_logprobs(model, batch)
                half = len(logps) // 2
                chosen += logps[:half].tolist()
                rejected += logps[half:].tolist()
                chosen_n += counts[:half].tolist()
                rejected_n += counts[half:].tolist()
    finally:
        model.train(was_training)
    return PairLogProbs(chosen, rejected, chosen_n, rejected_n)


def score_base_and_tuned(model, processor, examples: Sequence[dict], **kwargs) -> tuple[PairLogProbs, PairLogProbs]:
    """Both models on the same pairs: ``(base, tuned)``."""
    base = score_pairs(model, processor, examples, adapter=False, **kwargs)
    tuned = score_pairs(model, processor, examples, adapter=True, **kwargs)
    return base, tuned
