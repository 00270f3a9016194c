"""``python -m nbtools.demo`` (``make demo``): the four notebooks, headless, on the bundled data.

Runs 01_inspect_data -> 02_configure -> 03_train -> 04_evaluate with papermill on the sample
shapes task and the warm-started tiny model, and leaves under ``runs/demo/`` (replaced on
every run): the executed notebooks (with their plots, tables and galleries), the config YAML,
the run folder, and the merged export. The last line printed is that folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from nbtools.current_data import SAMPLE_PAIRS
from nbtools.errors import UserError, run_entry

NOTEBOOKS = ("01_inspect_data", "02_configure", "03_train", "04_evaluate")
DEMO_MARKER = ".nbtools-demo"  # marks a folder the demo made, the only kind it deletes
DEMO_NAMES = {DEMO_MARKER, "notebooks", "config.yaml", "run", "export"}  # what the demo writes into its folder

# The demo's training recipe (also the test suite's shared run): long enough to repair the warm
# model's red/green mix-up on every build measured by benchmarks/warm_spread.py, short enough
# for a few minutes on 2 cores. DPO plus an SFT term on the chosen answers (RPO's recipe): DPO
# alone fixes the preferences but can leave generation naming a third colour; the SFT term makes
# the tuned model *say* the right colour.
DEMO_TRAINING = {
    "max_steps": 40, "batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 5e-3,
    "warmup_ratio": 0.1, "lora_rank": 8, "beta": 0.1, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0],
    "eval_steps": 20, "save_steps": 20, "logging_steps": 2,
}


# The demo's answer-level check: greedy answers to "What colour is the shape?" about the 60 validation pictures
# (data_samples/shapes/colour_questions.jsonl). The base model names red shapes green and green shapes red, so
# it is right on the blue and yellow half; after the demo's run the tuned model names the colours. Thresholds
# with margin over what benchmarks/warm_spread.py measured over warm builds, kernels and thread counts.
COLOUR_QUESTIONS = "data_samples/shapes/colour_questions.jsonl"
COLOUR_BASE_MAX, COLOUR_TUNED_MIN = 0.65, 0.85


class DemoError(UserError, RuntimeError):
    """A notebook of the demo failed; the message names it and where its executed copy is."""


def demo_parameters(out_dir: Path, model: str, max_steps: Optional[int]) -> dict[str, dict]:
    """The papermill parameters of each notebook: everything lands in ``out_dir``."""
    training = dict(DEMO_TRAINING)
    if max_steps is not None:
        training.update(max_steps=max_steps, eval_steps=max(1, max_steps // 3), save_steps=max(1, max_steps // 3))
    config_file = str(out_dir / "config.yaml")
    run_dir = str(out_dir / "run")
    return {
        # the bundled sample by name: the demo's checks hold for it, whatever 00 may have prepared in runs/
        "01_inspect_data": {"model": model, "train_file": SAMPLE_PAIRS},
        "02_configure": {"model": model, "train_file": SAMPLE_PAIRS, "output_dir": run_dir, "config_file": config_file,
                         "task_display_name": "shapes-dpo-demo", "custom_model_name": "shapes-dpo-tiny-demo",
                         **training},
        "03_train": {"config_file": config_file},
        "04_evaluate": {"output_dir": run_dir, "export_dir": str(out_dir / "export"), "runs_dir": str(out_dir),
                        "merged": True, "benchmark_file": COLOUR_QUESTIONS},
    }


def run_demo(out_dir: Optional[os.PathLike] = None, *, model: str = "tiny-qwen3-vl-warm",
             max_steps: Optional[int] = None, notebooks_dir: Optional[os.PathLike] = None,
             progress: bool = True) -> Path:
    """Execute the four notebooks into ``out_dir`` (default ``<project>/runs/demo``) and return it."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from nbtools.paths import project_root

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the kernels inherit it: nothing is downloaded
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    root = project_root()
    source = Path(notebooks_dir) if notebooks_dir else root / "notebooks"
    out = Path(out_dir) if out_dir else root / "runs" / "demo"
    out = out.resolve()
    prepare_out_dir(out)
    parameters = demo_parameters(out, model, max_steps)
    started = time.time()
    for i, name in enumerate(NOTEBOOKS, 1):
        executed = out / "notebooks" / f"{name}.ipynb"
        print(f"[{i}/{len(NOTEBOOKS)}] {name}.ipynb ...", flush=True)
        t0 = time.time()
        try:
            papermill.execute_notebook(str(source / f"{name}.ipynb"), str(executed), parameters=parameters[name],
                                       cwd=str(source), progress_bar=progress, kernel_name="python3")
        except PapermillExecutionError as exc:
            raise DemoError(f"{name}.ipynb failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}; "
                            f"the executed notebook (up to the failing cell) is {executed}") from None
        print(f"[{i}/{len(NOTEBOOKS)}] {name}.ipynb done in {time.time() - t0:.0f} s", flush=True)
    print(f"demo finished in {time.time() - started:.0f} s", flush=True)
    print(summary(out), flush=True)
    return out


