"""Loading errors and metadata: offline hub ids, missing folders, unsupported families, variants."""

from __future__ import annotations

import json
import os

import pytest
import torch

from nbtools.models import (
    FAMILIES,
    ModelNotAvailableOfflineError,
    UnsupportedModelError,
    detect_family,
    load_model_and_processor,
    load_processor,
    model_variant,
    resolve_model_path,
)
from nbtools.models.chat_templates import THINKING_CHAT_TEMPLATE
from nbtools.models.loading import resolve_dtype


def test_offline_hub_id_fails_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: nothing is there
    with pytest.raises(ModelNotAvailableOfflineError) as err:
        load_model_and_processor("Qwen/Qwen3-VL-4B-Instruct")
    message = str(err.value)
    assert "'Qwen/Qwen3-VL-4B-Instruct'" in message
    assert "HF_HUB_OFFLINE=1 (offline mode)" in message
    assert "not in the local Hugging Face cache" in message
    assert "huggingface-cli download Qwen/Qwen3-VL-4B-Instruct" in message
    assert "tiny-qwen3-vl" in message


def test_offline_hub_id_in_cache_resolves_to_snapshot(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someone--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_model_path("someone/tiny") == str(snapshot)


def test_missing_folder_is_named(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(FileNotFoundError, match=r"model folder .*no/such/model.* does not exist"):
        load_processor(str(missing))


def test_folder_passes_through(tmp_path):
    assert resolve_model_path(tmp_path) == str(tmp_path.resolve())


def test_unsupported_family_lists_supported(tmp_path):
    with pytest.raises(UnsupportedModelError) as err:
        detect_family({"model_type": "gemma3"})
    message = str(err.value)
    assert "model type 'gemma3' is not supported" in message
    for family in FAMILIES.values():
        assert family.name in message


def test_unsupported_folder_fails_before_loading_weights(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="model type 'llama' is not supported"):
        load_model_and_processor(tmp_path)


@pytest.mark.parametrize(
    "model_type,family",
    [("qwen3_vl", "qwen3_vl"), ("qwen2_5_vl", "qwen2_5_vl"), ("qwen2_vl", "qwen2_vl"), ("llava", "llava")],
)
def test_detect_family_from_config_dict(model_type, family):
    assert detect_family({"model_type": model_type}).name == family


def test_family_facts():
    assert FAMILIES["qwen3_vl"].pixels_per_token == 32 * 32
    assert FAMILIES["qwen2_vl"].pixels_per_token == 28 * 28
    qwen3 = FAMILIES["qwen3_vl"]
    assert qwen3.component_of("model.visual.blocks.0.attn.qkv") == "vision"
    assert qwen3.component_of("model.visual.merger.linear_fc1") == "projector"
    assert qwen3.component_of("model.visual.deepstack_merger_list.1.linear_fc2") == "projector"
    assert qwen3.component_of("model.language_model.layers.3.mlp.up_proj") == "language_model"
    assert qwen3.component_of("lm_head.weight") == "lm_head"


def test_variant_detection():
    processor = load_processor("tiny-qwen3-vl")
    assert model_variant(processor) == "instruct"
    assert model_variant(processor.tokenizer) == "instruct"
    processor.chat_template = THINKING_CHAT_TEMPLATE
    assert model_variant(processor) == "thinking"

    class NamedOnly:  # no template: the name decides
        chat_template = None
        name_or_path = "Qwen/Qwen3-VL-4B-Thinking"

    assert model_variant(NamedOnly()) == "thinking"
    NamedOnly.name_or_path = "Qwen/Qwen3-VL-4B-Instruct"
    assert model_variant(NamedOnly()) == "instruct"


def test_thinking_template_keeps_reasoning():
    processor = load_processor("tiny-qwen3-vl")
    processor.chat_template = THINKING_CHAT_TEMPLATE
    text = processor.apply_chat_template(
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "add"}],
        tokenize=False,
    )
    assert text.endswith("<|im_start|>assistant\n<think>\nadd\n</think>\n\n4<|im_end|>\n")


def test_dtype_resolution():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16
    assert resolve_dtype(torch.float16) == torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        resolve_dtype("int3")


