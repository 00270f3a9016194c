"""Small pieces every HTML view shares: how a path is shown and how a table reads.

Views in a notebook are read by people: paths are shown relative to the project folder (the
full path is on hover), text is left-aligned and wraps at word boundaries, images keep room.
JupyterLab's own table style right-aligns cells, so the table style here overrides it by class.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, os.PathLike]


def short_path(path: PathLike, root: Optional[PathLike] = None) -> str:
    """``path`` relative to the project folder (or ``root``), ``~/…`` under the home folder, else as given."""
    text = os.fspath(path)
    if not text or "://" in text:
        return text
    if root is None:
        from nbtools.paths import project_root

        root = project_root()
    full = Path(text).expanduser()
    if not full.is_absolute():
        return text
    for base, prefix in ((Path(root), ""), (Path.home(), "~/")):
        try:
            relative = full.resolve().relative_to(Path(base).resolve())
        except (ValueError, OSError):
            continue
        return prefix + relative.as_posix() if str(relative) != "." else (prefix or ".")
    return text


def path_html(path: PathLike, root: Optional[PathLike] = None, suffix: str = "") -> str:
    """The short path as HTML, with the full path as its tooltip."""
    text = os.fspath(path)
    shown = html.escape(short_path(text, root) + suffix).replace("/", "/<wbr>")  # line breaks after slashes only
    return f'<span class="nbt-path" title="{html.escape(text, quote=True)}">{shown}</span>'


def table_style(cls: str) -> str:
    """A <style> block for ``<table class=cls>``: left-aligned, word wrapping, no mid-word breaks."""
    return (
        "<style>"
        f"table.{cls}{{border-collapse:collapse;font-size:13px;table-layout:auto}}"
        f"table.{cls} td,table.{cls} th{{text-align:left !important;vertical-align:top !important;"
        "white-space:normal !important;word-break:normal !important;overflow-wrap:normal !important;"
        "padding:4px 6px !important;border-top:1px solid #ddd}"
        f"table.{cls} th{{font-weight:600}}"
        f"table.{cls} .nbt-nowrap{{white-space:nowrap !important}}"
        f"table.{cls} .nbt-path{{font-family:var(--jp-code-font-family,monospace);"
        "font-size:12px}"
        f"table.{cls} img{{max-width:none !important}}"
        f"table.{cls} pre{{white-space:pre-wrap !important;word-break:normal !important;"
        "overflow-wrap:break-word !important;font-family:inherit !important;font-size:inherit !important;"
        "margin:0 !important;padding:0 !important;background:none !important;border:none !important}"
        + PRINTED_LINES_STYLE + "</style>"
    )


# JupyterLab breaks printed text anywhere ("adapt|er/"): its output <pre> has word-break: break-all. The notebooks'
# checked cells print plain text (nbval compares it), so once an nbtools table or log line is on the page, printed
# lines wrap between words instead (a word longer than the line still breaks).
PRINTED_LINES_STYLE = (".jp-OutputArea-output pre{word-break:normal !important;"
                       "overflow-wrap:anywhere !important}")


# JupyterLab breaks printed lines anywhere ("at lea|st 100"): its output <pre> has word-break: break-all.
# An inline style wins over that class rule, so a line shown as HTML wraps between words only.
LOG_LINE_STYLE = ("white-space:pre-wrap;word-break:normal;overflow-wrap:break-word;margin:0;padding:0;"
                  "font-family:var(--jp-code-font-family,monospace);font-size:var(--jp-code-font-size,13px)")


def show_log_line(text: str) -> None:
    """One message in a notebook: HTML that wraps between words, with the plain text for other front ends."""
    from IPython.display import display

    display({"text/plain": text,
             "text/html": f"<style>{PRINTED_LINES_STYLE}</style>"
                          f"<pre class='nbtools-log' style='{LOG_LINE_STYLE}'>{html.escape(text)}</pre>"}, raw=True)


def fixed_width_table(rows: list) -> list[str]:
    """Terminal lines of a table whose first row is the header: columns padded to their widest cell, a rule
    under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines

