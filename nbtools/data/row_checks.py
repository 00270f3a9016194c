"""Per-row checks that need the model's token counts: a video's frame shape, videos for a model that takes
none, and prompt + answer against ``max_context_length`` (with the knob that would make the row fit).

They run inside :class:`~nbtools.data.checking.ChunkChecker`, in worker processes for big files.
"""

from __future__ import annotations

from typing import Optional

from nbtools.data.media import MediaInfo
from nbtools.data.records import PreferenceRecord
from nbtools.data.tokens import PairTokens, TokenCounter, largest_within, max_pixels_to_fit
from nbtools.images import MAX_ASPECT_RATIO
from nbtools.problems import Problem
from nbtools.video import VideoSettings


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
                    "use a model of one of those families, or remove the videos from these rows", r.row)
            for r in records if r.videos]


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
                f"{max_context_length}; truncating would cut image tokens and break training", fix, record.row))
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
