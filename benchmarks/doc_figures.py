"""Every measured figure the README and docs/ quote, generated from the committed ``benchmarks/results/*.json``.

A figure sits in the Markdown between ``<!-- NAME -->`` and ``<!-- end NAME -->``; ``python
benchmarks/doc_figures.py`` rewrites every such block in README.md and docs/*.md from the results, and
``tests/test_doc_figures.py`` fails when a block and its results disagree (or a measured figure stands
outside a block), so a number is never typed twice and cannot drift from the file that backs it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
BLOCK = re.compile(r"<!-- ([a-z0-9_ ]+) -->(.*?)<!-- end \1 -->", re.S)


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


def pair_count_line(results: dict) -> str:
    """The 02 form's first count of a training file's pairs, this code and the code before."""
    case = results["cases"]["form_pair_count_1m"]
    names = {"jsonl": f"{case['rows']:,} JSONL rows ({case['data_mb']['jsonl']:,.0f} MB)",
             "parquet": f"{case['rows']:,} Parquet rows ({case['data_mb']['parquet']:,.0f} MB, pictures embedded)"}
    before = case["results"].get("baseline", {})
    commit = (case["trees"].get("baseline") or {}).get("commit") or ""
    parts = [f"{names[kind]} {figures['seconds']:.2f} s"
             + (f" ({before[kind]['seconds']:.1f} s with {commit[:7]})" if "seconds" in before.get(kind, {}) else "")
             for kind, figures in case["results"]["tree"].items()]
    return "; ".join(parts) + f"; goal ≤ {case['goal']['seconds_max']:g} s each: {'met' if case['met'] else 'not met'}"


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


def _results(name: str):
    return json.loads((RESULTS / f"{name}.json").read_text())


def _pct_span(values: list[float]) -> str:
    low, high = round(100 * min(values)), round(100 * max(values))
    return f"{low}%" if low == high else f"{low}–{high}%"


def _s_span(values: list[float]) -> str:
    return f"{min(values):.0f}–{max(values):.0f} s"


def _builds(rows: list[dict]) -> str:
    seeds, kernels = sorted({r["seed"] for r in rows}), sorted({r["kernels"] for r in rows})
    return f"{len(seeds) * len(kernels)} builds ({len(seeds)} seeds × {len(kernels)} kernel sets)"


def warm_model_line(rows: list[dict]) -> str:
    """What the warm tiny model gets wrong and how long it takes to build, over the warm_spread builds."""
    return (f"It builds once in {_s_span([r['build_seconds'] for r in rows])} on 2 CPU cores ({len(rows)} builds of "
            f"`benchmarks/warm_spread.py`). Over {_builds(rows)} it named the partner colour for "
            f"{_pct_span([r['warm_says_partner'] for r in rows])} of the red and green validation shapes, blue and "
            f"yellow right in {_pct_span([r['warm_others_right'] for r in rows])}, and the shape right in "
            f"{_pct_span([r['warm_shape'] for r in rows])} (chance: 33%); greedy decoding on the 60 validation pictures "
            "(rows: `benchmarks/results/warm_spread.json`).")


def demo_outcome_line(rows: list[dict]) -> str:
    """The demo recipe's outcome and training time over the warm_spread runs."""
    base = {(r["base"], tuple(r["base_ci"])) for r in rows}
    (value, (low, high)), = base if len(base) == 1 else {(rows[0]["base"], tuple(rows[0]["base_ci"]))}
    over = sum(r["train_seconds"] > 60 for r in rows)
    return (f"Measured on CPU (`benchmarks/warm_spread.py`, {len(rows)} runs): held-out preference accuracy on the 60 "
            f"validation pairs goes from {value:.2f} [{low:.2f}, {high:.2f}] to {_span([r['tuned'] for r in rows])} "
            f"(95% interval lower bound ≥ {min(r['tuned_ci'][0] for r in rows):.2f}) on every build and thread count; "
            f"afterwards the tuned model names the right colour in {_pct_span([r['tuned_greedy_colour'] for r in rows])} "
            f"of greedy answers (the base: {_pct_span([r['warm_colour'] for r in rows])}); validation reward accuracy "
            f"{_span([r['eval_reward_accuracy'] for r in rows])}. Training took "
            f"{_s_span([r['train_seconds'] for r in rows])} on 2 shared cores ({over} of {len(rows)} runs over 60 s).")


