"""The model lab: base and tuned answers side by side, saved as HTML or driven by a widget.

Base and tuned are one model with the LoRA adapter off and on, so both answer with the
same decoding settings and the same seed; any difference is the tuning's doing. Either side
may instead be a model behind an OpenAI-compatible endpoint (``base="http://HOST:PORT/v1"``,
see nbtools.evaluate.endpoint), which gets the same images, videos and decoding settings.
"""

from __future__ import annotations

import html
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from nbtools.errors import UserError, report_internal_error

from .generation import Decoding, as_images, generate_text
from .logprobs import adapter_enabled
from .report import answer_text, prompt_text

LAB_DIR = "lab"
SIDE_BY_SIDE_FILE = "side_by_side.html"


class InProcess:
    """A model in this process. ``adapter``: True answers as the tuned model (LoRA adapter on), False as the
    base (adapter off, or the SFT adapter the run started from), None as the model is."""

    def __init__(self, model, processor, adapter: Optional[bool] = None):
        self.model, self.processor, self.adapter = model, processor, adapter

    def describe(self) -> str:
        return "in this process" + {None: "", True: " (adapter on)", False: " (adapter off)"}[self.adapter]

    def answer(self, images, prompt, decoding: Optional[Decoding] = None, on_text=None, videos: Sequence = ()) -> str:
        if self.adapter is None:
            return generate_text(self.model, self.processor, images, prompt, decoding, on_text=on_text, videos=videos)
        with adapter_enabled(self.model, self.adapter):
            return generate_text(self.model, self.processor, images, prompt, decoding, on_text=on_text, videos=videos)


class NoModelError(UserError, ValueError):
    """A side of the lab has no model to answer with; the message says what to pass."""


class _NoModel:
    """A side without a model (a lab opened only to look at the samples): answering says what to pass."""

    def __init__(self, side: str):
        self.side = side

    def describe(self) -> str:
        return "no model given"

    def answer(self, *args, **kwargs) -> str:
        raise NoModelError(f"no {self.side} model: pass the run's model and processor, or {self.side}=an endpoint URL")


def answerers(model=None, processor=None, base=None, tuned=None) -> dict:
    """``{"base": …, "tuned": …}``, each with ``answer(images, prompt, decoding, on_text, videos)``.

    A side left None (or "") is ``model`` with its adapter off (base) or on (tuned); otherwise it is an endpoint URL
    (``"http://HOST:PORT/v1"``, the first model it lists), ``(url, model_name)``, an ``Endpoint``, a
    ``(model, processor)`` pair in this process, or any object with such an ``answer`` method.
    """
    from .endpoint import endpoint

    sides = {}
    for side, spec, adapter in (("base", base, False), ("tuned", tuned, True)):
        if spec is None or spec == "":
            sides[side] = InProcess(model, processor, adapter) if model is not None else _NoModel(side)
        elif hasattr(spec, "answer"):
            sides[side] = spec
        elif isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[0], str):
            sides[side] = InProcess(*spec)
        else:
            sides[side] = endpoint(spec)
    return sides


def answer_pair(sides: dict, images, prompt, decoding: Optional[Decoding] = None, on_text=None,
                videos: Sequence = ()) -> dict:
    """``{"base": text, "tuned": text}`` from :func:`answerers`' two sides, with the same inputs and settings;
    ``on_text(side, text_so_far)`` streams."""
    decoding = decoding or Decoding()
    answers = {}
    for side in ("base", "tuned"):
        stream = (lambda text, side=side: on_text(side, text)) if on_text else None
        answers[side] = sides[side].answer(images, prompt, decoding, on_text=stream, videos=videos)
    return answers


def generate_pair(model, processor, images, prompt, decoding: Optional[Decoding] = None, on_text=None,
                  videos: Sequence = ()) -> dict:
    """``{"base": text, "tuned": text}`` for one prompt; ``on_text(side, text_so_far)`` streams.
    ``videos``: the prompt's clips (``nbtools.video.Clip``), sampled as the run samples them."""
    return answer_pair(answerers(model, processor), images, prompt, decoding, on_text, videos)


