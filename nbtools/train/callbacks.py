"""Trainer callbacks: metrics.jsonl, the run record, live monitoring and diagnosis.

One callback does the bookkeeping on the main process so that each log event reaches, in
order: metrics.jsonl (appended and flushed as it happens), the live monitor, the diagnosis
and run.json. Other ranks only advance nothing: they never touch the run folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from transformers import TrainerCallback

from nbtools.train.diagnose import Diagnosis, diagnose

METRICS_FILE = "metrics.jsonl"


def clean_row(logs: dict, step: int, epoch: Optional[float]) -> dict:
    """A log event as one JSON-safe row: TRL's metric names + step + epoch (non-finite -> None)."""
    row = {}
    for key, value in logs.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        row[key] = value
    row["step"] = step
    row["epoch"] = round(epoch, 4) if epoch is not None else None
    return row


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: everything before it is good
                break
    return rows


class RunCallback(TrainerCallback):
    """Streams metrics, feeds the live monitor, diagnoses at each evaluation, keeps run.json current."""

    def __init__(self, run_dir: Path, record, monitor, history: Optional[list[dict]] = None):
        self.run_dir = Path(run_dir)
        self.record = record
        self.monitor = monitor
        self.history: list[dict] = list(history or [])
        self.diagnosis: Optional[Diagnosis] = None
        self.final = False  # set while the closing evaluation runs, so its row is marked "final"
        self._metrics = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")

    def on_train_begin(self, args, state, control, **kwargs):
        self.monitor.start(state.max_steps, initial_step=state.global_step, history=self.history)
        self.record.update(progress={"step": state.global_step, "max_steps": state.max_steps})

    def on_step_end(self, args, state, control, **kwargs):
        require_lock = getattr(self.record, "require_lock", None)  # the run folder: still ours?
        if require_lock is not None:
            require_lock()
        self.monitor.step(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        row = clean_row(logs, state.global_step, state.epoch)
        if self.final:
            row["final"] = True
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        self.history.append(row)
        self.monitor.log(row)
        update = {"progress": {"step": state.global_step, "max_steps": state.max_steps}}
        if "eval_loss" in row and not self.final:
            diagnosis = diagnose(self.history)
            if self.diagnosis is None or diagnosis.verdict != self.diagnosis.verdict:
                self.monitor.message(f"diagnosis @ step {state.global_step}: {diagnosis.message}")
            self.diagnosis = diagnosis
            update["diagnosis"] = diagnosis.to_dict()
        self.record.update(**update)

    def on_save(self, args, state, control, **kwargs):
        self.record.update(last_checkpoint=f"checkpoints/checkpoint-{state.global_step}")

    def on_train_end(self, args, state, control, **kwargs):
        self.monitor.close()

    def close(self):
        if not self._metrics.closed:
            self._metrics.close()
