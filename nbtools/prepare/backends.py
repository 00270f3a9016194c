"""Sampling answers from a model, behind one small interface.

A backend turns (prompt messages, images) into K sampled answers. ``prepare()`` only calls
:class:`SamplingBackend`'s two members, so another engine plugs in without touching the rest:

    class VLLMBackend:                      # sketch: vllm is optional and not in requirements.txt
        def __init__(self, model): self.llm = vllm.LLM(model); self.model = model
        def fingerprint(self): return f"vllm:{self.model}"
        def sample(self, request): ...      # SamplingParams(n=request.k, temperature=..., top_p=...,
                                            #   max_tokens=..., seed=request.seed); llm.chat(...)

:class:`TransformersBackend` is the one shipped and tested: ``generate`` with
``num_return_sequences=K`` (the K answers of a prompt are one batch), seeded per prompt so a
rerun or a resumed run gives the same answers for the same prompt.
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

    messages: list  # {"role", "content": str}, tags (<image>) kept, ending with the user's turn
    images: Sequence  # paths, URLs or PIL images, in tag order
    k: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


@runtime_checkable
class SamplingBackend(Protocol):
    def fingerprint(self) -> str:
        """Identifies the model's weights and tokenizer: part of every sample's resume key."""

    def sample(self, request: SampleRequest) -> list[str]:
        """``request.k`` answers to the prompt (fewer only if the backend cannot do more)."""


def structured_messages(messages: Sequence[dict]) -> list[dict]:
    """Tagged text messages -> chat-template messages with ``{"type": "image"}`` blocks where the tags were."""
    from nbtools.data.convert import structured_content

    return [{"role": m["role"], "content": structured_content(m["content"]) if m["role"] == "user"
             else [{"type": "text", "text": m["content"]}]} for m in messages]


class TransformersBackend:
    """Samples with ``transformers``' ``generate``; loads the model on the first request."""

    def __init__(self, model: str, *, max_pixels: Optional[int] = None, device: Optional[str] = None,
                 loaded=None):
        self.model_name = model
        self.max_pixels = max_pixels
        self.device = device
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
                self._loaded = load_model_and_processor(self.model_name, max_pixels=self.max_pixels, device=self.device)
            except UserError:
                raise
            except (OSError, ValueError) as exc:
                raise ModelUnavailableError(f"model: cannot load {self.model_name!r}: {exc}") from None
        return self._loaded

    def sample(self, request: SampleRequest) -> list[str]:
        import torch

        from nbtools.evaluate.generation import Decoding, as_images, build_inputs

        model, processor = self._model()
        decoding = Decoding(max_new_tokens=request.max_new_tokens, temperature=request.temperature,
                            top_p=request.top_p, seed=request.seed)
        device = next(model.parameters()).device
        inputs = build_inputs(processor, as_images(list(request.images)), structured_messages(request.messages), device)
        tokenizer = getattr(processor, "tokenizer", processor)
        k = request.k if request.temperature > 0 else 1  # greedy answers are all the same: compute one
        was_training = model.training
        model.eval()
        torch.manual_seed(request.seed)
        try:
            with torch.no_grad():
                output = model.generate(**inputs, **decoding.generate_kwargs(), num_return_sequences=k,
                                        pad_token_id=tokenizer.pad_token_id)
        finally:
            model.train(was_training)
        start = inputs["input_ids"].shape[1]
        answers = [tokenizer.decode(row[start:], skip_special_tokens=True).strip() for row in output]
        return answers * (request.k // k) if k == 1 else answers
