"""``PrepareConfig``: every setting of step 0 (images + prompts -> preference pairs) in one place.

The notebook's parameters, its form, the command line and ``prepare()`` all read this object;
``check()`` refuses impossible combinations with a message that names the field and the fix.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Optional

from nbtools.config import config_field
from nbtools.errors import UserError

STRATEGIES = ("reference", "ranking", "corrupted")
JUDGES = ("reference", "rule", "vocabulary", "endpoint")
BACKENDS = ("transformers", "openai")
CORRUPTIONS = ("blank", "crop", "noise", "swap")
CONTRASTS = ("text", "image")


class PrepareConfigError(UserError, ValueError):
    """A preparation setting that cannot be used; the message names the field and the fix."""


_f = config_field  # the same field metadata as RunConfig's, so the same form controls render both


@dataclass
class PrepareConfig:
    """Where prompts come from, how answers are sampled, and how samples become pairs."""

    # --- inputs ---------------------------------------------------------------------------
    input_file: Optional[str] = _f(
        None, group="inputs",
        help="A JSONL file in the data format: rows whose last message is the user's (prompts only) or an "
             "assistant reference answer (a supervised dataset). Any rejected_response in it is ignored and counted.")
    images_dir: Optional[str] = _f(
        None, group="inputs", help="A folder of images (and videos); each one is asked every prompt in `prompts`.")
    prompts: list[str] = _f(default_factory=list, group="inputs",
                            help="Questions asked about every image of images_dir.")
    validation_file: Optional[str] = _f(
        None, group="inputs",
        help="Held-out pairs: never used as a prompt source; prompts on the same images are skipped and counted.")
    output_dir: str = _f("runs/prepared", group="inputs",
                         help="Folder for pairs.jsonl, report.json, the sample store and corrupted images.")
    max_prompts: Optional[int] = _f(None, group="inputs", min=1,
                                    help="Use only the first N prompts (a quick try); empty = all.")
    copy_images: bool = _f(False, group="inputs",
                           help="Copy the images into output_dir/images (default: pairs reference the originals).")

    # --- sampling -------------------------------------------------------------------------
    model: str = _f("tiny-qwen3-vl-warm", group="sampling",
                    help="The model whose answers become pairs: usually the base model you will train (a hub id, "
                         "a local folder, an export, or a built-in tiny id). Backend openai: see served_model.")
    samples_per_prompt: int = _f(4, group="sampling", min=1, max=64, help="K: answers sampled per prompt.")
    temperature: float = _f(1.0, group="sampling", min=0.0, max=5.0,
                            help="Sampling temperature (0 = greedy; then all K answers are the same).")
    top_p: float = _f(1.0, group="sampling", min=0.01, max=1.0, help="Nucleus sampling mass.")
    max_new_tokens: int = _f(64, group="sampling", min=1, help="Longest sampled answer, in tokens.")
    prompts_per_batch: int = _f(
        1, group="sampling", min=1, max=1024,
        help="Prompts per generate call (each with its K answers). 1: every prompt is seeded on its own, so its "
             "answers are the same however a run is split; more is faster on a GPU, and the seed then holds per "
             "batch (a resumed run may sample the rest differently).")
    seed: int = _f(0, group="sampling", min=0, help="Seed: the same settings give the same samples.")
    max_pixels: Optional[int] = _f(None, group="sampling", min=1,
                                   help="Cap on height x width per image when sampling (as in training).")
    device: Optional[str] = _f(None, group="sampling", help="cpu, cuda, ...; empty = a GPU when there is one.")
    fps: float = _f(2.0, group="sampling", min=0.1, max=60.0,
                    help="Videos: frames taken per second of each clip, as training takes them (the run's fps).")
    max_frames: int = _f(16, group="sampling", min=2, max=768,
                         help="Videos: most frames taken from one clip (longer clips are sampled evenly).")
    video_max_pixels: int = _f(128 * 128, group="sampling", min=3136,
                               help="Videos: largest area of one frame in pixels (the run's video_max_pixels).")

    # --- sampling and judging through an OpenAI-compatible endpoint -------------------------
    backend: str = _f("transformers", group="endpoint", choices=BACKENDS,
                      help="transformers: sample in this process from `model`. openai: sample through any "
                           "OpenAI-compatible server at base_url (vLLM, SGLang, transformers serve, a hosted API).")
    base_url: Optional[str] = _f(None, group="endpoint",
                                 help="The sampling server's API root, e.g. http://localhost:8000/v1 (backend openai).")
    served_model: Optional[str] = _f(None, group="endpoint",
                                     help="The model name the sampling server serves; empty = the one it serves.")
    concurrency: int = _f(4, group="endpoint", min=1, max=256,
                          help="Requests in flight at once, per server (1: one at a time, the only way a seeded "
                               "server such as transformers serve gives the same answers again).")
    request_timeout: float = _f(120.0, group="endpoint", min=1.0,
                                help="Seconds one request may take before it is retried.")
    max_retries: int = _f(4, group="endpoint", min=0, max=20,
                          help="Retries of a request on 429, 5xx, a timeout or a refused connection, with "
                               "exponential backoff (Retry-After honoured).")
    extra_body: Optional[str] = _f(
        None, group="endpoint",
        help='More fields for every sampling request, as a JSON object (part of the resume key), e.g. {"top_k": 20} '
             'for vLLM, or {"generation_config": "{\\"do_sample\\": true}"} for transformers serve, which samples '
             "greedily at any temperature when the model's generation_config says do_sample false.")
    judge_url: Optional[str] = _f(None, group="endpoint",
                                  help="The judge server's API root (judge endpoint); it may be the sampling server.")
    judge_model: Optional[str] = _f(None, group="endpoint",
                                    help="The model name the judge server serves; empty = the one it serves.")
    judge_template: Optional[str] = _f(
        None, group="endpoint",
        help="The judge's prompt, with {prompt}, {answer}, {reference} and {scale}; empty = the built-in one "
             "(asks for a number from 0 to scale).")
    judge_scale: float = _f(10.0, group="endpoint", min=1.0,
                            help="The judge scores from 0 to this; its score / scale is the answer's score.")

    # --- pairs ----------------------------------------------------------------------------
    strategies: list[str] = _f(
        default_factory=lambda: ["reference", "ranking"], group="pairs", choices=STRATEGIES, multiple=True,
        help="reference: chosen = the reference answer, rejected = the sample judged furthest from it (only when "
             "judged wrong). ranking: best vs worst sample by the judge (rows without a reference, unless reference "
             "is not selected). corrupted: rejected = the answer to a corrupted image.")
    judge: str = _f("reference", group="pairs", choices=JUDGES,
                    help="reference: content words compared with the reference (a changed word counts); rule: "
                         "must_include / must_not_include terms; vocabulary: the answer must name the same "
                         "vocabulary term as the reference; endpoint: a model behind judge_url scores each "
                         "answer. In Python any callable judge may be passed instead.")
    must_include: list[str] = _f(default_factory=list, group="pairs",
                                 help="Rule judge: terms a correct answer contains (case-insensitive words).")
    must_not_include: list[str] = _f(default_factory=list, group="pairs",
                                     help="Rule judge: terms a correct answer never contains.")
    vocabulary: list[str] = _f(default_factory=list, group="pairs",
                               help="Vocabulary judge: mutually exclusive terms (e.g. red, green, blue); the answer "
                                    "must name the one the reference names and no other.")
    wrong_below: float = _f(0.5, group="pairs", min=0.0, max=1.0,
                            help="A judge score below this means the answer is wrong.")
    min_score_gap: float = _f(0.3, group="pairs", min=0.0, max=1.0,
                              help="Ranking: best minus worst score must reach this, else the prompt is a tie.")
    corruption: str = _f("blank", group="pairs", choices=CORRUPTIONS,
                         help="Corrupted input: blank the image, crop a corner, add noise, or swap in another image.")
    contrast: str = _f("text", group="pairs", choices=CONTRASTS,
                       help="Corrupted input pairs: text (both answers on the real image) or image (the rejected "
                            "side also gets the corrupted image, written as rejected_images).")

    def check(self) -> "PrepareConfig":
        """Raise :class:`PrepareConfigError` for settings that cannot work together."""
        def fail(name, reason, fix):
            raise PrepareConfigError(f"{name}: {reason} (fix: {fix})")

        if not self.input_file and not self.images_dir:
            fail("input_file", "no prompt source", "set input_file (a JSONL) or images_dir plus prompts")
        if self.input_file and self.images_dir:
            fail("images_dir", "both input_file and images_dir are set", "use one prompt source per run")
        if self.images_dir and not [p for p in self.prompts if p.strip()]:
            fail("prompts", "images_dir needs at least one prompt", 'set prompts, e.g. ["What colour is the shape?"]')
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            meta = spec.metadata
            items = value if isinstance(value, list) else [value]
            for item in items:
                if "choices" in meta and item not in meta["choices"]:
                    fail(spec.name, f"{item!r} is not one of {', '.join(meta['choices'])}",
                         f"use one of: {', '.join(meta['choices'])}")
                if isinstance(item, (int, float)) and not isinstance(item, bool) and item is not None:
                    if "min" in meta and item < meta["min"]:
                        fail(spec.name, f"{item} is below {meta['min']}", f"set {spec.name} to {meta['min']} or more")
                    if "max" in meta and item > meta["max"]:
                        fail(spec.name, f"{item} is above {meta['max']}", f"set {spec.name} to {meta['max']} or less")
        if not self.strategies:
            fail("strategies", "no strategy selected", f"choose one or more of {', '.join(STRATEGIES)}")
        if self.judge == "rule" and not (self.must_include or self.must_not_include):
            fail("must_include", "the rule judge has no terms", "set must_include and/or must_not_include")
        if self.judge == "vocabulary" and len(self.vocabulary) < 2:
            fail("vocabulary", "the vocabulary judge needs at least two terms", "e.g. vocabulary: [red, green, blue]")
        if self.backend == "openai" and not (self.base_url or "").strip():
            fail("base_url", "backend openai needs the server's address", "set base_url, e.g. http://localhost:8000/v1")
        if self.backend != "openai" and (self.base_url or "").strip():
            fail("base_url", f"is set but backend is {self.backend}", "set backend to openai, or clear base_url")
        if self.extra_body:
            try:
                extra = json.loads(self.extra_body)
            except ValueError as exc:
                fail("extra_body", f"is not JSON ({exc})", 'write a JSON object, e.g. {"top_k": 20}')
            if not isinstance(extra, dict):
                fail("extra_body", "is not a JSON object", 'write a JSON object, e.g. {"top_k": 20}')
        if self.judge == "endpoint" and not (self.judge_url or "").strip():
            fail("judge_url", "the endpoint judge needs the judge server's address",
                 "set judge_url, e.g. http://localhost:8001/v1 (it may be base_url)")
        if self.judge != "endpoint" and (self.judge_url or "").strip():
            fail("judge_url", f"is set but judge is {self.judge}", "set judge to endpoint, or clear judge_url")
        if self.judge_template:
            from nbtools.judges import check_template

            try:
                check_template(self.judge_template)
            except ValueError as exc:
                fail("judge_template", str(exc), "use only {prompt}, {answer}, {reference} and {scale}; write "
                     "{{ and }} for literal braces")
        return self

    def sampling_settings(self, videos: bool = False) -> dict:
        """What the resume key covers besides the model, the prompt and the media (``videos``: the prompt has
        videos, and the frames taken from them count too)."""
        settings = {"k": self.samples_per_prompt, "temperature": self.temperature, "top_p": self.top_p,
                    "max_new_tokens": self.max_new_tokens, "seed": self.seed, "max_pixels": self.max_pixels}
        if videos:
            settings["video"] = {"fps": self.fps, "max_frames": self.max_frames,
                                 "video_max_pixels": self.video_max_pixels}
        return settings

    def video_settings(self):
        """The frames taken from each video (:class:`nbtools.video.VideoSettings`), as a run with the same
        fps, max_frames and video_max_pixels takes them."""
        from nbtools.video import VideoSettings

        return VideoSettings(float(self.fps), int(self.max_frames), int(self.video_max_pixels))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def describe(cls) -> str:
        return "\n".join(f"{f.name}: {f.metadata['help']}" for f in dataclasses.fields(cls))
