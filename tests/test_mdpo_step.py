"""mDPO terms in the packed step, on the tiny Qwen3-VL (fp32): the loss adds each term over its own rows,
TRL's metrics cover only the real pairs, and the anchor's gradient raises the chosen reward."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_qwen3_fp32

from nbtools.packing import PackedPreferenceCollator, packed_dpo_step
from nbtools.packing.contrast import AUXILIARY_ROWS, auxiliary_rows, with_auxiliary
from nbtools.packing.step import reference_logps

pytestmark = pytest.mark.slow

BETA = 0.1


@pytest.fixture(scope="module")
def qwen3():
    return tiny_qwen3_fp32()


def _lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)  # lora_A's initialisation
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", lora_dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # away from the reference, so rewards are not all zero
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    return peft_model


def _examples():
    from test_mdpo import _example, _image

    return [
        _example(chosen="It is red.", rejected="It is a blue one, very blue."),
        _example(question="Which shape is it?", chosen="A square.", rejected="No idea.",
                 images=[_image((20, 180, 40), size=(64, 48))]),
    ]


def _batch(processor, examples):
    batch = PackedPreferenceCollator(processor)(copy.deepcopy(examples))
    batch[AUXILIARY_ROWS] = auxiliary_rows(examples)
    return batch


def test_step_adds_each_term_over_its_rows_and_trl_metrics_cover_only_the_real_pairs(qwen3):
    model, processor = qwen3
    peft_model = _lora(model)
    examples = _examples()
    expanded = with_auxiliary(examples, seed=1)
    assert len(expanded) == 4
    with torch.no_grad():
        result = packed_dpo_step(peft_model, _batch(processor, expanded), beta=BETA,
                                 loss_type=["sigmoid", "mdpo_conditional", "mdpo_anchor"], loss_weights=[1.0, 0.5, 2.0])
        plain = packed_dpo_step(peft_model, _batch(processor, examples), beta=BETA, loss_type=["sigmoid"])

    aux = result.auxiliary
    assert aux.tolist() == [False, False, True, True]
    chosen, rejected = result.policy.chosen, result.policy.rejected
    conditional = -F.logsigmoid(BETA * ((chosen - result.ref_chosen_logps) - (rejected - result.ref_rejected_logps)))
    anchor = -F.logsigmoid(BETA * (chosen - result.ref_chosen_logps))
    expected = plain.loss + 0.5 * conditional[aux].mean() + 2.0 * anchor[~aux].mean()
    torch.testing.assert_close(result.loss, expected, atol=1e-5, rtol=0)
    assert abs(anchor[~aux].mean().item() - 0.6931) > 1e-4  # the adapter moved the policy: a real check
    # TRL's names describe the real pairs only: the same values as a batch without the contrast rows
    trl_names = plain.metrics.keys()
    assert trl_names <= result.metrics.keys()
    for name in trl_names:
        assert result.metrics[name] == pytest.approx(plain.metrics[name], abs=1e-4), name
    assert result.metrics["mdpo/conditional"] == pytest.approx(conditional[aux].mean().item(), abs=1e-5)
    assert result.metrics["mdpo/anchor"] == pytest.approx(anchor[~aux].mean().item(), abs=1e-5)
    assert 0.0 <= result.metrics["mdpo/conditional_accuracy"] <= 1.0
    # negative check: without the flag the contrast rows would count as real pairs and change the metrics
    unflagged = PackedPreferenceCollator(processor)(copy.deepcopy(expanded))
    with torch.no_grad():
        mixed = packed_dpo_step(peft_model, unflagged, beta=BETA, loss_type=["sigmoid"])
    assert mixed.metrics["rewards/margins"] != pytest.approx(plain.metrics["rewards/margins"], abs=1e-4)


def _chosen_reward(peft_model, batch) -> float:
    with torch.no_grad():
        policy = packed_dpo_step(peft_model, batch, beta=BETA, loss_type=["sigmoid"]).policy.chosen
        reference = reference_logps(peft_model, batch).chosen
    return (BETA * (policy - reference)).mean().item()


def _move(peft_model, batch, step: float) -> float:
    """One normalised gradient step of the anchor term alone (``step`` < 0 climbs the loss); the new chosen reward."""
    peft_model.zero_grad()
    packed_dpo_step(peft_model, batch, beta=BETA, loss_type=["mdpo_anchor"]).loss.backward()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
    with torch.no_grad():
        for p in params:
            p -= step * p.grad / norm
    return _chosen_reward(peft_model, batch)


def test_the_anchor_gradient_raises_the_chosen_reward(qwen3):
    model, processor = qwen3
    batch = _batch(processor, _examples())
    descended, climbed = _lora(model), _lora(model)
    start = _chosen_reward(descended, batch)
    assert start == pytest.approx(_chosen_reward(climbed, batch), abs=1e-7)  # same start for both
    up = _move(descended, batch, 0.05)
    down = _move(climbed, batch, -0.05)
    print(f"chosen reward {start:.4f} -> {up:.4f} (anchor descended) / {down:.4f} (climbed)")
    assert up > start + 0.01, (start, up)
    assert down < start - 0.01, (start, down)  # the opposite step lowers it: the check can fail


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "full"])
def test_contrast_rows_score_the_chosen_answer_with_real_and_with_corrupted_images(qwen3, lean):
    """Each contrast row scores the chosen answer with the real images (its chosen side: the real pair's chosen
    log-prob) and with corrupted ones (its rejected side). Full layout: [prompt + real images, chosen, prompt +
    corrupted images, chosen]; lean (the default): [prompt + corrupted images, chosen], the chosen side taken from
    the real pair's row."""
    from test_mdpo import _example, _image

    model, processor = qwen3
    examples = _examples() + [_example(question="Is it the same?", chosen="It is.", rejected="It is not.",
                                       rejected_images=[_image((10, 10, 10))])]
    expanded = with_auxiliary(examples, seed=5)
    batch = PackedPreferenceCollator(processor, lean_auxiliary=lean)(copy.deepcopy(expanded))
    batch[AUXILIARY_ROWS] = auxiliary_rows(expanded)
    full_prompt = batch["prompt_lengths"] + batch["chosen_prompt_lengths"]
    if lean:
        assert batch["auxiliary_sources"].tolist() == [-1, -1, -1, 0, 1, 2]
        assert batch["chosen_lengths"][3:].tolist() == [0, 0, 0]  # no chosen side of their own
        assert batch["rejected_lengths"][3:].tolist() == batch["chosen_lengths"][:3].tolist()
        # the whole prompt, with the corrupted images (crops resized back: as many tokens as the real ones)
        assert batch["prompt_lengths"][3:].tolist() == full_prompt[:3].tolist()
        assert (batch["chosen_prompt_lengths"][3:] == 0).all() and (batch["rejected_prompt_lengths"][3:] == 0).all()
    else:
        assert "auxiliary_sources" not in batch
        assert full_prompt[3:].tolist() == full_prompt[:3].tolist()  # the real-image side is the real pair's prompt
        # the corrupted images (crops resized back) cost as many tokens as the real ones
        assert batch["rejected_prompt_lengths"][3:].tolist() == batch["chosen_prompt_lengths"][3:].tolist()
        assert (batch["rejected_prompt_lengths"][3:] > 0).all()
    with torch.no_grad():
        policy = packed_dpo_step(model, batch, beta=BETA, loss_type=["sigmoid", "mdpo_conditional"]).policy
    real, contrast = slice(0, 3), slice(3, 6)
    torch.testing.assert_close(policy.chosen[contrast], policy.chosen[real], atol=1e-4, rtol=0)
    # the answer's log-prob moves when only the images change: the corrupted pixels reach the model
    gap = (policy.rejected[contrast] - policy.chosen[contrast]).abs()
    print("log-prob change from the corrupted images:", gap.tolist())
    assert (gap > 1e-3).all(), gap
    # the row with rejected_images contrasts with those, not with a crop: same as scoring them directly
    direct = dict(examples[2], rejected=examples[2]["chosen"])
    alone = packed_dpo_step(model, PackedPreferenceCollator(processor)([direct]), beta=BETA).policy
    torch.testing.assert_close(policy.rejected[5:6], alone.rejected, atol=1e-4, rtol=0)


def test_contrast_pairs_have_their_own_reference_cache_keys(qwen3):
    from nbtools.packing.ref_cache import pair_key, reference_fingerprint

    _, processor = qwen3
    fingerprint = reference_fingerprint("tiny-qwen3-vl", processor, max_pixels=None, dtype="float32")
    example = _examples()[0]
    aux = with_auxiliary([example], seed=1)[1]
    same = with_auxiliary([copy.deepcopy(example)], seed=1)[1]
    other_seed = with_auxiliary([example], seed=2)[1]
    assert pair_key(aux, fingerprint) == pair_key(same, fingerprint)  # deterministic: cacheable
    assert pair_key(aux, fingerprint) != pair_key(example, fingerprint)
    assert pair_key(aux, fingerprint) != pair_key(other_seed, fingerprint)
    # the crop's description is part of the key even where the pixels would not tell
    relabelled = dict(aux, image_contrast=aux["image_contrast"].replace("seed 1", "seed 9"))
    assert pair_key(relabelled, fingerprint) != pair_key(aux, fingerprint)
