"""torchrun entry for the FSDP loading test: rank-zero loading, accelerate's FSDP2 wrapping, memory, the packed step.

``torchrun --nproc_per_node 2 tests/fsdp_loading.py OUT_DIR TRAIN_FILE [rank-zero|every-rank]``.
Every model is loaded with the run's own :func:`nbtools.train.runner.load_policy`, gets the run's LoRA
as TRL adds it, and is wrapped with accelerate's ``fsdp2_prepare_model`` (what the Trainer's
``accelerator.prepare`` calls under FSDP2) with the plugin settings ``distributed: fsdp`` gives the
Trainer. ``rank-zero``, the run's loading: only rank 0 reads the weights, the other rank's shards are
filled from it while wrapping. ``every-rank``: every process reads the whole model, as before rank-zero
loading (and without cpu_ram_efficient_loading), kept to measure what that cost.

1. Memory: rank 0 writes a ~300M-parameter Qwen3-VL (random weights, safetensors) to ``OUT_DIR/model``.
   Around loading + wrapping it, each rank records VmRSS before, VmRSS after and VmHWM, the peak of
   the interval (reset just before loading). Rank 1 then compares its shards with the checkpoint's rows.
2. The packed step: ``tiny-qwen3-vl`` loaded and wrapped the same way; each rank runs the packed step on
   its half of 4 pairs inside the sharded model's forward (as the trainer does), and rank 0 runs it
   unsharded on the whole batch with a model loaded the ordinary way and rank 0's LoRA weights. In
   ``rank-zero`` only rank 0 moves LoRA B off zero and LoRA A is seeded per rank, so rank 1's values,
   weights included, must all come from rank 0 for the gradients to agree.

Rank 0 writes ``OUT_DIR/loading.json``.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

from distributed_runs import compared_with_single, full_grads, sharded_packed_step

BETA = 0.1


def memory_mib() -> dict:
    """VmRSS (resident now) and VmHWM (resident peak) of this process, in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def reset_peak() -> bool:
    """Start VmHWM again from the current resident size (Linux: ``5`` into clear_refs); False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def build_scaled_qwen3_vl(folder: Path, *, hidden_size: int = 1024, layers: int = 16,
                          intermediate_size: int = 5120) -> int:
    """``tiny-qwen3-vl`` with its language model scaled up (~305M parameters by default), seeded random weights.

    Same tokenizer, processors and vision tower; written as safetensors, so that loading it really reads
    a file. Built on the meta device and filled with uniform noise (seconds, where the model's own
    initialisation takes several times longer). Returns the parameter count.
    """
    import shutil

    from transformers import AutoConfig, Qwen3VLForConditionalGeneration

    from nbtools.models import build_tiny_model

    tiny = build_tiny_model("tiny-qwen3-vl")
    config = AutoConfig.from_pretrained(tiny)
    text = config.text_config
    heads = hidden_size // text.head_dim
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = hidden_size, intermediate_size, layers
    text.num_attention_heads, text.num_key_value_heads = heads, heads // 2
    text.layer_types = ["full_attention"] * layers
    config.vision_config.out_hidden_size = hidden_size  # the merger projects into the language model's width
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim > 1:
                parameter.uniform_(-0.03, 0.03, generator=generator)
            else:
                parameter.fill_(1.0 if "norm" in name else 0.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for item in Path(tiny).iterdir():  # tokenizer, processors, generation config
        if not (folder / item.name).exists():
            shutil.copy(item, folder / item.name)
    return sum(p.numel() for p in model.parameters())


def run_config(model: str, train_file: str):
    from nbtools.config import RunConfig

    return RunConfig(model=model, train_file=train_file, validation_split=0.0, max_pixels=128 * 128,
                     max_context_length=256, distributed="fsdp", lora_rank=4, lora_alpha=8, lora_dropout=0.0,
                     gradient_checkpointing=False, precision="fp32", attn_implementation="sdpa", packing=True)


def wrapper(cfg, out_dir: str, rank_zero: bool):
    """accelerate's FSDP plugin with the settings ``distributed: fsdp`` gives the Trainer (``every-rank``:
    cpu_ram_efficient_loading off), and the Accelerator attributes ``fsdp2_prepare_model`` reads: on the
    CPU accelerate itself runs DDP, so no real Accelerator would take this plugin."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    from nbtools.train.runner import build_dpo_config

    args = build_dpo_config(cfg, Path(out_dir), "fp32", has_validation=False, on_cpu=True)
    plugin_args = dict(args.fsdp_plugin_args, cpu_ram_efficient_loading=rank_zero)
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), is_main_process=dist.get_rank() == 0,
                                  device=torch.device("cpu"), mixed_precision="no", torch_device_mesh=None)
    return accelerator, plugin_args


