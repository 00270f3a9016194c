"""The whole loop on the built-in warm tiny model: prepare -> validate -> train -> evaluate.

From the sample images with their reference answers, preparation samples K answers per
prompt from the base model, a rule judge names each picture's true colour (read from the
reference answer, with the colour words of the generator that drew the data), and the
reference strategy pairs the reference against the model's own wrong answer. The pairs must
validate clean, and a short DPO run on them must lift held-out preference accuracy on the
sample task with separated 95% intervals.

Thresholds live at the top: they depend on the warm model's defect (issue 10 redesigns it:
red <-> green confusion, sample pairs rejecting the confusable colour); rerun and adjust
them, keeping a margin beyond what any build measured.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from nbtools.samples.drawing import COLOURS

# --- thresholds (see the module docstring) -----------------------------------------------------
# Measured on 2 shared CPU cores with main's warm model (b4b964b: red <-> green swapped, sample pairs rejecting
# the confusable colour): 123 pairs, 119 of them red->green or green->red (0.97); held-out preference accuracy
# base 0.500 [0.367, 0.633] -> tuned 1.000 [1.000, 1.000] (0.850 [0.750, 0.933] before equally wrong samples
# were tie-broken by wording). The previous warm model (under-predicts yellow, base 0.98) failed this by design:
# 54-56 pairs, all yellow->green/red, taught a colour prior and tuned fell to 0.83.
K = 4  # samples per prompt
TRAIN_STEPS = 40  # DPO steps of 4 pairs on the prepared pairs
MIN_PAIRS = 60  # mistakes preparation must find among the 240 training prompts (measured 123)
TOP_CONFUSIONS, MIN_SYSTEMATIC_SHARE = 2, 0.8  # share of the pairs explained by the 2 commonest (true -> said)
                                              # colour confusions: systematic mistakes, not noise (measured 0.97)
MIN_LIFT = 0.25  # tuned - base held-out preference accuracy (measured 0.50; 0.35 before the tie-break)
# and always: tuned's 95% interval lies entirely above base's (separated)

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "data_samples" / "shapes"

pytestmark = pytest.mark.slow


def colours_named(text: str) -> list[str]:
    """The data generator's colour words that ``text`` names as words ("yellowThe" names none)."""
    words = text.lower().replace(".", " ").split()
    return [c for c in COLOURS if c in words]


def true_colour(reference: str) -> str:
    """The one colour word of the data generator that the reference answer names."""
    named = colours_named(reference)
    assert len(named) == 1, f"the reference {reference!r} should name exactly one colour"
    return named[0]


@pytest.fixture
def one_thread():
    """Generation and training on one thread: on a shared 2-core machine, two threads per process fight
    for the cores and run several times slower. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_prepare_train_evaluate_lifts_held_out_preference_accuracy(tmp_path, shapes_config, one_thread):
    from nbtools.data import validate_dataset
    from nbtools.evaluate import evaluate_run
    from nbtools.prepare import PrepareConfig, RuleJudge, prepare
    from nbtools.train import train

    judge = RuleJudge(must_include=lambda prompt, reference: [true_colour(reference)],
                      must_not_include=lambda prompt, reference: [c for c in COLOURS if c != true_colour(reference)])
    config = PrepareConfig(
        input_file=str(SHAPES / "train.jsonl"), validation_file=str(SHAPES / "validation.jsonl"),
        output_dir=str(tmp_path / "prepared"), model="tiny-qwen3-vl-warm", strategies=["reference"],
        samples_per_prompt=K, temperature=1.0, max_new_tokens=16, max_pixels=128 * 128, device="cpu", seed=0)
    prepared = prepare(config, judge=judge, progress=False)
    report = prepared.report
    rows = [json.loads(line) for line in prepared.pairs_file.read_text().splitlines()]
    confusions = collections.Counter((true_colour(r["messages"][-1]["content"]), true_colour(r["rejected_response"]))
                                     for r in rows if len(colours_named(r["rejected_response"])) == 1)
    systematic = sum(n for _, n in confusions.most_common(TOP_CONFUSIONS)) / len(rows) if rows else 0.0
    print(f"\nprepared: {report.pairs_made} pairs from {report.prompts_sampled} prompts "
          f"(dropped: {report.strategies['reference']['dropped']}); confusions {dict(confusions.most_common())}; "
          f"judge agreement {report.judge_agreement}")

    assert report.prompts_sampled == 240 and report.samples_generated == 240
    assert report.pairs_made >= MIN_PAIRS
    assert all(r["messages"][-1]["content"] != r["rejected_response"] for r in rows)
    assert systematic >= MIN_SYSTEMATIC_SHARE
    validation = validate_dataset(prepared.pairs_file, max_pixels=128 * 128,
                                  validation_file=str(SHAPES / "validation.jsonl"))
    assert not validation.has_errors(), [p.format() for p in validation.problems if p.severity == "error"]

    run = train(shapes_config(tmp_path / "run", train_file=str(prepared.pairs_file), max_steps=TRAIN_STEPS,
                              eval_steps=TRAIN_STEPS, save_steps=TRAIN_STEPS), live=False)
    result = evaluate_run(run.run_dir, batch_size=16, progress=False, write=False)
    base = result.evaluation.base["preference_accuracy"]
    tuned = result.evaluation.tuned["preference_accuracy"]
    print(f"held-out preference accuracy: base {base.value:.3f} [{base.low:.3f}, {base.high:.3f}] -> "
          f"tuned {tuned.value:.3f} [{tuned.low:.3f}, {tuned.high:.3f}]")
    assert tuned.value - base.value >= MIN_LIFT
    assert tuned.low > base.high  # separated intervals
