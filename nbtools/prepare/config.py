"""``PrepareConfig``: every setting of step 0 (images + prompts -> preference pairs) in one place.

The notebook's parameters, its form, the command line and ``prepare()`` all read this object;
``check()`` refuses impossible combinations with a message that names the field and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from nbtools.config import config_field
from nbtools.errors import UserError

STRATEGIES = ("reference", "ranking", "corrupted")
JUDGES = ("reference", "rule", "vocabulary")
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
                         "a local folder, an export, or a built-in tiny id).")
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

    # --- pairs ----------------------------------------------------------------------------
    strategies: list[str] = _f(
        default_factory=lambda: ["reference", "ranking"], group="pairs", choices=STRATEGIES, multiple=True,
        help="reference: chosen = the reference answer, rejected = the sample judged furthest from it (only when "
             "judged wrong). ranking: best vs worst sample by the judge (rows without a reference, unless reference "
             "is not selected). corrupted: rejected = the answer to a corrupted image.")
    judge: str = _f("reference", group="pairs", choices=JUDGES,
                    help="reference: content words compared with the reference (a changed word counts); rule: "
                         "must_include / must_not_include terms; vocabulary: the answer must name the same "
                         "vocabulary term as the reference. In Python any callable judge may be passed instead.")
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
        return self

    def sampling_settings(self) -> dict:
        """What the resume key covers besides the model, the prompt and the images."""
        return {"k": self.samples_per_prompt, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed, "max_pixels": self.max_pixels}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def describe(cls) -> str:
        return "\n".join(f"{f.name}: {f.metadata['help']}" for f in dataclasses.fields(cls))