def load_and_wrap(cfg, out_dir: str, rank_zero: bool, move_lora_b: bool):
    """The run's loading, TRL's LoRA, accelerate's wrapping: (wrapped model, processor, family, peft_config,
    this rank's LoRA values before wrapping, model bytes, plugin args, timings)."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from peft import get_peft_model

    from nbtools.train.runner import load_policy

    accelerator, plugin_args = wrapper(cfg, out_dir, rank_zero)
    rank = dist.get_rank()
    t0 = time.perf_counter()
    model, processor, family, peft_config = load_policy(cfg, "fp32", "cpu", rank_zero_loading=rank_zero)
    load_s = time.perf_counter() - t0
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    torch.manual_seed(rank if rank_zero else 0)
    model = get_peft_model(model, peft_config)  # as TRL does with the run's peft_config
    generator = torch.Generator().manual_seed(0)
    lora = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            if move_lora_b and "lora_B" in name:  # off zero: the loss is not ln 2, LoRA A gets gradients
                parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
            lora[name] = parameter.detach().clone()
    model.train()
    t1 = time.perf_counter()
    model = fsdp2_prepare_model(accelerator, model)
    timings = {"load_s": load_s, "wrap_s": time.perf_counter() - t1}
    return model, processor, family, peft_config, lora, model_bytes, plugin_args, timings


def shards_match_checkpoint(model, folder: Path) -> dict:
    """This rank's shard of every base weight against its rows in the checkpoint (FSDP2: dim-0 chunks)."""
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor

    rank, world = dist.get_rank(), dist.get_world_size()
    checked, largest_difference = 0, 0.0
    with safe_open(str(folder / "model.safetensors"), framework="pt") as checkpoint:
        keys = set(checkpoint.keys())
        for name, parameter in model.named_parameters():
            key = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            if parameter.requires_grad or key not in keys:
                continue
            assert isinstance(parameter, DTensor), name
            rows = checkpoint.get_slice(key).get_shape()[0]
            per_rank = -(-rows // world)  # torch.chunk's split
            start, stop = min(rank * per_rank, rows), min((rank + 1) * per_rank, rows)
            expected = checkpoint.get_slice(key)[start:stop]
            local = parameter.to_local()
            largest_difference = max(largest_difference, (local - expected).abs().max().item() if stop > start else 0.0)
            checked += 1
    return {"checked": checked, "checkpoint_tensors": len(keys), "max_abs_difference": largest_difference}


def main(out_dir: str, train_file: str, mode: str = "rank-zero") -> None:
    from torch.distributed.tensor import DTensor

    from nbtools.atomic import write_json
    from nbtools.models import load_model_and_processor
    from nbtools.packing import packed_dpo_step
    from nbtools.train.dataset import LazyImageCollator, prepare_data, records_dataset

    rank_zero = mode == "rank-zero"
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    folder = Path(out_dir) / "model"
    t0 = time.perf_counter()
    if rank == 0:
        parameter_count = build_scaled_qwen3_vl(folder)
    build_s = time.perf_counter() - t0
    dist.barrier()
    big = run_config(str(folder), train_file)
    rows = records_dataset(prepare_data(big, "qwen3_vl").train)
    gc.collect()
    dist.barrier()

    # --- 1. memory of loading + wrapping the ~300M model ---
    peak_reset = reset_peak()
    before = memory_mib()
    model, *_, model_bytes, plugin_args, timings = load_and_wrap(big, out_dir, rank_zero, move_lora_b=False)
    gc.collect()
    after = memory_mib()
    local_bytes = sum(p.to_local().numel() * p.element_size() for p in model.parameters() if isinstance(p, DTensor))
    shards = shards_match_checkpoint(model, folder) if rank == 1 else None
    memory = [None] * world
    dist.all_gather_object(memory, {"before_mib": before["VmRSS"], "after_mib": after["VmRSS"],
                                    "peak_mib": after["VmHWM"], "peak_reset": peak_reset,
                                    "local_parameter_bytes": local_bytes, "shards": shards, **timings})
    del model
    gc.collect()

    # --- 2. the packed step on the sharded tiny-qwen3-vl: each rank its half of the batch ---
    small = run_config("tiny-qwen3-vl", train_file)
    model, processor, family, peft_config, lora, *_ = load_and_wrap(small, out_dir, rank_zero,
                                                                    move_lora_b=rank == 0 or not rank_zero)
    sharded = [n for n, p in model.named_parameters() if isinstance(p, DTensor)]
    collator = LazyImageCollator(processor, small.max_pixels, family, packed=True)
    pairs = [rows[i] for i in range(2 * world)]
    mine = collator(pairs[2 * rank: 2 * rank + 2])

    result, loss = sharded_packed_step(model, mine, BETA)
    grads = full_grads(model)

    if rank == 0:
        single, _ = load_model_and_processor("tiny-qwen3-vl", max_pixels=small.max_pixels, dtype=torch.float32,
                                             device="cpu", attn_implementation="sdpa")
        from peft import get_peft_model

        single = get_peft_model(single, peft_config)
        single.load_state_dict(lora, strict=False)
        single.train()
        expected = packed_dpo_step(single, collator(pairs), beta=BETA)
        expected.loss.backward()
        expected_grads = {n: p.grad for n, p in single.named_parameters() if p.requires_grad}
        write_json(Path(out_dir, "loading.json"), {
            "mode": mode,
            "world_size": world,
            "plugin_args": plugin_args,
            "model_parameters": parameter_count,
            "model_bytes": model_bytes,
            "build_s": build_s,
            "memory": memory,
            "parameters": sum(1 for _ in model.named_parameters()),
            "sharded_parameters": len(sharded),
            "trainable_parameters": len(lora),
            **compared_with_single(result, loss, grads, expected, expected_grads),
        }, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
