"""From a notebook's ``parameters`` cell to a ``RunConfig``, the same way everywhere.

Two rules, documented in the notebooks and tested:

* Relative paths in parameters are relative to the project folder (the clone that holds
  ``notebooks/`` and ``data_samples/``), not to the kernel's working folder, which differs
  between JupyterLab (``notebooks/``), papermill (wherever it was started) and Colab
  (``/content``).
* Precedence when a notebook gets both a ``config_file`` and parameters: a parameter that is
  set (not ``None``) wins over the file; the file wins over ``RunConfig``'s defaults. So
  ``papermill 03_train.ipynb out.ipynb -p config_file run.yaml -p beta 0.5`` trains the
  saved config with beta 0.5, and a parameter left at ``None`` keeps the file's value.
"""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from nbtools.config import ConfigError, RunConfig
from nbtools.paths import project_root
from nbtools.train.history import evaluation_rows

PathLike = Union[str, os.PathLike]


DATA_FIELDS = ("train_file", "validation_file", "input_file")  # may name a Hub dataset instead of a path


def project_path(path: Optional[PathLike], data: bool = False) -> Optional[str]:
    """An absolute path for a parameter value ('' and None stay None; ~ and remote URLs are kept; with
    ``data``, so is a Hub dataset id such as ``openbmb/RLAIF-V-Dataset`` that is not a folder of the project)."""
    if path is None or str(path).strip() == "":
        return None
    text = os.fspath(path)
    if "://" in text:
        return text
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = project_root() / candidate
        if data and not candidate.exists() and not any(ch in text for ch in "*?[") and _looks_like_hub_id(text):
            return text
    return str(candidate)


def _looks_like_hub_id(text: str) -> bool:
    from nbtools.data.sources import is_table_source

    return text.count("/") == 1 and is_table_source(text)


def path_fields(config_class=RunConfig) -> tuple[str, ...]:
    """Config fields holding file or folder paths (metadata kind='path')."""
    return tuple(f.name for f in dataclasses.fields(config_class) if f.metadata.get("kind") == "path")


def config_from_parameters(namespace: Mapping[str, Any], config_file: Optional[PathLike] = None,
                           config_class=RunConfig, verbose: bool = True) -> RunConfig:
    """The run config from a notebook's parameters (pass ``globals()``) and optionally a YAML.

    Every name in ``namespace`` that is a config field and not ``None`` is used, so a
    papermill ``-p name value`` for any config field works even when the parameters cell
    does not list it. With ``config_file``, the YAML gives the rest (see the module docstring).
    """
    names = [f.name for f in dataclasses.fields(config_class)]
    given = {name: namespace[name] for name in names if name in namespace and namespace[name] is not None}
    for name in path_fields(config_class):
        if name in given and isinstance(given[name], str):
            given[name] = project_path(given[name], data=name in DATA_FIELDS) or ""
    source = project_path(config_file)
    if source is None:
        return config_class.from_dict(given, source="parameters")
    if not Path(source).is_file():
        raise ConfigError(
            "config_file", f"{source} does not exist",
            "run 02_configure.ipynb (it saves this file), point config_file at a saved config YAML, "
            "or set config_file = '' to use this notebook's parameters", "parameters",
        )
    base = config_class.from_yaml(source).to_dict()
    overridden = {name: value for name, value in given.items() if base.get(name) != value}
    if verbose:
        changes = ", ".join(f"{k}={v!r}" for k, v in overridden.items()) or "none"
        print(f"config from {source}; parameters that override it: {changes}")
    return config_class.from_dict({**base, **given}, source=source)


# --- small static views: plain HTML, kept in executed notebooks and rendered by Colab too -------------

class HTMLView:
    """Displays as HTML in a notebook; ``str()`` gives the HTML (for files and tests)."""

    def __init__(self, html_text: str, text: str = ""):
        self.html = html_text
        self.text = text or _strip_tags(html_text)

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:  # the text/plain fallback: readable and free of memory addresses
        return self.text

    def __str__(self) -> str:
        return self.html


