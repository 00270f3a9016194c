"""Training-health alarms (issue 24, item 2): recorded histories that fire each alarm and that do not, the
live display under the figure, and run.json's diagnosis. No model is loaded here.

The fixtures under tests/fixtures/health/ are real runs of the shapes task recorded by
``benchmarks/health_alarms.py --fixtures`` (each file says how); being recorded, their numbers are fixed, and
each alarm is asserted with room both ways (strength >= 1.5 where it fires, <= 0.75 where it does not).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from nbtools.train import diagnose
from nbtools.train.health import KINDS, alarm_strengths, health_alarms, measure_start

FIXTURES = Path(__file__).parent / "fixtures" / "health"

# what each recorded run raises
EXPECTED = {
    "healthy": set(),  # the demo's recipe (sigmoid + sft, lr 5e-3)
    "dpo": {"answer_length"},  # sigmoid alone at 5e-3: preferences fine, greedy answers ramble
    "displacement": {"likelihood_displacement", "reward_divergence", "answer_length"},  # sigmoid at 1e-2
    "collapse": {"reward_divergence", "answer_length"},  # sigmoid at 5e-2: both answers fall apart
    "memorise": {"margin_saturation"},  # 16 text-only pairs memorised, validation at chance
}
FIRES_WITH, QUIET_BELOW = 1.5, 0.75


def recorded(name: str) -> tuple[list[dict], float]:
    payload = json.loads((FIXTURES / f"{name}.json").read_text())
    return payload["rows"], payload["beta"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_recorded_run_raises_exactly_its_alarms_with_room(name):
    rows, beta = recorded(name)
    assert {a.kind for a in health_alarms(rows, beta)} == EXPECTED[name]
    for kind, strength in alarm_strengths(rows, beta).items():
        if kind in EXPECTED[name]:
            assert strength >= FIRES_WITH, (kind, strength)
        else:
            assert strength is None or strength <= QUIET_BELOW, (kind, strength)


def test_each_alarm_is_one_sentence_with_its_step_meaning_and_what_to_try():
    seen = set()
    for name in EXPECTED:
        rows, beta = recorded(name)
        for alarm in health_alarms(rows, beta):
            seen.add(alarm.kind)
            text = alarm.message
            assert f"step {alarm.step}" in text and text.endswith(".") and ". " not in text, text
            assert " so " in text or "which" in text  # what it means
            assert "try " in text or "use the checkpoint" in text  # what to do
            assert alarm.values["strength"] >= 1
    assert seen == set(KINDS)  # every alarm has a recorded run that fires it


def test_displacement_is_read_where_it_happens():
    rows, beta = recorded("displacement")
    alarm = next(a for a in health_alarms(rows, beta) if a.kind == "likelihood_displacement")
    # validation at step 20: chosen log-prob about -19 nats at the reference, far lower now, margin risen
    assert alarm.source == "validation" and alarm.step == 20
    assert alarm.values["chosen_shift_nats"] < -10 and alarm.values["margin"] > 0.5


def test_without_beta_only_the_alarms_that_need_no_rewards_remain():
    rows, _ = recorded("displacement")
    assert {a.kind for a in health_alarms(rows)} == {"answer_length"}
    rows, _ = recorded("memorise")
    assert {a.kind for a in health_alarms(rows)} == {"margin_saturation"}


def test_a_history_too_short_or_empty_raises_nothing():
    assert health_alarms([], 0.1) == []
    rows, beta = recorded("displacement")
    assert health_alarms(rows[:3], beta) == []  # before any evaluation or full training window


def test_diagnosis_carries_the_alarms_beside_the_loss_verdict():
    rows, beta = recorded("displacement")
    diagnosis = diagnose(rows, beta)
    assert diagnosis.verdict in ("learning", "overfitting", "not_learning")
    assert [a["kind"] for a in diagnosis.to_dict()["alarms"]] == [a.kind for a in health_alarms(rows, beta)]
    assert diagnose(recorded("healthy")[0], beta).alarms == []


# --- live: each alarm once, under the figure (a line headless), and in run.json ----------------------------------

class FakeRecord:
    def __init__(self):
        self.updates = []

    def update(self, **fields):
        self.updates.append(fields)


def headline(message: str) -> str:
    """"Likelihood displacement at step 20" of an alarm's message: live, a training window may see it first, at the
    same step as the evaluation that run.json's diagnosis names (which then reads it from the validation row)."""
    return message.split(":")[0].split(" (")[0]


def replay(rows, beta, monitor, tmp_path):
    """Feed a recorded history to the run callback as the trainer would (the closing evaluation left out)."""
    from transformers import TrainerControl, TrainerState

    from nbtools.train.callbacks import RunCallback

    record = FakeRecord()
    callback = RunCallback(tmp_path, record, monitor, SimpleNamespace(beta=beta, adapter_path=None))
    state, control = TrainerState(), TrainerControl()
    state.max_steps = max(r["step"] for r in rows)
    callback.on_train_begin(None, state, control)
    for row in rows:
        if row.get("final"):
            continue
        state.global_step, state.epoch = row["step"], row.get("epoch")
        callback.on_log(None, state, control, logs={k: v for k, v in row.items() if k not in ("step", "epoch")})
    callback.close()
    return record


