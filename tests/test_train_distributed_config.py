"""``distributed: ddp | fsdp``: how the knob reaches the HF Trainer and accelerate (units, no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbtools.config import ConfigError, RunConfig

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fsdp_env(monkeypatch):
    # transformers writes FSDP_CPU_RAM_EFFICIENT_LOADING into the environment while reading fsdp_config
    monkeypatch.delenv("FSDP_CPU_RAM_EFFICIENT_LOADING", raising=False)


def test_ddp_leaves_the_trainer_on_its_default(tmp_path):
    from nbtools.train.runner import build_dpo_config

    args = build_dpo_config(RunConfig(train_file="t.jsonl", gradient_checkpointing=True), tmp_path, "fp32",
                            has_validation=False, on_cpu=True)
    assert not args.fsdp and args.fsdp_plugin_args is None
    assert args.activation_checkpointing is True  # the Trainer's own checkpointing, as before


@pytest.mark.parametrize("checkpointing", [True, False])
def test_fsdp_becomes_the_trainer_fsdp2_plugin(tmp_path, fsdp_env, checkpointing):
    from accelerate.utils import FullyShardedDataParallelPlugin

    from nbtools.train.runner import build_dpo_config

    cfg = RunConfig(train_file="t.jsonl", distributed="fsdp", gradient_checkpointing=checkpointing)
    args = build_dpo_config(cfg, tmp_path, "fp32", has_validation=False, on_cpu=True)  # bf16 needs a GPU here
    assert args.fsdp is True
    # checkpointing moves to FSDP's own (per wrapped layer); the Trainer's is off, or both would run
    assert args.activation_checkpointing is False
    assert args.fsdp_plugin_args == {
        "fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "cpu_ram_efficient_loading": False,
        "state_dict_type": "FULL_STATE_DICT", "activation_checkpointing": checkpointing,
        "reshard_after_forward": True,
    }
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)  # accelerate accepts them as they are
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.activation_checkpointing is checkpointing


def test_fsdp_is_refused_where_it_cannot_run():
    from nbtools.train.distributed import check_strategy

    with pytest.raises(ConfigError) as caught:
        check_strategy(RunConfig(train_file="t.jsonl", distributed="fsdp"), "cpu")
    assert caught.value.field == "distributed" and "set distributed: ddp" in str(caught.value)
    check_strategy(RunConfig(train_file="t.jsonl", distributed="ddp"), "cpu")  # ddp runs anywhere
    with pytest.raises(ConfigError, match="distributed: fsdp does not shard 4bit"):
        RunConfig(train_file="t.jsonl", distributed="fsdp", quantization="4bit")
    with pytest.raises(ConfigError, match="distributed"):
        RunConfig(train_file="t.jsonl", distributed="zero3")


def test_shipped_accelerate_configs_load_and_agree_with_the_knob():
    from accelerate.commands.config.config_args import load_config_from_file

    from nbtools.train.distributed import fsdp_config

    fsdp = load_config_from_file(str(REPO / "configs" / "accelerate_fsdp.yaml"))
    assert str(fsdp.distributed_type) in ("FSDP", "DistributedType.FSDP")
    shipped = {key.removeprefix("fsdp_"): value for key, value in fsdp.fsdp_config.items()}
    ours = fsdp_config(RunConfig(train_file="t.jsonl", distributed="fsdp", gradient_checkpointing=True))
    assert shipped.pop("offload_params") is False
    assert shipped == ours
    ddp = load_config_from_file(str(REPO / "configs" / "accelerate_ddp.yaml"))
    assert str(ddp.distributed_type) in ("MULTI_GPU", "DistributedType.MULTI_GPU")
    zero3 = load_config_from_file(str(REPO / "configs" / "accelerate_deepspeed_zero3.yaml"))
    assert zero3.deepspeed_config["zero_stage"] == 3
