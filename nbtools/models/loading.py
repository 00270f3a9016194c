"""Load a VLM and its processor from a built-in tiny id, a local folder or a hub id.

One entry point for notebooks, the CLI and tests, so that the tiny offline models go
through exactly the code path real models do.
"""

from __future__ import annotations

from contextlib import contextmanager

import logging
import os
from pathlib import Path
from typing import Any

from nbtools.errors import UserError

from .families import detect_family
from .tiny import build_tiny_model, is_tiny_id

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


class ModelNotAvailableOfflineError(UserError, OSError):
    """A hub id was requested while offline and it is not in the local HF cache."""


class ModelFolderError(UserError, FileNotFoundError):
    """A model given as a local path that does not exist or holds no model."""


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: nothing may be downloaded."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _looks_like_path(name: str) -> bool:
    # hub ids are "name" or "org/name"; anything else with path syntax is meant as a folder
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Folder (or hub id) to pass to ``from_pretrained``.

    Tiny ids are built into ``model_cache_dir()/<id>`` on first use; existing folders pass
    through; hub ids pass through when online, and when offline resolve to their cached
    snapshot or fail at once with a message saying how to fix it.
    """
    name = os.fspath(name_or_path)
    if is_tiny_id(name):
        return str(build_tiny_model(name))
    expanded = Path(name).expanduser()
    if expanded.is_dir():  # a model, or a processor-only folder such as a run's processor/
        return str(expanded.resolve())
    if _looks_like_path(name) or expanded.exists():
        raise ModelFolderError(
            f"model: model folder {name!r} does not exist (fix: pass an existing folder with config.json, a hub id "
            "such as 'Qwen/Qwen3-VL-4B-Instruct', or a built-in tiny id such as 'tiny-qwen3-vl')"
        )
    if not hub_offline():
        return name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(name, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        raise ModelNotAvailableOfflineError(
            f"cannot load {name!r}: HF_HUB_OFFLINE=1 (offline mode) and the model is not in the local "
            "Hugging Face cache. Fix: download it once with network access "
            f"(`huggingface-cli download {name}`), or pass the path of a local folder holding the model, "
            "or use a built-in tiny model such as 'tiny-qwen3-vl'."
        ) from err


def resolve_model_folder(name_or_path: str | os.PathLike) -> str:
    """Like resolve_model_path, for loading a model: a local folder must hold its config.json."""
    path = resolve_model_path(name_or_path)
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise ModelFolderError(
            f"model: {os.fspath(name_or_path)!r} is a folder without config.json, so it holds no model (fix: pass "
            "the folder a model was saved to with save_pretrained, a hub id such as 'Qwen/Qwen3-VL-4B-Instruct', "
            "or a built-in tiny id such as 'tiny-qwen3-vl')")
    return path


def local_model_folder(name_or_path: str | os.PathLike) -> str:
    """The folder the weights are read from: for a hub id, its snapshot in the local Hugging Face cache.

    A snapshot's path holds its commit hash, so caches keyed on this folder (reference
    log-probs) change when the hub model changes. Falls back to the id when nothing is cached.
    """
    resolved = resolve_model_path(name_or_path)
    if Path(resolved).is_dir():
        return resolved
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(resolved, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return resolved


def apply_max_pixels(processor: Any, max_pixels: int | None) -> None:
    """Cap pixels per image on the processor, where the family resizes dynamically.

    transformers 5.x stores Qwen's min/max pixels as ``size.shortest_edge``/``size.longest_edge``
    (in pixels, not edges); the processor reads them at call time, so changing them here is enough.
    Video frames have their own cap (``video_max_pixels``, see :func:`apply_video_settings`):
    Qwen3-VL's video processor reads the same keys as a budget over all frames.
    """
    if max_pixels is None:
        return
    max_pixels = int(max_pixels)
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
    applied = False
    sub = getattr(processor, "image_processor", None)
    size = getattr(sub, "size", None) if sub is not None else None
    if size is not None and _get(size, "longest_edge") is not None and hasattr(sub, "merge_size"):
        shortest = _get(size, "shortest_edge")
        _set(size, "longest_edge", max_pixels)
        if shortest is not None and shortest > max_pixels:
            _set(size, "shortest_edge", max_pixels)
        for legacy in ("max_pixels", "min_pixels"):  # older configs kept these as attributes too
            if getattr(sub, legacy, None) is not None:
                setattr(sub, legacy, max_pixels if legacy == "max_pixels" else min(getattr(sub, legacy), max_pixels))
        applied = True
    if not applied:
        logger.warning(
            "max_pixels=%s ignored: this model's image processor resizes every image to a fixed size", max_pixels
        )


def apply_video_settings(processor: Any, video: Any, family: str | None = None) -> bool:
    """Put ``video`` (a :class:`nbtools.video.VideoSettings`) on the processor's video processor.

    Sets what :func:`nbtools.video.video_processor_settings` computes for the family: per-frame
    cap ``video_max_pixels`` (Qwen3-VL: ``cap_pixels_per_frame`` with ``max_video_tokens`` and a
    total budget that never binds under ``max_frames``; Qwen2/2.5-VL: per-frame min/max pixels),
    ``fps`` and ``max_frames``. Saved with the processor, so an exported model samples and
    resizes videos as training did. Returns False (and changes nothing) for a processor
    without a video processor (LLaVA).
    """
    from nbtools.video import video_processor_family, video_processor_settings

    if video is None:
        return False
    sub = getattr(processor, "video_processor", None)
    if sub is None or not hasattr(sub, "temporal_patch_size"):
        return False
    settings = video_processor_settings(video_processor_family(sub, family), video, patch_size=sub.patch_size, merge_size=sub.merge_size,
                                        temporal_patch_size=sub.temporal_patch_size)
    for key, value in settings.pop("size").items():
        _set(sub.size, key, value)
    for key, value in settings.items():
        setattr(sub, key, value)
    for legacy, key in (("max_pixels", "longest_edge"), ("min_pixels", "shortest_edge")):  # older configs
        if getattr(sub, legacy, None) is not None:
            setattr(sub, legacy, _get(sub.size, key))
    return True


def _get(size: Any, key: str):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _set(size: Any, key: str, value: int) -> None:
    if isinstance(size, dict):
        size[key] = value
    else:
        setattr(size, key, value)


def prepare_tokenizer(tokenizer: Any) -> None:
    """Pad token present (TRL pads chosen/rejected) and left padding (batched generation)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def load_processor(name_or_path: str | os.PathLike, max_pixels: int | None = None, trust_remote_code: bool = False,
                   video: Any = None):
    """AutoProcessor for a tiny id, folder or hub id, with ``max_pixels`` (and the ``video`` settings,
    a :class:`nbtools.video.VideoSettings`, when given) applied and the tokenizer prepared."""
    from transformers import AutoProcessor

    path = resolve_model_path(name_or_path)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    apply_max_pixels(processor, max_pixels)
    apply_video_settings(processor, video)
    tokenizer = getattr(processor, "tokenizer", processor)
    prepare_tokenizer(tokenizer)
    return processor