def test_dtype_and_attention_are_passed_through():
    model, _ = load_model_and_processor("tiny-qwen3-vl", dtype="bfloat16", attn_implementation="eager")
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("model_id", ["tiny-qwen3-vl", "tiny-llava"])
def test_unfilled_model_has_the_loaded_layout_with_storage_of_its_own(model_id):
    """What the processes that read no weights build under rank-zero loading (the FSDP wrapper fills it)."""
    from transformers import AutoConfig

    from nbtools.models.loading import _unfilled_model, resolve_model_folder

    path = resolve_model_folder(model_id)
    loaded, _ = load_model_and_processor(model_id, dtype="float32", attn_implementation="sdpa", device="cpu")
    unfilled = _unfilled_model(path, AutoConfig.from_pretrained(path), torch.float32, "sdpa", False)
    layout = {name: (tuple(t.shape), t.dtype) for name, t in loaded.state_dict().items()}
    assert {name: (tuple(t.shape), t.dtype) for name, t in unfilled.state_dict().items()} == layout
    assert [name for name, _ in unfilled.named_buffers()] == [name for name, _ in loaded.named_buffers()]
    parameters = list(unfilled.parameters())
    assert all(p.device.type == "cpu" for p in parameters)  # not meta: accelerate maps optimizer params by address
    assert len({p.data_ptr() for p in parameters}) == len(parameters)
    assert not unfilled.training and unfilled.config._attn_implementation == "sdpa"
    assert unfilled.generation_config.eos_token_id == loaded.generation_config.eos_token_id


def test_trust_remote_code_off_by_default(monkeypatch):
    seen = {}
    import transformers

    original = transformers.AutoModelForImageTextToText.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", spy)
    load_model_and_processor("tiny-llava")
    assert seen["trust_remote_code"] is False


def test_variant_mismatch_warnings():
    from nbtools.models import strip_empty_think, variant_mismatch

    plain = ["It is a red circle.", "A blue square."]
    reasoned = ["<think>\nIt looks red.\n</think>\n\nIt is a red circle."]
    assert variant_mismatch("instruct", plain) is None
    assert variant_mismatch("thinking", reasoned) is None
    assert variant_mismatch("thinking", plain).startswith(
        "the model is a Thinking model but none of the 2 answers has a <think>…</think> block"
    )
    empty = ["<think>\n\n</think>\n\nIt is red."]
    assert "1 of 1 answers contain empty <think> blocks" in variant_mismatch("instruct", empty)
    assert "1 of 1 answers contain <think> blocks" in variant_mismatch("instruct", reasoned)
    assert strip_empty_think(empty[0]) == "It is red."
    assert strip_empty_think(reasoned[0]) == reasoned[0]


def test_hub_model_is_keyed_by_its_cached_snapshot(tmp_path):
    """A hub id resolves to the snapshot folder it was read from, so a new upstream snapshot
    gives a new reference-log-prob cache key (run in a subprocess: the HF cache path is read at import)."""
    import json as _json
    import subprocess
    import sys

    repo = tmp_path / "hub" / "models--example-org--tiny-vl"
    for commit in ("a" * 40, "b" * 40):
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True)
        (snap / "config.json").write_text(_json.dumps({"model_type": "qwen3_vl", "commit": commit}))
    (repo / "refs").mkdir()
    script = (
        "import json, pathlib, sys\n"
        "from nbtools.models import local_model_folder\n"
        "from nbtools.packing.ref_cache import folder_digest\n"
        "refs = pathlib.Path(sys.argv[1]) / 'refs' / 'main'\n"
        "out = []\n"
        "for commit in ('a' * 40, 'b' * 40):\n"
        "    refs.write_text(commit)\n"
        "    folder = local_model_folder('example-org/tiny-vl')\n"
        "    out.append([folder, folder_digest(folder)])\n"
        "out.append(local_model_folder('example-org/not-cached'))\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "-c", script, str(repo)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    (first, first_key), (second, second_key), uncached = _json.loads(done.stdout.strip().splitlines()[-1])
    assert first.endswith("snapshots/" + "a" * 40) and second.endswith("snapshots/" + "b" * 40)
    assert first_key != second_key
    assert uncached == "example-org/not-cached"


def test_small_local_checkpoints_load_without_a_progress_bar(capsys, monkeypatch):
    """A tiny model loads in milliseconds: no 'Loading weights' bar, and the setting is restored."""
    from transformers.utils import logging as hf_logging

    from nbtools.models import load_model_and_processor

    load_model_and_processor("tiny-qwen2-vl", device="cpu")
    assert "Loading weights" not in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    monkeypatch.setattr("nbtools.models.loading.SMALL_WEIGHTS_BYTES", 0)  # control: a "large" model keeps its bar
    load_model_and_processor("tiny-qwen2-vl", device="cpu")
    assert "Loading weights" in capsys.readouterr().err
