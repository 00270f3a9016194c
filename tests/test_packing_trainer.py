"""The trainer hook: TRL's DPOTrainer with ``_compute_loss`` routed to the packed step gives TRL's
loss and metrics on the same pairs, and trains end to end with the packed collator."""

from __future__ import annotations

import copy

import pytest
import torch

from nbtools.packing import PackedPreferenceCollator
from nbtools.packing.trainer_hook import packed_compute_loss, packing_plan

from test_packing import BETA, TOLERANCE, _lora_model, _pair, _user, batches, models  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow


def _trainer_class():
    from trl import DPOTrainer

    class PackedDPOTrainer(DPOTrainer):
        """What the project's trainer adds: packed batches go to the packed step."""

        def _compute_loss(self, model, inputs, return_outputs):
            if "segment_ids" in inputs:
                return packed_compute_loss(self, model, inputs, return_outputs)
            return super()._compute_loss(model, inputs, return_outputs)

    return PackedDPOTrainer


@pytest.fixture
def qwen3(models):
    return models["tiny-qwen3-vl"]


def _trainer(model, processor, examples, tmp_path, **config):
    from datasets import Dataset
    from trl import DPOConfig

    args = DPOConfig(output_dir=str(tmp_path), bf16=False, per_device_train_batch_size=len(examples), report_to="none",
                     max_length=None, beta=BETA, save_strategy="no", logging_steps=1, learning_rate=1e-2,
                     remove_unused_columns=False, prediction_loss_only=True, **config)
    return _trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(copy.deepcopy(examples)),
                            processing_class=processor)


@pytest.mark.parametrize("losses", [{}, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.7]},
                                    {"loss_type": ["hinge", "sft"]}], ids=["sigmoid", "sigmoid+sft", "hinge+sft"])
def test_packed_loss_and_metrics_equal_trl_own_computation(qwen3, tmp_path, losses):
    model, processor = qwen3
    examples = batches()["mixed"]
    trainer = _trainer(_lora_model(model), processor, examples, tmp_path, **losses)
    trainer.model.train()
    plain = trainer.compute_loss(trainer.model, trainer.data_collator(copy.deepcopy(examples)))
    plain_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    trainer._metrics["train"].clear()
    trainer._total_train_tokens = 0
    packed = trainer.compute_loss(trainer.model, PackedPreferenceCollator(processor)(copy.deepcopy(examples)))
    packed_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    torch.testing.assert_close(packed, plain, atol=TOLERANCE, rtol=0)
    assert packed_metrics.keys() == plain_metrics.keys()
    for name in packed_metrics.keys() - {"num_tokens"}:
        assert packed_metrics[name] == pytest.approx(plain_metrics[name], abs=1e-4), name
    assert packed_metrics["num_tokens"] < plain_metrics["num_tokens"]  # fewer tokens went through the model


def test_training_runs_with_the_packed_collator(qwen3, tmp_path, monkeypatch):
    import nbtools.packing.logps as logps_module

    model, processor = qwen3
    examples = batches()["mixed"] + batches()["two_images"][:1]
    long_answer = [{"role": "assistant", "content": "Both are bright, one green and one red, side by side. " * 3}]
    # a long pair, then two short ones that share a row of its width
    examples += [{**examples[-1], "chosen": long_answer}, _pair(_user("Yes?"), "yes", "no"), _pair(_user("No?"), "no", "y")]
    trainer = _trainer(_lora_model(model), processor, examples, tmp_path, max_steps=2)
    trainer.data_collator = PackedPreferenceCollator(processor)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    merged, merge = [], logps_module.merge_pairs
    monkeypatch.setattr(logps_module, "merge_pairs", lambda batch, *a: merged.append(batch["segment_ids"].shape[0])
                        or merge(batch, *a))
    trainer.train()
    assert merged == [len(examples)] * 4  # short pairs shared rows: policy and reference pass of both steps
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert {"rewards/accuracies", "logps/chosen"} <= set(trainer.state.log_history[0])
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed


def test_packing_plan_explains_when_packing_is_off(qwen3, tmp_path):
    from trl import DPOConfig

    model, _ = qwen3
    on = packing_plan(model, DPOConfig(output_dir=str(tmp_path), bf16=False))
    assert on.supported and "qwen3_vl" in on.note
    assert packing_plan(model, DPOConfig(output_dir=str(tmp_path), bf16=False, loss_type=["hinge"])).supported
    assert packing_plan(model, DPOConfig(output_dir=str(tmp_path), bf16=False, loss_type=["sigmoid", "sft"],
                                         loss_weights=[1.0, 0.5])).supported
    assert packing_plan(model, DPOConfig(output_dir=str(tmp_path), bf16=False, loss_type=["sigmoid", "bco_pair"],
                                         f_divergence_type="forward_kl")).supported  # every TRL 1.16 loss is packed
    # a loss type the packed step does not know (a later TRL's): TRL's own path, and the note says why
    off = packing_plan(model, DPOConfig(output_dir=str(tmp_path), bf16=False, loss_type=["sigmoid", "new_loss"]))
    assert not off.supported and "loss_type=['sigmoid', 'new_loss']" in off.note


def test_reference_pass_turns_checkpointing_off_and_back_without_deprecation_warnings(qwen3):
    import warnings

    from nbtools.packing.trainer_hook import activation_checkpointing_off

    model, _ = qwen3
    peft_model = _lora_model(model)
    base = peft_model.get_base_model()
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert base.is_activation_checkpointing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with activation_checkpointing_off(peft_model, {"use_reentrant": False}):
            assert not base.is_activation_checkpointing
        assert base.is_activation_checkpointing
        with activation_checkpointing_off(peft_model.train(), None):
            pass
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []
    base.activation_checkpointing_disable()
    with activation_checkpointing_off(peft_model):  # off stays off
        pass
    assert not base.is_activation_checkpointing