def resolve_dtype(dtype: Any = "auto", device: str | None = None):
    """'auto' → bf16 on a CUDA GPU that supports it, fp16 on older GPUs, fp32 on CPU."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        on_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if on_cuda and torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16", "float": "float32"}
    resolved = getattr(torch, names.get(str(dtype), str(dtype)), None)
    if resolved not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'bfloat16', 'float16' or 'float32'")
    return resolved


def default_attn_implementation(device: str, dtype) -> str:
    """flash_attention_2 when installed and usable (CUDA, half precision), else sdpa."""
    import importlib.util

    import torch

    if (
        device.startswith("cuda")
        and dtype in (torch.bfloat16, torch.float16)
        and importlib.util.find_spec("flash_attn") is not None
    ):
        return "flash_attention_2"
    return "sdpa"


SMALL_WEIGHTS_BYTES = 256 * 2**20


@contextmanager
def _no_bar_for_small_weights(path: str):
    """Hide transformers' "Loading weights" bar for a local checkpoint under 256 MiB.

    Such a load takes well under a second, and a notebook that loads a model three times would
    show three finished bars of noise; a real model keeps its bar, where it tells something.
    """
    from transformers.utils import logging as hf_logging

    folder = Path(path)
    small = folder.is_dir() and sum(f.stat().st_size for f in folder.glob("*.safetensors")) < SMALL_WEIGHTS_BYTES
    if not (small and hf_logging.is_progress_bar_enabled()):
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def load_model_and_processor(
    name_or_path: str | os.PathLike,
    *,
    max_pixels: int | None = None,
    video: Any = None,
    dtype: Any = "auto",
    device: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    rank_zero_loading: bool = False,
):
    """Load ``(model, processor)`` the same way for tiny ids, folders and hub ids (``video``: the
    :class:`nbtools.video.VideoSettings` to put on the video processor, see :func:`apply_video_settings`).

    ``rank_zero_loading``: the model is for FSDP with accelerate's ``cpu_ram_efficient_loading``
    (:func:`nbtools.train.distributed.rank_zero_loading` decides it for a run; with torch.distributed
    initialized, every process must call this). The model stays on the CPU, since the wrapper places
    the shards; only each machine's first process (``LOCAL_RANK`` 0) reads the weights, and it holds the
    whole model in CPU memory until the wrapper has sent each process its shards. The other processes
    build the model on the meta device and give it storage that is never written (no resident memory),
    with rank 0's non-persistent buffers: the wrapper fills their shards from rank 0.
    """
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    path = resolve_model_folder(name_or_path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    detect_family(config)  # unsupported architectures fail here, before any weights are read
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = resolve_dtype(dtype, device)
    attn = attn_implementation or default_attn_implementation(device, torch_dtype)
    processor = load_processor(path, max_pixels=max_pixels, trust_remote_code=trust_remote_code, video=video)
    if rank_zero_loading and not reads_weights_on_this_rank():
        model = _unfilled_model(path, config, torch_dtype, attn, trust_remote_code)
    else:
        with _no_bar_for_small_weights(path):
            model = AutoModelForImageTextToText.from_pretrained(
                path, dtype=torch_dtype, attn_implementation=attn, trust_remote_code=trust_remote_code
            )
    if rank_zero_loading:
        if torch.distributed.is_initialized():
            _take_rank_zero_layout(model)  # a collective: every process gets here
    else:
        model.to(device)
    tokenizer = getattr(processor, "tokenizer", processor)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


def reads_weights_on_this_rank() -> bool:
    """Under rank-zero loading: whether this process reads the weights (the first process of its machine,
    or the only process when torch.distributed is not initialized)."""
    import torch.distributed as dist

    return not dist.is_initialized() or int(os.environ.get("LOCAL_RANK", "0")) == 0


def _unfilled_model(path: str, config, dtype, attn: str, trust_remote_code: bool):
    """The model's modules with parameters of the right shapes and dtypes whose values are never read from disk.

    Built on the meta device (nothing allocated, no initialisation run), then given CPU storage that
    is reserved but never written, so it adds no resident memory. Not left on the meta device: the
    Trainer builds its optimizer over the LoRA parameters before accelerate shards the model, and
    accelerate matches them to their shards by storage address, which is 0 for every meta tensor.
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attn,
                                                        trust_remote_code=trust_remote_code)
    model.to_empty(device="cpu")
    model.tie_weights()  # to_empty may give tied weights storages of their own
    model.eval()  # as from_pretrained leaves it
    try:
        model.generation_config = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: from_config's, as from_pretrained would keep
        pass
    return model


