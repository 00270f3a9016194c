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

from nbtools.train import health
from nbtools.train.diagnose import Diagnosis, diagnose
from nbtools.train.history import evaluation_rows

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
    """The rows of ``run_dir``'s metrics.jsonl that read (see :func:`read_metrics_report`)."""
    return read_metrics_report(run_dir)[0]


def read_metrics_report(run_dir) -> tuple[list[dict], list[int]]:
    """(rows, numbers of the lines that are not rows): every readable row, whatever lies between.

    A line cut by a kill, an edited line or bytes that are not UTF-8 cost that line only, never
    the rows after it; the caller says which lines were left out.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    rows, damaged = [], []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            step = row.get("step", 0) if isinstance(row, dict) else None
            if not isinstance(step, (int, float)) or isinstance(step, bool):
                raise ValueError("not a metrics row")
        except (UnicodeDecodeError, ValueError, RecursionError):
            damaged.append(number)
            continue
        rows.append(row)
    return rows, damaged


class RunCallback(TrainerCallback):
    """Streams metrics, feeds the live monitor, diagnoses at each evaluation, keeps run.json current."""

    def __init__(self, run_dir: Path, record, monitor, cfg=None, probe: Optional[health.AnswerLengthProbe] = None):
        self.run_dir = Path(run_dir)
        self.record = record  # the run folder (nbtools.run_folder.lifecycle.RunFolder)
        self.monitor = monitor
        self.cfg = cfg
        self.history: list[dict] = []
        self.diagnosis: Optional[Diagnosis] = None
        self.final = False  # set while the closing evaluation runs: its row (if a new one) is marked "final"
        self.first_step: Optional[int] = None  # global step when this call's training began
        self._metrics = None
        self.probe = probe  # answers a few validation prompts at each evaluation (the answer-length alarm)
        self.alarmed: set[str] = set()  # alarm kinds shown (a resumed run shows the earlier ones again, once)

    def on_train_begin(self, args, state, control, **kwargs):
        preview = getattr(self.record, "history_so_far", None)  # read-only: the rows up to the checkpoint
        self.history = list(preview()) if preview is not None else []
        self.first_step = state.global_step
        self.monitor.start(state.max_steps, initial_step=state.global_step, history=self.history)
        # run.json already says "running" (a resume that fails before its first step restores the old record)
        self.record.update(progress={"step": state.global_step, "max_steps": state.max_steps})
        if self.probe is not None and kwargs.get("model") is not None:
            health.measure_start(self.probe, self.history, kwargs["model"], fresh=state.global_step == 0,
                                 base_is_start=not getattr(self.cfg, "adapter_path", None))

    @property
    def _beta(self) -> Optional[float]:
        return getattr(self.cfg, "beta", None)

    def _start(self) -> None:
        """The first moment a resumed run changes its folder's files (config.yaml, metrics.jsonl cut back to the
        checkpoint): its first step, its first log row. Everything before — the checkpoint, optimizer and RNG
        loaded, the first batch read — may fail and leave a finished run's record as it was."""
        if self._metrics is not None:
            return
        start = getattr(self.record, "start_training", None)
        if start is not None:
            self.history = list(start(self.cfg))
            for note in self.record.take_notes():
                self.monitor.message(note)
        self._metrics = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")

    def on_step_begin(self, args, state, control, **kwargs):
        self._start()

    def on_step_end(self, args, state, control, **kwargs):
        require_lock = getattr(self.record, "require_lock", None)  # the run folder: still ours?
        if require_lock is not None:
            require_lock()
        self.monitor.step(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        self._start()
        if "train_runtime" in logs and state.global_step == self.first_step:
            return  # nothing trained in this call (resumed at the last step): the run's own summary row stands
        if self.final and self._scored_already(args, state):
            return  # run.json keeps these final metrics; metrics.jsonl holds one row per evaluation
        row = clean_row(logs, state.global_step, state.epoch)
        if self.final:
            row["final"] = True
        elif "eval_loss" in row and self.probe is not None and self.probe.start is not None \
                and kwargs.get("model") is not None:
            row[health.ANSWER_TOKENS] = self.probe.measure(kwargs["model"], state.global_step)
            row[health.ANSWER_TOKENS_START] = self.probe.start
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        self.history.append(row)
        self.monitor.log(row)
        update = {"progress": {"step": state.global_step, "max_steps": state.max_steps}}
        new_alarms = [] if self.final else [a for a in health.health_alarms(self.history, self._beta)
                                            if a.kind not in self.alarmed]
        if ("eval_loss" in row and not self.final) or new_alarms:
            diagnosis = diagnose(self.history, self._beta)
            if "eval_loss" in row and (self.diagnosis is None or diagnosis.verdict != self.diagnosis.verdict):
                self.monitor.diagnosis(diagnosis.verdict, diagnosis.message, state.global_step)
            self.diagnosis = diagnosis
            update["diagnosis"] = diagnosis.to_dict()
        for alarm in new_alarms:  # each kind once, under the live figure (a line when headless)
            self.alarmed.add(alarm.kind)
            self.monitor.alarm(alarm.message)
        if "eval_loss" in row and self.probe is not None and self.probe.step == state.global_step:
            update["answer_probe"] = self.probe.to_dict()
        self.record.update(**update)

    def _scored_already(self, args, state) -> bool:
        """Whether the closing evaluation scores weights a scheduled evaluation already scored: the last step's, or
        the best checkpoint's when load_best_model_at_end reloaded it."""
        step = state.global_step
        best = getattr(state, "best_model_checkpoint", None)
        if best and getattr(args, "load_best_model_at_end", False):
            step = int(Path(best).name.rsplit("-", 1)[-1])
        return any(row.get("step") == step for row in evaluation_rows(self.history))

    def on_save(self, args, state, control, **kwargs):
        self.record.update(last_checkpoint=f"checkpoints/checkpoint-{state.global_step}")

    def on_train_end(self, args, state, control, **kwargs):
        self.monitor.close()

    def finish(self) -> list[dict]:
        """The run's rows, once training is over (a resume with nothing left to train starts its files here)."""
        self._start()
        return self.history

    def close(self):
        if self._metrics is not None and not self._metrics.closed:
            self._metrics.close()
