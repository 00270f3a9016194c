"""One client for OpenAI-compatible chat servers (``python -m nbtools serve``, vLLM, SGLang, ``transformers serve``,
hosted APIs): what preparation samples and judges through, and what the model lab's :class:`~nbtools.evaluate.Endpoint`
asks.

**Failures.** A 408, 409, 425, 429 or 5xx answer, a timeout or a refused connection is retried ``max_retries``
times with exponential backoff (a ``Retry-After`` header is honoured); any other 4xx, or a server still failing
after the retries, raises :class:`EndpointError`, whose message names the address, what the server answered and
the fix (``fix``: what the caller advises when the server cannot be reached).

**Media.** A local image is sent as a ``data:`` URL: the file's own bytes, or a PNG shrunk to the size a processor
capped at ``max_pixels`` keeps (Qwen geometry) when the image is larger; a PIL image as a lossless PNG. A remote
image is passed as its URL unless it must be shrunk.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import threading
import time
from typing import Callable, Optional
from urllib.parse import urlsplit

from nbtools.errors import UserError

RETRY_STATUSES = frozenset({408, 409, 425, 429})  # and every 5xx
UNREACHABLE_FIX = "check that the server is running and reachable, or raise request_timeout / max_retries"


class EndpointError(UserError, RuntimeError):
    """The server cannot be used: not reachable, refuses the request, or keeps failing. The message names
    the address, what it answered and the fix."""


def api_root(base_url: str) -> str:
    """``http://host:8000`` or ``http://host:8000/v1/`` -> ``http://host:8000/v1`` (what servers expect)."""
    url = (base_url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndpointError(f"{base_url!r} is not a server address (fix: give it as http://HOST:PORT/v1)")
    return url if parts.path not in ("", "/") else url + "/v1"


class EndpointClient:
    """Chat completions against one server, with retries and backoff (see the module docstring)."""

    def __init__(self, base_url: str, *, api_key: Optional[str] = None, timeout: float = 120.0,
                 max_retries: int = 4, backoff: float = 0.5, max_backoff: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, fix: str = UNREACHABLE_FIX):
        from openai import OpenAI

        self.base_url = api_root(base_url)
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.backoff, self.max_backoff, self._sleep = float(backoff), float(max_backoff), sleep
        self.fix = fix
        self.retries = 0  # retried requests so far (all threads)
        self._lock = threading.Lock()
        self._client = OpenAI(base_url=self.base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                              max_retries=0, timeout=self.timeout)

    def _delay(self, attempt: int, retry_after: Optional[str]) -> float:
        try:
            if retry_after is not None:
                return min(max(float(retry_after), 0.0), self.max_backoff)
        except ValueError:
            pass  # an HTTP date: use the backoff
        return min(self.backoff * 2 ** attempt, self.max_backoff) * (0.5 + random.random() / 2)

    def call(self, what: str, fn):
        """``fn()`` with retries on the failures worth retrying; EndpointError on the others."""
        import openai

        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                return fn()
            except openai.APIStatusError as exc:
                status = exc.status_code
                detail = _detail(exc)
                if status not in RETRY_STATUSES and status < 500:
                    raise EndpointError(f"{self.base_url}: {what}: the server answered {status}: {detail} "
                                        f"(fix: {_fix_for(status)})") from None
                retry_after = exc.response.headers.get("retry-after") if exc.response is not None else None
                last = f"{status}: {detail}"
            except openai.APITimeoutError:
                last = f"no answer within {self.timeout:g} s"
            except openai.APIConnectionError as exc:
                last = f"cannot connect ({_cause(exc)})"
            if attempt == self.max_retries:
                break
            with self._lock:
                self.retries += 1
            self._sleep(self._delay(attempt, retry_after))
        tries = f"failed {self.max_retries + 1} time(s), last: " if self.max_retries else ""
        raise EndpointError(f"{self.base_url}: {what}: {tries}{last} (fix: {self.fix})")

    def model_ids(self) -> list[str]:
        """The ids the server lists under ``/v1/models``."""
        page = self.call("list models", lambda: self._client.models.list())
        return [m.id for m in page.data]

    def resolve_model(self, model: Optional[str], setting: str = "served_model") -> str:
        """``model`` checked against the server's list, or the server's only model when ``model`` is empty."""
        try:
            served = self.model_ids()
        except EndpointError:
            if model:  # some servers list nothing (or refuse to): trust the name given
                return model
            raise
        if model:
            if served and model not in served:
                raise EndpointError(f"{self.base_url}: does not serve {model!r}; it serves {', '.join(served[:10])} "
                                    f"(fix: set {setting} to one of those)")
            return model
        if len(served) != 1:
            listed = ", ".join(served[:10]) or "none"
            raise EndpointError(f"{self.base_url}: serves {len(served)} models ({listed}) (fix: set {setting} to the "
                                "one to use)")
        return served[0]

    def chat(self, body: dict, what: str = "chat completion") -> list[str]:
        """The texts of the choices the server returns for one request (``body``: the request's fields)."""
        known = {"model", "messages", "n", "temperature", "top_p", "max_tokens", "seed"}
        fields = {k: v for k, v in body.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in known}

        def send():
            return self._client.chat.completions.create(**fields, extra_body=extra or None)

        response = self.call(what, send)
        texts = [(choice.message.content or "").strip() for choice in sorted(response.choices or [],
                                                                             key=lambda c: c.index or 0)]
        if not texts:
            raise EndpointError(f"{self.base_url}: {what}: the answer holds no choices (fix: check the server's log)")
        return texts

    def chat_stream(self, body: dict, on_text: Callable[[str], None], what: str = "chat completion") -> str:
        """One choice's text, streamed: ``on_text`` is called with the text so far as it grows."""

        def send():
            text = ""
            for chunk in self._client.chat.completions.create(**body, stream=True):
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    text += delta
                    on_text(text)
            return text.strip()

        return self.call(what, send)


def _detail(exc) -> str:
    try:
        body = exc.response.json()
        message = body.get("detail") or body.get("error") or body.get("message") or body
    except Exception:  # noqa: BLE001 - any body at all: show its text
        message = getattr(exc, "message", str(exc))
    text = message if isinstance(message, str) else json.dumps(message)[:300]
    return " ".join(text.split())[:300]


def _cause(exc) -> str:
    cause = exc.__cause__ or exc.__context__
    return " ".join(str(cause or exc).split())[:160] or type(exc).__name__


def _fix_for(status: int) -> str:
    if status in (401, 403):
        return "set OPENAI_API_KEY to a key the server accepts"
    if status == 404:
        return "check base_url: it usually ends in /v1"
    return "check the model name and the request settings against what the server accepts"


# --------------------------------------------------------------------------- media as the server gets it

def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def png_url(image) -> str:
    """A PIL image as a lossless PNG data URL: the server sees the pixels this process has."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return data_url(buffer.getvalue(), "image/png")


def kept_size(image, max_pixels: Optional[int], family: Optional[str] = None):
    """``image`` (PIL) at the size a processor capped at ``max_pixels`` keeps: shrunk as training shrinks it,
    then to the processor's own size (both sides multiples of a token's side), so a server whose processor
    allows more pixels keeps it as it is."""
    from PIL import Image

    from nbtools.images import resize_to_max_pixels, resized_size

    if not max_pixels or image.width * image.height <= max_pixels:
        return image
    height, width = resized_size(image.height, image.width, family, max_pixels)
    shrunk = resize_to_max_pixels(image, max_pixels, family)
    return shrunk if shrunk.size == (width, height) else shrunk.resize((width, height), Image.Resampling.BICUBIC)


def image_url(image, max_pixels: Optional[int] = None, family: Optional[str] = None) -> str:
    """What a chat request's ``image_url`` carries for a path, URL or PIL image (see the module docstring)."""
    from PIL import Image

    from nbtools.images import is_remote, open_image

    if isinstance(image, Image.Image):
        return png_url(kept_size(image.convert("RGB"), max_pixels, family))
    path = os.fspath(image)
    if is_remote(path):
        return path if not max_pixels else png_url(kept_size(open_image(path), max_pixels, family))
    with Image.open(path) as probe:
        fits = not max_pixels or probe.width * probe.height <= max_pixels
        mime = Image.MIME.get(probe.format or "", "")
    if fits and mime:
        with open(path, "rb") as handle:
            return data_url(handle.read(), mime)
    return png_url(kept_size(open_image(path), max_pixels, family))
