"""Describe a dataset: counts, image sizes, token lengths — as a dict and as figures.

The dict is JSON-serialisable (it goes into ``--json`` output and into run.json).
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Optional

from nbtools.data.records import PreferenceRecord
from nbtools.data.tokens import PairTokens, TokenCounter


def _distribution(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    def pct(q: float):
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]
    return {"count": len(values), "min": ordered[0], "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
            "max": ordered[-1], "mean": round(statistics.fmean(values), 2)}


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
    chosen/rejected length ratio and estimated training tokens per epoch.

    ``tokens``/``media`` come from validation; when missing, image sizes are read from the
    headers and tokens are estimated."""
    counter = counter or TokenCounter()
    if media is None:
        from nbtools.data.media import inspect_all

        media = inspect_all([p for r in records for p in r.images], videos=[p for r in records for p in r.videos])
    if tokens is None:
        sizes = {p: (i.width, i.height) for p, i in media.items() if not i.error and i.width}
        tokens = counter.count(records, sizes, {p: media[p] for r in records for p in r.videos if p in media})
    images_per_row = Counter(len(r.images) for r in records)
    resolutions = Counter()
    pixels = []
    for path in {p for r in records for p in r.images}:
        info = media.get(path)
        if info is not None and not info.error and info.width:
            resolutions[f"{info.width}x{info.height}"] += 1
            pixels.append(info.width * info.height)
    video_infos = [media.get(p) for p in {p for r in records for p in r.videos}]
    video_infos = [i for i in video_infos if i is not None and not i.error and i.frames]
    ratios = [len(r.chosen) / max(1, len(r.rejected)) for r in records]
    # DPO runs the policy on prompt+chosen and prompt+rejected (plus the reference model).
    per_epoch = sum(t.prompt + t.rejected_prompt + t.chosen + t.rejected for t in tokens)
    severities = Counter(p.severity for p in problems or [])
    return {
        "rows": rows if rows is not None else len(records),
        "valid_rows": valid if valid is not None else len(records),
        "pairs_loaded": len(records),
        "images_per_row": {str(k): v for k, v in sorted(images_per_row.items())},
        "videos": sum(len(r.videos) for r in records),
        "rows_with_rejected_images": sum(1 for r in records if r.rejected_images),
        "distinct_images": len(pixels),
        "resolutions": dict(resolutions.most_common(10)),
        "image_pixels": _distribution(pixels),
        "image_tokens": _distribution([t.image_tokens for t in tokens]),
        **({"video_seconds": _distribution([round(i.duration, 2) for i in video_infos]),
            "video_fps": _distribution([round(i.fps, 3) for i in video_infos]),
            "video_tokens": _distribution([t.video_tokens for t, r in zip(tokens, records) if r.videos]),
            "video_settings": {"fps": counter.video.fps, "max_frames": counter.video.max_frames,
                               "video_max_pixels": counter.video.video_max_pixels}}
           if any(r.videos for r in records) else {}),
        "tokens": {
            "prompt": _distribution([t.prompt for t in tokens]),
            "chosen": _distribution([t.chosen for t in tokens]),
            "rejected": _distribution([t.rejected for t in tokens]),
            "longest_pair": _distribution([t.longest for t in tokens]),
        },
        "chosen_rejected_length_ratio": _distribution([round(r, 3) for r in ratios]),
        "chosen_longer_share": round(sum(r > 1 for r in ratios) / len(ratios), 3) if ratios else None,
        "training_tokens_per_epoch": per_epoch,
        "token_counting": counter.label,
        "max_pixels": counter.max_pixels,
        "image_geometry": {"family": counter.geo.family, "patch_size": counter.geo.patch_size,
                           "merge_size": counter.geo.merge_size},
        "problems": {k: severities.get(k, 0) for k in ("error", "warning", "info")},
    }


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
                 f"~{stats.get('training_tokens_per_epoch', 0):,} training tokens per epoch{estimate}")
    return fig
