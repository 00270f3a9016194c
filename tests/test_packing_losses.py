"""Every loss type of TRL 1.16's DPOTrainer, alone and weighted, with label_smoothing, discopop_tau,
f_divergence_type, ld_alpha and use_weighting: the packed step's loss, its gradient with respect to each
scored token's log-prob, and TRL's metrics equal what ``DPOTrainer._compute_loss`` computes on the same
pairs (fp32, within 1e-4), on the four packed families; one trainer per family, switching settings.

Both sides run their model passes once per family: the policy and reference passes are memoized (keyed by
whether autograd is on), and each case recomputes only the loss on them. The passes themselves are the
real ones (test_packing.py checks that their log-probs and LoRA gradients agree); one case per family
also compares the LoRA gradients through the whole model.
"""

from __future__ import annotations

import copy

import pytest
import torch

import nbtools.packing.step as step_module
from nbtools.packing import PackedPreferenceCollator
from nbtools.packing.loss import PACKED_LOSS_TYPES, LossOptions, length_desensitized, packed_loss, pair_losses
from nbtools.packing.trainer_hook import packing_plan

from test_packing import BETA, FAMILIES, TOLERANCE, _lora_model, batches, models  # noqa: F401  (session fixture)
from test_packing_trainer import _trainer_class

# TRL's defaults for the settings a case does not name (the trainer is switched back to them between cases)
DEFAULTS = {"loss_type": ["sigmoid"], "loss_weights": None, "label_smoothing": 0.0, "discopop_tau": 0.05,
            "f_divergence_type": "reverse_kl", "f_alpha_divergence_coef": 0.5, "ld_alpha": None,
            "use_weighting": False}
LOSS_RTOL = 2e-6
SMOOTHING = {"exo_pair": 1e-3, "robust": 0.1, "aot": 0.1, "aot_unpaired": 0.1}
CASES = {
    # each loss type alone (with the label smoothing its definition uses, where it has one)
    **{t: {"loss_type": [t], **({"label_smoothing": SMOOTHING[t]} if t in SMOOTHING else {})}
       for t in PACKED_LOSS_TYPES},
    "aot_unsmoothed": {"loss_type": ["aot"]},
    "discopop_tau_0.2": {"loss_type": ["discopop"], "discopop_tau": 0.2},
    # weighted: InternVL's MPO, RPO, and everything at once
    "mpo": {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},
    "rpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]},
    "all": {"loss_type": list(PACKED_LOSS_TYPES), "loss_weights": [0.1 * (i + 1) for i in range(15)],
            "label_smoothing": 0.05},
    # f-divergences on the losses they apply to
    "forward_kl": {"loss_type": ["sigmoid", "hinge", "sft"], "f_divergence_type": "forward_kl"},
    "js_divergence": {"loss_type": ["ipo", "sigmoid_norm", "robust"], "f_divergence_type": "js_divergence",
                      "label_smoothing": 0.1},
    "alpha_divergence": {"loss_type": ["exo_pair", "discopop", "sigmoid"], "f_divergence_type": "alpha_divergence",
                         "f_alpha_divergence_coef": 0.3, "label_smoothing": 0.01},
    # LD-DPO and WPO
    "ld_alpha": {"loss_type": ["sigmoid", "ipo", "aot", "nca_pair", "sft"], "ld_alpha": 0.4},
    "ld_alpha_0": {"loss_type": ["apo_zero", "sppo_hard"], "ld_alpha": 0.0},
    "use_weighting": {"loss_type": ["sigmoid", "bco_pair", "robust", "apo_down"], "use_weighting": True,
                      "label_smoothing": 0.2},
    "everything_together": {"loss_type": ["sigmoid", "ipo", "robust"], "loss_weights": [1.0, 0.5, 0.3],
                            "f_divergence_type": "js_divergence", "ld_alpha": 0.6, "use_weighting": True,
                            "label_smoothing": 0.1},
}
TRAINER_ATTRIBUTES = ("loss_weights", "label_smoothing", "f_divergence_type", "f_alpha_divergence_coef", "ld_alpha",
                      "use_weighting")


def _trainer(model, processor, examples, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig

    # use_weighting at construction: TRL's fused LM head then also returns log Σ p², which WPO cases read
    args = DPOConfig(output_dir=str(tmp_path), bf16=False, per_device_train_batch_size=len(examples), report_to="none",
                     max_length=None, beta=BETA, save_strategy="no", remove_unused_columns=False,
                     prediction_loss_only=True, use_weighting=True)
    trainer = _trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(copy.deepcopy(examples)),
                               processing_class=processor)
    # TRL keeps the adapter it is given as the reference ("ref"): move the trained one away from it
    generator = torch.Generator().manual_seed(1)
    for name, parameter in trainer.model.named_parameters():
        if "lora_B.default" in name:
            parameter.data += torch.randn(parameter.shape, generator=generator) * 0.05
    trainer.model.train()
    return trainer


