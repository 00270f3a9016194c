"""The README's figures from the committed results of ``scale.py``, ``ref_store.py``, ``media_fingerprint.py``,
``long_pairs.py``, ``served_reply.py`` and ``warm_spread.py`` (never typed twice).

``python benchmarks/readme_figures.py`` rewrites the marked places of README.md from
``benchmarks/results/scale.json``, ``ref_store.json``, ``media_fingerprint.json``, ``long_pairs.json``,
``served_reply.json`` and ``warm_spread.json`` (the demo's colour questions);
``tests/test_readme_figures.py`` fails when the README and the results disagree.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SCALE_MARK = "<!-- scale table -->"
STORE_MARK = "<!-- ref_store -->"
FINGERPRINT_MARK = "<!-- media_fingerprint -->"
LONG_PAIRS_MARK = "<!-- long_pairs mask -->"
LOGPROBS_MARK = "<!-- long_pairs logprobs -->"
PADDING_MARK = "<!-- long_pairs padding -->"
REFERENCE_MARK = "<!-- long_pairs reference -->"
SERVED_MARK = "<!-- served reply -->"
COLOUR_MARK = "<!-- colour questions -->"


def _side(figures: dict) -> str:
    if not figures or figures.get("supported") is False:
        return "cannot read it"
    return f"{figures['seconds']:.1f} s, {figures['peak_mb']:.0f} MB"


def scale_table(results: dict) -> str:
    """One row per case: what was measured, the new code, the code before, the goal, met or not."""
    cases = results["cases"]
    rows = ["| case | this code | code before (4fde58c) | goal | met |", "|---|---|---|---|---|"]
    for name, what in (("validate_jsonl_1m", "validate 1,000,000 JSONL rows"),
                       ("validate_parquet_1m", "validate 1,000,000 Parquet rows (about 1 GB)"),
                       ("validate_jsonl_100k", "validate 100,000 JSONL rows")):
        case = cases[name]
        goal = case["goal"]
        wanted = (f"≤ {goal['ratio_max']:g}× the code before" if "ratio_max" in goal else
                  f"≤ {goal['seconds_max']:g} s, ≤ {goal['peak_mb_max']:g} MB")
        ratio = f" ({case['ratio']:.2f}×)" if "ratio" in case else ""
        rows.append(f"| {what} | {_side(case['results'].get('tree'))}{ratio} | "
                    f"{_side(case['results'].get('baseline'))} | {wanted} | {'yes' if case['met'] else 'no'} |")
    train = cases["train_first_step"]
    sides = []
    for role in ("tree", "baseline"):
        figures = train["results"].get(role) or {}
        few, many = figures.get("pairs_1000", {}), figures.get("pairs_100000", {})
        sides.append(f"{few['seconds']:.1f} → {many['seconds']:.1f} s, peak +{many['peak_mb'] - few['peak_mb']:.0f} MB"
                     if few and many else "not measured")
    tree = train["results"]["tree"]
    memory = tree["pairs_100000"]["peak_mb"] - tree["pairs_1000"]["peak_mb"] <= train["goal"]["peak_delta_mb_max"]
    time_ok = tree["pairs_100000"]["seconds"] <= train["goal"]["seconds_max"]
    rows.append(f"| `train()` up to its first optimizer step, 1,000 → 100,000 pairs | {sides[0]} | {sides[1]} | "
                f"≤ {train['goal']['seconds_max']:g} s, ≤ +{train['goal']['peak_delta_mb_max']:g} MB | "
                f"memory {'yes' if memory else 'no'}, time {'yes' if time_ok else 'no'} |")
    return "\n".join(rows)


def store_line(results: dict) -> str:
    new, old = results["shards"], results["baseline_old_json_per_pair"]
    return (f"{new['files']} file of {new['bytes_on_disk'] / 2**20:.1f} MB instead of {old['files']:,} files "
            f"({old['bytes_on_disk'] / 2**20:.0f} MB on disk); {new['lookups_per_second_present']:,.0f} lookups/s "
            f"instead of {old['lookups_per_second_present']:,.0f}; rows: `benchmarks/results/ref_store.json`")


def fingerprint_line(results: dict) -> str:
    return (f"{results['per_reference_us']:.1f} µs per picture reference, {results['fingerprint_share']:.1%} of "
            f"validating {results['rows']:,} rows (`benchmarks/results/media_fingerprint.json`)")


def mask_table(results: dict) -> str:
    """Building one packed row's attention mask: peak memory and what is kept, per length."""
    rows = ["| tokens in the row | dense mask, code before | dense mask, now | block mask (GPU path) |",
            "|---|---|---|---|"]
    for length, case in results["cases"]["mask_build"].items():
        def cell(side):
            figures = case.get(side) or {}
            if "build_peak_mb" not in figures:
                return "not measured"
            kept = figures["kept_bytes"]
            size = f"{kept / 2**20:,.0f} MB" if kept >= 2**20 else f"{kept / 2**10:,.0f} KB"
            return f"peak +{figures['build_peak_mb']:,.0f} MB, keeps {size}"
        rows.append(f"| {int(length):,} | {cell('dense_before')} | {cell('dense')} | {cell('block_mask')} |")
    return "\n".join(rows)


def logprobs_line(results: dict) -> str:
    case = results["cases"]["logprobs"]
    return (f"{case['full']['peak_above_inputs_mb']:,.0f} MB with the full-vocabulary tensor, "
            f"{case['chunked']['peak_above_inputs_mb']:,.0f} MB chunked ({case['peak_ratio']:.2f}×; one fp32 copy of "
            f"the logits is {case['full_logits_mb']:,.0f} MB)")


def padding_line(results: dict) -> str:
    case = results["cases"]["padding"]
    packed = "; ".join(f"several pairs per row up to {int(budget):,} tokens {row['padding_fraction']:.1%}"
                       for budget, row in case["packed"].items())
    line = (f"one pair per row (batches of {case['one_pair_per_row']['batch_size']}, each padded to its longest) "
            f"{case['one_pair_per_row']['padding_fraction']:.1%}; {packed} (all pairs planned together, by length)")
    step = case.get("training_step")
    if step:
        block = "; ".join(f"{fraction:.1%} with the block mask up to {int(budget):,} tokens"
                          for budget, fraction in step["block_mask"].items())
        line += (f". The training step, each batch's pairs sharing rows in their order: {step['dense_batch_width']:.1%}"
                 f" with dense masks (rows no wider than the batch); {block}")
    return line


def _size(count: int) -> str:
    return f"{count / 2**20:,.1f} MB" if count >= 2**20 else f"{count / 2**10:,.1f} KB" if count >= 2**10 else f"{count} B"


def reference_table(results: dict) -> str:
    """The packed reference pass per length: forward peak and time, sdpa vs block mask, what the BlockMask keeps."""
    case = results["cases"]["reference_pass"]
    rows = ["| tokens in the row | pictures | sdpa (dense mask) | block mask (compiled FlexAttention) | block / sdpa, "
            "peak | first pass: sdpa / block mask (compiling) | BlockMask keeps (L²/128²) | log-probs apart (sums; "
            "per token) |", "|---|---|---|---|---|---|---|---|"]
    for length, row in case["lengths"].items():
        def side(name, prefix=""):
            figures = row.get(name) or {}
            if f"{prefix}forward_peak_mb" not in figures:
                return f"not measured ({figures.get('error', 'no figures')})"
            return f"peak +{figures[prefix + 'forward_peak_mb']:,.0f} MB, {figures[prefix + 'forward_seconds']:.1f} s"
        inputs = row["inputs"]
        if "tokens" not in inputs:
            rows.append(f"| {int(length):,} | not measured ({inputs.get('error', 'no inputs')}) | | | | | | |")
            continue
        block = row.get("block_mask") or {}
        kept = (f"{_size(block['block_mask_bytes'])} ({_size(row['block_mask_bound_bytes'])})"
                if "block_mask_bytes" in block else "not measured")
        ratio = f"{row['peak_ratio']:.2f}×" if "peak_ratio" in row else "n/a"
        apart = (f"{row['logps_max_abs_diff']:.2g} of {row['logps_max_abs_value']:,.0f}; "
                 f"{row['token_logps_max_abs_diff']:.2g}" if "logps_max_abs_diff" in row else "n/a")
        rows.append(f"| {inputs['tokens']:,} | {inputs['pictures']} ({inputs['image_tokens']:,} tokens) | "
                    f"{side('sdpa')} | {side('block_mask')} | {ratio} | {side('sdpa', 'first_')} / "
                    f"{side('block_mask', 'first_')} | {kept} | {apart} |")
    goal = case["goal"]
    goal_row = case["lengths"].get(str(goal["length"]), {})
    verdict = ("not measured" if case["met"] is None else
               f"{goal_row['peak_ratio']:.2f}×, {'met' if case['met'] else 'not met'}")
    within = [row.get("block_mask_bytes_within_bound") for row in case["lengths"].values()]
    rows.append(f"\nGoal at {goal['length']:,} tokens, block mask ≤ {goal['peak_ratio_max']:g}× sdpa's peak: {verdict}. "
                f"BlockMask ≤ L²/128² bytes: {'met' if all(within) else 'not met'} at "
                f"{sum(bool(w) for w in within)} of {len(within)} lengths.")
    return "\n".join(rows)