def demo_time_line(rows: list[dict]) -> str:
    """How long `make demo`'s two costly parts took in the warm_spread runs, and one run's headline."""
    first = next(r for r in rows if r["seed"] == 1234)
    return (f"In the {len(rows)} runs of `benchmarks/warm_spread.py` on 2 CPU cores, building the warm tiny model took "
            f"{_s_span([r['build_seconds'] for r in rows])} (first use only) and its training "
            f"{_s_span([r['train_seconds'] for r in rows])}; the default build's run ended at preference accuracy "
            f"base {first['base']:.2f} [{first['base_ci'][0]:.2f}, {first['base_ci'][1]:.2f}] → tuned "
            f"{first['tuned']:.2f} [{first['tuned_ci'][0]:.2f}, {first['tuned_ci'][1]:.2f}].")


def spread_summary(rows: list[dict]) -> str:
    """The warm_spread benchmark's verdict on the demo's criteria."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from warm_spread import BASE_MAX, TUNED_MIN

    worst = min(rows, key=lambda r: (r["tuned"], r["tuned_ci"][0]))
    met = sum(r["criteria_met"] for r in rows)
    threads = {r["threads"] for r in rows}
    same = all(len({(r["base"], r["tuned"]) for r in rows if (r["seed"], r["kernels"]) == key}) == 1
               for key in {(r["seed"], r["kernels"]) for r in rows})
    return (f"{_builds(rows)} × {' and '.join(map(str, sorted(threads)))} threads, each its own build and process: the "
            f"demo's criteria (base ≤ {BASE_MAX:.2f}, tuned ≥ {TUNED_MIN:.2f}, disjoint 95% intervals) held in "
            f"**{met} of {len(rows)} runs**; worst case base {worst['base']:.2f} [{worst['base_ci'][0]:.2f}, "
            f"{worst['base_ci'][1]:.2f}], tuned {worst['tuned']:.2f} [{worst['tuned_ci'][0]:.2f}, "
            f"{worst['tuned_ci'][1]:.2f}]. The thread count {'changed no' if same else 'changed a'} preference number.")


def spread_table(rows: list[dict]) -> str:
    """One row per warm build (thread counts folded when they agree)."""
    lines = ["| seed | kernels | warm: swapped / others right / shape | base | tuned | tuned greedy | colour questions "
             "| eval reward acc | train s |", "|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for r in rows:
        key = (r["seed"], r["kernels"])
        if key in seen:
            continue
        seen.add(key)
        times = [x["train_seconds"] for x in rows if (x["seed"], x["kernels"]) == key]
        lines.append(
            f"| {r['seed']} | {r['kernels']} | {r['warm_says_partner']:.2f} / {r['warm_others_right']:.2f} / "
            f"{r['warm_shape']:.2f} | {r['base']:.2f} [{r['base_ci'][0]:.2f}, {r['base_ci'][1]:.2f}] | "
            f"{r['tuned']:.2f} [{r['tuned_ci'][0]:.2f}, {r['tuned_ci'][1]:.2f}] | {r['tuned_greedy_colour']:.2f} | "
            f"{r['colour_base']:.2f} [{r['colour_base_ci'][0]:.2f}, {r['colour_base_ci'][1]:.2f}] → "
            f"{r['colour_tuned']:.2f} [{r['colour_tuned_ci'][0]:.2f}, {r['colour_tuned_ci'][1]:.2f}] | "
            f"{r['eval_reward_accuracy']:.3f} | {' / '.join(f'{t:.0f}' for t in times)} |")
    return "\n".join(lines)


def stripes_line(rows: list[dict]) -> str:
    """Whether the random tiny model learns the stripes tasks, per experiment, from stripes_spread.json."""
    def trainer(experiment: str) -> str:
        parts = []
        for steps in sorted({r["steps"] for r in rows if r["via"] == "trainer" and r["experiment"] == experiment}):
            got = [r["tuned"] for r in rows if r["via"] == "trainer" and r["experiment"] == experiment
                   and r["steps"] == steps]
            parts.append(f"{_span(got)} after {steps} steps ({len(got)} runs)")
        return ", ".join(parts)

    def hand(experiment: str) -> str:
        got = [r for r in rows if r["via"] == "hand" and r["experiment"] == experiment]
        last = max(int(k[4:]) for r in got for k in r if k.startswith("acc@"))
        return f"{_span([r[f'acc@{last}'] for r in got if f'acc@{last}' in r])} at {last} steps ({len(got)} runs)"

    starts = {r.get("base", r.get("acc@0")) for r in rows}
    return (f"held-out preference accuracy starts at {_span(list(starts))} in every run (twins). Through `train()`: "
            f"**video** {trainer('video')}; every clip replaced by one plain clip {trainer('control')}; "
            f"**image-contrast pairs only**, tested on ordinary pairs, {trainer('contrast')}. Hand-written DPO loop: "
            f"video {hand('video')}, plain clips {hand('control')}, contrast {hand('contrast')}. Rows: "
            "`benchmarks/results/stripes_spread.json`")


def layout_line(results: dict) -> str:
    """What an mDPO step feeds the language model, relative to the pair's own step (layout_tokens.json)."""
    def span(run: str, kind: str) -> str:
        values = [v[kind]["lm_tokens_x_own_pair"] for v in results["runs"][run]["results"].values()]
        return f"{min(values):.2f}–{max(values):.2f}×"

    sets = len(results["runs"]["after"]["results"])
    return (f"with `mdpo_conditional` a step feeds {span('after', 'mdpo (lean)')} the LM tokens of the pair's own step "
            f"({span('before', 'mdpo')} before this layout), {span('after', 'mdpo_video (lean)')} with a video in the "
            f"prompt ({span('before', 'mdpo_video')} before), over {sets} picture sets "
            "(`benchmarks/layout_tokens.py`; rows: `benchmarks/results/layout_tokens.json`)")


