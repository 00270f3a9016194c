"""Sampling through any OpenAI-compatible chat completions server (the client: :mod:`nbtools.endpoint`).

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

**Failures.** At most ``concurrency`` requests are in flight; the client retries what is worth retrying
(:mod:`nbtools.endpoint`), then stops the run with :class:`~nbtools.endpoint.EndpointError`. ``prepare()``
has stored every prompt answered so far; the same call resumes.

**Resume.** :meth:`OpenAICompatibleBackend.fingerprint` names the served model's id (as the server's
``/v1/models`` lists it) and the request shaping done here (``max_pixels``, ``extra_body``), not the
server's address: the same model served elsewhere (another port, another machine) resumes the
same samples. Serve other weights under another name, or delete ``samples.jsonl``.

**Media.** Images go as the client sends them (:func:`nbtools.endpoint.image_url`). A video becomes the
frames training takes from it (the request's fps, max_frames, video_max_pixels), sent as pictures in the
video's place: servers disagree on video input (``transformers serve`` samples 32 frames itself and, for
Qwen3-VL, fails to read audio from the clip), pictures every vision endpoint takes. The model then sees
those frames as pictures, without the clip's timestamps, so its answers can differ from in-process
sampling of the same video.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterator, Optional, Sequence

from nbtools.endpoint import UNREACHABLE_FIX, EndpointClient, image_url, png_url

from .backends import SampleRequest, structured_messages

RESUMABLE_FIX = UNREACHABLE_FIX + "; what was done so far is kept and the same call resumes"


class MediaError(OSError):
    """A prompt's image or video could not be read while its request was built (``index``: which request)."""

    def __init__(self, index: int, error: OSError):
        super().__init__(str(error))
        self.index = index


def video_frame_urls(video, settings, family: Optional[str] = None) -> list[str]:
    """The frames training takes from ``video`` (a path or a ``Clip``), as PNG data URLs, without the copy
    that pads an odd count for the vision encoder."""
    from PIL import Image

    from nbtools.video import VideoSettings, load_clip

    clip = video if hasattr(video, "frames") else load_clip(str(video), settings or VideoSettings(), family or "qwen3_vl")
    frames = clip.frames[:len(clip.sampled_indices)]
    return [png_url(Image.fromarray(frame)) for frame in frames]


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
                                               backoff=backoff, fix=RESUMABLE_FIX)
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
