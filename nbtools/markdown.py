"""User text as data in Markdown (model cards): it renders as the literal text, never as markup.

Names, paths and config values come from users; pasted raw into a README they could add links,
images, raw HTML (``<script>``), headings or break out of a code block. Each helper here puts a
string into one Markdown context so that a CommonMark/GFM renderer shows exactly that string.
"""

from __future__ import annotations

import re

# Characters with an inline meaning mid-line in CommonMark, GFM or the hub's renderer
# (emphasis, code, links/images, raw HTML and entities, tables, strikethrough, math, footnotes,
# headings' closing #). CommonMark shows any backslash-escaped ASCII punctuation literally.
_INLINE_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!|<>&~$^])")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def one_line(text: str) -> str:
    """``text`` with line breaks turned into spaces: a break would end a heading, a table row or a paragraph."""
    return _LINE_BREAKS.sub(" ", str(text))


def text(value) -> str:
    """Plain inline text (a heading, a sentence, a table cell)."""
    return _INLINE_SPECIAL.sub(r"\\\1", one_line(value))


def code(value, in_table: bool = False) -> str:
    """An inline code span showing ``value`` verbatim (its backticks cannot close the span)."""
    content = one_line(value)
    if not content:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    fence = "`" * (longest + 1)
    # A span's content that starts or ends with a backtick, or with a space at both ends, needs padding
    # (CommonMark strips one space from each side).
    if content[0] == "`" or content[-1] == "`" or (content[0] == " " and content[-1] == " "):
        content = f" {content} "
    if in_table:  # GFM splits table cells on | even inside code spans; \| keeps it in the cell
        content = content.replace("|", "\\|")
    return f"{fence}{content}{fence}"


def fenced(body: str, language: str = "") -> str:
    """A fenced code block holding ``body`` verbatim: the fence is longer than any backtick run inside."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{body.rstrip(chr(10))}\n{fence}\n"


def link_target(path: str) -> str:
    """A relative link or image destination, percent-encoded (spaces, parentheses, ``<``...)."""
    from urllib.parse import quote

    return quote(str(path), safe="/")
