"""Summed chosen / rejected log-probs from one forward over packed rows.

The multimodal backbone (``<ForConditionalGeneration>.model``) runs once per batch of packed
rows with the 4-D mask and explicit positions; the LM head is applied only to the hidden
states that predict answer tokens. Each chosen token is predicted from its predecessor; the
first rejected token from the *last prompt token* (its true predecessor in a separate row) —
or, in a row with its own rejected prompt, from the last rejected-prompt token, which directly
precedes it — the other rejected tokens from their predecessors. Images go in once per pair, in pair order,
exactly as the processor produced them, so image and deepstack features land on the right
placeholder tokens.

:func:`separate_logps` is the plain TRL-style computation (two rows per pair, full logits)
that the packed path must reproduce; tests and the benchmark use it as the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl.kernels import ChunkedLogProbFunction

from .layout import EXTRA_KEYS, LAYOUT_KEYS, SEGMENT_CHOSEN, SEGMENT_PAD, SEGMENT_REJECTED, SEGMENT_REJECTED_PROMPT
from .layout import borrow_chosen
from .block_mask import BLOCK_MASK_ATTENTION, block_mask_from_segments
from .mask import packed_attention_mask
from .multi import MERGE_KEYS, merge_pairs, plan_in_order
from .positions import packed_position_ids


def unwrap_model(model):
    """The transformers ``PreTrainedModel`` under DDP / accelerate / PEFT wrappers (LoRA layers stay injected)."""
    while hasattr(model, "module") and not hasattr(model, "get_output_embeddings"):
        model = model.module
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    return model


def backbone_and_head(model):
    """(multimodal backbone returning hidden states, LM head) of a ``*ForConditionalGeneration`` model."""
    base = unwrap_model(model)
    backbone = getattr(base, "model", None)
    head = base.get_output_embeddings()
    if backbone is None or head is None:
        raise ValueError(
            f"packing does not know how to split {type(base).__name__} into backbone and LM head; turn packing off"
        )
    return base, backbone, head


def model_inputs(batch: dict) -> dict:
    """The batch entries the backbone takes (layout keys, reference values and the 2-D mask removed)."""
    skip = set(LAYOUT_KEYS) | set(EXTRA_KEYS) | set(MERGE_KEYS) | {"attention_mask", "completion_mask"}
    return {k: v for k, v in batch.items() if k not in skip}


@dataclass
class PackedLogps:
    """Result of one packed forward."""

    chosen: torch.Tensor  # (B,) summed log-probs of the chosen answers
    rejected: torch.Tensor  # (B,)
    token_logps: torch.Tensor  # (N,) per scored token, chosen and rejected tokens of all rows
    token_rows: torch.Tensor  # (N,) pair (the row of a one-pair-per-row batch) of each scored token
    token_is_chosen: torch.Tensor  # (N,) bool
    stats: dict = field(default_factory=dict)  # detached per-token entropy / mean logit / top-1 hit
    encoder_outputs: dict | None = None  # {"image": ..., "video": ...} for reuse by a later pass


def scoring_indices(segment_ids: torch.Tensor, prompt_ends: torch.Tensor, pair_ids: torch.Tensor | None = None):
    """(pair, row, target column, predecessor column, is_chosen) of every scored token.

    ``prompt_ends`` (P,): the column of each pair's last shared-prompt token in its row, which predicts the
    first rejected token (after a rejected prompt of its own, the column before does). ``pair_ids``
    (R, L): 1 + the pair of each token in merged rows; None when each row holds one pair (pair = row).
    """
    scored = (segment_ids == SEGMENT_CHOSEN) | (segment_ids == SEGMENT_REJECTED)
    rows, cols = scored.nonzero(as_tuple=True)
    pairs = rows if pair_ids is None else pair_ids[rows, cols] - 1
    predecessors = cols - 1
    is_rejected = segment_ids[rows, cols] == SEGMENT_REJECTED
    before = segment_ids[rows, cols - 1]
    first_rejected = is_rejected & (before != SEGMENT_REJECTED) & (before != SEGMENT_REJECTED_PROMPT)
    predecessors = torch.where(first_rejected, prompt_ends.to(cols.device)[pairs], predecessors)
    return pairs, rows, cols, predecessors, ~is_rejected


def packed_attention(base, segment_ids: torch.Tensor, pair_ids: torch.Tensor | None = None):
    """The mask the model's kernel takes for these rows: a BlockMask for the block-mask kernel, else the dense one."""
    if base.config._attn_implementation == BLOCK_MASK_ATTENTION:
        return block_mask_from_segments(segment_ids, pair_ids)  # FlexAttention: no L×L mask
    return packed_attention_mask(segment_ids, base.config._attn_implementation or "eager",
                                 base.get_input_embeddings().weight.dtype, pair_ids)


