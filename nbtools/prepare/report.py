"""What a preparation run did, for people (text, HTML) and for files (``report.json``)."""

from __future__ import annotations

import html
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .strategies import REASONS

REPORT_FILE = "report.json"


@dataclass
class PrepareReport:
    prompts_read: int = 0
    prompts_sampled: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> sources (prompts not sampled, and why)
    ignored_rejected_responses: int = 0
    samples_generated: int = 0  # prompts answered in this run
    samples_reused: int = 0  # prompts whose answers came from the sample store
    damaged_store_lines: int = 0
    pairs_made: int = 0
    strategies: dict = field(default_factory=dict)  # name -> {"made": n, "dropped": {reason: n}}
    judge: str = ""
    judge_agreement: Optional[dict] = None  # {"with", "samples", "agree", "rate"} where a reference exists
    judge_calls: dict = field(default_factory=dict)  # {"judged": prompts judged now, "reused": from the judge cache}
    judge_failures: int = 0  # replies a model judge gave that held no score (those prompts are not judged)
    judge_failure_examples: list = field(default_factory=list)  # a few such replies, from this run
    validation: dict = field(default_factory=dict)  # {"valid", "errors", "warnings", "summary"}
    seconds: float = 0.0
    files: dict = field(default_factory=dict)
    pairs: list = field(default_factory=list)  # per written line: strategy, source, scores

    def count(self, strategy: str, reason: str) -> None:
        entry = self.strategies.setdefault(strategy, {"made": 0, "dropped": {}})
        if reason == "made":
            entry["made"] += 1
            self.pairs_made += 1
        else:
            entry["dropped"][reason] = entry["dropped"].get(reason, 0) + 1

    def dropped(self, reason: str) -> int:
        return sum(s["dropped"].get(reason, 0) for s in self.strategies.values())

    def to_dict(self) -> dict:
        return asdict(self)

    def empty_strategies(self) -> list[str]:
        """One sentence per selected strategy that made no pairs, with the reasons (most frequent first)."""
        sentences = []
        for name, entry in self.strategies.items():
            if entry["made"]:
                continue
            reasons = sorted(entry["dropped"].items(), key=lambda item: (-item[1], item[0]))
            why = "; ".join(f"{n} prompt(s): {REASONS.get(reason, reason)}" for reason, n in reasons)
            sentences.append(f"{name} made no pairs" + (f" ({why})" if why else ""))
        return sentences

    def summary(self) -> str:
        lines = [f"prompts: {self.prompts_read} read, {self.prompts_sampled} sampled "
                 f"({self.samples_generated} answered now, {self.samples_reused} from the sample store)"]
        for reason, sources in self.skipped.items():
            lines.append(f"  skipped {len(sources)}: {reason}")
        if self.ignored_rejected_responses:
            lines.append(f"  rejected_response ignored on {self.ignored_rejected_responses} row(s) (the reference "
                         "answers were used; the pairs are built anew)")
        lines.append(f"pairs made: {self.pairs_made} (judge: {self.judge})")
        if self.judge_calls:
            lines.append(f"  judged: {self.judge_calls.get('judged', 0)} prompt(s) now, "
                         f"{self.judge_calls.get('reused', 0)} from the judge cache")
        if self.judge_failures:
            shown = "; ".join(repr(r[:60]) for r in self.judge_failure_examples)
            lines.append(f"  judge replies without a score: {self.judge_failures} (their prompts count as not judged)"
                         + (f", e.g. {shown}" if shown else ""))
        for name, entry in self.strategies.items():
            dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(entry["dropped"].items())) or "none"
            lines.append(f"  {name}: {entry['made']} made; dropped: {dropped}")
        for sentence in self.empty_strategies():
            lines.append(f"  note: {sentence}")
        if self.dropped("not_judged"):
            lines.append(f"  note: {self.dropped('not_judged')} prompt(s) could not be judged: the reference and "
                         "vocabulary judges need a reference answer (use the rule judge, or pass your own judge)")
        if self.judge_agreement:
            a = self.judge_agreement
            lines.append(f"judge agreement with the {a['with']}: {a['agree']}/{a['samples']} samples "
                         f"({a['rate']:.0%}) get the same right/wrong verdict")
        if self.validation:
            lines.append(f"validation: {self.validation.get('summary', '')}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{e['made']}</td><td>"
                       + html.escape(", ".join(f"{n} {r}" for r, n in sorted(e["dropped"].items())) or "—")
                       + "</td></tr>" for name, e in self.strategies.items())
        reasons = "".join(f"<li><b>{html.escape(r)}</b>: {html.escape(REASONS[r])}</li>"
                          for r in sorted({r for e in self.strategies.values() for r in e["dropped"]}) if r in REASONS)
        # inline style: JupyterLab's output <pre> breaks lines mid-word (word-break: break-all)
        return (f"<pre style='white-space:pre-wrap;word-break:normal;overflow-wrap:break-word'>"
                f"{html.escape(self.summary())}</pre><table><tr><th>strategy</th><th>pairs</th>"
                f"<th>dropped</th></tr>{rows}</table>" + (f"<ul>{reasons}</ul>" if reasons else ""))

    def __repr__(self) -> str:
        return f"<PrepareReport pairs_made={self.pairs_made}>"


def write_json_atomic(path, payload: dict) -> Path:
    """Write JSON to a temporary name, then rename: a reader never sees half a file."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
