"""evaluation.json, and the table, plot and flipped-pairs page made from it.

Everything that shows an evaluation reads the JSON form, so a saved ``evaluation.json``
renders exactly like a fresh one (in the notebook, the CLI and the model card).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Optional, Sequence

from .metrics import COMPARABLE_METRICS, CONFIDENCE, METRIC_HELP, METRICS, PreferenceEvaluation

EVALUATION_FILE = "evaluation.json"
PLOT_FILE = "evaluation.png"
FLIPPED_FILE = "evaluation_flipped.html"

ACCURACY_METRICS = ("preference_accuracy", "preference_accuracy_normalized", "reward_accuracy")
MARGIN_METRICS = ("logprob_margin", "reward_margin")
# Measured against the reference model, which the base model is: 0 for the base by definition, not a result.
REFERENCE_DEFINED = ("reward_accuracy", "reward_margin")
FLIPPED_SHOWN = 5  # flipped pairs shown open; the rest are folded (each row carries pictures)


def evaluation_to_dict(evaluation: PreferenceEvaluation, **context) -> dict:
    """The ``evaluation.json`` payload; ``context`` (data file, model, ...) is added at top level.

    Each side maps metric -> value, with the intervals under ``"ci95"`` so that
    ``payload["tuned"]["preference_accuracy"]`` is a plain number.
    """

    def side(estimates):
        out = {m: estimates[m].value for m in METRICS}
        out["ci95"] = {m: [estimates[m].low, estimates[m].high] for m in METRICS}
        return out

    return {
        "base": side(evaluation.base),
        "tuned": side(evaluation.tuned),
        "difference": {
            m: {"value": e.value, "ci95": [e.low, e.high]} for m, e in evaluation.difference.items()
        },
        "n_pairs": evaluation.n_pairs,
        "beta": evaluation.beta,
        "tuned_better": evaluation.tuned_better,
        "confidence": CONFIDENCE,
        "bootstrap": {"n_resamples": evaluation.n_resamples, "seed": evaluation.seed, "paired": True},
        "warnings": list(evaluation.warnings),
        "flipped": list(evaluation.flipped),
        "metric_help": dict(METRIC_HELP),
        **context,
    }


def write_evaluation(run_dir, payload: dict) -> Path:
    from nbtools import atomic

    return atomic.write_json(Path(run_dir) / EVALUATION_FILE, payload, indent=2)


def read_evaluation(run_dir) -> Optional[dict]:
    path = Path(run_dir) / EVALUATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value: float, metric: str) -> str:
    return f"{value:.1%}" if "accuracy" in metric else f"{value:.3f}"


def _with_ci(value: float, ci: Sequence[float], metric: str) -> str:
    return f"{_fmt(value, metric)} [{_fmt(ci[0], metric)}, {_fmt(ci[1], metric)}]"


def table_rows(payload: dict) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, tuned - base) as display strings, intervals in brackets."""
    rows = []
    for m in METRICS:
        diff = payload["difference"].get(m)
        rows.append(
            (
                m,
                _with_ci(payload["base"][m], payload["base"]["ci95"][m], m) if m in COMPARABLE_METRICS else "0 (reference)",
                _with_ci(payload["tuned"][m], payload["tuned"]["ci95"][m], m),
                _with_ci(diff["value"], diff["ci95"], m) if diff else "",
            )
        )
    return rows


def table_text(payload: dict) -> str:
    """Fixed-width table for the terminal."""
    from nbtools.display import fixed_width_table

    lines = fixed_width_table([("metric", "base", "tuned", "tuned - base"), *table_rows(payload)])
    lines.append(f"{payload['n_pairs']} pairs; {payload['confidence']:.0%} paired bootstrap intervals in brackets")
    lines += [f"WARNING: {w}" for w in payload.get("warnings", [])]
    lines += left_out_lines(payload)
    return "\n".join(lines)


SHOW_LEFT_OUT = 10


def left_out_lines(payload: dict, limit: int = SHOW_LEFT_OUT) -> list[str]:
    """``left out N pair(s)`` and one ``FILE:LINE: reason`` line per pair (the first ``limit``), or nothing."""
    left_out = payload.get("left_out") or {}
    pairs = left_out.get("pairs") or []
    if not pairs:
        return []
    lines = [f"left out {len(pairs)} pair(s) that cannot be scored as the run was trained:"]
    lines += [f"  {p['file']}:{p['line']}: {p['reason']}" for p in pairs[:limit]]
    if len(pairs) > limit:
        lines.append(f"  ... and {len(pairs) - limit} more (all listed in evaluation.json under left_out)")
    return lines


def table_markdown(payload: dict) -> str:
    """The same table for model cards."""
    lines = ["| metric | base | tuned | tuned - base |", "|---|---|---|---|"]
    lines += [f"| `{m}` | {b} | {t} | {d} |" for m, b, t, d in table_rows(payload)]
    return "\n".join(lines)


def table_html(payload: dict) -> str:
    """A small HTML table (no pandas needed) with each metric's meaning as a tooltip."""
    head = "".join(f"<th>{h}</th>" for h in ("metric", "base", "tuned", "tuned &minus; base"))
    body = []
    for metric, *cells in table_rows(payload):
        tip = html.escape(METRIC_HELP[metric], quote=True)
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        body.append(f'<tr><td title="{tip}"><code>{metric}</code></td>{tds}</tr>')
    caption = f"{payload['n_pairs']} held-out pairs; {payload['confidence']:.0%} paired bootstrap intervals"
    warnings = "".join(f'<p style="color:#b45309">&#9888; {html.escape(w)}</p>' for w in payload.get("warnings", []))
    left_out = left_out_lines(payload)
    if left_out:
        warnings += f"<pre>{html.escape(chr(10).join(left_out))}</pre>"
    return (
        f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>{warnings}"
    )