def served_line(results: dict) -> str:
    """What the served demo models answered, quoted from the recorded replies."""
    tuned, base = results["tuned"], results["base"]
    return (f"{json.dumps(tuned['reply'], ensure_ascii=False)} from the tuned model ({tuned['model']}), and "
            f"{json.dumps(base['reply'], ensure_ascii=False)} from its base model served with `{base['command']}` "
            f"({results['server']}, {results['date']}; `benchmarks/results/served_reply.json`, written by "
            "`benchmarks/served_reply.py`).")


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}" if low == high else f"{low:.2f}–{high:.2f}"


def colour_line(rows: list[dict]) -> str:
    """The demo's colour questions over the warm builds, and the thresholds the demo and the tests hold them to."""
    sys.path.insert(0, str(REPO))
    from nbtools.demo import COLOUR_BASE_MAX, COLOUR_TUNED_MIN

    rows = [r for r in rows if "colour_base" in r]
    seeds, kernels = sorted({r["seed"] for r in rows}), sorted({r["kernels"] for r in rows})
    threads = sorted({r["threads"] for r in rows})
    base_ci = {tuple(r["colour_base_ci"]) for r in rows}
    base = _span([r["colour_base"] for r in rows])
    if len(base_ci) == 1:
        low, high = next(iter(base_ci))
        base += f" [{low:.2f}, {high:.2f}]"
    met = sum(r["colour_base"] <= COLOUR_BASE_MAX and r["colour_tuned"] >= COLOUR_TUNED_MIN
              and r["colour_tuned_ci"][0] > r["colour_base_ci"][1] for r in rows)
    return (f"Measured over {len(seeds) * len(kernels)} warm builds ({len(seeds)} seeds × {len(kernels)} kernel sets) × "
            f"{' and '.join(map(str, threads))} threads (`benchmarks/warm_spread.py`, {len(rows)} runs): base {base} "
            f"in every run, tuned {_span([r['colour_tuned'] for r in rows])} (interval lower bound ≥ "
            f"{min(r['colour_tuned_ci'][0] for r in rows):.2f}). The demo's summary and the test on the shared run ask "
            f"base ≤ {COLOUR_BASE_MAX:.2f} and tuned ≥ {COLOUR_TUNED_MIN:.2f} with disjoint intervals: met in {met} of "
            f"{len(rows)} runs.")


def figures() -> dict[str, str]:
    scale = json.loads((RESULTS / "scale.json").read_text())
    store = json.loads((RESULTS / "ref_store.json").read_text())
    fingerprint = json.loads((RESULTS / "media_fingerprint.json").read_text())
    long_pairs = json.loads((RESULTS / "long_pairs.json").read_text())
    served = json.loads((RESULTS / "served_reply.json").read_text())
    spread = json.loads((RESULTS / "warm_spread.json").read_text())
    return {SCALE_MARK: "\n" + scale_table(scale) + "\n", STORE_MARK: store_line(store),
            FINGERPRINT_MARK: fingerprint_line(fingerprint), LONG_PAIRS_MARK: "\n" + mask_table(long_pairs) + "\n",
            LOGPROBS_MARK: logprobs_line(long_pairs), PADDING_MARK: padding_line(long_pairs),
            REFERENCE_MARK: "\n" + reference_table(long_pairs) + "\n", SERVED_MARK: served_line(served),
            COLOUR_MARK: colour_line(spread)}


def rewrite(readme: Path = REPO / "README.md") -> None:
    text = readme.read_text()
    for mark, value in figures().items():
        pattern = re.compile(re.escape(mark) + r".*?" + re.escape(mark.replace("<!-- ", "<!-- end ")), re.S)
        block = f"{mark}{value}{mark.replace('<!-- ', '<!-- end ')}"
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        else:
            text = text.replace(mark, block, 1)
    readme.write_text(text)


if __name__ == "__main__":
    rewrite()
    sys.exit(0)