def pair_lengths(segment_ids: torch.Tensor) -> list[int]:
    """Real tokens of each one-pair row."""
    return (segment_ids != SEGMENT_PAD).sum(1).tolist()


def packed_logps(
    model,
    batch: dict,
    *,
    encoder_outputs: dict | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    with_stats: bool = False,
    row_budget: int | None = None,
) -> PackedLogps:
    """One forward over packed rows; ``attention_mask`` / ``position_ids`` override the correct ones (tests only).

    ``row_budget``: put consecutive pairs together into rows of at most this many tokens
    (:func:`nbtools.packing.multi.plan_in_order`; the mask keeps them apart, positions restart per pair),
    when that makes fewer rows than pairs. The results stay per pair, as with one pair per row.
    """
    base, backbone, head = backbone_and_head(model)
    segment_ids = batch["segment_ids"]
    if position_ids is None:
        position_ids = packed_position_ids(base, batch)
    layout, pair_ids = batch, None
    rows = plan_in_order(pair_lengths(segment_ids), row_budget) if row_budget and attention_mask is None else None
    if rows is not None and len(rows) < segment_ids.shape[0]:
        layout = merge_pairs(batch, position_ids, rows)
        position_ids, pair_ids = layout.pop("position_ids"), layout["pair_ids"]
    if attention_mask is None:
        attention_mask = packed_attention(base, layout["segment_ids"], pair_ids)
    inputs = model_inputs(layout)
    if encoder_outputs:
        # pixels were already encoded this step: feed the features, not the pixels
        for key in ("pixel_values", "pixel_values_videos"):
            inputs.pop(key, None)
        inputs["mm_encoder_outputs"] = dict(encoder_outputs)
    outputs = backbone(
        **inputs, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    )
    hidden = outputs.last_hidden_state
    prompt_ends = batch["prompt_lengths"] - 1 if pair_ids is None else layout["prompt_ends"]
    pairs, rows, cols, predecessors, is_chosen = scoring_indices(layout["segment_ids"], prompt_ends, pair_ids)
    targets = layout["input_ids"][rows, cols]
    token_logps, stats = answer_logps(head, hidden[rows, predecessors], targets, with_stats=with_stats)
    chosen = torch.zeros(segment_ids.shape[0], dtype=token_logps.dtype, device=token_logps.device)
    rejected = torch.zeros_like(chosen)
    chosen = chosen.index_add(0, pairs[is_chosen], token_logps[is_chosen])
    rejected = rejected.index_add(0, pairs[~is_chosen], token_logps[~is_chosen])
    chosen = borrow_chosen(chosen, batch)  # lean mDPO contrast rows: the chosen side is their source pair's
    encoder = {}
    for key in ("image", "video"):
        value = getattr(outputs, f"{key}_outputs", None)
        if value is not None:
            encoder[key] = value
    return PackedLogps(chosen, rejected, token_logps, pairs, is_chosen, stats, encoder or None)


# Vocabulary columns per tile of the chunked LM head (TRL's own default for its fused head): with
# TOKEN_CHUNK_SIZE tokens per tile, the largest (tokens x vocab) tensor the step holds at once.
LOGPROB_VOCAB_CHUNK = 32768
# log Σ_v p(v)² is WPO's per-token weight term (use_weighting); one more sum per tile, no gradient
_STAT_OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def chunkable_head(head) -> bool:
    """Whether ``head(x)`` is exactly ``x @ head.weight.T + head.bias``, so the chunked kernel may read the weight.

    A head wrapped by PEFT (LoRA on ``lm_head``, ``modules_to_save``), quantized, or hooked (accelerate offload,
    an FSDP unit of its own) computes something else or holds no usable weight outside its forward.
    """
    if not isinstance(head, torch.nn.Linear) or type(head).forward is not torch.nn.Linear.forward:
        return False
    if "forward" in vars(head) or head._forward_hooks or head._forward_pre_hooks:
        return False
    params = [head.weight] if head.bias is None else [head.weight, head.bias]
    return all(type(p) in (torch.Tensor, torch.nn.Parameter) and p.device.type != "meta" for p in params)


def answer_logps(head, hidden: torch.Tensor, targets: torch.Tensor, *, with_stats: bool = False,
                 chunk_size: int | None = None) -> tuple[torch.Tensor, dict]:
    """fp32 log-prob of each target under ``head(hidden)``, and (``with_stats``) detached entropy / mean logit / top-1 /
    log Σ_v p(v)².

    Through TRL's ``ChunkedLogProbFunction`` (vocabulary in tiles of ``chunk_size``, default
    ``LOGPROB_VOCAB_CHUNK``, recomputed in the backward), so no (tokens x vocab) tensor is kept for autograd.
    The full computation when the head is not a plain linear layer (:func:`chunkable_head`) or the chunk size is 0.
    """
    chunk_size = LOGPROB_VOCAB_CHUNK if chunk_size is None else chunk_size
    if chunk_size and chunkable_head(head):
        token_logps, entropy, log_sum_sq_probs, mean_logits, is_top1 = ChunkedLogProbFunction.apply(
            hidden, head.weight, head.bias, targets, 1.0, chunk_size, None, 1.0, _STAT_OUTPUTS if with_stats else ()
        )
        stats = {"entropy": entropy.detach(), "mean_logits": mean_logits, "is_top1": is_top1,
                 "log_sum_sq_probs": log_sum_sq_probs} if with_stats else {}
        return token_logps, stats
    logits = head(hidden).float()
    log_probs = logits.log_softmax(dim=-1)
    token_logps = log_probs.gather(-1, targets[:, None]).squeeze(-1)
    stats = {}
    if with_stats:
        with torch.no_grad():
            stats = {
                "entropy": -(log_probs.exp() * log_probs).sum(-1),
                "mean_logits": logits.mean(-1),
                "is_top1": logits.argmax(-1) == targets,
                "log_sum_sq_probs": torch.logsumexp(2 * log_probs, dim=-1),
            }
    return token_logps, stats


def separate_logps(model, trl_batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's layout: rows ``[prompt, chosen]`` then ``[prompt, rejected]``, full logits, shifted labels.

    ``trl_batch`` is what ``trl.trainer.dpo_trainer.DataCollatorForVisionPreference`` returns.
    """
    inputs = {k: v for k, v in trl_batch.items() if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    targets = trl_batch["input_ids"][:, 1:]
    token_logps = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
    sums = (token_logps * trl_batch["completion_mask"][:, 1:]).sum(-1)
    return sums.chunk(2)


def count_tokens(batch: dict) -> int:
    """Real tokens that go through the language model for this batch (padding excluded)."""
    if "segment_ids" in batch:
        return int((batch["segment_ids"] != SEGMENT_PAD).sum())
    return int(batch["attention_mask"].sum())
