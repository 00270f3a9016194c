"""An HTML gallery of preference pairs for notebooks.

Thumbnails are embedded as base64 so the gallery survives in a saved notebook (and on
GitHub/Colab) without the image files next to it. Each row shows its own problems.
"""

from __future__ import annotations

import html
import os
from collections import defaultdict
from typing import Optional

from nbtools.data.records import PreferenceRecord

THUMB_PX = 160
_COLOURS = {"error": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
# Left-aligned proportional text that wraps between words (JupyterLab right-aligns table cells and
# sets <pre> in monospace; the class rules below win over both), thumbnails at full size.
_STYLE = """<style>
table.nbt-preview{font-family:var(--jp-content-font-family,sans-serif);font-size:13px;border-collapse:collapse;
  width:100%;table-layout:auto}
table.nbt-preview td,table.nbt-preview th{border-top:1px solid #ddd;padding:6px !important;
  vertical-align:top !important;text-align:left !important;white-space:normal !important;
  word-break:normal !important;overflow-wrap:normal !important}
table.nbt-preview .nbt-chosen{background:#e8f5e9}table.nbt-preview .nbt-rejected{background:#ffebee}
table.nbt-preview pre{white-space:pre-wrap !important;word-break:normal !important;overflow-wrap:break-word !important;
  margin:0 !important;padding:0 !important;font-family:inherit !important;font-size:inherit !important;
  background:none !important;border:none !important}
table.nbt-preview img{max-width:none !important}
.nbt-problem{margin:2px 0;font-size:12px}
</style>"""


def thumbnail_data_uri(path: str, size: int = THUMB_PX) -> Optional[str]:
    """A small JPEG of the image as a data: URI, or None when it cannot be opened."""
    from nbtools.images import IMAGE_DECODE_ERRORS, image_data_uri, open_image

    try:
        img = open_image(path)
    except IMAGE_DECODE_ERRORS:
        return None
    return image_data_uri(img, size, "JPEG", quality=80)


def problems_html(problems) -> str:
    if not problems:
        return ""
    items = []
    for p in problems:
        where = (f"row {p.row}" if p.row is not None else f"line {p.line}") if p.line is not None else "dataset"
        items.append(f'<div class="nbt-problem" style="color:{_COLOURS[p.severity]}"><b>{p.severity}</b> '
                     f'{html.escape(where)} · {html.escape(p.field)}: {html.escape(p.message)}'
                     + (f' <i>— {html.escape(p.fix)}</i>' if p.fix else "") + "</div>")
    return "".join(items)


def _prompt_html(record: PreferenceRecord) -> str:
    parts = []
    for message in record.prompt:
        parts.append(f"<b>{html.escape(message['role'])}:</b> <pre>{html.escape(message['content'])}</pre>")
    return "".join(parts)


def _images_html(paths, thumb_px: int) -> str:
    out = []
    for path in paths:
        uri = thumbnail_data_uri(path, thumb_px)
        if uri:
            out.append(f'<img src="{uri}" title="{html.escape(path)}" style="width:{thumb_px}px;height:auto">')
        else:
            out.append(f'<div style="color:{_COLOURS["error"]}">cannot open {html.escape(path)}</div>')
    return "".join(out)


def record_media_html(record: PreferenceRecord, thumb_px: int = THUMB_PX, video=None, family: str = "qwen3_vl") -> str:
    """A row's images (labelled chosen/rejected when the rejected answer has its own images) and, per
    video, a strip of the frames the model sees, sampled with ``video`` (``nbtools.video.VideoSettings``)."""
    from nbtools.media_view import image_sets_html, video_html

    chosen = _images_html(record.images, thumb_px)
    rejected = _images_html(record.rejected_images, thumb_px) if record.rejected_images else None
    parts = [image_sets_html(chosen, rejected)]
    parts += [video_html(path, video, family) for path in record.videos]
    return "".join(parts)


def _place(record: PreferenceRecord) -> str:
    """Line of a JSONL file; for table data, the shard and the 0-based row (as datasets numbers them)."""
    if record.row is None:
        return str(record.line)
    return html.escape(f"{os.path.basename(record.file)} row {record.row}")


def preview_html(records: list[PreferenceRecord], problems=None, n: int = 8, thumb_px: int = THUMB_PX,
                 video=None, family: str = "qwen3_vl") -> str:
    """HTML table of the first ``n`` pairs: thumbnails (a frame strip per video, sampled with ``video``),
    prompt, chosen beside rejected, problems."""
    by_line = defaultdict(list)
    for p in problems or []:
        by_line[(p.file, p.line)].append(p)
    rows = []
    for record in records[:n]:
        row_problems = by_line.get((record.file, record.line), [])
        rows.append(
            f"<tr><td>{_place(record)}</td><td style=\"min-width:{thumb_px + 12}px\">"
            f"{record_media_html(record, thumb_px, video, family)}</td>"
            f"<td>{_prompt_html(record)}</td>"
            f'<td class="nbt-chosen"><pre>{html.escape(record.chosen)}</pre></td>'
            f'<td class="nbt-rejected"><pre>{html.escape(record.rejected)}</pre></td></tr>'
            + (f'<tr><td></td><td colspan="4">{problems_html(row_problems)}</td></tr>' if row_problems else ""))
    header = ("<tr><th>line</th><th>images</th><th style=\"width:30%\">prompt</th><th style=\"width:22%\">chosen</th>"
              "<th style=\"width:22%\">rejected</th></tr>")
    more = f"<p>showing {min(n, len(records))} of {len(records)} pairs</p>"
    return f'{_STYLE}<table class="nbt-preview">{header}{"".join(rows)}</table>{more}'


class Preview:
    """Displays as the gallery in JupyterLab/Colab (and stays in the saved notebook)."""

    def __init__(self, records: list[PreferenceRecord], problems=None, n: int = 8, video=None,
                 family: str = "qwen3_vl"):
        self.records, self.problems, self.n = records, problems, n
        self.video, self.family = video, family

    def _repr_html_(self) -> str:
        return preview_html(self.records, self.problems, self.n, video=self.video, family=self.family)

    def __repr__(self) -> str:
        return f"<Preview of {min(self.n, len(self.records))} of {len(self.records)} pairs>"


def preview(records_or_report, n: int = 8, video=None, family: str = "qwen3_vl") -> Preview:
    """``preview(report)`` or ``preview(records)``: an object that renders as the gallery.

    ``video``: the ``nbtools.video.VideoSettings`` (or a RunConfig) videos are sampled with for their frame
    strips (default: the run config's defaults); ``family`` the model family whose frame size is shown.
    """
    if video is not None and not hasattr(video, "video_max_pixels"):
        raise TypeError("video: pass nbtools.video.VideoSettings(fps, max_frames, video_max_pixels) or a RunConfig")
    if video is not None and hasattr(video, "model"):  # a RunConfig
        from nbtools.video import VideoSettings

        video = VideoSettings.from_config(video)
    if hasattr(records_or_report, "problems") and hasattr(records_or_report, "records"):
        return Preview(records_or_report.records, records_or_report.problems, n, video, family)
    return Preview(list(records_or_report), None, n, video, family)
