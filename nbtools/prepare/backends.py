"""Sampling answers from a model, behind one small interface.

A backend turns (prompt messages, images, videos) into K sampled answers. ``prepare()`` only calls
:class:`SamplingBackend`'s two members, so another engine plugs in without touching the rest:

    class VLLMBackend:                      # sketch: vllm is optional and not in requirements.txt
        def __init__(self, model): self.llm = vllm.LLM(model); self.model = model
        def fingerprint(self): return f"vllm:{self.model}"
        def sample(self, request): ...      # SamplingParams(n=request.k, temperature=..., top_p=...,
                                            #   max_tokens=..., seed=request.seed); llm.chat(...)

:class:`TransformersBackend` is the one shipped and tested: ``generate`` with
``num_return_sequences=K`` (the K answers of a prompt are one batch; ``sample_many`` puts
several prompts in one left-padded batch), seeded per call: with one prompt per call a rerun or
a resumed run gives the same answers for the same prompt. Videos are sampled as a run with the
request's :class:`~nbtools.video.VideoSettings` samples them (fps, max_frames, video_max_pixels).
:class:`nbtools.prepare.served_backend.OpenAICompatibleBackend` samples through any OpenAI-compatible server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, runtime_checkable

from nbtools.errors import UserError


class ModelUnavailableError(UserError, OSError):
    """The sampling model cannot be loaded; the message names it and the fix."""


@dataclass(frozen=True)
class SampleRequest:
    """One prompt to answer K times."""

    messages: list  # {"role", "content": str}, tags (<image>, <video>) kept, ending with the user's turn
    images: Sequence  # paths, URLs or PIL images, in tag order
    k: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    videos: Sequence = ()  # video paths (or nbtools.video.Clip objects), in <video> tag order
    video: Optional[object] = None  # nbtools.video.VideoSettings: which frames, at what size (default: a run's)


@runtime_checkable
class SamplingBackend(Protocol):
    def fingerprint(self) -> str:
        """Identifies the model's weights and tokenizer: part of every sample's resume key."""

    def sample(self, request: SampleRequest) -> list[str]:
        """``request.k`` answers to the prompt (fewer only if the backend cannot do more)."""

    # Optional: ``sample_many(requests) -> list[list[str]]`` answers several prompts in one call; prepare()
    # uses it when ``prompts_per_batch`` > 1. Optional: ``sample_iter(requests)`` yields ``(index, answers)``
    # as each prompt is done (in any order); prepare() then hands it every unanswered prompt at once and
    # stores each as it comes (a remote backend keeps several requests in flight).


def structured_messages(messages: Sequence[dict]) -> list[dict]:
    """Tagged text messages -> chat-template messages with ``{"type": "image"}`` blocks where the tags were."""
    from nbtools.data.convert import structured_content

    return [{"role": m["role"], "content": structured_content(m["content"]) if m["role"] == "user"
             else [{"type": "text", "text": m["content"]}]} for m in messages]


class TransformersBackend:
    """Samples with ``transformers``' ``generate``; loads the model on the first request."""

    def __init__(self, model: str, *, max_pixels: Optional[int] = None, device: Optional[str] = None,
                 loaded=None, video=None):
        self.model_name = model
        self.max_pixels = max_pixels
        self.device = device
        self.video = video  # VideoSettings put on the processor when the model is loaded here
        self._loaded = loaded  # (model, processor) already in memory, e.g. from the notebook

    def fingerprint(self) -> str:
        from nbtools.packing.ref_cache import folder_digest
        from nbtools.models.loading import local_model_folder

        try:
            folder = local_model_folder(self.model_name)
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"model: {exc}") from None
        return f"transformers:{self.model_name}:{folder_digest(folder)}"

    def _model(self):
        if self._loaded is None:
            from nbtools.models import load_model_and_processor

            try:
                self._loaded = load_model_and_processor(self.model_name, max_pixels=self.max_pixels, device=self.device,
                                                        video=self.video)
            except UserError:
                raise
            except (OSError, ValueError) as exc:
                raise ModelUnavailableError(f"model: cannot load {self.model_name!r}: {exc}") from None
        return self._loaded

    def sample(self, request: SampleRequest) -> list[str]:
        return self.sample_many([request])[0]

    def sample_many(self, requests: Sequence[SampleRequest]) -> list[list[str]]:
        """Several prompts in one left-padded ``generate`` call, K answers each (same settings for all;
        seeded with the first request's seed)."""
        import torch

        from nbtools.evaluate.generation import Decoding, as_images, build_inputs

        first = requests[0]
        if any((r.k, r.temperature, r.top_p, r.max_new_tokens) != (first.k, first.temperature, first.top_p,
                                                                   first.max_new_tokens) for r in requests):
            raise ValueError("sample_many needs the same sampling settings for every request")
        model, processor = self._model()
        decoding = Decoding(max_new_tokens=first.max_new_tokens, temperature=first.temperature, top_p=first.top_p,
                            seed=first.seed)
        device = next(model.parameters()).device
        tokenizer = getattr(processor, "tokenizer", processor)
        clips = [self._clips(model, processor, r) for r in requests]
        if len(requests) == 1:
            inputs = build_inputs(processor, as_images(list(first.images)), structured_messages(first.messages), device,
                                  videos=clips[0])
        else:
            from nbtools.video import processor_video_kwargs

            texts, images = [], []
            for request in requests:
                images += as_images(list(request.images))
                texts.append(processor.apply_chat_template(structured_messages(request.messages),
                                                           add_generation_prompt=True, tokenize=False))
            side = tokenizer.padding_side
            tokenizer.padding_side = "left"  # generation continues every row from its own last prompt token
            try:
                inputs = processor(text=texts, images=images or None, return_tensors="pt", padding=True,
                                   add_special_tokens=False,
                                   **processor_video_kwargs([c for row in clips for c in row])).to(device)
            finally:
                tokenizer.padding_side = side
        k = first.k if first.temperature > 0 else 1  # greedy answers are all the same: compute one
        was_training = model.training
        model.eval()
        torch.manual_seed(first.seed)
        try:
            with torch.no_grad():
                output = model.generate(**inputs, **decoding.generate_kwargs(), num_return_sequences=k,
                                        pad_token_id=tokenizer.pad_token_id)
        finally:
            model.train(was_training)
        start = inputs["input_ids"].shape[1]
        texts = [tokenizer.decode(row[start:], skip_special_tokens=True).strip() for row in output]
        return [texts[i * k:(i + 1) * k] * (first.k // k) for i in range(len(requests))]

    def _clips(self, model, processor, request: SampleRequest) -> list:
        """The request's videos as training samples them: the request's settings, this processor's geometry."""
        if not request.videos:
            return []
        from nbtools.models import detect_family
        from nbtools.video import VideoSettings, load_clip, processor_video_geometry, supports_video

        family = detect_family(model.config).name
        geometry = processor_video_geometry(processor, family)
        if geometry is None or not supports_video(family):
            raise ModelUnavailableError(f"model: {self.model_name} ({family}) takes no videos (fix: sample video "
                                        "prompts with a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model, or leave them out)")
        settings = request.video or self.video or VideoSettings()
        return [v if hasattr(v, "frames") else load_clip(str(v), settings, family, geometry) for v in request.videos]
