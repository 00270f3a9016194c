"""Answers from a model behind an OpenAI-compatible endpoint (``python -m nbtools serve``, vLLM, SGLang, …), asked
through the one client, :mod:`nbtools.endpoint`.

An :class:`Endpoint` answers like an in-process model does (``answer(images, prompt, decoding, on_text, videos)``),
so the model lab puts either on either side. It sends what the in-process model gets:

* each image as a lossless PNG data URL, in the prompt's order (images, then videos, then the text);
* each video as its file (a data URL of its bytes; an http(s) URL as it is), which ``nbtools serve`` samples as
  training did (the export's ``fps``, ``max_frames``, ``video_max_pixels``); another server samples it its own way;
* the same decoding settings: ``max_tokens``, ``temperature`` (0: greedy), ``top_p`` when sampling, ``seed``.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from typing import Callable, Optional, Sequence

from nbtools.endpoint import EndpointClient, EndpointError, png_url

from .generation import Decoding, as_images

DEFAULT_TIMEOUT_S = 300.0
START_FIX = "start one, e.g. `python -m nbtools serve EXPORT --port PORT`, or check the URL"


def image_part(image) -> dict:
    """A chat ``image_url`` part holding ``image`` (PIL, RGB) as a PNG data URL: lossless, so the server
    sees the pixels the in-process model sees."""
    return {"type": "image_url", "image_url": {"url": png_url(image)}}


def video_part(video) -> dict:
    """A ``video_url`` part for a clip (``nbtools.video.Clip``: its source file) or a path or URL: the file's
    bytes as a data URL (the server samples the frames), an http(s) URL as it is."""
    from nbtools.images import is_remote, remote_filesystem
    from nbtools.media_ref import is_embedded

    source = getattr(video, "path", video)
    text = os.fspath(source)
    if is_embedded(source):  # a video stored in the data's bytes
        data = source.data
    elif text.startswith(("http://", "https://", "data:")):
        return {"type": "video_url", "video_url": {"url": text}}
    elif is_remote(text):  # s3://, hf://, …: read here, where the credentials are
        with remote_filesystem(text).open(text, "rb") as handle:
            data = handle.read()
    else:
        with open(os.path.expanduser(text), "rb") as handle:
            data = handle.read()
    mime = mimetypes.guess_type(text.split("?")[0])[0] or "video/mp4"
    return {"type": "video_url",
            "video_url": {"url": f"data:{mime};base64," + base64.b64encode(bytes(data)).decode("ascii")}}


def chat_messages(images: Sequence, prompt, videos: Sequence = ()) -> list[dict]:
    """The chat messages for a prompt, as the in-process model gets them
    (:func:`nbtools.evaluate.generation.user_message`): a string becomes one user turn with the images, then the
    videos, then the text; structured messages keep their order, each ``{"type": "image"}`` / ``{"type": "video"}``
    filled with the next image or video."""
    from .generation import user_message

    images, videos = as_images(images), list(videos or ())
    filling = {"image": iter(images), "video": iter(videos)}
    make = {"image": image_part, "video": video_part}
    messages = []
    for message in user_message(images, prompt, videos):
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                kind = part.get("type")
                if kind in filling:
                    item = next(filling[kind], None)
                    if item is None:
                        raise ValueError(f"the prompt has more {{'type': '{kind}'}} blocks than {kind}s were given")
                    parts.append(make[kind](item))
                else:
                    parts.append(part)
            content = parts
        messages.append({**message, "content": content})
    return messages


def request_settings(decoding: Decoding) -> dict:
    """The chat-completions parameters for ``decoding`` (``temperature`` 0 is greedy)."""
    settings = {"max_tokens": int(decoding.max_new_tokens), "temperature": float(decoding.temperature),
                "seed": int(decoding.seed)}
    if decoding.temperature > 0:
        settings["top_p"] = float(decoding.top_p)
    return settings


class Endpoint:
    """A model served at ``base_url`` (``http://HOST:PORT/v1``); ``model``: its name there (default: the first
    model the server lists). A request is sent once (no retries): the lab shows a failure at once."""

    def __init__(self, base_url: str, model: Optional[str] = None, api_key: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT_S):
        self.client = EndpointClient(base_url, api_key=api_key, timeout=timeout, max_retries=0, fix=START_FIX)
        self.base_url = self.client.base_url
        self._model = model

    def __repr__(self) -> str:
        return f"Endpoint({self.base_url!r}, model={self._model!r})"

    @property
    def model(self) -> str:
        """The served model's name (asked from the server once when not given)."""
        if self._model is None:
            models = self.client.model_ids()
            if not models:
                raise EndpointError(f"{self.base_url}: the server lists no model (fix: pass model=NAME)")
            self._model = models[0]
        return self._model

    def describe(self) -> str:
        """Where answers come from (asks the server nothing)."""
        return f"{self._model or 'the served model'} at {self.base_url}"

    def answer(self, images, prompt: str, decoding: Optional[Decoding] = None,
               on_text: Optional[Callable[[str], None]] = None, videos: Sequence = ()) -> str:
        """The served model's answer; with ``on_text`` it streams (called with the text so far)."""
        decoding = decoding or Decoding()
        request = {"model": self.model, "messages": chat_messages(images, prompt, videos),
                   **request_settings(decoding)}
        if on_text is None:
            return self.client.chat(request)[0]
        return self.client.chat_stream(request, on_text)


def endpoint(spec) -> Optional[Endpoint]:
    """``spec`` as an :class:`Endpoint`: a URL string, an ``Endpoint``, or ``(url, model)``; None stays None."""
    if spec is None or isinstance(spec, Endpoint):
        return spec
    if isinstance(spec, str):
        return Endpoint(spec)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return Endpoint(*spec)
    raise TypeError(f"an endpoint is a URL, (url, model) or an Endpoint, got {type(spec).__name__}")
