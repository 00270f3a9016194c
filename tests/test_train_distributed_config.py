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
        "fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "cpu_ram_efficient_loading": True,
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


def _accelerate_launch_env(config_file: Path) -> dict:
    """The environment ``accelerate launch --config_file CONFIG_FILE`` gives each process (nothing launched)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "nbtools", "train", "r.yaml"])
    args, _, _ = _validate_launch_command(args)
    return {key: value for key, value in prepare_multi_gpu_env(args).items()
            if key.startswith(("FSDP_", "ACCELERATE_USE_"))}


def test_rank_zero_loading_is_decided_as_accelerate_will_shard(tmp_path, fsdp_env, monkeypatch):
    """Rank-zero loading only where accelerate fills the shards from rank 0: else a process trains unfilled weights."""
    from nbtools.train.distributed import rank_zero_loading
    from nbtools.train.runner import build_dpo_config

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    fsdp_args = build_dpo_config(RunConfig(train_file="t.jsonl", distributed="fsdp"), tmp_path, "fp32",
                                 has_validation=False, on_cpu=True)
    ddp_args = build_dpo_config(RunConfig(train_file="t.jsonl"), tmp_path, "fp32", has_validation=False, on_cpu=True)
    monkeypatch.delenv("FSDP_CPU_RAM_EFFICIENT_LOADING", raising=False)  # building fsdp_args wrote it
    assert rank_zero_loading(fsdp_args, "cuda") is True  # one GPU too: the model reaches it shard by shard
    assert rank_zero_loading(fsdp_args, "cpu") is False  # accelerate runs DDP on the CPU
    assert rank_zero_loading(ddp_args, "cuda") is False  # DDP: every process needs the whole model

    # accelerate launch with the shipped FSDP file and a run that kept distributed: ddp: the launcher's environment
    launched = _accelerate_launch_env(REPO / "configs" / "accelerate_fsdp.yaml")
    assert launched["ACCELERATE_USE_FSDP"] == "true" and launched["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
    for key, value in launched.items():
        monkeypatch.setenv(key, value)
    assert rank_zero_loading(ddp_args, "cuda") is True
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # a file with the setting off: every rank loads
    assert rank_zero_loading(ddp_args, "cuda") is False


def test_the_trainer_settings_exist_before_the_model_is_loaded(tmp_path, data_dir, make_pair, monkeypatch):
    """train() builds the Trainer's settings, decides rank-zero loading from them, then loads the model with it."""
    from nbtools.train import distributed, runner

    calls = []
    build = runner.build_dpo_config

    class Loaded(Exception):
        pass

    def building(*args, **kwargs):
        calls.append("settings")
        return build(*args, **kwargs)

    def deciding(args, device_type):
        calls.append(("decide", type(args).__name__, device_type))
        return True

    def loading(cfg, precision, device, rank_zero_loading=False):
        calls.append(("load", rank_zero_loading))
        raise Loaded

    monkeypatch.setattr(runner, "build_dpo_config", building)
    monkeypatch.setattr(distributed, "rank_zero_loading", deciding)
    monkeypatch.setattr(runner, "load_policy", loading)
    data_dir.image()
    train_file = data_dir.jsonl([make_pair(chosen=f"Red {i}.", rejected=f"Blue {i}.") for i in range(4)])
    cfg = RunConfig(model="tiny-qwen3-vl", train_file=str(train_file), output_dir=str(tmp_path / "run"),
                    validation_split=0.0, max_steps=1, num_workers=0)
    with pytest.raises(Loaded):
        runner.train(cfg, live=False)
    assert calls == ["settings", ("decide", "DPOConfig", "cpu"), ("load", True)]


# --- DeepSpeed ZeRO-3: refused (adapter saving is not gathered there, and it is untested) ---------------

@pytest.mark.parametrize("environ, stage", [
    ({}, None),
    ({"ACCELERATE_USE_DEEPSPEED": "false", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, None),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, 2),  # accelerate's default stage
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, 3),
    ({"ACCELERATE_USE_DEEPSPEED": "TRUE", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}, 1),
])
def test_zero_stage_is_read_as_accelerate_reads_it(environ, stage):
    from nbtools.train.distributed import deepspeed_zero_stage

    assert deepspeed_zero_stage(environ) == stage


def test_a_deepspeed_json_decides_the_stage_over_the_variable(tmp_path):
    from nbtools.train.distributed import check_deepspeed, deepspeed_zero_stage

    ds = tmp_path / "ds.json"
    environ = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2",
               "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ds)}
    ds.write_text('{"zero_optimization": {"stage": 3}}')
    assert deepspeed_zero_stage(environ) == 3
    with pytest.raises(ConfigError, match="ZeRO-3"):
        check_deepspeed(RunConfig(train_file="t.jsonl"), environ)
    ds.write_text('{"zero_optimization": {"stage": "auto"}}')
    assert deepspeed_zero_stage(environ) == 2  # "auto" leaves the variable's stage
    ds.write_text("not json")
    assert deepspeed_zero_stage(environ) == 2  # DeepSpeed itself reports a broken file
    check_deepspeed(RunConfig(train_file="t.jsonl"), environ)  # ZeRO-2 is not refused


def _zero3_launch_environment() -> dict:
    """The variables ``accelerate launch --config_file configs/accelerate_deepspeed_zero3.yaml`` gives each process
    (accelerate's own code; only its check that DeepSpeed is installed is skipped)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    parsed = launch_command_parser().parse_args(["--config_file", str(REPO / "configs" /
                                                                      "accelerate_deepspeed_zero3.yaml"),
                                                 "-m", "nbtools", "train", "run.yaml"])
    args, defaults, _ = _validate_launch_command(parsed)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command sets it
    return {k: v for k, v in prepare_deepspeed_cmd_env(args)[1].items() if k.startswith("ACCELERATE_")}


def test_train_under_the_shipped_zero3_config_stops_before_any_model_loads(tmp_path):
    import os
    import subprocess
    import sys

    launched = _zero3_launch_environment()
    assert launched["ACCELERATE_USE_DEEPSPEED"] == "true" and launched["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    cache = tmp_path / "cache"  # empty: the tiny model would be built here if anything loaded it
    cache.mkdir()
    config = RunConfig(model="tiny-qwen3-vl", train_file=str(REPO / "data_samples" / "shapes" / "train.jsonl"),
                       output_dir=str(tmp_path / "run"), max_steps=1).to_yaml(tmp_path / "run.yaml")
    env = {**os.environ, **launched, "HF_HUB_OFFLINE": "1", "NBTOOLS_CACHE_DIR": str(cache),
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "nbtools", "train", str(config)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert "distributed: the accelerate config runs DeepSpeed ZeRO-3" in errors[0]
    assert "does not gather" in errors[0] and "configs/accelerate_ddp.yaml" in errors[0]
    assert not (tmp_path / "run").exists() and not any(cache.iterdir())  # no run folder, no model, no data pass