def _strip_tags(text: str) -> str:
    import re

    text = re.sub(r"<(style|script)[^>]*>.*?</\1>", "", text, flags=re.S)
    text = re.sub(r"</(tr|p|div|h\d|li|caption|thead)>|<br\s*/?>", "\n", text)
    text = re.sub(r"</t[dh]>", "  ", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def config_table(config, defaults=None) -> HTMLView:
    """Every setting of ``config``; values that differ from the config class's defaults in bold."""
    defaults = defaults if defaults is not None else _defaults_of(type(config))
    rows = []
    for name, value in config.to_dict().items():
        shown = html.escape(repr(value))
        if name in defaults and defaults[name] != value:
            shown = f"<b>{shown}</b>"
        rows.append(f"<tr><td style='text-align:left'>{name}</td><td style='text-align:left'>{shown}</td></tr>")
    return HTMLView("<table class='nbtools-config'><thead><tr><th>setting</th>"
                    "<th>value (bold = changed from the default)</th></tr></thead>"
                    f"<tbody>{''.join(rows)}</tbody></table>")


def _defaults_of(config_class) -> dict:
    try:
        return config_class().to_dict()
    except (TypeError, ConfigError):  # a config class without usable defaults for every field: nothing is "changed"
        return {}


def run_folder(run_dir: PathLike, depth: int = 2) -> HTMLView:
    """What a run folder holds (files and sizes, ``depth`` levels deep), with what each part is for."""
    root = Path(run_dir)
    if not root.is_dir():
        return HTMLView(f"<p>No run folder at <code>{html.escape(str(root))}</code>.</p>")
    rows = []
    for path in _walk(root, depth):
        relative = path.relative_to(root)
        size = _size(path)
        purpose = RUN_FOLDER_PARTS.get(relative.parts[0], "") if len(relative.parts) == 1 else ""
        indent = "&nbsp;" * 4 * (len(relative.parts) - 1)
        name = html.escape(relative.name) + ("/" if path.is_dir() else "")
        rows.append(f"<tr><td class='nbt-nowrap'>{indent}{name}</td><td class='nbt-nowrap'>{_human(size)}</td>"
                    f"<td>{html.escape(purpose)}</td></tr>")
    from nbtools.display import path_html, table_style

    return HTMLView(f"<p>Run folder {path_html(root.resolve())}</p>{table_style('nbt-folder')}<table class='nbt-folder'>"
                    f"<thead><tr><th>path</th><th>size</th><th>what it is</th></tr></thead>"
                    f"<tbody>{''.join(rows)}</tbody></table>")


RUN_FOLDER_PARTS = {
    "config.yaml": "the RunConfig of this run (python -m nbtools train config.yaml reruns it)",
    "run.json": "run record: names, status, timings, data statistics, final metrics, diagnosis, provenance",
    "metrics.jsonl": "one line per logged event (TRL metric names, step, epoch)",
    "checkpoints": "adapter + trainer state every save_steps (resume continues from the last complete one)",
    "adapter": "the final LoRA adapter",
    "processor": "processor, tokenizer and chat template with this run's max_pixels",
    "plots": "training curves (and the evaluation plot) as PNG",
    "evaluation.json": "base vs tuned on held-out pairs (04_evaluate.ipynb)",
    "export": "exported models (04_evaluate.ipynb or python -m nbtools export)",
    "lab": "side-by-side answers of base and tuned",
}


def _walk(root: Path, depth: int):
    for path in sorted(root.iterdir()):
        yield path
        if path.is_dir() and depth > 1:
            for inner in _walk(path, depth - 1):
                yield inner


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def side_by_side_view(rows, decoding=None, title: str = "base vs tuned") -> HTMLView:
    """The model lab's answers (nbtools.evaluate.side_by_side rows) with the images and video frames inlined."""
    from nbtools.evaluate import Decoding
    from nbtools.evaluate.lab import side_by_side_html

    return HTMLView(side_by_side_html(rows, decoding or Decoding(), lambda i: png_data_uri, title))


def png_data_uri(image, max_side: int = 256) -> str:
    """A PIL image as an inline PNG (thumbnail), so the saved notebook keeps showing it."""
    from nbtools.images import image_data_uri

    return image_data_uri(image, max_side, "PNG")


# --- what a notebook prints about a step: readable, and the same on every machine ----------------
# (the cells marked NBVAL_CHECK_OUTPUT print these: no metric values, no paths, no timings)

def data_summary(report) -> str:
    """The validation report in three sentences: pairs and problems, images per pair, tokens per epoch."""
    from nbtools.data.stats import epoch_tokens_text

    stats = report.stats or {}
    problems = f"{report.count('error')} errors, {report.count('warning')} warnings"
    per_row = stats.get("images_per_row") or {}
    images = "; ".join(f"{count} with {n} image{'s' if str(n) != '1' else ''}" for n, count in per_row.items())
    counting = str(stats.get("token_counting", ""))
    how = "estimated at ~4 characters per token" if "estimate" in counting else "counted with the model's tokenizer"
    lines = [f"{report.rows} rows, {report.valid} valid; {problems}.", f"Pairs: {images or 'none'}."]
    if stats.get("training_tokens_per_epoch") is not None:
        lines.append(f"Training tokens per epoch: {epoch_tokens_text(stats)}; {how}, image tokens and their vision "
                     "start/end markers included.")
    return "\n".join(lines)


def run_outcome(result) -> str:
    """How a training run ended, in steps and evaluations (metric values are in the table above); the
    evaluations counted are the points of the run's plot (``nbtools.train.history.evaluation_rows``)."""
    rows = [row for row in result.history if isinstance(row, dict)]
    steps = [row["step"] for row in rows if row.get("step") is not None]
    evaluations = len(evaluation_rows(rows))
    adapter = "the adapter is in adapter/ of the run folder" if result.adapter_dir else "no adapter was saved"
    return (f"The run {result.status} after {max(steps, default=0)} optimizer steps and {evaluations} "
            f"evaluations on the validation pairs; {adapter}.")


def run_result_html(result) -> str:
    """A finished (or stopped) run: status, folder, duration and the final validation metrics."""
    from nbtools.display import path_html, table_style

    colour = {"finished": "#15803d", "failed": "#b91c1c", "interrupted": "#b45309"}.get(result.status, "#2563eb")
    minutes, seconds = divmod(int(round(result.duration_s or 0)), 60)
    # what the run learned; timings and throughput (eval_runtime, *_per_second) are not about the model
    shown = [(k, v) for k, v in sorted((result.metrics or {}).items()) if isinstance(v, (int, float))
             and k not in ("epoch", "eval_runtime") and not k.endswith("_per_second")]
    from nbtools.metric_labels import metric_label

    rows = "".join(f"<tr><td>{html.escape(metric_label(k))}</td><td>{v:.4g}</td><td class='nbt-nowrap' "
                   f"style='color:#6b7280'><code>{html.escape(k)}</code></td></tr>" for k, v in shown)
    best = ""
    if result.best:
        best = "<p>Best checkpoint: " + ", ".join(
            f"{html.escape(str(k))} {v:.4g}" if isinstance(v, float) else f"{html.escape(str(k))} {html.escape(str(v))}"
            for k, v in result.best.items()) + "</p>"
    resumed = f" (resumed from step {result.resumed_from_step})" if result.resumed_from_step else ""
    alarms = (getattr(result, "diagnosis", None) or {}).get("alarms") or []
    if alarms:  # training-health alarms (nbtools.train.health), as the live figure showed them
        from nbtools.live import alarms_html

        best += alarms_html([a["message"] for a in alarms])
    return (f"<p><b style='color:{colour}'>Run {html.escape(result.status)}</b>{resumed} in {minutes} min {seconds} s"
            f" &mdash; run folder {path_html(result.run_dir)}</p>"
            + (f"{table_style('nbt-result')}<table class='nbt-result'><thead><tr><th>final metric</th><th>value</th>"
               f"<th>name in metrics.jsonl</th></tr></thead><tbody>{rows}</tbody></table>" if rows else "") + best)


def evaluation_outcome(result) -> str:
    """What the evaluation scored and where it wrote its results (the numbers are in the table above)."""
    names = {"evaluation": "the numbers", "plot": "the plot", "flipped": "the flipped pairs"}
    written = [f"{names.get(k, k)} in {Path(p).name}" for k, p in sorted(result.paths.items())]
    return (f"Scored {result.payload['n_pairs']} held-out pairs with the base and the tuned model (one model, "
            f"adapter off and on)." + (f" Written to the run folder: {', '.join(written)}." if written else ""))


def answers_outcome(result) -> str:
    """What the answer-level evaluation asked and where it wrote its results (the numbers are in the table above)."""
    payload = result.payload
    if payload is None:
        return "No benchmark file given (benchmark_file is empty): the answers were not evaluated."
    written = [f"{'the numbers' if k == 'answers' else 'the flipped questions'} in {Path(p).parent.name}/"
               f"{Path(p).name}" for k, p in sorted(result.paths.items())]
    return (f"Both models answered {payload['n_items']} questions of {payload['name']} ({payload['mode_help']}) with "
            "the same greedy settings, one model in memory (adapter off and on)."
            + (f" Written to the run folder: {', '.join(written)}." if written else ""))


def compare_answers(exported_answer: str, tuned_answer: str) -> str:
    """Whether the export answered exactly as the tuned model did (the answers are shown above)."""
    if exported_answer == tuned_answer:
        return "The export answers exactly as the tuned model did."
    return "The export's answer differs from the tuned model's: compare them above."
