"""attn_implementation: an installed flash-attn never turns packing off; impossible kernels are refused up front.

The GPU machine is faked (flash-attn "installed", a CUDA device name, the block-mask module findable or
not): what is tested is the decision and that the model is loaded with it, not the kernels themselves.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from nbtools.config import ATTENTION_CHOICES, ConfigError, RunConfig
from nbtools.packing.support import (
    BLOCK_MASK_ATTENTION,
    BLOCK_MASK_MODULE,
    block_mask_available,
    packing_supported,
    resolve_attention,
)

FLASH_WITH_PACKING = ("attn_implementation: flash_attention_2 cannot run packed pairs: they need a 4-D attention "
                      "mask, which it does not take (fix: set attn_implementation: auto or sdpa, or packing: false)")
BLOCK_MASK_ON_CPU = ("attn_implementation: the block-mask kernel (FlexAttention) needs a CUDA GPU: torch has no "
                     "FlexAttention backward pass on the CPU, and this run is on the CPU (fix: set "
                     "attn_implementation: auto or sdpa)")


@pytest.fixture
def gpu_machine_with_flash(monkeypatch):
    """importlib.util.find_spec as on a GPU machine with flash-attn; ``.block_mask(True)`` makes the kernel findable."""
    real_find_spec = importlib.util.find_spec
    state = {"block_mask": False}

    def find_spec(name, package=None):
        if name == "flash_attn":
            return importlib.machinery.ModuleSpec("flash_attn", None)
        if name == BLOCK_MASK_MODULE:
            return importlib.machinery.ModuleSpec(name, None) if state["block_mask"] else None
        return real_find_spec(name, package)

    def block_mask(findable: bool):
        state["block_mask"] = findable
        if findable:  # what the real module exposes (imported to register the kernel)
            module = types.ModuleType(BLOCK_MASK_MODULE)
            module.BLOCK_MASK_ATTENTION = BLOCK_MASK_ATTENTION
            monkeypatch.setitem(sys.modules, BLOCK_MASK_MODULE, module)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return SimpleNamespace(real_find_spec=real_find_spec, fake_find_spec=find_spec, block_mask=block_mask)


@pytest.mark.parametrize("block_mask", [True, False], ids=["block-mask-available", "no-block-mask"])
def test_auto_with_packing_on_cuda_never_picks_flash(block_mask):
    choice = resolve_attention("auto", "cuda", torch.bfloat16, True, flash_installed=True, block_mask=block_mask)
    assert choice.implementation == (BLOCK_MASK_ATTENTION if block_mask else "sdpa")
    assert "flash" not in choice.note
    config = SimpleNamespace(model_type="qwen3_vl", _attn_implementation=choice.implementation)
    assert packing_supported(config).supported


def test_auto_elsewhere():
    assert resolve_attention("auto", "cpu", torch.float32, True, flash_installed=True,
                             block_mask=True).implementation == "sdpa"
    # packing off: today's choice (flash when installed on CUDA in half precision)
    assert resolve_attention("auto", "cuda", torch.float16, False, flash_installed=True).implementation == \
        "flash_attention_2"
    assert resolve_attention("auto", "cuda", torch.float32, False, flash_installed=True).implementation == "sdpa"
    assert resolve_attention("auto", "cuda", torch.bfloat16, False, flash_installed=False).implementation == "sdpa"
    assert resolve_attention("block-mask", "cuda", torch.bfloat16, True, block_mask=True).implementation == \
        BLOCK_MASK_ATTENTION


def test_flash_with_packing_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as caught:
        RunConfig(attn_implementation="flash_attention_2")
    assert str(caught.value) == FLASH_WITH_PACKING
    with pytest.raises(ConfigError) as caught:
        resolve_attention("flash_attention_2", "cuda", torch.bfloat16, True, flash_installed=True)
    assert str(caught.value) == FLASH_WITH_PACKING
    assert RunConfig(attn_implementation="flash_attention_2", packing=False).attn_implementation == "flash_attention_2"


def test_block_mask_is_refused_on_cpu_and_without_packing():
    with pytest.raises(ConfigError) as caught:
        resolve_attention("block-mask", "cpu", torch.float32, True, block_mask=True)
    assert str(caught.value) == BLOCK_MASK_ON_CPU
    with pytest.raises(ConfigError, match="needs nbtools.packing.block_mask, which this installation"):
        resolve_attention("block-mask", "cuda", torch.bfloat16, True, block_mask=False)
    with pytest.raises(ConfigError, match="block-mask kernel runs packed pairs only"):
        RunConfig(attn_implementation="block-mask", packing=False)


def test_train_refuses_block_mask_on_cpu_before_the_run_folder(tmp_path):
    from nbtools.train import train

    train_file = tmp_path / "train.jsonl"
    train_file.write_text("")
    run_dir = tmp_path / "run"
    config = RunConfig(train_file=str(train_file), output_dir=str(run_dir), attn_implementation="block-mask")
    with pytest.raises(ConfigError) as caught:
        train(config, live=False)
    assert str(caught.value) == BLOCK_MASK_ON_CPU
    assert not run_dir.exists()


def test_unknown_choice_lists_the_choices():
    with pytest.raises(ConfigError) as caught:
        RunConfig(attn_implementation="nonsense")
    choices = ", ".join(ATTENTION_CHOICES)
    assert str(caught.value) == f"attn_implementation: 'nonsense' is not one of {choices} (fix: use one of: {choices})"
    assert ATTENTION_CHOICES == ("auto", "sdpa", "block-mask", "flash_attention_2", "eager")


@pytest.mark.parametrize("value", ["eager", "block-mask", "sdpa"])
def test_yaml_and_form_round_trip(tmp_path, value):
    from nbtools.widgets import config_from_form, form_from_config

    config = RunConfig(attn_implementation=value)
    path = config.to_yaml(tmp_path / "c.yaml")
    assert f"\nattn_implementation: {value}\n" in path.read_text()
    assert RunConfig.from_yaml(path) == config
    form = form_from_config(config, estimator=lambda config, gib=None: "")
    control = form.fields["attn_implementation"].control
    assert tuple(control.options) == ATTENTION_CHOICES and control.value == value
    assert config_from_form(form) == config
    advanced = form.sections.children[2]
    assert any(box is form.fields["attn_implementation"].box for box in advanced.children)


def test_block_mask_counts_only_when_the_module_registers_the_kernel(gpu_machine_with_flash, monkeypatch):
    assert not block_mask_available()
    gpu_machine_with_flash.block_mask(True)
    assert block_mask_available()
    monkeypatch.setattr(sys.modules[BLOCK_MASK_MODULE], "BLOCK_MASK_ATTENTION", "something_else")
    assert not block_mask_available()


@pytest.mark.parametrize("block_mask", [True, False], ids=["block-mask-findable", "no-block-mask"])
def test_policy_loaded_as_train_loads_it_keeps_packing_with_flash_installed(gpu_machine_with_flash, monkeypatch,
                                                                             block_mask):
    """The run's own loader on a (faked) CUDA machine with flash-attn: the model must come back packable.

    Before attn_implementation existed, the loader picked flash_attention_2 here and packing turned off.
    """
    import transformers

    from nbtools.train.runner import decide_packing, load_policy

    gpu_machine_with_flash.block_mask(block_mask)
    original = transformers.AutoModelForImageTextToText.from_pretrained
    asked = []

    def from_pretrained(path, *args, **kwargs):
        """Records the kernel asked for; loads on the CPU in fp32 with sdpa and labels the model with that kernel."""
        asked.append(kwargs.get("attn_implementation"))
        importlib.util.find_spec = gpu_machine_with_flash.real_find_spec  # the real loader sees the real machine
        try:
            model = original(path, **{**kwargs, "dtype": torch.float32, "attn_implementation": "sdpa"})
        finally:
            importlib.util.find_spec = gpu_machine_with_flash.fake_find_spec
        model.config._attn_implementation = asked[-1]
        model.to = lambda *a, **k: model  # the faked GPU: nothing to move
        return model

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", from_pretrained)
    cfg = RunConfig(model="tiny-qwen3-vl")
    model, _processor, _family, _lora = load_policy(cfg, "bf16", "cuda:0")
    packing = decide_packing(cfg, model, SimpleNamespace(loss_type=["sigmoid"]))
    assert packing["on"], packing["note"]
    expected = BLOCK_MASK_ATTENTION if block_mask else "sdpa"
    assert asked == [expected]
    assert packing["attn_implementation"] == expected


def test_estimate_names_the_kernel_and_never_assumes_flash_for_packing(gpu_machine_with_flash):
    from nbtools.estimate import estimate_memory

    setup = dict(batch_size=4, max_context_length=2048, max_pixels=896 * 896, lora_rank=8,
                 gradient_checkpointing=True, precision="bf16", prompt_text_tokens=30, answer_tokens=100)
    model = "Qwen/Qwen3-VL-4B-Instruct"
    packed = {kind: estimate_memory(model, packing=True, attn_implementation=kind, **setup)
              for kind in ("auto", "sdpa", "eager", "block-mask")}
    assert packed["auto"].attn_implementation == "sdpa"  # flash installed, block-mask not findable
    assert packed["auto"].attention_bytes == packed["sdpa"].attention_bytes > 0
    assert packed["eager"].attention_bytes > 10 * packed["sdpa"].attention_bytes
    assert packed["block-mask"].attention_bytes == 0
    assert packed["block-mask"].attn_implementation == BLOCK_MASK_ATTENTION
    assert "attention sdpa" in packed["sdpa"].format()
    assert "attention masks and scores (eager)" in dict(packed["eager"].rows())
    # unpacked, flash installed: flash, which keeps nothing quadratic
    unpacked = estimate_memory(model, attn_implementation="auto", **setup)
    assert unpacked.attn_implementation == "flash_attention_2" and unpacked.attention_bytes == 0
    with pytest.raises(ConfigError, match="flash_attention_2 cannot run packed pairs"):
        estimate_memory(model, packing=True, attn_implementation="flash_attention_2", **setup)


def test_the_run_records_the_kernel_it_loaded(trained_run):
    from nbtools.train import read_run

    packing = read_run(trained_run)["packing"]
    assert packing["on"] is True
    assert packing["attn_implementation"] == "sdpa"  # CPU: auto picks sdpa for packed pairs
    assert packing["attention_note"] == "attention: sdpa (auto: packed pairs need a 4-D mask)"