def test_headless_run_says_each_alarm_once_as_it_fires(tmp_path):
    from nbtools.live import LiveMonitor

    rows, beta = recorded("displacement")
    said: list[str] = []
    record = replay(rows, beta, LiveMonitor("headless", write=said.append), tmp_path)
    alarms = [line[len("alarm: "):] for line in said if line.startswith("alarm: ")]
    assert [headline(line) for line in alarms] == [headline(a.message) for a in health_alarms(rows, beta)]
    for text in alarms:  # each said as it fired: right after its step's log line (or another alarm of that step)
        step = text.split("at step ")[1].split(" ")[0].rstrip(":")
        before = said[:said.index(f"alarm: {text}")]
        last_log = next(line for line in reversed(before) if line.startswith("step "))
        assert last_log.startswith(f"step {step}/")
    diagnoses = [u["diagnosis"] for u in record.updates if "diagnosis" in u]
    assert [a["kind"] for a in diagnoses[-1]["alarms"]] == [a.kind for a in health_alarms(rows, beta)]


def test_notebook_shows_one_alarm_box_under_the_figure_updated_in_place(monkeypatch, tmp_path):
    import IPython.display

    from nbtools.live import LiveMonitor

    displayed = []

    class Handle:
        def __init__(self, obj):
            self.shown = [obj]

        def update(self, obj):
            self.shown.append(obj)

    def fake_display(obj, display_id=None):
        assert display_id is True
        displayed.append(Handle(obj))
        return displayed[-1]

    monkeypatch.setattr(IPython.display, "display", fake_display)
    rows, beta = recorded("displacement")
    monitor = LiveMonitor("notebook", min_redraw_s=600.0, write=lambda text: None)  # redrawn at evaluations
    replay(rows, beta, monitor, tmp_path)
    assert len(displayed) == 2  # the figure, then (at the first alarm) the alarm box under it
    box = displayed[1]
    expected = health_alarms(rows, beta)
    assert len(box.shown) == len(expected)  # shown with the first alarm, updated with each next one
    final = box.shown[-1].data
    assert final.count("<li>") == len(expected) and "Training-health alarms" in final
    import html

    assert all(html.escape(headline(a.message)) in final for a in expected)


def test_a_healthy_run_shows_no_alarm(tmp_path):
    from nbtools.live import LiveMonitor

    said: list[str] = []
    rows, beta = recorded("healthy")
    record = replay(rows, beta, LiveMonitor("headless", write=said.append), tmp_path)
    assert not any(line.startswith("alarm: ") for line in said)
    assert all(u["diagnosis"]["alarms"] == [] for u in record.updates if "diagnosis" in u)


def test_the_start_of_a_resumed_run_is_read_back_not_measured_again():
    class Probe:
        start = None
        measured = 0

        def measure_start(self, model):
            self.measured += 1
            self.start = 6.5

    class Model:
        def __init__(self):
            self.adapter_off = 0

        def disable_adapter(self):
            import contextlib

            self.adapter_off += 1
            return contextlib.nullcontext()

    probe, model = Probe(), Model()
    measure_start(probe, [{"step": 10, "eval_loss": 1.0, "eval_answer_tokens_start": 7.25}], model, fresh=False,
                  base_is_start=True)
    assert probe.start == 7.25 and probe.measured == 0
    probe = Probe()
    measure_start(probe, [{"step": 4, "loss": 1.0}], model, fresh=False, base_is_start=True)
    assert probe.measured == 1 and model.adapter_off == 1  # a new adapter starts as the base model
    probe = Probe()
    measure_start(probe, [], model, fresh=False, base_is_start=False)  # continuing adapter_path: unknown start
    assert probe.start is None


def test_the_run_result_in_a_notebook_lists_the_alarms(tmp_path):
    import html

    from nbtools.train.runner import RunResult

    rows, beta = recorded("displacement")
    diagnosis = diagnose(rows, beta).to_dict()
    shown = RunResult(tmp_path, "finished", {"eval_loss": 0.5}, diagnosis=diagnosis, duration_s=3)._repr_html_()
    assert shown.count("<li>") == len(diagnosis["alarms"]) > 0
    assert html.escape(diagnosis["alarms"][0]["message"]) in shown
    quiet = diagnose(recorded("healthy")[0], beta).to_dict()
    assert "alarm" not in RunResult(tmp_path, "finished", {}, diagnosis=quiet)._repr_html_().lower()


def test_the_committed_benchmark_results_were_measured_with_the_codes_thresholds():
    # (the docs' sentence on them is checked against the results by tests/test_doc_figures.py)
    repo = Path(__file__).resolve().parent.parent
    results = json.loads((repo / "benchmarks" / "results" / "health_alarms.json").read_text())
    from nbtools.train import health

    assert results["thresholds"] == {name: getattr(health, name) for name in results["thresholds"]}
