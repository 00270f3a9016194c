"""The exported model card (README.md) as a notebook shows it: short, with its plots, details folded.

The card itself is written for a model hub, where its YAML header is metadata and its images
are files next to it. Shown inline in a notebook, the header would render as a rule and one
run-on line and ``plots/*.png`` would resolve against the notebook's folder (broken images).
So the view reads the card and transforms it for display, without changing the file:

* the YAML header becomes a metadata table;
* images are embedded as data URIs read from the card's own folder (never from outside it);
* the title, the introduction, the base model, the evaluation and the plots are shown; every
  other section (data statistics, configuration, metrics, usage, provenance) is folded away
  in a ``<details>`` element that opens on click.

Markdown is rendered with HTML escaped, so text from a run (names, paths) is shown, never run.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Union

from nbtools.widgets.notebook import HTMLView

CARD_FILE = "README.md"
# Sections shown open; everything else is folded (the card's long parts).
OPEN_SECTIONS = ("base model", "evaluation", "plots")
PLOT_PX = 1100  # longest side of an embedded plot: the 4-panel training figure stays readable

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_DETAILS = re.compile(r"<details>\s*<summary>(.*?)</summary>|</details>", re.S)
_STYLE = """<style>
.nbt-card{max-width:1100px;font-size:14px}
.nbt-card table{border-collapse:collapse;margin:4px 0 8px 0}
.nbt-card td,.nbt-card th{text-align:left !important;vertical-align:top !important;padding:3px 10px !important;
  white-space:normal !important;border-top:1px solid #ddd}
.nbt-card details{margin:4px 0;border:1px solid #e5e7eb;border-radius:4px;padding:4px 10px}
.nbt-card summary{cursor:pointer;font-weight:600}
.nbt-card .nbt-plots{display:flex;flex-wrap:wrap;gap:8px}
.nbt-card .nbt-plots figure{margin:0;flex:1 1 100%;max-width:1000px}
.nbt-card .nbt-plots img{width:100%;height:auto;border:1px solid #e5e7eb}
.nbt-card .nbt-plots figcaption{font-size:12px;color:#555}
.nbt-card pre{max-height:24em;overflow:auto;white-space:pre !important;word-break:normal !important;
  overflow-wrap:normal !important;background:#f6f8fa;border:1px solid #e5e7eb;border-radius:4px;padding:8px 10px}
.nbt-card code{font-family:var(--jp-code-font-family,monospace);font-size:12px;word-break:normal !important}
.nbt-card :not(pre)>code{background:#f3f4f6;padding:1px 4px;border-radius:3px}
</style>"""


def split_front_matter(text: str) -> tuple[dict, str]:
    """(the YAML header as a dict, the markdown after it); ({}, text) when there is no header."""
    import yaml

    match = re.match(r"\A---\s*\n(.*?)\n---\s*\n", text, re.S)
    if not match:
        return {}, text
    try:
        front = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return {}, text
    return (front if isinstance(front, dict) else {}), text[match.end():]


def split_sections(body: str) -> tuple[str, list[tuple[str, str]]]:
    """(what comes before the first ``## `` heading, [(heading, markdown under it), ...])."""
    lines = body.splitlines(keepends=True)
    head, sections, current, fence = [], [], None, False
    for line in lines:
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.startswith("## "):
            current = [line[3:].strip(), []]
            sections.append(current)
            continue
        (current[1] if current else head).append(line)
    return "".join(head), [(title, "".join(text)) for title, text in sections]


def _markdown(text: str) -> str:
    """Markdown to HTML with raw HTML escaped; the card's own ``<details>`` folds are kept as folds."""
    import mistune

    render = mistune.create_markdown(escape=True, plugins=["table"])
    out, position, depth = [], 0, 0
    for match in _DETAILS.finditer(text):
        out.append(render(text[position:match.start()]))
        if match.group(0).startswith("</"):
            if depth:
                out.append("</details>")
                depth -= 1
        else:
            summary = html.escape(html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip())
            out.append(f"<details><summary>{summary}</summary>")
            depth += 1
        position = match.end()
    out.append(render(text[position:]))
    out.append("</details>" * depth)
    return "".join(out)


def _inside(folder: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``folder``, or None (absolute, remote, or escaping the folder)."""
    if not relative or "://" in relative or relative.startswith(("data:", "/", "~")):
        return None
    candidate = (folder / relative).resolve()
    try:
        candidate.relative_to(folder.resolve())
    except ValueError:
        return None
    return candidate if candidate.is_file() else None


def _plain(markdown_text: str) -> str:
    """Markdown's backslash escapes removed (``reward\\_margin`` -> ``reward_margin``): alt text is shown as text."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown_text)


def _plot_html(folder: Path, alt: str, relative: str) -> str:
    from nbtools.images import image_data_uri, open_image

    alt = _plain(alt)

    path = _inside(folder, relative)
    if path is None:
        return f"<figure><figcaption>{html.escape(alt or relative)}: not found next to the card</figcaption></figure>"
    uri = image_data_uri(open_image(str(path)), PLOT_PX, "PNG")
    return (f'<figure><img src="{uri}" alt="{html.escape(alt, quote=True)}" title="{html.escape(relative)}">'
            f"<figcaption>{html.escape(alt or Path(relative).stem)}</figcaption></figure>")


def _section_html(folder: Path, title: str, text: str) -> str:
    images = [(m.group(1), m.group(2)) for m in _IMAGE.finditer(text)]
    rest = _IMAGE.sub("", text)
    parts = []
    if rest.strip():
        parts.append(_markdown(rest))
    if images:
        parts.append('<div class="nbt-plots">' + "".join(_plot_html(folder, a, r) for a, r in images) + "</div>")
    inner = "".join(parts)
    if title.lower() in OPEN_SECTIONS:
        return f"<h3>{html.escape(title)}</h3>{inner}"
    return f"<details><summary>{html.escape(title)}</summary>{inner}</details>"


def _metadata_table(front: dict) -> str:
    rows = []
    for key, value in front.items():
        shown = ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(shown)}</td></tr>")
    return f'<table class="nbt-card-meta">{"".join(rows)}</table>' if rows else ""


def model_card_html(card: Union[str, os.PathLike]) -> str:
    """The card (a README.md, or the export folder holding one) as short HTML with embedded plots."""
    path = Path(card)
    if path.is_dir():
        path = path / CARD_FILE
    if not path.is_file():
        return f"<p>No model card at <code>{html.escape(str(path))}</code>.</p>"
    front, body = split_front_matter(path.read_text(encoding="utf-8"))
    intro, sections = split_sections(body)
    from nbtools.display import path_html

    parts = [_STYLE, '<div class="nbt-card">']
    if Path(card).is_dir():
        parts.append(f"<p><b>Exported to</b> {path_html(card)}</p>")
    parts += [_markdown(intro), _metadata_table(front)]
    parts += [_section_html(path.parent, title, text) for title, text in sections]
    parts.append(f'<p style="color:#555">The full card: {path_html(path)} (folded parts open on click).</p></div>')
    return "".join(parts)


def model_card_view(card: Union[str, os.PathLike]) -> HTMLView:
    """Displays the card in a notebook; ``str()`` is the HTML."""
    path = Path(card)
    shown = path / CARD_FILE if path.is_dir() else path
    return HTMLView(model_card_html(card), text=f"model card {shown}")
