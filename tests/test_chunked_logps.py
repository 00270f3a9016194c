"""The packed step's answer log-probs through TRL's chunked LM head (no tokens x vocab tensor kept for
autograd) equal the full computation: per-token values, stats, DPO loss and every LoRA gradient, on
tiny-qwen3-vl in fp32; a LoRA-wrapped LM head falls back to the full computation; and the peak memory
of the log-prob part, plain vs chunked, at Qwen3-VL's vocabulary (a subprocess per path, RSS peak).

Run as a script (``python tests/test_chunked_logps.py plain|chunked VOCAB HIDDEN TOKENS``) it is the
child of the memory test and prints one JSON line.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_qwen3_fp32

TOLERANCE = 1e-4
BETA = 0.1
SMALL_CHUNK = 128  # tiny-qwen3-vl's vocabulary is 935: 7 full tiles and a partial one


def _plain_stats(logits, targets):
    log_probs = logits.log_softmax(-1)
    return {"entropy": -(log_probs.exp() * log_probs).sum(-1), "mean_logits": logits.mean(-1),
            "is_top1": logits.argmax(-1) == targets, "log_sum_sq_probs": (2 * log_probs).exp().sum(-1).log()}


# --- the function alone ------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [False, True])
def test_answer_logps_chunked_equal_full_computation(bias):
    from nbtools.packing.logps import answer_logps

    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(32, 301, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator))
        if bias:
            head.bias.copy_(torch.randn(301, generator=generator))
    hidden = torch.randn(50, 32, generator=generator)
    targets = torch.randint(301, (50,), generator=generator)
    targets[:5] = head(hidden[:5]).argmax(-1)  # some top-1 hits, so is_top1 is not all False
    weights = torch.randn(50, generator=generator)  # a loss that weighs tokens differently

    results = {}
    for chunk in (0, 64):
        h = hidden.clone().requires_grad_(True)
        head.zero_grad()
        logps, stats = answer_logps(head, h, targets, with_stats=True, chunk_size=chunk)
        (logps * weights).sum().backward()
        grads = {"hidden": h.grad, "weight": head.weight.grad.clone()}
        if bias:
            grads["bias"] = head.bias.grad.clone()
        results[chunk] = logps.detach(), stats, grads
    (full, full_stats, full_grads), (chunked, chunked_stats, chunked_grads) = results[0], results[64]
    assert chunked.dtype == torch.float32 and not any(s.requires_grad for s in chunked_stats.values())
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full_stats, _plain_stats(hidden @ head.weight.T + (head.bias if bias else 0), targets))
    torch.testing.assert_close(chunked_stats["entropy"], full_stats["entropy"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked_stats["mean_logits"], full_stats["mean_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked_stats["log_sum_sq_probs"], full_stats["log_sum_sq_probs"], atol=1e-5, rtol=1e-5)
    assert torch.equal(chunked_stats["is_top1"], full_stats["is_top1"]) and full_stats["is_top1"].sum() >= 5
    assert full_grads.keys() == chunked_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(chunked_grads[name], full_grads[name], atol=1e-5, rtol=1e-5, msg=name)
    # negative check: shifted targets give other log-probs, far beyond the tolerance
    shifted, _ = answer_logps(head, hidden, targets.roll(1), chunk_size=64)
    assert (shifted - full).abs().max() > 100 * TOLERANCE


# --- the packed DPO step on a tiny model -------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return tiny_qwen3_fp32()


def _examples():
    from PIL import Image

    red, green = Image.new("RGB", (64, 96), (200, 30, 30)), Image.new("RGB", (128, 64), (20, 180, 40))
    for x in range(0, 64, 7):
        red.putpixel((x, x), (x * 3, 90, 10))

    def pair(text, chosen, rejected, images=()):
        return {"images": list(images), "prompt": [{"role": "user", "content": text}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}

    return [pair("What colour is the shape?", "It is red.", "It is a blue one, very blue.", [red]),
            pair("And this one?", "green and a bit of blue", "no", [green]),
            pair("Just text here.", "fine", "not fine at all, really")]


def _lora(model, target):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=target,
                                                                 lora_dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # away from the reference (B = 0), so the loss is not ln 2 and A gets gradients
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    return peft_model


def _step(peft_model, batch):
    from nbtools.packing import packed_dpo_step

    peft_model.zero_grad()
    result = packed_dpo_step(peft_model, copy.deepcopy(batch), beta=BETA)
    result.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    return result, grads


def _kernel_calls(monkeypatch):
    """Counts calls of TRL's chunked function from the packed path."""
    from nbtools.packing import logps

    calls = []
    apply = logps.ChunkedLogProbFunction.apply

    class Counting:
        @staticmethod
        def apply(*args):
            calls.append(args[0].shape[0])
            return apply(*args)

    monkeypatch.setattr(logps, "ChunkedLogProbFunction", Counting)
    return calls