def side_by_side(model=None, processor=None, samples: Sequence[dict] = (), decoding: Optional[Decoding] = None,
                 progress: bool = True, *, base=None, tuned=None) -> list[dict]:
    """Base and tuned answers for each sample (training examples: ``prompt``, ``images``, ``videos``
    as ``nbtools.video.Clip``, answers, and ``rejected_images`` where the pair has them).

    The prompt is generated from as the user wrote it (images and videos included); the pair's
    chosen/rejected answers, and the images the rejected answer was about, are kept for reference
    and for the judge. ``base``/``tuned``: endpoints in place of the in-process sides (see :func:`answerers`).
    """
    from tqdm.auto import tqdm

    sides = answerers(model, processor, base, tuned)
    rows = []
    for sample in tqdm(samples, desc="model lab", disable=not progress, leave=False):
        images = as_images(sample.get("images"))
        videos = list(sample.get("videos") or [])
        answers = answer_pair(sides, images, sample["prompt"], decoding, videos=videos)
        rows.append(
            {
                "prompt": prompt_text(sample["prompt"]),
                "images": images,
                "videos": videos,
                "rejected_images": as_images(sample.get("rejected_images")),
                "base": answers["base"],
                "tuned": answers["tuned"],
                "chosen": answer_text(sample["chosen"]) if "chosen" in sample else None,
                "rejected": answer_text(sample["rejected"]) if "rejected" in sample else None,
            }
        )
    return rows


def side_by_side_html(rows: Sequence[dict], decoding: Decoding, src_for_row: Callable[[int], Callable],
                      title: str = "base vs tuned") -> str:
    """One table row per sample: media, prompt, base answer, tuned answer (and the pair's answers).

    The media cell shows the images, each video as a strip of the frames the models saw (with their
    times), and, for a pair whose rejected answer is about other images, both sets labelled.
    ``src_for_row(i)`` gives the function that turns row ``i``'s pictures into ``<img>`` addresses
    (files next to the page, or inline data URIs).
    """
    from nbtools.media_view import pair_media_html

    settings = ", ".join(f"{k}={v}" for k, v in decoding.to_dict().items())
    body = []
    for i, row in enumerate(rows):
        media = pair_media_html(row.get("images") or [], row.get("rejected_images"), row.get("videos") or [],
                                src_for_row(i))
        reference = ""
        if row.get("chosen") is not None:
            reference = (f'<div style="color:#15803d">chosen: {html.escape(row["chosen"])}</div>'
                         f'<div style="color:#b91c1c">rejected: {html.escape(row["rejected"] or "")}</div>')
        cells = [media, html.escape(row["prompt"]), html.escape(row["base"]), html.escape(row["tuned"]), reference]
        body.append("<tr>" + "".join(f'<td style="vertical-align:top">{c}</td>' for c in cells) + "</tr>")
    from nbtools.display import table_style

    head = "".join(f"<th>{h}</th>" for h in ("images", "prompt", "base", "tuned", "pair's answers"))
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>{table_style('nbt-sbs')}"
        f"<h2>{html.escape(title)}</h2><p>Same decoding for both: {html.escape(settings)}</p>"
        f"<table class='nbt-sbs' border='1' cellpadding='4' style='border-collapse:collapse'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def save_side_by_side(run_dir, rows: Sequence[dict], decoding: Decoding, title: str = "base vs tuned") -> Path:
    """Write ``<run>/lab/side_by_side.html`` with its pictures next to it in ``lab/images/``:
    ``sample_<row>_<n>.png``, numbered images first, then rejected images, then video frames."""
    from nbtools import atomic

    lab = Path(run_dir) / LAB_DIR
    (lab / "images").mkdir(parents=True, exist_ok=True)

    def src_for_row(i: int):
        count = itertools.count()

        def src(image) -> str:
            name = f"images/sample_{i:03d}_{next(count)}.png"
            image.save(lab / name)
            return name
        return src

    return atomic.write_text(lab / SIDE_BY_SIDE_FILE, side_by_side_html(rows, decoding, src_for_row, title))


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


