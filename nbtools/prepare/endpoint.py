"""Sampling and judging through any OpenAI-compatible chat completions server.

vLLM, SGLang, LMDeploy, ``transformers serve`` and hosted APIs answer the same
``POST {base_url}/chat/completions``; this is how preparation scales past one process:

    from nbtools.prepare import OpenAICompatibleBackend, OpenAICompatibleJudge, PrepareConfig, prepare
    backend = OpenAICompatibleBackend("http://localhost:8000/v1", "Qwen/Qwen3-VL-2B-Instruct", concurrency=8)
    judge = OpenAICompatibleJudge("http://localhost:8001/v1")        # the one model that server serves
    prepare(PrepareConfig(input_file="prompts.jsonl"), backend=backend, judge=judge)

**K answers per prompt.** A request asks for ``n`` = K choices; a server that returns fewer
(``transformers serve`` ignores ``n`` and returns one) is topped up with further requests, one
per missing answer once the backend has seen the server ignore ``n``. Request ``i`` of a prompt
carries the seed ``prompt seed + i``, whichever way the answers came.

**Reproducible only where the server makes it so.** The seed goes with every request, but what a
server does with it is its own affair: vLLM seeds each request on its own; ``transformers serve``
sets its process-wide torch seed from it, so only one request at a time (``concurrency=1``) gives
the same answers again; a hosted API may ignore it. Greedy decoding (temperature 0) asks once and
repeats the answer K times, as the in-process backend does.

**Failures.** At most ``concurrency`` requests are in flight. A 408, 429 or 5xx answer, a timeout or
a refused connection is retried ``max_retries`` times with exponential backoff (a ``Retry-After``
header is honoured); any other 4xx, or a server still failing after the retries, stops the run
with :class:`EndpointError`. ``prepare()`` has stored every prompt answered so far; the same call
resumes.

**Resume.** :meth:`OpenAICompatibleBackend.fingerprint` names the served model's id (as the server's
``/v1/models`` lists it) and the request shaping done here (``max_pixels``, ``extra_body``), not the
server's address: the same model served elsewhere (another port, another machine) resumes the
same samples. Serve other weights under another name, or delete ``samples.jsonl``.

**Media.** Local images are sent as ``data:`` URLs: the file's own bytes, or a PNG shrunk to the size
a processor capped at ``max_pixels`` keeps (Qwen geometry) when the image is larger. Remote images
are passed as URLs unless they must be shrunk. A video becomes the frames training takes from
it (the request's fps, max_frames, video_max_pixels), sent as pictures in the video's place:
servers disagree on video input (``transformers serve`` samples 32 frames itself and, for Qwen3-VL,
fails to read audio from the clip), pictures every vision endpoint takes. The model then sees those
frames as pictures, without the clip's timestamps, so its answers can differ from in-process
sampling of the same video.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, Iterator, Optional, Sequence
from urllib.parse import urlsplit

from nbtools.errors import UserError

from .backends import SampleRequest, structured_messages
from .judges import DEFAULT_JUDGE_TEMPLATE, check_template, code_identity, format_template, parse_score

RETRY_STATUSES = frozenset({408, 409, 425, 429})  # and every 5xx


class EndpointError(UserError, RuntimeError):
    """The server cannot be used: not reachable, refuses the request, or keeps failing. The message names
    the address, what it answered and the fix."""


class MediaError(OSError):
    """A prompt's image or video could not be read while its request was built (``index``: which request)."""

    def __init__(self, index: int, error: OSError):
        super().__init__(str(error))
        self.index = index


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
                 sleep: Callable[[float], None] = time.sleep):
        from openai import OpenAI

        self.base_url = api_root(base_url)
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.backoff, self.max_backoff, self._sleep = float(backoff), float(max_backoff), sleep
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
        raise EndpointError(f"{self.base_url}: {what}: failed {self.max_retries + 1} time(s), last: {last} (fix: check "
                            "that the server is running and reachable, or raise request_timeout / max_retries; what "
                            "was done so far is kept and the same call resumes)")

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

def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _png_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return _data_url(buffer.getvalue(), "image/png")


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
        return _png_url(kept_size(image.convert("RGB"), max_pixels, family))
    path = os.fspath(image)
    if is_remote(path):
        return path if not max_pixels else _png_url(kept_size(open_image(path), max_pixels, family))
    with Image.open(path) as probe:
        fits = not max_pixels or probe.width * probe.height <= max_pixels
        mime = Image.MIME.get(probe.format or "", "")
    if fits and mime:
        with open(path, "rb") as handle:
            return _data_url(handle.read(), mime)
    return _png_url(kept_size(open_image(path), max_pixels, family))


def video_frame_urls(video, settings, family: Optional[str] = None) -> list[str]:
    """The frames training takes from ``video`` (a path or a ``Clip``), as PNG data URLs, without the copy
    that pads an odd count for the vision encoder."""
    from PIL import Image

    from nbtools.video import VideoSettings, load_clip

    clip = video if hasattr(video, "frames") else load_clip(str(video), settings or VideoSettings(), family or "qwen3_vl")
    frames = clip.frames[:len(clip.sampled_indices)]
    return [_png_url(Image.fromarray(frame)) for frame in frames]


