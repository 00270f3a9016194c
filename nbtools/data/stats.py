"""Describe a dataset: counts, image sizes, token lengths — as a dict and as figures.

The dict is JSON-serialisable (it goes into ``--json`` output and into run.json).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Optional

import numpy as np

from nbtools.data.records import PreferenceRecord
from nbtools.data.tokens import EpochTokens, PairTokens, TokenCounter, epoch_tokens
from nbtools.media_ref import is_embedded
from nbtools.models.variant import ThinkCounts


def _distribution(values) -> dict:
    """count, min, p50, p90, p99, max and mean of a list or numpy array (sorted as an array: a million
    values never become a million Python numbers)."""
    ordered = np.sort(np.asarray(values))
    if not len(ordered):
        return {"count": 0}
    def pct(q: float):
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))].item()
    return {"count": len(ordered), "min": ordered[0].item(), "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
            "max": ordered[-1].item(), "mean": round(float(ordered.mean(dtype=np.float64)), 2)}


def dataset_stats(
    records: list[PreferenceRecord],
    *,
    rows: Optional[int] = None,
    valid: Optional[int] = None,
    tokens: Optional[list[PairTokens]] = None,
    media: Optional[dict] = None,
    counter: Optional[TokenCounter] = None,
    problems: Optional[list] = None,
) -> dict:
    """Rows, valid rows, images per row, resolutions, token lengths (prompt/chosen/rejected),
    chosen/rejected length ratio and training tokens per epoch, unpacked and packed (``EpochTokens``).

    ``tokens``/``media`` come from validation; when missing, image sizes are read from the
    headers and tokens are estimated."""
    counter = counter or TokenCounter()
    records = list(records)
    if media is None:
        from nbtools.data.media import inspect_all

        media = inspect_all([p for r in records for p in r.images], videos=[p for r in records for p in r.videos])
    if tokens is None:
        sizes = {p: (i.width, i.height) for p, i in media.items() if not i.error and i.width}
        tokens = counter.count(records, sizes, {p: media[p] for r in records for p in r.videos if p in media})
    stats = StatsAccumulator()
    stats.add(records, tokens, media)
    return stats.result(rows=rows, valid=valid, counter=counter, problems=problems)


def _stable_key(ref: str) -> int:
    """A 64-bit key for a picture that is the same in every process (Python's ``hash`` is not)."""
    data = ref.data if is_embedded(ref) else ref.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class StatsAccumulator:
    """The statistics of a dataset, gathered chunk by chunk (and merged across worker processes).

    Per pair it keeps only small numbers in numpy arrays (tokens, length ratio); per distinct
    picture its size, keyed by a 64-bit digest of its path (or bytes, when embedded)."""

    _SERIES = ("image_tokens", "prompt", "chosen", "rejected", "longest", "ratio", "video_tokens")

    def __init__(self):
        self.pairs = 0
        self.images_per_row: Counter = Counter()
        self.videos = 0
        self.rows_with_rejected_images = 0
        self.epoch = EpochTokens()
        self.series: dict[str, list] = {name: [] for name in self._SERIES}
        self.images: dict[int, tuple[int, int]] = {}  # distinct picture -> (width, height)
        self.embedded = 0  # pictures and videos whose bytes are in the data itself
        self.embedded_resolutions: Counter = Counter()  # embedded pictures: (width, height) -> count
        self.embedded_sizes: list = []  # this chunk's, folded into embedded_resolutions by _compact
        self.video_infos: dict[str, tuple[float, float]] = {}  # distinct video -> (seconds, fps)
        self.think = ThinkCounts()  # chosen answers with <think> blocks: do they suit the model's kind?

    def add(self, records: list[PreferenceRecord], tokens: list[PairTokens], media: dict) -> None:
        self.pairs += len(records)
        self.images_per_row.update(len(r.images) for r in records)
        self.videos += sum(len(r.videos) for r in records)
        self.rows_with_rejected_images += sum(1 for r in records if r.rejected_images)
        self.epoch = self.epoch + epoch_tokens(records, tokens)
        self.think = self.think + ThinkCounts.of(r.chosen for r in records)
        columns = {"image_tokens": [t.image_tokens for t in tokens], "prompt": [t.prompt for t in tokens],
                   "chosen": [t.chosen for t in tokens], "rejected": [t.rejected for t in tokens],
                   "longest": [t.longest for t in tokens],
                   "video_tokens": [t.video_tokens for t, r in zip(tokens, records) if r.videos]}
        for name, values in columns.items():
            self.series[name].append(np.asarray(values, dtype=np.int32))
        self.series["ratio"].append(np.asarray([len(r.chosen) / max(1, len(r.rejected)) for r in records]))
        pictures = {}  # distinct within the chunk first: a key is a hash, computed once per picture
        for record in records:
            self.embedded += sum(is_embedded(m) for m in (*record.images, *record.videos,
                                                          *(record.rejected_images or ())))
            for path in record.images:
                pictures[id(path) if is_embedded(path) else path] = path
        for path in pictures.values():
            info = media.get(path)
            if info is None or info.error or not info.width:
                continue
            if is_embedded(path):  # one per row: counted, not remembered (a million would not fit a dict)
                self.embedded_sizes.append((info.width, info.height))
            else:
                self.images.setdefault(_stable_key(path), (info.width, info.height))
        for record in records:
            for path in record.videos:
                info = media.get(path)
                if info is not None and not info.error and info.frames:
                    self.video_infos.setdefault(str(path), (round(info.duration, 2), round(info.fps, 3)))

    def merge(self, other: "StatsAccumulator") -> None:
        self.pairs += other.pairs
        self.images_per_row.update(other.images_per_row)
        self.videos += other.videos
        self.rows_with_rejected_images += other.rows_with_rejected_images
        self.embedded += other.embedded
        self.epoch = self.epoch + other.epoch
        self.think = self.think + other.think
        for name in self._SERIES:
            self.series[name] += other.series[name]
        for key, size in other.images.items():
            self.images.setdefault(key, size)
        other._compact(force=True)
        self.embedded_resolutions.update(other.embedded_resolutions)
        for key, info in other.video_infos.items():
            self.video_infos.setdefault(key, info)
        self._compact()

    def _compact(self, force: bool = False) -> None:
        """Join the per-chunk arrays now and then, so a million pairs are a few arrays, not thousands."""
        for name, parts in self.series.items():
            if len(parts) > 64 or (force and len(parts) > 1):
                self.series[name] = [np.concatenate(parts)]
        self.embedded_resolutions.update(self.embedded_sizes)
        self.embedded_sizes = []

    def _values(self, name: str) -> np.ndarray:
        parts = self.series[name]
        return np.concatenate(parts) if parts else np.zeros(0)

    def result(self, *, rows: Optional[int] = None, valid: Optional[int] = None,
               counter: Optional[TokenCounter] = None, problems: Optional[list] = None) -> dict:
        counter = counter or TokenCounter()
        ratios = self._values("ratio")
        rounded_ratios = np.round(ratios, 3)
        self._compact(force=True)
        sizes = Counter(self.images.values()) + self.embedded_resolutions
        resolutions = Counter({f"{w}x{h}": n for (w, h), n in sizes.items()})
        pixels = np.repeat(np.asarray([w * h for w, h in sizes], dtype=np.int64),
                           np.asarray(list(sizes.values()), dtype=np.int64)) if sizes else np.zeros(0, np.int64)
        severities = Counter(p.severity for p in problems or [])
        return {
            "rows": rows if rows is not None else self.pairs,
            "valid_rows": valid if valid is not None else self.pairs,
            "pairs_loaded": self.pairs,
            "images_per_row": {str(k): v for k, v in sorted(self.images_per_row.items())},
            "videos": self.videos,
            "rows_with_rejected_images": self.rows_with_rejected_images,
            "distinct_images": len(pixels),
            "resolutions": dict(resolutions.most_common(10)),
            "image_pixels": _distribution(pixels),
            "image_tokens_per_pair": _distribution(self._values("image_tokens")),  # vision start/end included
            **({"video_seconds": _distribution([d for d, _ in self.video_infos.values()]),
                "video_fps": _distribution([f for _, f in self.video_infos.values()]),
                "video_tokens": _distribution(self._values("video_tokens")),
                "video_settings": {"fps": counter.video.fps, "max_frames": counter.video.max_frames,
                                   "video_max_pixels": counter.video.video_max_pixels}}
               if self.videos else {}),
            "tokens": {name: _distribution(self._values(key)) for name, key in
                       (("prompt", "prompt"), ("chosen", "chosen"), ("rejected", "rejected"),
                        ("longest_pair", "longest"))},
            "chosen_rejected_length_ratio": _distribution(rounded_ratios),
            "chosen_longer_share": round(float((ratios > 1).mean()), 3) if len(ratios) else None,
            "training_tokens_per_epoch": self.epoch.rows,  # unpacked; EpochTokens says what each figure counts
            "packed_tokens_per_epoch": self.epoch.packed,
            "token_counting": counter.label,
            "max_pixels": counter.max_pixels,
            "image_geometry": {"family": counter.geo.family, "patch_size": counter.geo.patch_size,
                               "merge_size": counter.geo.merge_size},
            "problems": {k: severities.get(k, 0) for k in ("error", "warning", "info")},
        }

    def verbosity(self) -> tuple[int, float, float]:
        """(pairs, share with chosen longer, median chosen/rejected length ratio) for the verbosity rule."""
        ratios = np.concatenate(self.series["ratio"]) if self.series["ratio"] else np.zeros(0)
        if not len(ratios):
            return 0, 0.0, 0.0
        return len(ratios), float((ratios > 1).mean()), float(np.median(ratios))


def epoch_tokens_text(stats: dict) -> str:
    """The epoch's tokens in both layouts, as 01 says them (02 shows the one its packing setting picks; both
    come from ``EpochTokens``)."""
    rows, packed = stats.get("training_tokens_per_epoch", 0), stats.get("packed_tokens_per_epoch")
    if packed is None:
        return f"{rows:,}"
    return f"{packed:,} packed (packing: true, one row per pair) or {rows:,} unpacked (packing: false)"


def token_bins(values: list[int], most: int = 30) -> list[float]:
    """Bin edges on whole tokens (half-integers), at most ``most`` bins, each at least one token wide."""
    low, high = (min(values), max(values)) if values else (0, 1)
    width = max(1, -(-(high - low + 1) // most))  # ceil
    edges = [low - 0.5 + i * width for i in range(-(-(high - low + 1) // width) + 1)]
    return edges


def plot_stats(stats: dict, tokens: Optional[list[PairTokens]] = None):
    """A matplotlib Figure: images per row, token length summary, length ratio, resolutions."""
    from matplotlib.figure import Figure  # not pyplot: no global state, no display needed

    fig = Figure(figsize=(12, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    estimate = " (estimated)" if "estimate" in stats.get("token_counting", "") else ""

    ax = axes[0][0]
    per_row = stats.get("images_per_row", {})
    ax.bar(list(per_row.keys()), list(per_row.values()), color="#4C72B0")
    ax.set(title="images per row", xlabel="images", ylabel="rows")

    ax = axes[0][1]
    if tokens:
        series = {"prompt": [t.prompt for t in tokens], "chosen": [t.chosen for t in tokens],
                  "rejected": [t.rejected for t in tokens]}
        # One set of whole-token bins for all three, bars side by side in each bin: no hairline bars
        # (30 bins over a few distinct answer lengths) and no bars hiding behind each other.
        ax.hist(list(series.values()), bins=token_bins([v for values in series.values() for v in values]),
                label=list(series), color=["#4C72B0", "#55A868", "#C44E52"], rwidth=0.9)
        ax.set_xlabel("tokens")
        ax.legend()
    else:
        names = ["prompt", "chosen", "rejected"]
        dists = [stats["tokens"][n] for n in names]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [d.get("p50", 0) for d in dists], width=0.4, label="median")
        ax.bar([i + 0.2 for i in x], [d.get("max", 0) for d in dists], width=0.4, label="max")
        ax.set_xticks(list(x), names)
        ax.legend()
    ax.set(title=f"token lengths{estimate}", ylabel="tokens" if not tokens else "pairs")

    ax = axes[1][0]
    ratio = stats.get("chosen_rejected_length_ratio", {})
    keys = [k for k in ("min", "p50", "p90", "max") if k in ratio]
    ax.bar(keys, [ratio[k] for k in keys], color="#DD8452")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set(title=f"chosen/rejected length ratio (chosen longer in {stats.get('chosen_longer_share') or 0:.0%})")

    ax = axes[1][1]
    res = stats.get("resolutions", {})
    ax.barh(list(res.keys())[::-1], list(res.values())[::-1], color="#55A868")
    ax.set(title="most common resolutions (distinct images)", xlabel="images")
    fig.suptitle(f"{stats.get('valid_rows')} valid of {stats.get('rows')} rows; "
                 f"training tokens per epoch{estimate}: {epoch_tokens_text(stats)}")
    return fig
