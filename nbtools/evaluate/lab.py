"""The model lab: base and tuned answers side by side, saved as HTML or driven by a widget.

Base and tuned are one model with the LoRA adapter off and on, so both answer with the
same decoding settings and the same seed; any difference is the tuning's doing.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .generation import Decoding, as_images, generate_text
from .logprobs import adapter_enabled
from .report import answer_text, prompt_text

LAB_DIR = "lab"
SIDE_BY_SIDE_FILE = "side_by_side.html"


def generate_pair(model, processor, images, prompt, decoding: Optional[Decoding] = None, on_text=None) -> dict:
    """``{"base": text, "tuned": text}`` for one prompt; ``on_text(side, text_so_far)`` streams."""
    decoding = decoding or Decoding()
    answers = {}
    for side, tuned in (("base", False), ("tuned", True)):
        stream = (lambda text, side=side: on_text(side, text)) if on_text else None
        with adapter_enabled(model, tuned):
            answers[side] = generate_text(model, processor, images, prompt, decoding, on_text=stream)
    return answers


def side_by_side(model, processor, samples: Sequence[dict], decoding: Optional[Decoding] = None,
                 progress: bool = True) -> list[dict]:
    """Base and tuned answers for each sample (training examples: ``prompt``, ``images``, answers).

    The prompt is generated from as the user wrote it (images included); the pair's
    chosen/rejected answers are kept for reference and for the judge.
    """
    from tqdm.auto import tqdm

    rows = []
    for sample in tqdm(samples, desc="model lab", disable=not progress, leave=False):
        images = as_images(sample.get("images"))
        answers = generate_pair(model, processor, images, sample["prompt"], decoding)
        rows.append(
            {
                "prompt": prompt_text(sample["prompt"]),
                "images": images,
                "base": answers["base"],
                "tuned": answers["tuned"],
                "chosen": answer_text(sample["chosen"]) if "chosen" in sample else None,
                "rejected": answer_text(sample["rejected"]) if "rejected" in sample else None,
            }
        )
    return rows


def side_by_side_html(rows: Sequence[dict], decoding: Decoding, image_paths: Sequence[Sequence[str]],
                      title: str = "base vs tuned") -> str:
    """One table row per sample: images, prompt, base answer, tuned answer (and the pair's answers)."""
    settings = ", ".join(f"{k}={v}" for k, v in decoding.to_dict().items())
    body = []
    for row, paths in zip(rows, image_paths):
        imgs = "".join(f'<img src="{html.escape(p)}" style="max-height:128px;margin:2px">' for p in paths)
        reference = ""
        if row.get("chosen") is not None:
            reference = (f'<div style="color:#15803d">chosen: {html.escape(row["chosen"])}</div>'
                         f'<div style="color:#b91c1c">rejected: {html.escape(row["rejected"] or "")}</div>')
        cells = [imgs, html.escape(row["prompt"]), html.escape(row["base"]), html.escape(row["tuned"]), reference]
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
    """Write ``<run>/lab/side_by_side.html`` with its images next to it in ``lab/images/``."""
    lab = Path(run_dir) / LAB_DIR
    (lab / "images").mkdir(parents=True, exist_ok=True)
    image_paths = []
    for i, row in enumerate(rows):
        paths = []
        for j, image in enumerate(row["images"]):
            name = f"images/sample_{i:03d}_{j}.png"
            image.save(lab / name)
            paths.append(name)
        image_paths.append(paths)
    path = lab / SIDE_BY_SIDE_FILE
    path.write_text(side_by_side_html(rows, decoding, image_paths, title))
    return path


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


class ModelLab:
    """Pick a sample or upload an image, type a prompt, and see base and tuned answer it.

    Every control is a public attribute and every handler a method, so tests (and
    papermill runs) set values and call ``on_generate()`` without a browser.
    """

    UPLOAD = -1

    def __init__(self, model, processor, samples: Sequence[dict] = (), decoding: Optional[Decoding] = None):
        import ipywidgets as w

        self.model, self.processor = model, processor
        decoding = decoding or Decoding()
        self.samples = [
            LabSample(f"{i}: {prompt_text(s['prompt'])[:60]}", as_images(s.get("images")), prompt_text(s["prompt"]))
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
        answers = [w.VBox([w.HTML(f"<b>{side}</b>"), box], layout=w.Layout(flex="1 1 0", min_width="240px"))
                   for side, box in (("base", self.base_output), ("tuned", self.tuned_output))]
        self.widget = w.VBox([
            w.HTML(LAB_STYLE),
            w.HBox([self.sample, self.upload], layout=wrap),
            self.image,
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

    def decoding(self) -> Decoding:
        return Decoding(max_new_tokens=self.max_new_tokens.value, temperature=self.temperature.value,
                        seed=self.seed.value)

    # --- handlers ---------------------------------------------------------------------------
    def on_sample_change(self, change=None) -> None:
        if self.sample.value != self.UPLOAD and self.samples:
            self.prompt.value = self.samples[self.sample.value].prompt
        images = self.current_images()
        self.image.value = _png_bytes(images[0]) if images else b""

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
            answers = generate_pair(
                self.model, self.processor, self.current_images(), self.prompt.value, decoding,
                on_text=lambda side, text: setattr(outputs[side], "value", text),
            )
        except Exception as exc:  # shown in the widget: a notebook user has no traceback to read
            self.status.value = f"<b>Generation failed:</b> {html.escape(str(exc))}"
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