def chat_messages(messages: Sequence[dict], images: Sequence = (), videos: Sequence = (), *,
                  max_pixels: Optional[int] = None, video=None, family: Optional[str] = None) -> list[dict]:
    """Tagged text messages -> OpenAI chat messages: each ``<image>`` an ``image_url`` part, each ``<video>``
    its frames' ``image_url`` parts, the text between them as text parts (the order the tags give)."""
    pictures, clips = iter(images), iter(videos)
    out = []
    for message in structured_messages(messages):
        parts = []
        for block in message["content"]:
            if block["type"] == "text":
                parts.append({"type": "text", "text": block["text"]})
            elif block["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_url(next(pictures), max_pixels, family)}})
            elif block["type"] == "video":
                parts += [{"type": "image_url", "image_url": {"url": url}}
                          for url in video_frame_urls(next(clips), video, family)]
        if message["role"] != "user" and all(p["type"] == "text" for p in parts):
            out.append({"role": message["role"], "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": message["role"], "content": parts})
    return out


# --------------------------------------------------------------------------- sampling

class OpenAICompatibleBackend:
    """A :class:`~nbtools.prepare.SamplingBackend` over an OpenAI-compatible server (module docstring).

    ``model``: the name the server serves (empty: its only model). ``concurrency``: requests in flight.
    ``extra_body``: more request fields for servers that take them (e.g. ``{"top_k": 20}`` on vLLM);
    they are part of the fingerprint. ``family``: whose resizing rules shrink images over ``max_pixels``
    and size video frames (qwen3_vl, qwen2_5_vl, qwen2_vl).
    """

    def __init__(self, base_url: str, model: Optional[str] = None, *, api_key: Optional[str] = None,
                 concurrency: int = 4, timeout: float = 120.0, max_retries: int = 4, backoff: float = 0.5,
                 max_pixels: Optional[int] = None, family: Optional[str] = None, extra_body: Optional[dict] = None,
                 client: Optional[EndpointClient] = None):
        if int(concurrency) < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.client = client or EndpointClient(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                               backoff=backoff)
        self.model = model or None
        self.concurrency = int(concurrency)
        self.max_pixels, self.family = max_pixels, family
        self.extra_body = dict(extra_body or {})
        self.n_honoured: Optional[bool] = None  # learnt from the first answers: does the server return n choices?
        self.requests_sent = 0
        self._model_id: Optional[str] = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = self.client.resolve_model(self.model)
        return self._model_id

    def fingerprint(self) -> str:
        return "openai-compatible:" + json.dumps(
            {"model": self.model_id, "max_pixels": self.max_pixels, "family": self.family,
             "videos": "frames as pictures", "extra_body": self.extra_body}, sort_keys=True)

    def __repr__(self) -> str:
        return f"OpenAICompatibleBackend({self.client.base_url!r}, {self.model!r}, concurrency={self.concurrency})"

    def sample(self, request: SampleRequest) -> list[str]:
        return next(self.sample_iter([request]))[1]

    def sample_many(self, requests: Sequence[SampleRequest]) -> list[list[str]]:
        answers = dict(self.sample_iter(requests))
        return [answers[i] for i in range(len(requests))]

    def _body(self, request: SampleRequest, messages: list, n: int, offset: int) -> dict:
        body = {"model": self.model_id, "messages": messages, "max_tokens": request.max_new_tokens,
                "temperature": request.temperature, "seed": (request.seed + offset) % 2 ** 31, **self.extra_body}
        if request.temperature > 0:
            body["top_p"] = request.top_p
        if n > 1:
            body["n"] = n
        return body

    def _ask(self, request: SampleRequest, messages: list, n: int, offset: int) -> list[str]:
        with self._lock:
            self.requests_sent += 1
        return self.client.chat(self._body(request, messages, n, offset))

    def sample_iter(self, requests: Sequence[SampleRequest]) -> Iterator[tuple[int, list[str]]]:
        """``(index, K answers)`` for each request as it is done; at most ``concurrency`` requests in flight."""
        requests = list(requests)
        model_id = self.model_id  # noqa: F841 - resolved (and checked) before anything is sent
        wanted = [r.k if r.temperature > 0 else 1 for r in requests]  # greedy: one answer, repeated
        answers: dict[int, dict[int, str]] = {}
        messages: dict[int, list] = {}
        queue: deque = deque()  # (request index, n, seed offset) not sent yet
        next_prompt = 0
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="nbtools-endpoint")
        in_flight: dict = {}

        def start(index: int) -> None:
            request = requests[index]
            try:
                messages[index] = chat_messages(request.messages, request.images, request.videos,
                                                max_pixels=self.max_pixels, video=request.video, family=self.family)
            except OSError as exc:
                raise MediaError(index, exc) from exc
            answers[index] = {}
            if self.n_honoured is False:
                queue.extend((index, 1, i) for i in range(wanted[index]))
            else:
                queue.append((index, wanted[index], 0))

        try:
            while in_flight or queue or next_prompt < len(requests):
                while len(in_flight) < self.concurrency and (queue or next_prompt < len(requests)):
                    if not queue:
                        start(next_prompt)
                        next_prompt += 1
                        continue
                    index, n, offset = queue.popleft()
                    future = pool.submit(self._ask, requests[index], messages[index], n, offset)
                    in_flight[future] = (index, n, offset)
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in done:
                    index, n, offset = in_flight.pop(future)
                    texts = future.result()[:n]
                    for i, text in enumerate(texts):
                        answers[index][offset + i] = text
                    if n > 1:
                        self.n_honoured = len(texts) >= n if self.n_honoured is None else self.n_honoured
                    missing = n - len(texts)
                    if missing:  # top up: one request per answer once the server is known to ignore n
                        first = offset + len(texts)
                        if self.n_honoured is False:
                            queue.extendleft((index, 1, first + i) for i in reversed(range(missing)))
                        else:
                            queue.appendleft((index, missing, first))
                    if len(answers[index]) == wanted[index]:
                        got = [answers[index][i] for i in range(wanted[index])]
                        del answers[index], messages[index]
                        yield index, got * (requests[index].k // wanted[index])
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- judging

class OpenAICompatibleJudge:
    """Scores each answer by asking a model behind an OpenAI-compatible server.

    The request: the prompt's images (``send_images``; False for a text-only judge model), then
    ``template`` filled with ``{prompt}``, ``{answer}``, ``{reference}`` ("(none given)" without one)
    and ``{scale}``; greedy, ``max_new_tokens`` long. ``parse(reply, scale)`` reads the score
    (default :func:`~nbtools.prepare.judges.parse_score`): score / scale in [0, 1], or None for a reply
    that is no score. Such a reply is counted (``failed_replies``) and the prompt is not judged
    (None) rather than guessed; the run goes on. A prompt's answers are scored concurrently.
    """

    needs_reference = False

    def __init__(self, base_url: str, model: Optional[str] = None, *, template: Optional[str] = None,
                 scale: float = 10.0, send_images: bool = True, max_new_tokens: int = 16, concurrency: int = 4,
                 api_key: Optional[str] = None, timeout: float = 120.0, max_retries: int = 4, backoff: float = 0.5,
                 max_pixels: Optional[int] = None, family: Optional[str] = None,
                 parse: Optional[Callable[[str, float], Optional[float]]] = None,
                 client: Optional[EndpointClient] = None):
        self.template = check_template(template or DEFAULT_JUDGE_TEMPLATE)
        if not scale or float(scale) <= 0:
            raise ValueError(f"scale must be above 0, got {scale}")
        self.client = client or EndpointClient(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                               backoff=backoff)
        self.model, self.scale, self.send_images = model or None, float(scale), bool(send_images)
        self.max_new_tokens, self.concurrency = int(max_new_tokens), max(1, int(concurrency))
        self.max_pixels, self.family = max_pixels, family
        self.parse = parse or parse_score
        self.failed_replies: list[str] = []  # replies that held no score, in this process
        self._model_id: Optional[str] = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = self.client.resolve_model(self.model, "judge_model")
        return self._model_id

    def fingerprint(self) -> str:
        return "openai-compatible judge:" + json.dumps(
            {"model": self.model_id, "template": self.template, "scale": self.scale, "images": self.send_images,
             "max_new_tokens": self.max_new_tokens, "max_pixels": self.max_pixels, "family": self.family,
             "parse": "default" if self.parse is parse_score else code_identity(self.parse)}, sort_keys=True)

    def __repr__(self) -> str:
        return f"OpenAICompatibleJudge({self.client.base_url!r}, {self.model!r})"

    def _score(self, pictures: list, prompt: str, answer: str, reference: Optional[str]) -> Optional[float]:
        text = format_template(self.template, prompt, answer, reference, self.scale)
        content = [{"type": "image_url", "image_url": {"url": url}} for url in pictures] + [{"type": "text",
                                                                                              "text": text}]
        body = {"model": self.model_id, "messages": [{"role": "user", "content": content}], "temperature": 0.0,
                "max_tokens": self.max_new_tokens, "seed": 0}
        reply = self.client.chat(body, "judge")[0]
        score = self.parse(reply, self.scale)
        ok = score is not None and isinstance(score, (int, float)) and 0 <= score <= 1
        if not ok:
            with self._lock:
                self.failed_replies.append(reply)
            return None
        return float(score)

    def __call__(self, prompt, images, answers, reference=None):
        answers = list(answers)
        if not answers:
            return []
        pictures = [image_url(p, self.max_pixels, self.family) for p in images or ()] if self.send_images else []
        self.model_id  # noqa: B018 - resolved once, before the threads
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(answers))) as pool:
            scores = list(pool.map(lambda a: self._score(pictures, prompt, a, reference), answers))
        return None if any(s is None for s in scores) else scores