def _configure(trainer, case: dict) -> None:
    """Switch the trainer's settings the way DPOTrainer.__init__ would have set them (attributes and args)."""
    settings = {**DEFAULTS, **case}
    trainer.loss_types = list(settings["loss_type"])
    trainer.args.loss_type = list(settings["loss_type"])
    weights = settings["loss_weights"]
    settings["loss_weights"] = list(weights) if weights else [1.0] * len(trainer.loss_types)
    for name in TRAINER_ATTRIBUTES:
        setattr(trainer, name, settings[name])
    for name in ("label_smoothing", "discopop_tau", "f_divergence_type", "f_alpha_divergence_coef", "ld_alpha",
                 "use_weighting"):
        setattr(trainer.args, name, settings[name])
    trainer.args.loss_weights = weights


class _Memo:
    """Calls ``function`` once per autograd mode (policy pass: on; reference pass: off) and replays the result."""

    def __init__(self, function):
        self.function, self.results, self.calls = function, {}, 0

    def __call__(self, *args, **kwargs):
        key = torch.is_grad_enabled()
        if key not in self.results:
            self.calls += 1
            self.results[key] = self.function(*args, **kwargs)
        return self.results[key]


def _trl_runs(trainer, batch, monkeypatch):
    """Per case: (loss, d loss / d per-token log-probs of the scored tokens, metrics), from TRL's own code."""
    memo = _Memo(trainer.model.forward)
    monkeypatch.setattr(trainer.model, "forward", memo)
    results = {}
    mask = batch["completion_mask"][:, 1:].bool()
    for name, case in CASES.items():
        _configure(trainer, case)
        trainer._metrics["train"].clear()
        loss = trainer._compute_loss(trainer.model, batch, False)
        log_probs = memo.results[True].log_probs
        (grad,) = torch.autograd.grad(loss, log_probs, retain_graph=True)
        chosen, rejected = grad[:, -mask.shape[1]:].chunk(2)
        mask_chosen, mask_rejected = mask.chunk(2)
        per_answer = [g[m] for pair in range(chosen.shape[0])
                      for g, m in ((chosen[pair], mask_chosen[pair]), (rejected[pair], mask_rejected[pair]))]
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
        results[name] = loss.detach(), torch.cat(per_answer), metrics
    monkeypatch.undo()
    assert memo.calls == 2  # one policy and one reference forward for all the cases
    return results


def _packed_runs(trainer, batch, monkeypatch):
    """The same through the packed step (trainer hook, packed_dpo_step, nbtools.packing.loss)."""
    memo = _Memo(step_module.packed_logps)
    monkeypatch.setattr(step_module, "packed_logps", memo)
    monkeypatch.setattr(step_module, "encode_images", _Memo(step_module.encode_images))  # frozen image features
    results = {}
    for name, case in CASES.items():
        _configure(trainer, case)
        trainer._metrics["train"].clear()
        loss = trainer._compute_loss(trainer.model, batch, False)
        policy = memo.results[True]
        (grad,) = torch.autograd.grad(loss, policy.token_logps, retain_graph=True)
        # answers in TRL's order (pair by pair, chosen then rejected), tokens in their order within each answer
        order = sorted(range(grad.numel()), key=lambda i: (int(policy.token_rows[i]), not bool(policy.token_is_chosen[i])))
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
        results[name] = loss.detach(), grad[order], metrics
    monkeypatch.undo()
    assert memo.calls == 2
    return results


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_loss_type_equals_trl_on_the_same_pairs(models, family, tmp_path, monkeypatch):
    model, processor = models[family]
    examples = batches()["mixed"]
    trainer = _trainer(_lora_model(model), processor, examples, tmp_path)
    trl = _trl_runs(trainer, trainer.data_collator(copy.deepcopy(examples)), monkeypatch)
    packed = _packed_runs(trainer, PackedPreferenceCollator(processor)(copy.deepcopy(examples)), monkeypatch)

    differences = {}
    for name in CASES:
        (trl_loss, trl_grad, trl_metrics), (loss, grad, metrics) = trl[name], packed[name]
        assert torch.isfinite(trl_loss), name
        differences[name] = max(abs(loss - trl_loss).item(), (grad - trl_grad).abs().max().item())
        # 1e-4, and a few float32 steps of the value itself: sppo_hard's and ipo's squares reach ~50 at beta 0.1,
        # where the two layouts' sums (equal to ~1e-6 relative) move the loss by up to ~1e-4
        torch.testing.assert_close(loss, trl_loss, atol=TOLERANCE, rtol=LOSS_RTOL, msg=name)
        assert grad.shape == trl_grad.shape and trl_grad.abs().max() > 0, name
        torch.testing.assert_close(grad, trl_grad, atol=TOLERANCE, rtol=0, msg=name)
        assert metrics.keys() == trl_metrics.keys(), name
        for metric, value in metrics.items():
            assert value == pytest.approx(trl_metrics[metric], abs=TOLERANCE), (name, metric)
    print(f"\n{family}: largest |packed - TRL| (loss, token gradients) per case:",
          ", ".join(f"{name} {value:.1e}" for name, value in differences.items()))
    # the cases differ from each other: a switch that did not reach the loss would pass unnoticed
    values = [round(trl[name][0].item(), 6) for name in CASES]
    assert len(set(values)) >= len(CASES) - 2