def plot_evaluation(payload: dict, path=None):
    """Bars for base vs tuned with 95% interval whiskers: accuracies left, margins right."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    for ax, metrics, title in (
        (axes[0], ACCURACY_METRICS, "accuracy"),
        (axes[1], MARGIN_METRICS, "margin"),
    ):
        x = np.arange(len(metrics))
        for offset, side, colour in ((-0.2, "base", "#9ca3af"), (0.2, "tuned", "#2563eb")):
            # The base model is the reference: its rewards are 0 by definition, so a bar at 0 would read as
            # "0 % accurate". Those slots get a note instead of a bar.
            drawn = [i for i, m in enumerate(metrics) if not (side == "base" and m in REFERENCE_DEFINED)]
            values = np.array([payload[side][metrics[i]] for i in drawn])
            ci = np.array([payload[side]["ci95"][metrics[i]] for i in drawn])
            err = np.abs(np.vstack([values - ci[:, 0], ci[:, 1] - values]))
            ax.bar(x[drawn] + offset, values, 0.4, yerr=err, capsize=4, label=side, color=colour)
            for i in sorted(set(range(len(metrics))) - set(drawn)):
                ax.text(x[i] + offset, 0.02 if title == "accuracy" else 0, "base =\nreference\n(no bar)",
                        ha="center", va="bottom", fontsize=7, color="#4b5563")
        ax.set_xticks(x, [m.replace("_", "\n", 1) for m in metrics], fontsize=8)
        ax.set_title(title)
        ax.axhline(0, color="black", linewidth=0.6)
    axes[0].axhline(0.5, color="#6b7280", linewidth=0.8, linestyle=":")
    axes[0].set_ylim(0, 1.05)
    # accuracies sit near 1, so a legend inside the axes would cover bars: put it beside the title
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"base vs tuned on {payload['n_pairs']} pairs ({payload['confidence']:.0%} intervals)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    if path is not None:
        from nbtools.plot_text import save_figure

        try:
            save_figure(fig, path, dpi=110)
        finally:
            plt.close(fig)
    return fig


def prompt_text(prompt) -> str:
    """The user-visible text of a prompt (messages with text/image blocks, or a string)."""
    if isinstance(prompt, str):
        return prompt
    parts = []
    for message in prompt:
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(block.get("text", "") for block in content if block.get("type") == "text")
    return "\n".join(p for p in parts if p)


def answer_text(answer) -> str:
    return answer if isinstance(answer, str) else prompt_text(answer)


def flipped_pairs_html(flipped: Sequence[dict], records: Sequence, root=None, video=None,
                       family: str = "qwen3_vl") -> str:
    """The pairs whose verdict changed between base and tuned, with their images (both sets, labelled, for
    an image-contrast pair) and a strip of each video's frames, sampled with the run's ``video`` settings.

    ``records`` are the scored PreferenceRecords (``flipped[i]["index"]`` points into them). The
    file is shown relative to the project folder (or ``root``), its full path on hover.
    """
    from nbtools.data.preview import THUMB_PX, record_media_html, thumbnail_data_uri
    from nbtools.display import path_html, table_style

    if not flipped:
        return "<p>No pair changed its verdict between the base and the tuned model.</p>"
    rows = []
    for row in flipped:
        record = records[row["index"]]
        if record.videos or record.rejected_images:
            images = record_media_html(record, THUMB_PX, video, family)
        else:
            thumbs = [thumbnail_data_uri(path) for path in record.images]
            images = "".join(f'<img src="{uri}" style="width:{THUMB_PX}px;height:auto;margin:2px">'
                             for uri in thumbs if uri)
        colour = "#15803d" if row["direction"] == "fixed" else "#b91c1c"
        cells = [
            path_html(record.file, root, f":{record.line}"),
            f'<b style="color:{colour}">{row["direction"]}</b>',
            images,
            html.escape(prompt_text(record.prompt)),
            html.escape(record.chosen),
            html.escape(record.rejected),
            f"{row['base_margin']:.2f}",
            f"{row['tuned_margin']:.2f}",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "<thead><tr>" + "".join(
        f"<th>{h}</th>"
        for h in ("pair", "verdict", "images", "prompt", "chosen", "rejected", "base margin", "tuned margin")
    ) + "</tr></thead>"
    fixed = sum(r["direction"] == "fixed" for r in flipped)
    caption = f"{len(flipped)} pairs flipped: {fixed} fixed by tuning, {len(flipped) - fixed} broken"
    page = (f"{table_style('nbt-flipped')}<table class=\"nbt-flipped\"><caption style=\"text-align:left\">"
            f"{caption}</caption>{head}<tbody>{''.join(rows[:FLIPPED_SHOWN])}</tbody></table>")
    if len(rows) > FLIPPED_SHOWN:  # one page of pictures is enough to read; the rest on request
        page += (f"<details class=\"nbt-flipped-more\"><summary style=\"cursor:pointer\">Show the other "
                 f"{len(rows) - FLIPPED_SHOWN} flipped pairs</summary><table class=\"nbt-flipped\">{head}<tbody>"
                 f"{''.join(rows[FLIPPED_SHOWN:])}</tbody></table></details>")
    return page
