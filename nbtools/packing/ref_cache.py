"""Reference log-probs computed once and stored on disk, keyed by everything that changes them.

Why: with a frozen reference, each pair's reference chosen/rejected log-probs are constants of
(pair content + image, rejected-image and video bytes, image sizing, frame settings, model
weights + starting adapter, tokenizer + chat template, dtype). Computing them once (adapter
disabled, inference mode, packed layout) saves the second forward of every step; storing them in
the shared cache lets later epochs, resumed runs and sweeps over the same base model and data
skip them too. The key hashes all of the
inputs above, so a changed input can never reuse a stale value — it just misses.

Layout: ``cache_dir()/"ref_logps"/*.nbref``, append-only shards with one fixed-size binary entry per pair
(raw sha256 key, chosen and rejected as float64, CRC32), one shard per process that ever wrote: see
:mod:`nbtools.shard_store`. Caches in the earlier layout (one ``<key[:2]>/<key>.json`` per pair)
are not read or migrated: their pairs miss once and are recomputed into the shards.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable

import torch

from nbtools.paths import cache_dir
from nbtools.shard_store import ShardStore

from .contrast import CONTRAST_KEY
from .digest import image_bytes, parts_digest
from .layout import example_images

# Bump when the way log-probs are computed changes (layout, scoring), so old values miss.
REFERENCE_FORMAT_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _sha(*parts: bytes | str) -> str:
    return parts_digest(*parts).hexdigest()


def folder_digest(path: str | os.PathLike | None) -> str:
    """Digest of a local model/adapter folder: config and tokenizer files by content, weights by name+size+mtime.

    Hashing multi-GB weights on every run would cost minutes; size + modification time change
    whenever a weight file is rewritten. Pass hub models as their local snapshot folder
    (nbtools.models.local_model_folder); a bare hub id is keyed by name + revision only.
    """
    if path is None:
        return ""
    folder = Path(path)
    if not folder.exists():
        return _sha("hub", str(path))
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    parts = []
    for file in files:
        relative = file.name if folder.is_file() else str(file.relative_to(folder))
        if file.suffix in WEIGHT_SUFFIXES:
            stat = file.stat()
            parts.append(f"{relative}:{stat.st_size}:{stat.st_mtime_ns}")
        elif file.suffix in (".json", ".jinja", ".txt", ".model", ".yaml"):
            parts.append(f"{relative}:{_sha(file.read_bytes())}")
    return _sha(*parts)


def processor_digest(processor) -> tuple[str, str]:
    """(tokenizer + chat template digest, image/video processor settings digest)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None) or ""
    tokenizer_part = _sha(vocabulary, str(template), str(tokenizer.pad_token_id))
    settings = []
    for name in ("image_processor", "video_processor"):
        sub = getattr(processor, name, None)
        if sub is not None and hasattr(sub, "to_json_string"):
            settings.append(sub.to_json_string())
    return tokenizer_part, _sha(*settings)


@dataclass(frozen=True)
class ReferenceFingerprint:
    """Everything outside the pair that changes its reference log-probs."""

    model: str
    model_revision: str
    starting_adapter: str
    tokenizer_and_template: str
    image_processing: str
    max_pixels: int | None
    dtype: str
    format_version: int = REFERENCE_FORMAT_VERSION

    def digest(self) -> str:
        return _sha(json.dumps(asdict(self), sort_keys=True))


def reference_fingerprint(
    model_path: str,
    processor,
    *,
    max_pixels: int | None,
    dtype: torch.dtype | str,
    revision: str | None = None,
    starting_adapter: str | os.PathLike | None = None,
) -> ReferenceFingerprint:
    tokenizer_part, image_part = processor_digest(processor)
    return ReferenceFingerprint(
        model=str(model_path),
        model_revision=_sha(str(revision or ""), folder_digest(model_path)),
        starting_adapter=folder_digest(starting_adapter),
        tokenizer_and_template=tokenizer_part,
        image_processing=image_part,
        max_pixels=max_pixels,
        dtype=str(dtype).replace("torch.", ""),
    )


def _without_nones(value: Any) -> Any:
    """Drop None-valued keys: ``datasets`` adds them when it unifies message structs, and they change nothing."""
    if isinstance(value, dict):
        return {k: _without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_nones(v) for v in value]
    return value


def _clip_bytes(clip: Any) -> bytes:
    """A decoded clip: its frames (which the sampling and resizing produced), their metadata and the settings."""
    if isinstance(clip, (str, os.PathLike, bytes, bytearray, dict)):
        return image_bytes(clip)
    frames = clip.frames
    metadata = clip.metadata
    described = {
        "shape": list(frames.shape), "dtype": str(frames.dtype),
        "fps": getattr(metadata, "fps", None), "frames_indices": list(getattr(metadata, "frames_indices", None) or []),
        "total_num_frames": getattr(metadata, "total_num_frames", None),
        "settings": asdict(clip.settings) if getattr(clip, "settings", None) is not None else None,
    }
    return json.dumps(described, sort_keys=True, default=str).encode() + frames.tobytes()


def pair_digest(example: dict) -> str:
    """Digest of one pair's messages and image / video bytes (same for a raw example and its ``datasets`` row).

    Videos and ``rejected_images`` add parts only when present, so image-only pairs keep their keys.
    """
    messages = {k: _without_nones(example.get(k)) for k in ("prompt", "chosen", "rejected")}
    text = json.dumps(messages, sort_keys=True, default=str)
    parts = [image_bytes(image) for image in example_images(example)]
    if example.get("rejected_images"):
        parts += [b"rejected_images"] + [image_bytes(image) for image in example["rejected_images"]]
    if example.get("videos"):
        parts += [b"videos"] + [_clip_bytes(clip) for clip in example["videos"]]
    if example.get(CONTRAST_KEY):  # an mDPO image-contrast pair: how its images were corrupted (crop seed)
        parts += [b"image_contrast", str(example[CONTRAST_KEY])]
    return _sha(text, *parts)


def pair_key(example: dict, fingerprint: ReferenceFingerprint) -> str:
    return _sha(fingerprint.digest(), pair_digest(example))


