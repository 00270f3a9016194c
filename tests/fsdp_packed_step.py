"""torchrun entry for the FSDP2 test: the packed forward + backward on a ``fully_shard``-ed tiny Qwen3-VL.

``torchrun --nproc_per_node 2 tests/fsdp_packed_step.py OUT_DIR TRAIN_FILE``. Each rank builds the
same LoRA model (seeded), keeps an unsharded copy that runs the whole batch of 4 pairs alone, then
shards the other copy (every decoder layer and vision block, then the root) and runs its half of
the batch through :func:`nbtools.packing.trainer_hook.run_inside_forward`, the same call the
trainer makes. Rank 0 writes ``OUT_DIR/fsdp.json``: losses, metrics, gradient differences and
what the sharding looked like.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from distributed_runs import compared_with_single, full_grads, sharded_packed_step

BETA = 0.1


def main(out_dir: str, train_file: str) -> None:
    from peft import get_peft_model
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from nbtools.atomic import write_json
    from nbtools.config import RunConfig
    from nbtools.models import detect_family, load_model_and_processor
    from nbtools.models.lora import lora_config
    from nbtools.packing import packed_dpo_step
    from nbtools.train.dataset import LazyImageCollator, prepare_data, records_dataset

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model, processor = load_model_and_processor("tiny-qwen3-vl", max_pixels=128 * 128, dtype=torch.float32,
                                                device="cpu")
    family = detect_family(model).name
    peft_model = get_peft_model(model, lora_config(model, lora_rank=4, lora_alpha=8, lora_dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # away from the reference (B = 0), so the loss is not ln 2 and A gets gradients
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    peft_model.train()

    cfg = RunConfig(model="tiny-qwen3-vl", train_file=train_file, validation_split=0.0, max_pixels=128 * 128,
                    max_context_length=256)
    rows = records_dataset(prepare_data(cfg, family).train)
    collator = LazyImageCollator(processor, cfg.max_pixels, family, packed=True)
    pairs = [rows[i] for i in range(2 * world)]

    # unsharded, one process, the whole batch
    single = copy.deepcopy(peft_model)
    expected = packed_dpo_step(single, collator(pairs), beta=BETA)
    expected.loss.backward()
    expected_grads = {n: p.grad.detach().clone() for n, p in single.named_parameters() if p.requires_grad}

    # control: this rank's half of the batch alone gives other gradients (so the comparison below can fail)
    mine = collator(pairs[2 * rank: 2 * rank + 2])
    alone = copy.deepcopy(peft_model)
    packed_dpo_step(alone, mine, beta=BETA).loss.backward()
    half_batch_difference = max((p.grad - expected_grads[n]).abs().max().item()
                                for n, p in alone.named_parameters() if p.requires_grad)
    del alone

    # FSDP2: shard every decoder layer and vision block, then the root; each rank takes its half of the batch
    base = peft_model.get_base_model()
    for layer in base.model.language_model.layers:
        fully_shard(layer)
    for block in base.model.visual.blocks:
        fully_shard(block)
    fully_shard(peft_model)
    sharded = [n for n, p in peft_model.named_parameters() if isinstance(p, DTensor)]
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]

    result, loss = sharded_packed_step(peft_model, mine, BETA)
    comparison = compared_with_single(result, loss, full_grads(peft_model), expected, expected_grads)
    # control: the same step called directly, not from inside the root's forward, finds the root's parameters
    # (embeddings, LM head) still sharded: it fails or gives another loss, which is why the trainer redirects
    try:
        direct = packed_dpo_step(peft_model, mine, beta=BETA).loss.item()
        direct_outcome = f"loss {direct:.6f}"
    except Exception as exc:  # noqa: BLE001 - any failure is the expected outcome here
        direct_outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if rank == 0:
        write_json(Path(out_dir, "fsdp.json"), {
            "world_size": world,
            **comparison,
            "half_batch_grad_difference": half_batch_difference,
            "sharded_parameters": len(sharded),
            "parameters": sum(1 for _ in peft_model.named_parameters()),
            "trainable_parameters": len(trainable),
            "trainable_sharded": sum(1 for n in trainable if n in set(sharded)),
            "reused_image_features": result.reused_image_features,
            "direct_call_outcome": direct_outcome,
        }, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