def _largest_relative_grad_difference(got, expected):
    assert got.keys() == expected.keys() and len(expected) > 0
    worst = 0.0
    for name, want in expected.items():
        scale = want.abs().max().item()
        assert scale > 0, name  # every LoRA tensor gets a gradient, so the comparison means something
        worst = max(worst, (got[name] - want).abs().max().item() / scale)
    return worst


def test_chunked_dpo_loss_lora_gradients_and_stats_equal_full_computation(tiny, monkeypatch):
    from nbtools.packing import PackedPreferenceCollator, logps

    model, processor = tiny
    peft_model = _lora(model, r".*language_model.*\.(q_proj|v_proj)")
    batch = PackedPreferenceCollator(processor)(_examples())

    monkeypatch.setattr(logps, "LOGPROB_VOCAB_CHUNK", 0)  # the full computation
    calls = _kernel_calls(monkeypatch)
    plain, plain_grads = _step(peft_model, batch)
    assert calls == []
    monkeypatch.setattr(logps, "LOGPROB_VOCAB_CHUNK", SMALL_CHUNK)
    chunked, chunked_grads = _step(peft_model, batch)
    scored = int(plain.policy.token_logps.numel())
    assert calls == [scored, scored]  # policy and reference pass both went through the kernel

    assert abs(plain.loss.item() - 0.6931) > 1e-3  # the adapter moved the policy away from the reference
    torch.testing.assert_close(chunked.loss, plain.loss, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(chunked.policy.token_logps, plain.policy.token_logps, atol=TOLERANCE, rtol=0)
    assert _largest_relative_grad_difference(chunked_grads, plain_grads) < TOLERANCE
    assert plain.policy.stats.keys() == chunked.policy.stats.keys() == {"entropy", "mean_logits", "is_top1",
                                                                        "log_sum_sq_probs"}
    for name in ("entropy", "mean_logits", "log_sum_sq_probs"):
        torch.testing.assert_close(chunked.policy.stats[name], plain.policy.stats[name], atol=TOLERANCE, rtol=0)
    assert torch.equal(chunked.policy.stats["is_top1"], plain.policy.stats["is_top1"])
    assert plain.metrics.keys() == chunked.metrics.keys()
    for name, value in plain.metrics.items():
        assert chunked.metrics[name] == pytest.approx(value, rel=TOLERANCE, abs=TOLERANCE), name

    # negative check: the same comparison catches targets shifted by one inside the chunked path
    answer_logps = logps.answer_logps
    monkeypatch.setattr(logps, "answer_logps", lambda head, hidden, targets, **kw: answer_logps(
        head, hidden, targets.roll(1), **kw))
    shifted, shifted_grads = _step(peft_model, batch)
    assert (shifted.policy.token_logps - plain.policy.token_logps).abs().max() > 100 * TOLERANCE
    assert _largest_relative_grad_difference(shifted_grads, plain_grads) > 100 * TOLERANCE


def test_lora_on_the_lm_head_falls_back_to_the_full_computation(tiny, monkeypatch):
    """PEFT's LoRA lm_head keeps the base weight in ``.weight``: the kernel would score without the adapter."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from nbtools.packing import PackedPreferenceCollator, logps, pair_losses, separate_logps
    from nbtools.packing.logps import backbone_and_head, chunkable_head

    model, processor = tiny
    assert chunkable_head(backbone_and_head(model)[2])
    peft_model = _lora(model, r"(.*language_model.*\.(q_proj|v_proj))|lm_head")
    head = backbone_and_head(peft_model)[2]
    assert not chunkable_head(head) and hasattr(head, "lora_A")

    # expected: TRL's layout through the whole model (its lm_head forward applies the adapter)
    separate = DataCollatorForVisionPreference(processor)(_examples())
    peft_model.zero_grad()
    chosen, rejected = separate_logps(peft_model, separate)
    with torch.no_grad(), peft_model.disable_adapter():
        ref_chosen, ref_rejected = separate_logps(peft_model, separate)
    expected_loss = pair_losses(chosen, rejected, ref_chosen, ref_rejected, beta=BETA).mean()
    expected_loss.backward()
    expected_grads = {n: p.grad.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lm_head" in name for name in expected_grads)

    batch = PackedPreferenceCollator(processor)(_examples())
    monkeypatch.setattr(logps, "LOGPROB_VOCAB_CHUNK", SMALL_CHUNK)
    calls = _kernel_calls(monkeypatch)
    result, grads = _step(peft_model, batch)
    assert calls == []  # neither pass used the kernel
    torch.testing.assert_close(result.loss, expected_loss, atol=TOLERANCE, rtol=0)
    assert _largest_relative_grad_difference(grads, expected_grads) < TOLERANCE

    # negative check: forcing the kernel onto the wrapped head scores with the base weight only
    monkeypatch.setattr(logps, "chunkable_head", lambda head: True)
    with torch.no_grad():
        forced = logps.packed_logps(peft_model, copy.deepcopy(batch))
    assert (forced.chosen - chosen.detach()).abs().max() > 100 * TOLERANCE