def _take_rank_zero_layout(model) -> None:
    """Make every process's model agree with rank 0's: same parameter names, shapes and dtypes (what
    accelerate's broadcast of the shards assumes), and rank 0's non-persistent buffers (rotary
    frequencies, position ids), which are not in the state dict that accelerate sends."""
    import torch
    import torch.distributed as dist

    state = model.state_dict()
    buffers = dict(model.named_buffers())
    non_persistent = {name: tensor for name, tensor in buffers.items() if name not in state}
    sent = [None]
    if dist.get_rank() == 0:
        sent = [{"layout": {name: (tuple(t.shape), t.dtype) for name, t in state.items()},
                 "buffers": {name: t.detach().cpu() for name, t in non_persistent.items()}}]
    dist.broadcast_object_list(sent, src=0)
    if dist.get_rank() == 0:
        return
    layout, rank_zero_buffers = sent[0]["layout"], sent[0]["buffers"]
    mine = {name: (tuple(t.shape), t.dtype) for name, t in state.items()}
    if mine.keys() != layout.keys() or set(non_persistent) != set(rank_zero_buffers):
        differ = sorted(set(mine) ^ set(layout) | set(non_persistent) ^ set(rank_zero_buffers))
        raise RuntimeError(f"this process built another model than rank 0 (differing entries: {differ[:5]}); "
                           "every process must load the same model")
    parameters = dict(model.named_parameters())
    for name, (shape, dtype) in layout.items():
        if mine[name][0] != shape:
            raise RuntimeError(f"{name}: shape {mine[name][0]} here, {shape} on rank 0; every process must load "
                               "the same model")
        if mine[name][1] != dtype:  # e.g. a module kept in fp32 by from_pretrained only: follow rank 0
            tensor = parameters[name] if name in parameters else buffers[name]
            tensor.data = torch.empty(shape, dtype=dtype)
    for name, value in rank_zero_buffers.items():
        buffers[name].data = value.to(buffers[name].device)
