"""Generate an answer from a VLM for images + a prompt, with explicit decoding settings.

Shared by the model lab (base and tuned from one model, adapter toggled), the exported
model's ``generate()`` helper and the judge, so all three decode the same way.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import torch


@dataclass
class Decoding:
    """Decoding settings; base and tuned always get the same ones (and the same seed)."""

    max_new_tokens: int = field(default=64, metadata={"help": "Longest answer, in tokens.", "min": 1})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (deterministic); higher = more varied."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling: keep the smallest set of tokens with this "
                                                "total probability (only when temperature > 0)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed; the same seed is used for base and tuned."})

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be 0 (greedy) or more, got {self.temperature}")

    def generate_kwargs(self) -> dict:
        kwargs = {"max_new_tokens": int(self.max_new_tokens)}
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=float(self.temperature), top_p=float(self.top_p))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def to_dict(self) -> dict:
        return asdict(self)


def as_images(images) -> list:
    """One image, a path, or a list of them -> list of RGB PIL images."""
    from PIL import Image

    from nbtools.images import open_image

    if images is None:
        return []
    if isinstance(images, (str, bytes)) or hasattr(images, "__fspath__") or isinstance(images, Image.Image):
        images = [images]
    return [img.convert("RGB") if isinstance(img, Image.Image) else open_image(img) for img in images]


def user_message(images: Sequence, prompt, videos: Sequence = ()) -> list[dict]:
    """Chat messages for a prompt: a string becomes one user turn with the images, then the videos, first.

    Structured messages (with ``{"type": "image"}`` / ``{"type": "video"}`` blocks, as training
    examples have) pass through.
    """
    if not isinstance(prompt, str):
        return list(prompt)
    blocks = ([{"type": "image"} for _ in images] + [{"type": "video"} for _ in videos]
              + [{"type": "text", "text": prompt}])
    return [{"role": "user", "content": blocks}]


def build_inputs(processor, images, prompt, device=None, videos: Sequence = (), *, add_generation_prompt: bool = True,
                 template_kwargs: Optional[dict] = None):
    """Tokenised prompt (with the generation prompt), pixel values and video frames, ready for ``generate``.

    ``videos`` are ``nbtools.video.Clip`` objects: their frames were sampled and sized as training
    sampled them, so they go to the processor as they are, with their metadata (Qwen3-VL writes
    each frame group's time into the prompt from it). ``template_kwargs`` go to the chat template
    (``tools``, ``enable_thinking`` …; the served model passes a request's on, see nbtools.serve).
    """
    images = as_images(images)
    videos = list(videos or [])
    messages = user_message(images, prompt, videos)
    text = processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False,
                                         **(template_kwargs or {}))
    media = {}
    if videos:
        from nbtools.video import processor_video_kwargs

        media = processor_video_kwargs(videos)
    inputs = processor(text=[text], images=images or None, return_tensors="pt", add_special_tokens=False, **media)
    return inputs.to(device) if device is not None else inputs


@torch.no_grad()
def generate_text(
    model,
    processor,
    images,
    prompt,
    decoding: Optional[Decoding] = None,
    on_text: Optional[Callable[[str], None]] = None,
    videos: Sequence = (),
) -> str:
    """The model's answer. With ``on_text`` the answer streams: it is called with the text so far.
    ``videos``: the prompt's clips (``nbtools.video.Clip``), after its images.

    Streaming runs ``generate`` in a worker thread and reads a ``TextIteratorStreamer``;
    the seed is set right before generating so base and tuned sample alike.
    """
    from transformers import TextIteratorStreamer

    decoding = decoding or Decoding()
    device = next(model.parameters()).device
    inputs = build_inputs(processor, images, prompt, device, videos)
    tokenizer = getattr(processor, "tokenizer", processor)
    kwargs = {**inputs, **decoding.generate_kwargs(), "pad_token_id": tokenizer.pad_token_id}
    was_training = model.training
    model.eval()
    torch.manual_seed(decoding.seed)
    try:
        if on_text is None:
            output = model.generate(**kwargs)
            return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors = []

        def work():
            try:
                model.generate(**kwargs, streamer=streamer)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        text = ""
        for chunk in streamer:
            text += chunk
            on_text(text)
        worker.join()
        if errors:
            raise errors[0]
        return text.strip()
    finally:
        model.train(was_training)


@torch.no_grad()
def generate_batch(model, processor, images: Sequence[Sequence], prompts: Sequence[str],
                   decoding: Optional[Decoding] = None) -> list[str]:
    """Greedy answers to several prompts in one ``generate`` call: ``images[i]`` (PIL images) go with ``prompts[i]``.

    Prompts are left-padded (the tokenizer's side is restored afterwards), so each row's answer starts where its
    prompt ends; on the tiny demo model the answers equal :func:`generate_text`'s one at a time (tested). Greedy
    only: sampled answers depend on the batch, so they are generated one at a time (``generate_text``).
    """
    decoding = decoding or Decoding()
    if decoding.temperature > 0:
        raise ValueError("generate_batch is greedy only (temperature 0); sample one prompt at a time with "
                         "generate_text")
    if not prompts:
        return []
    tokenizer = getattr(processor, "tokenizer", processor)
    texts = [processor.apply_chat_template(user_message(list(imgs), prompt), add_generation_prompt=True,
                                           tokenize=False) for imgs, prompt in zip(images, prompts)]
    flat = [image for imgs in images for image in imgs]
    side = getattr(tokenizer, "padding_side", None)
    was_training = model.training
    model.eval()
    try:
        tokenizer.padding_side = "left"
        inputs = processor(text=texts, images=flat or None, return_tensors="pt", padding=True,
                           add_special_tokens=False)
        inputs = inputs.to(next(model.parameters()).device)
        output = model.generate(**inputs, **decoding.generate_kwargs(), pad_token_id=tokenizer.pad_token_id)
    finally:
        if side is not None:
            tokenizer.padding_side = side
        model.train(was_training)
    answers = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return [answer.strip() for answer in answers]