@pytest.mark.slow
def test_weighted_losses_give_trl_lora_gradients(models, tmp_path):
    """One pass through the whole model each way (no memo): LoRA gradients of a combination of every setting."""
    model, processor = models["tiny-qwen3-vl"]
    examples = batches()["mixed"]
    trainer = _trainer(_lora_model(model), processor, examples, tmp_path)
    _configure(trainer, {"loss_type": ["sigmoid", "bco_pair", "sft", "nca_pair"], "loss_weights": [0.8, 0.2, 1.0, 0.5],
                         "ld_alpha": 0.5, "use_weighting": False})
    grads = []
    for batch in (trainer.data_collator(copy.deepcopy(examples)), PackedPreferenceCollator(processor)(copy.deepcopy(examples))):
        trainer.model.zero_grad()
        trainer._compute_loss(trainer.model, batch, False).backward()
        grads.append({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad})
    expected, got = grads
    assert expected.keys() == got.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=TOLERANCE, rtol=1e-3, msg=name)


# --- without a model -----------------------------------------------------------------------------

def _values(n=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [-(torch.rand(n, generator=generator) * 20 + 1) for _ in range(4)]


def test_loss_types_follow_their_definitions():
    """A few loss types written out by hand from their papers' formulas, on made-up sums."""
    chosen, rejected, ref_chosen, ref_rejected = _values()
    rw, rl, beta = chosen - ref_chosen, rejected - ref_rejected, 0.3
    sig = torch.sigmoid

    def loss(kind, **options):
        return pair_losses(chosen, rejected, ref_chosen, ref_rejected, beta=beta, loss_type=kind,
                           options=LossOptions(**options))

    torch.testing.assert_close(loss("sigmoid"), -torch.log(sig(beta * (rw - rl))))
    torch.testing.assert_close(loss("bco_pair"), -torch.log(sig(beta * rw)) - torch.log(1 - sig(beta * rl)))
    torch.testing.assert_close(loss("apo_zero"), 1 - sig(beta * rw) + sig(beta * rl))
    eps = 0.2
    p_w = sig(beta * (rw - rl))  # EXO: KL between the model's two-answer distribution and (1 - eps, eps)
    torch.testing.assert_close(loss("exo_pair", label_smoothing=eps),
                               p_w * torch.log(p_w / (1 - eps)) + (1 - p_w) * torch.log((1 - p_w) / eps))
    # robust DPO is an unbiased estimate: averaged over flips with probability eps it gives the clean loss
    clean = -torch.log(sig(beta * (rw - rl)))
    flipped = -torch.log(sig(-beta * (rw - rl)))
    robust_chosen, robust_flipped = loss("robust", label_smoothing=eps), (
        (1 - eps) * flipped - eps * clean) / (1 - 2 * eps)
    torch.testing.assert_close((1 - eps) * robust_chosen + eps * robust_flipped, clean)
    # aot on an already sorted batch with a constant reference margin is plain DPO
    order = torch.argsort(chosen - rejected)
    aot = pair_losses(chosen[order], rejected[order], torch.zeros(5), torch.zeros(5), beta=beta, loss_type="aot")
    torch.testing.assert_close(aot, -torch.log(sig(beta * (chosen - rejected)[order])))


def test_options_are_checked():
    chosen, rejected, ref_chosen, ref_rejected = _values()
    lengths = torch.full((5,), 4)
    with pytest.raises(ValueError, match="label_smoothing > 0"):
        pair_losses(chosen, rejected, ref_chosen, ref_rejected, beta=0.1, loss_type="exo_pair")
    with pytest.raises(ValueError, match="does not apply to the bco_pair loss"):
        pair_losses(chosen, rejected, ref_chosen, ref_rejected, beta=0.1, loss_type="bco_pair",
                    options=LossOptions(f_divergence_type="forward_kl"))
    with pytest.raises(ValueError, match="cannot weight the aot, sft loss"):
        packed_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.1, chosen_lengths=lengths,
                    rejected_lengths=lengths, loss_types=["sigmoid", "aot", "sft"], pair_weights=torch.ones(5))