def prepare_out_dir(out: Path) -> None:
    """An empty ``out`` with ``notebooks/``. A previous demo there (it has the marker file) is replaced;
    any other file or non-empty folder is refused, so a mistyped --out never deletes a user's files."""
    from nbtools.output_folder import check_output_folder

    check_output_folder(out, "--out")
    if out.exists() and any(out.iterdir()):
        ours = (out / DEMO_MARKER).is_file() or {p.name for p in out.iterdir()} <= DEMO_NAMES  # (older demos)
        if not ours:
            raise DemoError(f"--out: {out} already holds files that are not a previous demo; the demo replaces its "
                            "folder on every run, so it will not use this one (fix: pass a new or empty folder)")
        shutil.rmtree(out)  # a rerun replaces the previous demo
    (out / "notebooks").mkdir(parents=True)
    (out / DEMO_MARKER).write_text("written by python -m nbtools.demo; this folder is replaced on the next run\n")


def summary(out: Path) -> str:
    """A few lines on what the demo produced: the evaluation headline and where things are."""
    import json

    lines = [f"executed notebooks: {out / 'notebooks'}", f"run folder:         {out / 'run'}",
             f"export:             {out / 'export'}"]
    evaluation = out / "run" / "evaluation.json"
    if evaluation.is_file():
        payload = json.loads(evaluation.read_text())
        lines.append(accuracy_headline(payload))
    colour = out / "run" / "answers" / (Path(COLOUR_QUESTIONS).stem + ".json")
    if colour.is_file():
        lines.append(colour_headline(json.loads(colour.read_text())))
    return "\n".join(lines)


def colour_headline(payload: dict) -> str:
    """Base -> tuned colour accuracy of the greedy answers with 95% intervals, and whether the demo's criteria
    held (base at most COLOUR_BASE_MAX, tuned at least COLOUR_TUNED_MIN, intervals disjoint)."""
    base, tuned = payload["base"], payload["tuned"]
    b, t = base["ci95"]["accuracy"], tuned["ci95"]["accuracy"]
    line = (f"colour accuracy of the answers to {payload['n_items']} colour questions: base {base['accuracy']:.2f} "
            f"[{b[0]:.2f}, {b[1]:.2f}] -> tuned {tuned['accuracy']:.2f} [{t[0]:.2f}, {t[1]:.2f}]")
    held = base["accuracy"] <= COLOUR_BASE_MAX and tuned["accuracy"] >= COLOUR_TUNED_MIN and t[0] > b[1]
    verdict = ("as every measured warm build gives" if held else
               "OUTSIDE what the measured warm builds give (see benchmarks/warm_spread.py)")
    return (line + f"\n{verdict}: base at most {COLOUR_BASE_MAX:.2f}, tuned at least {COLOUR_TUNED_MIN:.2f}, "
            "intervals disjoint")


def accuracy_headline(payload: dict) -> str:
    """Base -> tuned preference accuracy with 95% intervals, and whether the intervals separate."""
    from nbtools.evaluate.metrics import interval_headline

    base, tuned = payload["base"], payload["tuned"]
    key = "preference_accuracy"
    return interval_headline(f"preference accuracy on {payload['n_pairs']} held-out pairs", base[key],
                             base["ci95"][key], tuned[key], tuned["ci95"][key], "is better",
                             "this run shows no difference")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbtools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for the demo's outputs (default: runs/demo in the project; replaced)")
    parser.add_argument("--model", default="tiny-qwen3-vl-warm", help="base model (default: tiny-qwen3-vl-warm)")
    parser.add_argument("--max-steps", type=int, help=f"training steps (default {DEMO_TRAINING['max_steps']})")
    parser.add_argument("--quiet", action="store_true", help="no per-cell progress bars")
    args = parser.parse_args(argv)

    def body() -> int:
        out = run_demo(args.out, model=args.model, max_steps=args.max_steps, progress=not args.quiet)
        print(out)
        return 0

    # a failed notebook is a DemoError (exit 2, naming the notebook); anything else exit 3 (nbtools.errors)
    return run_entry(body, prog="nbtools.demo")


if __name__ == "__main__":
    sys.exit(main())