def large_image_line(results: dict) -> str:
    jpeg, png = results["formats"]["JPEG"], results["formats"]["PNG"]
    return (f"a {results['side']:,}×{results['side']:,} picture at `max_pixels={results['max_pixels']}` peaks at "
            f"{jpeg['now']['mb']:,.0f} MB instead of {jpeg['previous']['mb']:,.0f} MB as JPEG and "
            f"{png['now']['mb']:,.0f} MB instead of {png['previous']['mb']:,.0f} MB as PNG "
            "(`benchmarks/large_image_memory.py`; `benchmarks/results/large_image_memory.json`)")


def validate_speed_line(results: dict) -> str:
    return (f"{results['rows']:,} lines referencing {results['distinct_images']:,} distinct 640×480 JPEGs validated in "
            f"{results['seconds']:.1f} s without `--deep` on {results['cpus']} CPUs (goal: under "
            f"{results['goal_seconds']:.0f} s). Rows: `benchmarks/results/validate_speed.json`")


def hostile_line(results: dict) -> str:
    linear, goals = results["linear_time"], results["goals"]
    one, many = linear["cut_1"], linear["cut_100"]
    small, big = results["scale"][0], results["scale"][-1]
    return (f"{linear['lines']:,} valid lines with one line cut short (`{{` without `}}`): **{one['ratio']:.2f}×** the "
            f"clean file's time ({one['seconds']:.1f} s vs {linear['clean_s']:.1f} s; 100 cut lines: "
            f"{many['ratio']:.2f}×; goal under {goals['ratio']:g}×). {big['lines']:,} copies of one line "
            f"({big['file_mb']:.0f} MB), `validate --json` in a child process: **{big['seconds']:.1f} s** "
            f"({big['seconds_ratio']:.2f}× the {goals['seconds']:g} s goal), peak **{big['peak_mb']} MB** "
            f"({big['peak_ratio']:.2f}× of {goals['peak_mb']:g} MB; {small['peak_mb']} MB at {small['lines']:,} lines, "
            f"{results['peak_mb_per_100k_lines']:g} MB more per 100,000 lines: one finding per duplicate line), "
            f"{big['json_kb']} KB of output. Rows: `benchmarks/results/validate_hostile.json`")


