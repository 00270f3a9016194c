"""What benchmarks/long_pairs.py's reference_pass case relies on: the long-position tiny Qwen3-VL, the switch
that compiles FlexAttention on the CPU, and the per-length comparison it writes (no measurement here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import nbtools.packing.block_mask as block_mask_module
from nbtools.models import build_tiny_model
from nbtools.models.tiny import LONG_POSITIONS, build_tiny_qwen3_vl_long
from nbtools.packing.block_mask import block_mask_from_segments
from nbtools.packing.layout import SEGMENT_CHOSEN, SEGMENT_PAD, SEGMENT_PROMPT, SEGMENT_REJECTED

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import long_pairs  # noqa: E402


def test_the_long_tiny_qwen3_vl_is_the_tiny_one_with_more_positions():
    long_folder, tiny_folder = build_tiny_qwen3_vl_long(), build_tiny_model("tiny-qwen3-vl")
    assert long_folder != tiny_folder and build_tiny_qwen3_vl_long() == long_folder  # cached, a folder of its own
    long_config, tiny_config = (json.loads((folder / "config.json").read_text()) for folder in (long_folder, tiny_folder))
    assert long_config["text_config"].pop("max_position_embeddings") == LONG_POSITIONS >= 40_000
    assert tiny_config["text_config"].pop("max_position_embeddings") == 4096
    assert long_config == tiny_config
    long_weights, tiny_weights = (load_file(folder / "model.safetensors") for folder in (long_folder, tiny_folder))
    assert long_weights.keys() == tiny_weights.keys()
    assert all(torch.equal(long_weights[name], tiny_weights[name]) for name in tiny_weights)


def test_compile_on_cpu_sends_cpu_calls_through_the_compiled_kernel(monkeypatch):
    """Off by default (eager FlexAttention on the CPU, as before); on, CPU calls take ``_flex()``. The compiled
    kernel itself is checked against sdpa by the benchmark (``token_logps_max_abs_diff``): compiling takes
    longer than a test should."""
    compiled_calls = []

    def fake_compiled(*args, **kwargs):
        compiled_calls.append(kwargs["block_mask"])
        return torch.nn.attention.flex_attention.flex_attention(*args, **kwargs)

    monkeypatch.setattr(block_mask_module, "_flex", lambda: fake_compiled)
    row = [SEGMENT_PROMPT] * 90 + [SEGMENT_CHOSEN] * 50 + [SEGMENT_REJECTED] * 60
    segments = torch.tensor([row, row[:150] + [SEGMENT_PAD] * 50])
    generator = torch.Generator().manual_seed(0)
    query, key, value = torch.randn(3, 2, 4, 200, 16, generator=generator)

    class Attention(torch.nn.Module):
        num_key_value_groups = 1

    def attend():
        return block_mask_module.block_mask_attention(Attention(), query, key, value,
                                                      block_mask_from_segments(segments), scaling=0.25)[0]

    eager = attend()
    assert not compiled_calls and not block_mask_module._compile_on_cpu
    try:
        block_mask_module.compile_on_cpu(True)
        switched = attend()
    finally:
        block_mask_module.compile_on_cpu(False)
    assert len(compiled_calls) == 1 and torch.equal(switched, eager)
    attend()
    assert len(compiled_calls) == 1  # switched off again


def test_compare_reference_ratios_bound_and_log_prob_differences(tmp_path):
    want = {"chosen": torch.tensor([-100.0]), "rejected": torch.tensor([-120.0]),
            "token_logps": torch.tensor([-1.0, -2.0, -3.0])}
    got = {"chosen": torch.tensor([-100.004]), "rejected": torch.tensor([-120.0]),
           "token_logps": torch.tensor([-1.0, -2.00002, -3.0])}
    torch.save(want, tmp_path / "sdpa.pt")
    torch.save(got, tmp_path / "block.pt")
    row = {"inputs": {"tokens": 1024},
           "sdpa": {"forward_peak_mb": 200.0, "first_forward_peak_mb": 250.0, "forward_seconds": 4.0},
           "block_mask": {"forward_peak_mb": 50.0, "first_forward_peak_mb": 300.0, "forward_seconds": 2.0,
                          "block_mask_bytes": 1152}}
    long_pairs.compare_reference(row, tmp_path / "sdpa.pt", tmp_path / "block.pt")
    assert (row["peak_ratio"], row["first_forward_peak_ratio"], row["seconds_ratio"]) == (0.25, 1.2, 0.5)
    assert row["block_mask_bound_bytes"] == 64 and row["block_mask_bytes_within_bound"] is False
    assert abs(row["logps_max_abs_diff"] - 0.004) < 1e-4 and row["logps_max_abs_value"] == 120.0
    assert 1e-5 < row["token_logps_max_abs_diff"] < 3e-5
    missing = {"inputs": {"tokens": 1024}, "sdpa": {"error": "timed out after 900 s"}, "block_mask": {}}
    long_pairs.compare_reference(missing, tmp_path / "absent.pt", tmp_path / "block.pt")
    assert "peak_ratio" not in missing and "logps_max_abs_diff" not in missing
