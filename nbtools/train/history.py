"""Which rows of metrics.jsonl are evaluations: one definition for the plot, the diagnosis, the alarms and
the run's outcome, so that the count a run reports is the number of points its plot shows."""

from __future__ import annotations


def evaluation_rows(history: list[dict]) -> list[dict]:
    """One row per evaluation: the rows with an ``eval_loss``, each step once.

    The closing evaluation adds a row only when it scores weights no scheduled evaluation scored
    (``nbtools.train.callbacks.RunCallback``). Runs from before that logged it again as a ``final`` row at
    the last evaluation's step: that repeat is left out here, so their plots and counts read the same."""
    steps, rows = set(), []
    for row in history:
        if row.get("eval_loss") is None or (row.get("final") and row.get("step") in steps):
            continue
        steps.add(row.get("step"))
        rows.append(row)
    return rows
