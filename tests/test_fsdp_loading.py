"""Rank-zero loading for FSDP (accelerate's ``cpu_ram_efficient_loading``), two CPU processes (gloo).

``tests/fsdp_loading.py`` loads with the run's ``load_policy`` and wraps with accelerate's
``fsdp2_prepare_model`` (the Trainer's FSDP2 wrapping; accelerate does not run its FSDP plugin on
the CPU, so it is called directly): rank 1 never reads the weights and gets its shards from rank 0.

Memory, ~305M-parameter Qwen3-VL in fp32 (1164 MiB), growth of resident memory from before loading
to after wrapping, as a share of the model's bytes. "peak" is VmHWM over that interval; it is what
tells the two loadings apart on the CPU, where the old way's full copy is transient (transformers maps
the checkpoint and fully_shard copies each rank's half out of it) while on a GPU it was a
``model.to(device)`` of the whole model on every GPU before sharding. Measured on 2 cores:

====================================  ============  ================  =============
loading                               rank 1 peak   rank 1 after      rank 0 peak
====================================  ============  ================  =============
rank-zero (now)                       0.55x         0.53x             1.53x
every rank reads the model (before)   1.15x         0.53x             1.09x
====================================  ============  ================  =============

Each rank's shards are 0.50x. Rank 0 holds the whole model in CPU memory while its shards are sent
(the README says so); after wrapping it is down to its shards too. The test runs with glibc's mmap
threshold fixed at 1 MiB (``MALLOC_MMAP_THRESHOLD_``): by default glibc raises it up to 32 MiB after
the first large free and then keeps freed blocks below it in its heap, here the 21-MiB buffers each
weight is broadcast into, and rank 1 shows 0.64x (every-rank: 1.15x); the weights of a real model are
larger than 32 MiB, so they are never kept that way. The "before" row comes from
``torchrun --nproc_per_node 2 tests/fsdp_loading.py OUT_DIR TRAIN_FILE every-rank``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_runs import assert_sharded_step_matches_single, launch, torchrun, write_subset  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_loading")
    train_file = write_subset(out / "train.jsonl", 4)
    launch(torchrun("fsdp_loading.py", out, train_file, "rank-zero", port=29547), MALLOC_MMAP_THRESHOLD_=str(2**20))
    found = json.loads((out / "loading.json").read_text())
    shutil.rmtree(out / "model", ignore_errors=True)  # 1.2 GB
    return found


def test_rank_one_holds_its_shards_not_the_model(loaded):
    assert loaded["world_size"] == 2 and loaded["plugin_args"]["cpu_ram_efficient_loading"] is True
    assert 2.8e8 < loaded["model_parameters"] < 3.2e8
    model_bytes = loaded["model_bytes"]
    assert model_bytes == pytest.approx(4 * loaded["model_parameters"], rel=1e-3)  # fp32, as loaded
    rank1 = loaded["memory"][1]
    assert rank1["peak_reset"], "VmHWM could not be reset: the peak would not be this interval's"
    mib = 2**20 / model_bytes
    shards = rank1["local_parameter_bytes"] / model_bytes
    assert 0.49 < shards < 0.52  # half of every weight, held as real storage
    peak = (rank1["peak_mib"] - rank1["before_mib"]) * mib
    after = (rank1["after_mib"] - rank1["before_mib"]) * mib
    assert shards - 0.02 < after <= peak <= 0.6, (after, peak)  # never the whole model (every-rank loading: 1.15x)
    # the shards hold the checkpoint's values, sent by rank 0 (rank 1 read none of them)
    checked = rank1["shards"]
    assert checked["checked"] == checked["checkpoint_tensors"] > 200
    assert checked["max_abs_difference"] == 0.0


def test_packed_step_on_the_rank_zero_loaded_model_matches_one_process(loaded):
    assert_sharded_step_matches_single(loaded)  # rank 0's LoRA B moved the policy, rank 1's came from rank 0