def test_length_desensitized_sums_keep_the_shared_part_and_scale_the_tail():
    # pair 0: chosen 3 tokens, rejected 1; pair 1: chosen 2, rejected 4 (tokens interleaved as merged rows give them)
    rows = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    is_chosen = torch.tensor([True, True, True, False, True, True, False, False, False, False])
    logps = -torch.arange(1.0, 11.0)
    chosen, rejected = length_desensitized(logps, rows, is_chosen, 2, 0.25)
    torch.testing.assert_close(chosen, torch.tensor([-1 - 0.25 * (2 + 3), -5 - 6.0]))
    torch.testing.assert_close(rejected, torch.tensor([-4.0, -7 - 8 - 0.25 * (9 + 10)]))
    plain = length_desensitized(logps, rows, is_chosen, 2, 1.0)
    torch.testing.assert_close(plain[0], torch.tensor([-6.0, -11.0]))


def test_packing_plan_packs_every_trl_loss_and_setting(models, tmp_path):
    from trl import DPOConfig

    model, _ = models["tiny-qwen3-vl"]
    for settings in ({"loss_type": list(PACKED_LOSS_TYPES)}, {"f_divergence_type": "forward_kl"}, {"ld_alpha": 0.5},
                     {"use_weighting": True}):
        plan = packing_plan(model, DPOConfig(output_dir=str(tmp_path), bf16=False, **settings))
        assert plan.supported, (settings, plan.note)
def test_loss_options_read_trl_and_run_configs(tmp_path):
    from trl import DPOConfig

    from nbtools.config import RunConfig

    args = DPOConfig(output_dir=str(tmp_path), bf16=False, label_smoothing=0.2, discopop_tau=0.1, ld_alpha=0.3)
    assert LossOptions.of(args) == LossOptions(label_smoothing=0.2, discopop_tau=0.1, ld_alpha=0.3)
    config = RunConfig(label_smoothing=0.1, use_weighting=True)
    assert LossOptions.of(config) == LossOptions(label_smoothing=0.1, use_weighting=True)
    assert LossOptions.of(None) == LossOptions() == LossOptions.of({})


@pytest.mark.slow
@pytest.mark.parametrize("loss_type, options", [
    ("robust", {"label_smoothing": 0.1}), ("aot", {}), ("bco_pair", {"use_weighting": True}),
    ("sigmoid_norm", {"ld_alpha": 0.5, "f_divergence_type": "forward_kl"}),
], ids=["robust", "aot", "bco_pair+wpo", "sigmoid_norm+ld+forward_kl"])
def test_mdpo_terms_add_to_every_loss(models, loss_type, options):
    """The step with image-contrast rows: the TRL loss of the real pairs alone, plus each mDPO term over its rows."""
    import torch.nn.functional as F

    from nbtools.packing import packed_dpo_step
    from nbtools.packing.contrast import with_auxiliary
    from test_mdpo_step import _batch, _examples, _lora

    model, processor = models["tiny-qwen3-vl"]
    peft_model = _lora(model)
    examples = _examples()
    with torch.no_grad():
        result = packed_dpo_step(peft_model, _batch(processor, with_auxiliary(examples, seed=1)), beta=BETA,
                                 loss_type=[loss_type, "mdpo_conditional", "mdpo_anchor"], loss_weights=[1.0, 0.5, 2.0],
                                 loss_options=options)
        plain = packed_dpo_step(peft_model, _batch(processor, examples), beta=BETA, loss_type=[loss_type],
                                loss_options=options)
    aux = result.auxiliary
    assert aux.tolist() == [False, False, True, True]
    chosen, rejected = result.policy.chosen, result.policy.rejected
    conditional = -F.logsigmoid(BETA * ((chosen - result.ref_chosen_logps) - (rejected - result.ref_rejected_logps)))
    anchor = -F.logsigmoid(BETA * (chosen - result.ref_chosen_logps))
    torch.testing.assert_close(chosen[~aux], plain.policy.chosen, atol=TOLERANCE, rtol=0)
    expected = plain.loss + 0.5 * conditional[aux].mean() + 2.0 * anchor[~aux].mean()
    torch.testing.assert_close(result.loss, expected, atol=TOLERANCE, rtol=0)
