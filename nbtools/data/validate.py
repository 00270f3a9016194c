"""Validate a preference dataset before training: every problem, with line, field and fix.

``validate_dataset`` runs the rule families in order — parse and schema (per line), media
files (per distinct path, in parallel), sequence length (image tokens included) and
dataset-wide rules — and returns a :class:`ValidationReport`. Nothing here raises for bad
data; only an unreadable data file raises :class:`~nbtools.data.load.UnreadableFile`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Union

from nbtools.data.dataset_rules import check_dataset
from nbtools.data.load import LoadResult, UnreadableFile, load_records, no_gc_pauses
from nbtools.data.media import MediaInfo, inspect_all, is_inside, size_findings
from nbtools.data.records import PreferenceRecord
from nbtools.data.tokens import PairTokens, TokenCounter, largest_within, max_pixels_to_fit
from nbtools.images import MAX_ASPECT_RATIO, ImageGeometry, geometry, is_remote
from nbtools.problems import SEVERITY_ORDER, Problem, Repeat, has_errors, printable, summarise_repeats
from nbtools.video import VideoSettings

__all__ = ["ValidationReport", "validate_dataset", "validate_records", "UnreadableFile"]


@dataclass(repr=False)  # the default repr would dump every record into saved notebooks
class ValidationReport:
    file: str
    rows: int  # non-blank lines (or .json items)
    valid: int  # rows without any error
    records: list[PreferenceRecord]  # every row that parsed into a pair (some may still have media/length errors)
    problems: list[Problem]
    stats: dict = field(default_factory=dict)
    tokens: dict[int, PairTokens] = field(default_factory=dict)  # line -> token counts
    media: dict[str, MediaInfo] = field(default_factory=dict)  # path -> what inspecting it found

    @property
    def error_lines(self) -> set[int]:
        return {p.line for p in self.problems if p.severity == "error" and p.line is not None}

    @property
    def valid_records(self) -> list[PreferenceRecord]:
        """The rows training can use: parsed, and with no error on their line."""
        bad = self.error_lines
        return [r for r in self.records if r.line not in bad]

    def has_errors(self, strict: bool = False) -> bool:
        return has_errors(self.problems, strict)

    def count(self, severity: str) -> int:
        return sum(p.severity == severity for p in self.problems)

    def __repr__(self) -> str:
        return f"<ValidationReport {self.summary()}>"

    def summary(self) -> str:
        return printable(f"{self.file}: {self.rows} rows, {self.valid} valid; {self.count('error')} errors, "
                f"{self.count('warning')} warnings, {self.count('info')} info")

    def summarised(self, all_problems: bool = False) -> tuple[list[Problem], list[Repeat]]:
        """The problems to list one by one, and the repeated findings summarised (first
        ``REPEAT_SHOWN`` lines of each kind + a count); ``all_problems`` lists every one."""
        if all_problems:
            return self.problems, []
        return summarise_repeats(self.problems)

    def to_dict(self, all_problems: bool = False) -> dict:
        """The ``--json`` schema: file, rows, valid, problems (line/severity/field/message/fix),
        repeated (count/shown/first_line/last_line + the first one's severity/field/message/fix), stats.

        Every string is valid UTF-8 (undecodable bytes and lone surrogates are shown escaped)."""
        shown, repeats = self.summarised(all_problems)
        return _printable_tree({
            "file": self.file, "rows": self.rows, "valid": self.valid,
            "problems": [{"line": p.line, "severity": p.severity, "field": p.field, "message": p.message,
                          "fix": p.fix} for p in shown],
            "repeated": [r.to_dict() for r in repeats],
            "stats": self.stats})

    def _repr_html_(self) -> str:  # a report shown in a notebook cell
        import html

        from nbtools.data.preview import problems_html

        shown, repeats = self.summarised()  # a finding on 800,000 lines must not become 800,000 HTML rows
        notes = "".join(f"<div class='nbt-problem'>{html.escape(r.format(self.file))}</div>" for r in repeats)
        return printable(f"<p><b>{html.escape(self.summary())}</b></p>" + problems_html(shown) + notes)


def _printable_tree(value):
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_printable_tree(k): _printable_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_tree(v) for v in value]
    return value


def validate_dataset(
    path: Union[str, os.PathLike],
    *,
    max_pixels: Optional[int] = None,
    max_context_length: Optional[int] = None,
    model: Optional[str] = None,
    root: Optional[Union[str, os.PathLike]] = None,
    deep: bool = False,
    validation_file: Optional[Union[str, os.PathLike]] = None,
    family: Optional[str] = None,
    progress: bool = False,
    video: Optional[VideoSettings] = None,
) -> ValidationReport:
    """Load and check ``path``; see the module docstring. ``family`` picks the image geometry
    (``qwen3_vl`` by default) when no ``model`` is given; ``video`` (fps, max_frames,
    video_max_pixels; the run config's defaults when None) decides how many tokens a video costs."""
    loaded = load_records(path, progress=progress)
    counter = (TokenCounter.for_model(model, max_pixels, video=video) if model
               else TokenCounter(geometry(family), max_pixels, video=video))
    validation = None
    if validation_file and os.path.realpath(validation_file) == os.path.realpath(path):
        loaded.problems.append(Problem(loaded.file, None, "validation_file", "warning",
                                       "the validation file is the training file itself; leakage was not checked",
                                       "pass a separate held-out file"))
    elif validation_file:
        validation = load_records(validation_file, progress=progress).records
    with no_gc_pauses():
        return validate_records(loaded, counter=counter, max_context_length=max_context_length,
                                root=os.fspath(root) if root else None, deep=deep, validation=validation,
                                progress=progress)


def validate_records(
    loaded: LoadResult,
    *,
    counter: TokenCounter,
    max_context_length: Optional[int] = None,
    root: Optional[str] = None,
    deep: bool = False,
    validation: Optional[list[PreferenceRecord]] = None,
    progress: bool = False,
) -> ValidationReport:
    """The rule families after loading (lets callers validate records they loaded themselves)."""
    records = loaded.records
    problems = list(loaded.problems)
    say = _phase_reporter(loaded.file, len(records), progress)
    say("checking media files")
    media_problems, media = check_media(records, counter.geo, counter.max_pixels, root, deep, progress)
    problems += media_problems
    problems += check_video_support(records, counter)
    sizes = {p: (i.width, i.height) for p, i in media.items() if not i.error and i.width}
    videos = {p for r in records for p in r.videos}
    say("counting tokens")
    tokens = counter.count(records, sizes, {p: media[p] for p in videos if p in media})
    problems += check_lengths(records, tokens, media, counter, max_context_length)
    # a problem with the whole file (field "file") names a line of the file, not a row
    error_lines = {p.line for p in problems if p.severity == "error" and p.line is not None and p.field != "file"}
    valid = loaded.rows - len(error_lines)
    say("checking duplicates and dataset-wide rules")
    problems += check_dataset(loaded.file, records, valid, validation)
    problems.sort(key=lambda p: (p.line is None, p.line or 0, SEVERITY_ORDER[p.severity]))

    from nbtools.data.stats import dataset_stats

    stats = dataset_stats(records, rows=loaded.rows, valid=valid, tokens=tokens, media=media, counter=counter,
                          problems=problems)
    return ValidationReport(loaded.file, loaded.rows, valid, records, problems, stats,
                            {r.line: t for r, t in zip(records, tokens)}, media)


def _phase_reporter(file: str, rows: int, progress: bool):
    """A one-line note on stderr per validation phase, for big files only (see ``load.PROGRESS_MIN_BYTES``)."""
    import sys
    import time

    if not progress or rows < 100_000:
        return lambda phase: None
    start = time.monotonic()

    def say(phase: str) -> None:
        text = f"validating {file}: {phase} ({rows:,} rows, {time.monotonic() - start:.0f} s)"
        print(text.encode("utf-8", "backslashreplace").decode("utf-8"), file=sys.stderr, flush=True)
    return say


def check_media(records: list[PreferenceRecord], geo: ImageGeometry, max_pixels: Optional[int],
                root: Optional[str], deep: bool, progress: bool = False) -> tuple[list[Problem], dict[str, MediaInfo]]:
    """File problems (missing, folder, empty, not an image, corrupt, truncated), confinement to
    ``root`` and size against the vision patch, for images, rejected_images and videos."""
    problems: list[Problem] = []
    escaping: set[str] = set()
    image_paths, video_paths = [], []
    for record in records:
        for key, paths in _media_fields(record):
            for path in paths:
                if root and not is_inside(path, root):
                    escaping.add(path)
                elif key == "videos":
                    video_paths.append(path)
                else:
                    image_paths.append(path)
    media = inspect_all(image_paths, deep=deep, videos=video_paths, progress=progress)
    size_cache: dict[str, list] = {}
    for record in records:
        for key, paths in _media_fields(record):
            for i, path in enumerate(paths):
                where = f"{key}[{i}]"
                if path in escaping:
                    what = "is a remote URL, outside" if is_remote(path) else "lies outside"
                    problems.append(Problem(record.file, record.line, where, "error",
                                            f"{path} {what} the allowed root {root}",
                                            "copy the file under the root folder or point --root higher"))
                    continue
                info = media[path]
                if info.error:
                    problems.append(Problem(record.file, record.line, where, "error", f"{info.error}: {path}", info.fix))
                    continue
                if key == "videos":
                    if path not in size_cache:
                        size_cache[path] = video_size_findings(info)
                    for severity, message, fix in size_cache[path]:
                        problems.append(Problem(record.file, record.line, where, severity, message, fix))
                    continue
                if path not in size_cache:
                    size_cache[path] = size_findings(info, geo, max_pixels)
                for severity, message, fix in size_cache[path]:
                    problems.append(Problem(record.file, record.line, where, severity, message, fix))
    return problems, media


def video_size_findings(info: MediaInfo) -> list[tuple[str, str, str]]:
    """(severity, message, fix) for a video's frame size: the processors refuse extreme shapes."""
    w, h = info.width, info.height
    if w and h and max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        return [("error", f"video is {w}x{h} px: aspect ratio above {MAX_ASPECT_RATIO}, which the processor refuses",
                 "crop or pad the video to a less extreme shape")]
    return []


def check_video_support(records: list[PreferenceRecord], counter: TokenCounter) -> list[Problem]:
    """Rows with videos, for a model whose processor takes no videos: one error per row, all with
    the same message (the report lists it once with a count)."""
    reason = counter.video_support_problem()
    if not reason:
        return []
    return [Problem(r.file, r.line, "videos", "error", f"this row has {len(r.videos)} video(s), but {reason}",
                    "use a model of one of those families, or remove the videos from these rows")
            for r in records if r.videos]


def _media_fields(record: PreferenceRecord):
    yield "images", record.images
    yield "videos", record.videos
    if record.rejected_images:
        yield "rejected_images", record.rejected_images


def check_lengths(records: list[PreferenceRecord], tokens: list[PairTokens], media: dict[str, MediaInfo],
                  counter: TokenCounter, max_context_length: Optional[int]) -> list[Problem]:
    """Prompt + answer must fit ``max_context_length``: truncation would cut image tokens and
    break training ("Image features and image tokens do not match")."""
    if not max_context_length:
        return []
    problems = []
    note = " (estimated)" if counter.estimated else ""
    for record, count in zip(records, tokens):
        for part, prompt, answer, field_name in (("chosen", count.prompt, count.chosen, "prompt+chosen"),
                                                 ("rejected", count.rejected_prompt, count.rejected, "prompt+rejected")):
            total = prompt + answer
            if total <= max_context_length:
                continue
            over = total - max_context_length
            fix = f"raise max_context_length to at least {total} (+{over})"
            if count.video_tokens:
                fit = _video_fit(record, media, counter, max_context_length - (total - count.video_tokens))
                if fit:
                    fix += f", or {fit}"
            contrast = part == "rejected" and bool(record.rejected_images)
            image_tokens = count.image_tokens + (count.rejected_image_delta if contrast else 0)
            image_paths = record.rejected_images if contrast else record.images
            if image_tokens:
                text_tokens = total - image_tokens
                # an image the processor refuses (aspect ratio) is already an error and costs no tokens
                sizes = [(media[p].width, media[p].height) for p in image_paths if p in media and media[p].width
                         and max(media[p].width, media[p].height) <= MAX_ASPECT_RATIO * min(media[p].width,
                                                                                            media[p].height)]
                fit = max_pixels_to_fit(sizes, max_context_length - text_tokens, counter.geo)
                if fit:
                    fix += f", or lower max_pixels to {fit} or less"
            elif count.prompt >= max_context_length:
                fix += ", or shorten the prompt"
            if count.video_tokens:
                v = counter.video
                media_note = (f"{image_tokens} of them image tokens at max_pixels="
                              f"{counter.max_pixels or 'model default'}, {count.video_tokens} video tokens at "
                              f"fps={v.fps:g}, max_frames={v.max_frames}, video_max_pixels={v.video_max_pixels}")
            else:
                media_note = (f"{image_tokens} of them image tokens at "
                              f"max_pixels={counter.max_pixels or 'model default'}")
            problems.append(Problem(
                record.file, record.line, field_name, "error",
                f"prompt + {part} is {total} tokens{note} ({media_note}), {over} over max_context_length="
                f"{max_context_length}; truncating would cut image tokens and break training", fix))
    return problems


def _video_fit(record: PreferenceRecord, media: dict[str, MediaInfo], counter: TokenCounter, budget: int) -> str:
    """Advice on the video knobs that make the row's videos fit ``budget`` tokens ('' when none
    does): the largest video_max_pixels at this max_frames, else the largest max_frames too."""
    from dataclasses import replace

    from nbtools.video import VIDEO_MIN_PIXELS, video_geometry

    if counter.video_geo is None or budget <= 0:
        return ""
    infos = [media.get(p) for p in record.videos]
    geo = counter.video_geo
    unit = geo.factor * geo.factor

    def cost(settings: VideoSettings) -> int:
        what_if = video_geometry(geo.family, settings) if counter.processor is None else _with_settings(geo, settings)
        return sum(counter.video_tokens(i, settings, what_if) for i in infos)

    def largest(low: int, high: int, make) -> Optional[int]:  # cost is monotone in each knob
        return largest_within(low, high, lambda n: cost(make(n)), budget)

    settings = counter.video
    current = max(1, (settings.video_max_pixels or unit) // unit)
    least = -(-VIDEO_MIN_PIXELS // unit)  # the config's smallest video_max_pixels, in whole tokens
    tokens = largest(min(least, current), current, lambda t: replace(settings, video_max_pixels=t * unit))
    if tokens is not None and tokens < current:
        return f"lower video_max_pixels to {tokens * unit} or less"
    frames = largest(2, settings.max_frames, lambda n: replace(settings, max_frames=n))
    if frames is not None and frames < settings.max_frames:
        return f"lower max_frames to {frames} or less"
    return ""


def _with_settings(geo, settings: VideoSettings):
    """A loaded processor's video geometry with other video settings (same patch sizes)."""
    from dataclasses import replace

    from nbtools.video import video_processor_settings

    applied = video_processor_settings(geo.family, settings, geo.patch_size, geo.merge_size, geo.temporal_patch_size)
    return replace(geo, min_pixels=applied["size"]["shortest_edge"], max_pixels=applied["size"]["longest_edge"],
                   cap_pixels_per_frame=applied["cap_pixels_per_frame"],
                   max_video_tokens=applied.get("max_video_tokens", 0))
