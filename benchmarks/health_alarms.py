"""Do the training-health alarms fire on runs that go wrong, with room, and stay quiet on healthy ones? (issue 24)

Real runs of ``nbtools.train`` on the shapes task with the warm tiny model (the demo's recipe,
evaluated every 10 steps, the answer-length probe on), each reduced to its alarms and to each alarm's
*strength*: the smallest ratio of its conditions to their thresholds (>= 1 fires; see
``nbtools.train.health.alarm_strengths``). Cases:

* ``displacement`` - DPO alone (sigmoid) at learning_rate 1e-2: margins and validation accuracy rise while the
                     chosen answers' log-probability falls far below the reference's;
* ``dpo``          - the same at 5e-3, the rate the demo uses: the chosen log-prob dips a little (a near miss);
* ``collapse``     - sigmoid at 5e-2: both answers' log-probabilities fall apart, the margin goes nowhere;
* ``healthy``      - the demo's recipe (sigmoid + sft at 5e-3): nothing may fire;
* ``memorise``     - the demo's recipe, 60 steps, on 16 training pairs whose pictures are all one blank image and
                     whose chosen colour always ranks above the rejected one (red > green > blue > yellow): a text
                     rule wins every training pair, while the validation pairs (mirrored twins, also blank) stay at
                     exactly 50%.

Seeds (``--seeds``, the run config's seed: LoRA init and batch order) perturb each case; the float
results differ per machine, so the thresholds are checked by the margins over seeds, never by one value.
``--fixtures DIR`` also writes each case's first-seed history (trimmed to the metrics the alarms read) as
the test fixtures of ``tests/test_health.py``.

    python benchmarks/health_alarms.py --cases displacement dpo collapse healthy memorise --seeds 42 1 2
    python benchmarks/health_alarms.py --cases displacement --seeds 42 --fixtures tests/fixtures/health

A 40-step case takes 1-3 minutes on 2 busy CPU cores. Rows: ``benchmarks/results/health_alarms.json``; the
docs' sentence on the margins is rewritten from them by ``benchmarks/doc_figures.py`` (``--readme`` alone
does only that).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = ROOT / "data_samples" / "shapes"
RESULTS = ROOT / "benchmarks" / "results" / "health_alarms.json"
KEPT = ("step", "epoch", "final", "loss", "eval_loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
        "rewards/accuracies", "logps/chosen", "logps/rejected", "eval_rewards/chosen", "eval_rewards/rejected",
        "eval_rewards/margins", "eval_rewards/accuracies", "eval_logps/chosen", "eval_logps/rejected",
        "eval_answer_tokens", "eval_answer_tokens_start")

CASES = {
    "displacement": dict(loss_type=["sigmoid"], loss_weights=None, learning_rate=1e-2),
    "dpo": dict(loss_type=["sigmoid"], loss_weights=None, learning_rate=5e-3),
    "collapse": dict(loss_type=["sigmoid"], loss_weights=None, learning_rate=5e-2),
    "healthy": dict(),
    "memorise": dict(max_steps=60),
}


COLOURS = ("red", "green", "blue", "yellow")  # a ranking the memorise case's training pairs all follow


def _colour(answer: str) -> str:
    return next(c for c in COLOURS if c in answer.lower().split(" ") or f"{c}." in answer.lower())


def memorise_data(folder: Path) -> Path:
    """16 training pairs whose chosen colour always ranks above the rejected one in COLOURS, every picture one blank
    image: the text alone wins them all (a rule the validation pairs, mirrored twins, cannot reward)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (128, 128), (235, 235, 235)).save(folder / "blank.png")
    for split, count in (("train", 16), ("validation", None)):
        out = []
        for line in (SHAPES / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            chosen, rejected = _colour(row["messages"][-1]["content"]), _colour(row["rejected_response"])
            if count is not None and COLOURS.index(chosen) > COLOURS.index(rejected):
                continue
            out.append({**row, "images": ["blank.png"]})
            if count is not None and len(out) == count:
                break
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    return folder


def run_case(case: str, seed: int, work: Path) -> tuple[list[dict], dict]:
    from nbtools.config import RunConfig
    from nbtools.demo import DEMO_TRAINING
    from nbtools.train import train

    data = memorise_data(work / "data") if case == "memorise" else SHAPES
    settings = dict(model="tiny-qwen3-vl-warm", train_file=str(data / "train.jsonl"),
                    validation_file=str(data / "validation.jsonl"), output_dir=str(work / "run"),
                    task_display_name=f"health-{case}", custom_model_name=f"health-{case}", save_total_limit=1,
                    gradient_checkpointing=False, num_workers=0, max_pixels=128 * 128, max_context_length=256)
    settings.update(DEMO_TRAINING)
    settings.update(eval_steps=10, save_steps=10, logging_steps=2, seed=seed, health_samples=4)
    settings.update(CASES[case])
    cfg = RunConfig(**settings)
    result = train(cfg, live=False)
    config = {k: settings[k] for k in ("learning_rate", "loss_type", "loss_weights", "beta", "max_steps", "batch_size",
                                       "eval_steps", "logging_steps", "seed", "health_samples")}
    record = json.loads((result.run_dir / "run.json").read_text())
    return [{k: v for k, v in row.items() if k in KEPT} for row in result.history], {
        "config": config, "answer_probe": record.get("answer_probe")}


def summarise(case: str, seed: int, history: list[dict], beta: float, seconds: float) -> dict:
    from nbtools.train.health import alarm_strengths, health_alarms

    alarms = health_alarms(history, beta)
    strengths = alarm_strengths(history, beta)
    return {"case": case, "seed": seed, "alarms": {a.kind: {"step": a.step, "source": a.source} for a in alarms},
            "strengths": {k: (round(v, 3) if v is not None else None) for k, v in strengths.items()},
            "first_alarm_strength": {a.kind: round(a.values["strength"], 3) for a in alarms},
            "seconds": round(seconds, 1)}


def _span(rows: list[dict], kind: str) -> str:
    values = sorted(r["strengths"][kind] for r in rows if r["strengths"].get(kind) is not None)
    low, high = values[0], values[-1]
    return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"


def _top(rows: list[dict], kinds=None) -> str:
    return f"{max(v for r in rows for k, v in r['strengths'].items() if v is not None and (kinds is None or k in kinds)):.2f}"


def readme_text(results: dict) -> str:
    """The docs' sentence on the measured margins, from the committed results (never typed)."""
    by_case: dict[str, list[dict]] = {}
    for row in results["runs"]:
        by_case.setdefault(row["case"], []).append(row)
    seeds = len(by_case["displacement"])
    fired = {case: sum(bool(r["alarms"]) for r in rows) for case, rows in by_case.items()}
    rambling = sum("answer_length" in r["alarms"] for r in by_case["dpo"])
    displaced = sum("likelihood_displacement" in r["alarms"] for r in by_case["displacement"])
    saturated = sum("margin_saturation" in r["alarms"] for r in by_case["memorise"])
    return (f"Measured on real runs of the shapes task, {seeds} seeds each (`benchmarks/health_alarms.py`; strength = the "
            "smallest ratio of an alarm's conditions to its thresholds, ≥ 1 fires): DPO alone at `learning_rate` 1e-2 "
            f"raises likelihood displacement in {displaced} of {seeds} seeds at strength "
            f"{_span(by_case['displacement'], 'likelihood_displacement')}; the demo's recipe (sigmoid + sft) raises "
            f"{'nothing' if not fired['healthy'] else 'an alarm'}, every strength ≤ {_top(by_case['healthy'])}; DPO alone "
            f"at 5e-3, the near miss, stays at ≤ {_top(by_case['dpo'], ['likelihood_displacement'])} for displacement and "
            f"≤ {_top(by_case['dpo'], ['reward_divergence'])} for divergence, but its greedy answers ramble in "
            f"{rambling} of {seeds} seeds (answer length up to {_top(by_case['dpo'], ['answer_length'])}, which the "
            f"preference metrics miss); lr 5e-2 collapses (divergence {_span(by_case['collapse'], 'reward_divergence')}, "
            f"answer length {_span(by_case['collapse'], 'answer_length')}); a text rule learned on blank pictures "
            f"saturates the margins in {saturated} of {seeds} seeds at {_span(by_case['memorise'], 'margin_saturation')} "
            "while validation stays at 50%. Rows: `benchmarks/results/health_alarms.json`.")


def rewrite_readme() -> None:
    """The docs' sentence on the margins (and every other generated figure) from the committed results."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from doc_figures import rewrite

    rewrite()


def _fixture_text(fixture: dict) -> str:
    """JSON with one history row per line (small diffs, readable)."""
    head = {k: v for k, v in fixture.items() if k != "rows"}
    rows = ",\n".join(json.dumps(row) for row in fixture["rows"])
    return json.dumps(head, indent=1)[:-2] + ',\n "rows": [\n' + rows + "\n]}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--fixtures", type=Path, help="write each case's first-seed history here as <case>.json")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="only rewrite the docs' figures from the results")
    args = parser.parse_args()
    if args.readme:
        rewrite_readme()
        return 0

    from nbtools.demo import DEMO_TRAINING

    beta = DEMO_TRAINING["beta"]
    rows = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    for case in args.cases:
        for index, seed in enumerate(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.time()
                history, extra = run_case(case, seed, Path(tmp))
                row = summarise(case, seed, history, beta, time.time() - t0)
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if (r["case"], r["seed"]) != (case, seed)] + [row]
            if args.fixtures is not None and index == 0:
                args.fixtures.mkdir(parents=True, exist_ok=True)
                fixture = {"recorded_by": f"benchmarks/health_alarms.py --cases {case} --seeds {seed}",
                           "beta": beta, **extra, "rows": history}
                (args.fixtures / f"{case}.json").write_text(_fixture_text(fixture))
    rows.sort(key=lambda r: (list(CASES).index(r["case"]), r["seed"]))
    from nbtools.train import health

    thresholds = {name: getattr(health, name) for name in (
        "WINDOW", "DISPLACEMENT_SHARE", "DISPLACEMENT_NATS", "MARGIN_RISEN", "DIVERGENCE_SHARE", "DIVERGENCE_NATS",
        "SATURATED_ACCURACY", "MARGIN_GROWTH", "FLAT_ACCURACY", "ACCURACY_GAP", "LENGTH_RATIO", "LENGTH_MIN_TOKENS")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"thresholds": thresholds, "runs": rows}, indent=1) + "\n")
    if args.out == RESULTS:
        rewrite_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