LAB_STYLE = """<style>
.nbtools-lab .nbtools-answer textarea, .nbtools-lab .nbtools-answer textarea:disabled {
  color: var(--jp-ui-font-color0, #111); opacity: 1; -webkit-text-fill-color: currentColor;
  background: var(--jp-layout-color1, #fff); font-size: 14px; line-height: 1.4; cursor: text; }
</style>"""


@dataclass
class LabSample:
    label: str
    images: list
    prompt: str
    videos: list = field(default_factory=list)  # nbtools.video.Clip, as the run samples them
    rejected_images: list = field(default_factory=list)  # the images the pair's rejected answer is about

    def media_html(self) -> str:
        """Each video (played by the browser where it can, else — and always below — its frames) and,
        for an image-contrast pair, both image sets labelled."""
        from nbtools.media_view import frame_strip_html, image_sets_html, images_html, jpeg_src, video_element_html

        parts = [video_element_html(clip.path) + frame_strip_html(clip) for clip in self.videos]
        if self.rejected_images:  # the lab's own image box shows the images otherwise
            src = jpeg_src(128)
            parts.append(image_sets_html(images_html(self.images, src, 96), images_html(self.rejected_images, src, 96),
                                         "images (chosen answer; base and tuned answer about these)",
                                         "rejected_images (the rejected answer was about these)"))
        return "".join(parts)