def is_log_prob(value: Any) -> bool:
    """A summed log-probability: a finite real number (not a bool, list or string) at most 0."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value <= 0


def _key_bytes(key: str) -> bytes | None:
    """The 32 raw bytes of a 64-hex sha256 key, or None for anything else (which can never be stored)."""
    try:
        raw = bytes.fromhex(key)
    except (TypeError, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _both_log_probs(chosen: float, rejected: float) -> bool:
    return is_log_prob(chosen) and is_log_prob(rejected)


class ReferenceLogpsStore:
    """Reference (chosen, rejected) log-probs by pair key, in append-only shards under ``cache_dir()/"ref_logps"``.

    A few files per folder (one per process that ever wrote), whatever the number of pairs; values written by
    other processes (ranks, nodes sharing the folder) are seen on a miss. Entries are fsync'ed at :meth:`flush`,
    :meth:`close` or exit. Pickles as its folder alone (spawned data-loader workers scan the shards themselves).
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else cache_dir() / "ref_logps"
        self._shards = ShardStore(self.folder, accept=_both_log_probs)

    def __getstate__(self) -> dict:
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def get(self, key: str) -> tuple[float, float] | None:
        """The stored (chosen, rejected) reference log-probs, or None when missing or not usable.

        Only entries with a good checksum and two finite values at most 0 are used: a damaged entry (a torn
        write, a bad disk, NaN from a broken run) counts as missing, so the pair is recomputed and stored again,
        instead of turning every later run's loss into NaN.
        """
        raw = _key_bytes(key)
        return None if raw is None else self._shards.get(raw)

    def get_many(self, keys: list[str]) -> list[tuple[float, float] | None]:
        """:meth:`get` of several keys, with one re-scan at most for all their misses (not one per miss)."""
        raw = [_key_bytes(key) for key in keys]
        found = self._shards.get_many([key for key in raw if key is not None])
        values = iter(found)
        return [None if key is None else next(values) for key in raw]

    def put(self, key: str, chosen: float, rejected: float) -> bool:
        """Store one pair's values; values that are not log-probabilities are not stored (False)."""
        chosen, rejected = float(chosen), float(rejected)
        if not _both_log_probs(chosen, rejected):
            return False
        raw = _key_bytes(key)
        if raw is None:
            raise ValueError(f"a reference cache key is a 64-hex sha256 digest, not {key!r}")
        return self._shards.put(raw, chosen, rejected)

    def __len__(self) -> int:
        """Number of pairs stored (by any process), after reading what was appended since the last look."""
        return len(self._shards)

    def keys(self) -> list[str]:
        return [key.hex() for key in self._shards.keys()]

    def flush(self) -> None:
        """Make this process's entries durable (fsync) and visible to other NFS clients."""
        self._shards.flush()

    def close(self) -> None:
        self._shards.close()

    def lookup(self, examples: list[dict], fingerprint: ReferenceFingerprint) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Reference values for a whole batch, or None if any pair is missing (then the step computes them)."""
        found = self.get_many([pair_key(example, fingerprint) for example in examples])
        if any(value is None for value in found):
            return None
        chosen, rejected = zip(*found)
        return torch.tensor(chosen, dtype=torch.float32), torch.tensor(rejected, dtype=torch.float32)

    def lookup_for(self, fingerprint: ReferenceFingerprint) -> Callable[[list[dict]], Any]:
        """A ``reference_lookup`` callable for :class:`~nbtools.packing.layout.PackedPreferenceCollator`."""
        # a partial, not a lambda: the collator travels to spawned data-loader workers by pickle
        return functools.partial(self.lookup, fingerprint=fingerprint)


@dataclass
class PrecomputeReport:
    computed: int
    reused: int


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def precompute_reference_logps(
    model,
    examples: Iterable[dict],
    collator,
    store: ReferenceLogpsStore,
    fingerprint: ReferenceFingerprint,
    *,
    batch_size: int = 4,
    ref_model=None,
    reference_context: Callable[[], ContextManager] | None = None,
    description: str = "Reference log-probs",
    total: int | None = None,
    progress: bool = True,
) -> PrecomputeReport:
    """Fill ``store`` with the reference log-probs of every pair it does not hold yet (tqdm progress bar).

    ``examples`` may be a lazy iterable (images opened as it goes; ``total`` sizes the bar); pairs are processed
    ``batch_size`` at a time. The reference is ``ref_model`` or ``model`` with its adapter
    disabled; eval mode and inference mode while computing, the previous mode restored after.
    """
    from tqdm.auto import tqdm

    from .logps import packed_logps
    from .step import default_reference_context
    from .vision_cache import encode_images

    target = ref_model if ref_model is not None else model
    device = next(target.parameters()).device
    was_training = target.training
    context = contextlib.nullcontext() if ref_model is not None else (
        reference_context() if reference_context is not None else default_reference_context(model)
    )
    if total is None and hasattr(examples, "__len__"):
        total = len(examples)
    computed = reused = 0

    def flush(pending: list[tuple[str, dict]]) -> None:
        batch = _to_device(collator([example for _, example in pending]), device)
        batch.pop("ref_chosen_logps", None)
        batch.pop("ref_rejected_logps", None)
        # encoded once (a picture or clip the batch holds twice: once), under the reference's own weights
        result = packed_logps(target, batch, encoder_outputs=encode_images(target, batch))
        for row, (key, _) in enumerate(pending):
            store.put(key, result.chosen[row].item(), result.rejected[row].item())

    target.eval()
    try:
        with context, torch.inference_mode(), tqdm(total=total, desc=description, unit="pair",
                                                           disable=not progress) as bar:
            pending: list[tuple[str, dict]] = []
            for example in examples:
                key = pair_key(example, fingerprint)
                if store.get(key) is not None:
                    reused += 1
                    bar.update(1)
                    continue
                pending.append((key, example))
                if len(pending) == batch_size:
                    flush(pending)
                    computed += len(pending)
                    bar.update(len(pending))
                    pending = []
            if pending:
                flush(pending)
                computed += len(pending)
                bar.update(len(pending))
    finally:
        target.train(was_training)
        flush_store = getattr(store, "flush", None)
        if flush_store is not None:
            flush_store()  # durable before training relies on the values
    return PrecomputeReport(computed=computed, reused=reused)
