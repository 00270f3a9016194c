"""TRL's unpacked layout (two rows per pair) for examples with videos and ``rejected_images``.

TRL 1.16's ``DataCollatorForVisionPreference`` builds rows ``[prompt, chosen]`` for every pair,
then ``[prompt, rejected]``, calling the processor once for all prompts (with the images
repeated for both halves). It has no video path and always gives the rejected rows the same
images. We keep TRL's code for everything (chat template, padding, flush-left, truncation,
``completion_mask``) and change only what the processor receives for the prompts: the
rejected rows' images become ``rejected_images`` where a row has them, and the videos (with
their metadata, frames already sampled) are added for both halves. A thin stand-in for the
processor does that, so no line of TRL's collator is copied; plain image rows pass through
unchanged, so their batches are exactly TRL's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from nbtools.video import processor_video_kwargs

from .layout import example_clips, rejected_images_of, require_video_outputs


class _PromptMediaProcessor:
    """The real processor, except that the prompts' call gets the rows' own images and the videos."""

    def __init__(self, processor, rejected_images: list, clips: list[list]):
        self._processor = processor
        self._rejected_images = rejected_images  # per pair: list, or None for "same as images"
        self._clips = clips  # per pair

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        if "images" not in kwargs:  # the answers' calls (text only)
            return self._processor(*args, **kwargs)
        pairs = len(self._clips)
        images = kwargs["images"] or [[] for _ in range(2 * pairs)]
        images = list(images[:pairs]) + [
            list(own) if own is not None else list(same) for own, same in zip(self._rejected_images, images[pairs:])
        ]
        kwargs["images"] = images if any(images) else None
        clips = [clip for row in self._clips for clip in row] * 2  # chosen rows, then rejected rows
        kwargs.update(processor_video_kwargs(clips))
        processed = self._processor(*args, **kwargs)
        require_video_outputs(processed, clips, self._processor)
        return processed


@dataclasses.dataclass
class VisionPreferenceCollator(DataCollatorForVisionPreference):
    """TRL's vision preference collator plus ``videos`` ([Clip]) and ``rejected_images`` ([PIL]) per example.

    Output: TRL's keys (2B rows, chosen rows first; ``pixel_values`` of the chosen rows' images then
    the rejected rows'; ``completion_mask``; ``mm_token_type_ids``) and, with videos,
    ``pixel_values_videos`` / ``video_grid_thw`` (each clip once per row that shows it).
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        clips = [example_clips(example, row) for row, example in enumerate(examples)]
        rejected = [rejected_images_of(example, row) for row, example in enumerate(examples)]
        examples = [{k: v for k, v in example.items() if k not in ("videos", "rejected_images")}
                    for example in examples]
        if not any(clips) and all(r is None for r in rejected):
            return super().torch_call(examples)
        stand_in = dataclasses.replace(self, processor=_PromptMediaProcessor(self.processor, rejected, clips))
        return DataCollatorForVisionPreference.torch_call(stand_in, examples)