def packing_media_line(results: dict) -> str:
    names = {"video": "video pairs", "contrast": "image-contrast pairs", "mixed": "a mix of plain, video and "
             "image-contrast pairs"}
    parts = []
    for kind, row in results["kinds"].items():
        packed, unpacked = row["packed"], row["unpacked"]
        parts.append(f"{names[kind]} {packed['tokens_x_unpacked']:.2f}× LM tokens ({packed['lm_tokens']:,.0f} vs "
                     f"{unpacked['lm_tokens']:,.0f}), {packed['encodings']:.0f} vs {unpacked['encodings']:.0f} vision "
                     f"encodings per step, {packed['seconds_x_unpacked']:.2f}× s/step")
    diff = max(row["max_logp_relative_diff"] for row in results["kinds"].values())
    settings = results["settings"]
    return (f"{settings['pairs_per_step']} pairs per step ({settings['image_size']} px images, {settings['frames']}-frame "
            f"{settings['frame_size']} px clips), CPU time, packed vs unpacked, both passes: " + "; ".join(parts)
            + f"; largest relative log-prob difference {diff:.0e}. Rows: `benchmarks/results/packing_media.json`")


def health_line(results: dict) -> str:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from health_alarms import readme_text

    return readme_text(results)


GENERATORS = {
    "scale table": ("scale", lambda r: "\n" + scale_table(r) + "\n"),
    "ref_store": ("ref_store", store_line),
    "pair count": ("scale", pair_count_line),
    "media_fingerprint": ("media_fingerprint", fingerprint_line),
    "long_pairs mask": ("long_pairs", lambda r: "\n" + mask_table(r) + "\n"),
    "long_pairs logprobs": ("long_pairs", logprobs_line),
    "long_pairs padding": ("long_pairs", padding_line),
    "long_pairs reference": ("long_pairs", lambda r: "\n" + reference_table(r) + "\n"),
    "served reply": ("served_reply", served_line),
    "colour questions": ("warm_spread", colour_line),
    "warm model": ("warm_spread", warm_model_line),
    "demo outcome": ("warm_spread", demo_outcome_line),
    "demo time": ("warm_spread", demo_time_line),
    "warm spread": ("warm_spread", spread_summary),
    "warm spread table": ("warm_spread", lambda r: "\n" + spread_table(r) + "\n"),
    "stripes spread": ("stripes_spread", stripes_line),
    "layout tokens": ("layout_tokens", layout_line),
    "large image": ("large_image_memory", large_image_line),
    "validate speed": ("validate_speed", validate_speed_line),
    "validate hostile": ("validate_hostile", hostile_line),
    "packing media": ("packing_media", packing_media_line),
    "health_alarms": ("health_alarms", health_line),
}


def figures() -> dict[str, str]:
    """Each block's name and its text, computed from the committed results."""
    loaded: dict[str, object] = {}
    out = {}
    for name, (source, make) in GENERATORS.items():
        if source not in loaded:
            loaded[source] = _results(source)
        out[name] = make(loaded[source])
    return out


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def rewrite() -> list[Path]:
    """Rewrite every known block in README.md and docs/*.md; returns the files that changed."""
    sys.path.insert(0, str(REPO))
    from nbtools import atomic

    values, changed = figures(), []
    for path in doc_files():
        text = path.read_text()
        new = BLOCK.sub(lambda m: f"<!-- {m[1]} -->{values[m[1]]}<!-- end {m[1]} -->" if m[1] in values else m[0], text)
        if new != text:
            atomic.write_text(path, new)
            changed.append(path)
    return changed


if __name__ == "__main__":
    for path in rewrite():
        print("rewrote", path.relative_to(REPO))
    sys.exit(0)