class ModelLab:
    """Pick a sample or upload an image, type a prompt, and see base and tuned answer it.

    ``ModelLab(run.model, run.processor, samples)`` compares the run's model with its adapter off and on;
    ``base=``/``tuned=`` put a model behind an OpenAI-compatible endpoint on either side instead
    (``ModelLab(samples=samples, base="http://127.0.0.1:8001/v1", tuned="http://127.0.0.1:8000/v1")``,
    see :func:`answerers`), which gets the same images, videos and decoding settings.

    Every control is a public attribute and every handler a method, so tests (and
    papermill runs) set values and call ``on_generate()`` without a browser.
    """

    UPLOAD = -1

    def __init__(self, model=None, processor=None, samples: Sequence[dict] = (), decoding: Optional[Decoding] = None,
                 *, base=None, tuned=None):
        import ipywidgets as w

        self.model, self.processor = model, processor
        self.sides = answerers(model, processor, base, tuned)
        decoding = decoding or Decoding()
        self.samples = [
            LabSample(f"{i}: {prompt_text(s['prompt'])[:60]}", as_images(s.get("images")), prompt_text(s["prompt"]),
                      list(s.get("videos") or []), as_images(s.get("rejected_images")))
            for i, s in enumerate(samples)
        ]
        options = [(s.label, i) for i, s in enumerate(self.samples)] + [("uploaded image", self.UPLOAD)]
        # Labels sized to their text ("initial") and controls that wrap: nothing is cut off at any width.
        label = {"description_width": "initial"}
        self.sample = w.Dropdown(options=options, value=options[0][1], description="sample", style=label,
                                 layout=w.Layout(width="auto", min_width="320px", max_width="640px"))
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload an image",
                                   layout=w.Layout(width="auto"))
        self.prompt = w.Textarea(value="", description="prompt", style=label, layout=w.Layout(width="100%"))
        self.temperature = w.FloatSlider(value=decoding.temperature, min=0.0, max=2.0, step=0.05,
                                         description="temperature", style=label)
        self.max_new_tokens = w.IntSlider(value=decoding.max_new_tokens, min=1, max=1024, description="max tokens",
                                          style=label)
        self.seed = w.IntText(value=decoding.seed, description="seed", style=label, layout=w.Layout(width="160px"))
        self.generate_button = w.Button(description="Generate (base and tuned)", button_style="primary",
                                        layout=w.Layout(width="auto"))
        self.image = w.Image(format="png", layout=w.Layout(max_width="256px"))
        self.media = w.HTML()  # a sample's video (frames, or a player) and an image-contrast pair's two image sets
        # Read-only answers that read like text (a disabled textarea is drawn in faint grey).
        self.base_output = w.Textarea(disabled=True, layout=w.Layout(width="100%", height="8em"))
        self.tuned_output = w.Textarea(disabled=True, layout=w.Layout(width="100%", height="8em"))
        for box in (self.base_output, self.tuned_output):
            box.add_class("nbtools-answer")
        self.status = w.HTML()
        self.sample.observe(self.on_sample_change, names="value")
        self.upload.observe(self.on_upload, names="value")
        self.generate_button.on_click(self.on_generate)
        wrap = w.Layout(flex_flow="row wrap", align_items="center", width="100%")
        answers = [w.VBox([w.HTML(f"<b>{side}</b> <span style='color:#6b7280'>"
                                  f"{html.escape(self.sides[side].describe())}</span>"), box],
                          layout=w.Layout(flex="1 1 0", min_width="240px"))
                   for side, box in (("base", self.base_output), ("tuned", self.tuned_output))]
        self.widget = w.VBox([
            w.HTML(LAB_STYLE),
            w.HBox([self.sample, self.upload], layout=wrap),
            self.image,
            self.media,
            self.prompt,
            w.HBox([self.temperature, self.max_new_tokens, self.seed], layout=wrap),
            self.generate_button,
            w.HBox(answers, layout=wrap),
            self.status,
        ])
        self.widget.add_class("nbtools-lab")
        self.on_sample_change()

    # --- state ----------------------------------------------------------------------------
    def uploaded_image(self):
        from PIL import Image

        if not self.upload.value:
            return None
        content = self.upload.value[0]["content"]
        return Image.open(io.BytesIO(bytes(content))).convert("RGB")

    def current_images(self) -> list:
        if self.sample.value == self.UPLOAD:
            image = self.uploaded_image()
            return [image] if image is not None else []
        return self.samples[self.sample.value].images

    def current_videos(self) -> list:
        """The selected sample's clips (an uploaded image has none)."""
        if self.sample.value == self.UPLOAD or not self.samples:
            return []
        return self.samples[self.sample.value].videos

    def decoding(self) -> Decoding:
        return Decoding(max_new_tokens=self.max_new_tokens.value, temperature=self.temperature.value,
                        seed=self.seed.value)

    # --- handlers ---------------------------------------------------------------------------
    def on_sample_change(self, change=None) -> None:
        if self.sample.value != self.UPLOAD and self.samples:
            self.prompt.value = self.samples[self.sample.value].prompt
        images = self.current_images()
        self.image.value = _png_bytes(images[0]) if images else b""
        self.image.layout.display = None if images else "none"  # an empty image would show as a broken one
        uploaded = self.sample.value == self.UPLOAD or not self.samples
        self.media.value = "" if uploaded else self.samples[self.sample.value].media_html()

    def on_upload(self, change=None) -> None:
        if self.upload.value:
            self.sample.value = self.UPLOAD
            self.on_sample_change()

    def on_generate(self, button=None) -> dict:
        """Generate from both models with the current settings; answers stream into the outputs."""
        if not self.prompt.value.strip():
            self.status.value = "<b>Type a prompt first.</b>"
            return {}
        outputs = {"base": self.base_output, "tuned": self.tuned_output}
        for box in outputs.values():
            box.value = ""
        self.generate_button.disabled = True
        self.status.value = "generating…"
        try:
            decoding = self.decoding()
            answers = answer_pair(
                self.sides, self.current_images(), self.prompt.value, decoding,
                on_text=lambda side, text: setattr(outputs[side], "value", text), videos=self.current_videos(),
            )
        except UserError as exc:  # shown in the widget: the message says what to fix
            self.status.value = f"<b>Generation failed:</b> {html.escape(str(exc))}"
            return {}
        except Exception as exc:  # a bug: one line naming the error log, as every entry point reports it
            self.status.value = f"<b>{html.escape(report_internal_error(exc, 'model lab'))}</b>"
            return {}
        finally:
            self.generate_button.disabled = False
        for side, text in answers.items():
            outputs[side].value = text
        self.status.value = f"done (seed {decoding.seed}, temperature {decoding.temperature})"
        return answers

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
