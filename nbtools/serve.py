"""Serve an export (or a run) behind an OpenAI-compatible API: ``python -m nbtools serve EXPORT_OR_RUN``.

The server is transformers' own (``transformers serve``: FastAPI and uvicorn, ``/v1/chat/completions`` with
streaming, ``/v1/models``, ``/health``), run in this process on a model nbtools loads, so that a request is
answered exactly as nbtools' in-process generation answers it (:func:`nbtools.evaluate.generation.build_inputs`):

* the model answers under its export's name, the one the model card's vLLM and SGLang commands serve it under;
* images are resized by the export's (or the run's) processor, under the run's ``max_pixels``;
* a video (a ``video_url`` part: a data URL, an http(s) URL, or a path on the server's machine) is sampled as
  training sampled it (the export's ``fps``, ``max_frames``, each frame under ``video_max_pixels``, with
  Qwen3-VL's timestamps), not with transformers serve's fixed 32 frames, and no audio track is looked for
  (a silent clip is fine);
* ``temperature`` above 0 samples (transformers serve alone keeps the model's ``do_sample``, which is off for
  the tiny models), and ``seed`` seeds it.

What transformers serve itself does not do: more than one choice (``n`` is ignored: one choice comes back), and
reproducible seeded requests that run at the same time (``seed`` sets the server's global torch seed).

The server runs in a thread of this process: stopping it (Ctrl-C on the command line, interrupting the notebook
kernel during :meth:`Server.wait`, or :meth:`Server.stop`) leaves no other process behind.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import mimetypes
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nbtools.errors import UserError, one_line

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
STARTUP_TIMEOUT_S = 60.0
# a Ctrl-C waits this long for answers being generated, then cuts them off
GRACEFUL_SHUTDOWN_S = 3


class ServeError(UserError, ValueError):
    """The folder cannot be served, or the address cannot be listened on; the message names it and the fix."""


@dataclass
class Served:
    """A model ready to serve: what answers, under which name, and how it sees images and videos."""

    name: str  # the model name clients ask for ("model" in a request)
    model: Any
    processor: Any
    family: str
    video: Any  # nbtools.video.VideoSettings: how a video_url is sampled
    max_pixels: Optional[int]
    source: str  # what was loaded, in words
    from_run: bool = True  # max_pixels and the video settings are the run's (False: a folder that records no run)


# --- what is served ---------------------------------------------------------------------------

def _export_info(folder: Path) -> dict:
    from nbtools.export import EXPORT_INFO_FILE

    try:
        info = json.loads((folder / EXPORT_INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def load_served(path, *, base: bool = False, name: Optional[str] = None, device: Optional[str] = None) -> Served:
    """The model in ``path``: a merged export, an adapter export (its base model + the adapter), a run folder
    (the run's base model + its trained adapter; with ``base``, the run's base model alone, with the run's
    processor, as the model lab compares it) or any model folder holding config.json.

    ``name``: the model name to answer under (default: the export's or the run's model name).
    Raises :class:`ServeError` for a folder that is none of these.
    """
    from nbtools.evaluate.run_model import CONFIG_FILE, load_run_model
    from nbtools.export import export_video_settings, load_export
    from nbtools.models import detect_family
    from nbtools.video import VideoSettings

    folder = Path(path)
    export_fix = "pass the folder `python -m nbtools export RUN_DIR --merged` wrote, or a run folder"
    if not folder.is_dir():
        raise ServeError(f"{path}: no such folder (fix: {export_fix})")
    if (folder / CONFIG_FILE).is_file():  # a run folder
        run = load_run_model(folder, device=device, with_reference=base)
        config, model = run.config, run.model
        if base:
            if "ref" in (model.peft_config or {}):
                model.set_adapter("ref")  # the SFT adapter the run started from is the base DPO measured against
            else:
                model = model.unload()  # the base model, LoRA layers taken out unmerged
            served_name, source = config.model, f"the base model of the run {folder}"
        else:
            served_name, source = config.model_name, f"the run {folder} (base model + trained adapter)"
        return Served(name or served_name, model.eval(), run.processor, run.family,
                      VideoSettings.from_config(config), config.max_pixels, source)
    if base:
        raise ServeError(f"{path}: --base serves a run's base model, and this is not a run folder (no {CONFIG_FILE}) "
                         "(fix: pass the run folder, or serve the base model's own folder)")
    is_adapter = (folder / "adapter_config.json").is_file()
    if not is_adapter and not (folder / "config.json").is_file():
        raise ServeError(f"{path}: holds no model (no config.json, adapter_config.json or {CONFIG_FILE}) "
                         f"(fix: {export_fix})")
    info = _export_info(folder)
    # a fresh copy, not load_export's cached one: the server changes how its processor renders media
    model, processor = load_export.__wrapped__(str(folder.resolve()), device)
    kind = "adapter export" if is_adapter else ("merged export" if info else "model folder")
    return Served(name or info.get("model_name") or folder.resolve().name, model, processor,
                  detect_family(model.config).name,
                  export_video_settings(folder) if info else VideoSettings(), info.get("max_pixels"),
                  f"the {kind} {folder}", from_run=bool(info))


# --- how the server reads media ---------------------------------------------------------------

_VIDEO_LOADING_KWARGS = {"num_frames", "fps", "do_sample_frames", "video_load_backend", "load_audio_from_video",
                         "sampling_rate"}


def _bad_request(message: str):
    from fastapi import HTTPException

    return HTTPException(status_code=400, detail=message)


def _data_url_bytes(url: str) -> tuple[bytes, str]:
    """(bytes, file suffix) of a ``data:<type>;base64,<data>`` URL."""
    head, _, data = url.partition(",")
    if ";base64" not in head:
        raise ValueError("only base64 data URLs are read")
    mime = head[5:].split(";")[0]
    suffix = mimetypes.guess_extension(mime) or ""
    try:
        return base64.b64decode(data, validate=False), suffix
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the data URL is not valid base64 ({exc})") from None


def _load_image(url: str):
    from transformers.image_utils import load_image

    return load_image(url).convert("RGB")


def _load_video(url: str, served: Served):
    """A clip sampled as training samples it (``nbtools.video.load_clip`` with the served model's settings)."""
    from nbtools.video import load_clip

    if url.startswith("data:"):
        data, suffix = _data_url_bytes(url)
        with tempfile.TemporaryDirectory(prefix="nbtools-serve-") as folder:
            local = os.path.join(folder, "clip" + suffix)
            with open(local, "wb") as handle:
                handle.write(data)
            clip = load_clip(local, served.video, served.family)
        clip.path = "video_url (data URL)"
        return clip
    return load_clip(url[len("file://"):] if url.startswith("file://") else url, served.video, served.family)


def _media_of(conversation: list, served: Served) -> tuple[list, list, list]:
    """``(messages with bare {"type": "image"/"video"} parts, images, clips)`` in the order the parts come."""
    messages, images, clips = [], [], []
    for message in conversation:
        content = message.get("content")
        if not isinstance(content, list):
            messages.append(message)
            continue
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            source = (part.get("url") or part.get("image") or part.get("video") or part.get("path")) \
                if kind in ("image", "video") else None
            if kind == "image" and source is not None:
                try:
                    images.append(source if hasattr(source, "convert") else _load_image(source))
                except Exception as exc:
                    raise _bad_request(f"image {len(images) + 1}: cannot be read ({one_line(exc)[:200]}); send a "
                                       "data:image/png;base64 URL or an http(s) URL") from None
                parts.append({"type": "image"})
            elif kind == "video" and source is not None:
                try:
                    clips.append(_load_video(source, served))
                except Exception as exc:
                    raise _bad_request(f"video {len(clips) + 1}: cannot be read ({one_line(exc)[:300]}); send a "
                                       "data:video/...;base64 URL of the video file or an http(s) URL") from None
                parts.append({"type": "video"})
            else:
                parts.append(part)
        messages.append({**message, "content": parts})
    return messages, images, clips


def serving_processor(served: Served):
    """The served processor, its ``apply_chat_template`` rendering media as nbtools does in-process.

    transformers serve tokenizes a request with ``processor.apply_chat_template(..., tokenize=True)``, which would
    load videos itself (32 frames, with audio for some models). Here the images and clips are read first (clips
    sampled as training did) and handed to :func:`nbtools.evaluate.generation.build_inputs`, the function every
    in-process answer goes through; the template's own options (tools, ``enable_thinking`` …) are kept.
    """
    from nbtools.evaluate.generation import build_inputs

    processor = served.processor
    render = processor.apply_chat_template  # the bound original

    def apply_chat_template(conversation, *args, tokenize: bool = False, add_generation_prompt: bool = False,
                            return_dict: bool = False, return_tensors=None, **kwargs):
        if not tokenize:
            return render(conversation, *args, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs)
        template_kwargs = {k: v for k, v in kwargs.items() if k not in _VIDEO_LOADING_KWARGS}
        if template_kwargs.get("tools") is None:
            template_kwargs.pop("tools", None)
        messages, images, clips = _media_of(conversation, served)
        return build_inputs(processor, images, messages, videos=clips,
                            add_generation_prompt=add_generation_prompt, template_kwargs=template_kwargs)

    processor.apply_chat_template = apply_chat_template
    return processor


# --- the server -----------------------------------------------------------------------------

def build_app(served: Served):
    """transformers serve's FastAPI app, pinned to ``served``."""
    try:
        from transformers.cli.serving.chat_completion import ChatCompletionHandler
        from transformers.cli.serving.completion import CompletionHandler
        from transformers.cli.serving.model_manager import ModelManager
        from transformers.cli.serving.response import ResponseHandler
        from transformers.cli.serving.server import build_server
        from transformers.cli.serving.systemone import SystemOneHandler
        from transformers.cli.serving.transcription import TranscriptionHandler
        from transformers.cli.serving.utils import GenerationState, Modality
    except ImportError as exc:
        raise ServeError(f"serving needs fastapi, uvicorn and openai ({exc}) (fix: pip install -r requirements.txt)") \
            from None

    processor = serving_processor(served)

    class OneModel(ModelManager):
        """transformers serve's model manager, holding the one model nbtools loaded under its served name."""

        def _load_processor(self, *args, **kwargs):
            return processor

        def _load_model(self, *args, **kwargs):
            return served.model

        def get_model_modality(self, model, processor=None):
            return Modality.VLM  # images and videos are read by serving_processor; no audio is looked for

        @staticmethod
        def process_model_name(model_id: str) -> str:
            return model_id  # not a hub repository: replies name the model as asked, without "@main"

    class ChatHandler(ChatCompletionHandler):
        def _build_generation_config(self, body, model_generation_config, use_cb=False):
            config = super()._build_generation_config(body, model_generation_config, use_cb=use_cb)
            temperature = body.get("temperature")
            if temperature is not None and float(temperature) > 0:
                config.do_sample = True  # transformers serve only ever turns sampling off
            elif temperature is not None:
                config.temperature = model_generation_config.temperature  # greedy: no "temperature ignored" warning
            return config

    manager = OneModel(device="cpu", force_model=served.name)  # device and dtype unused: the model is loaded
    state = GenerationState()
    return build_server(manager, ChatHandler(manager, state), completion_handler=CompletionHandler(manager, state),
                        response_handler=ResponseHandler(manager, state),
                        transcription_handler=TranscriptionHandler(manager, state),
                        systemone_handler=SystemOneHandler(manager, state), generation_state=state)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), or a :class:`ServeError` saying why not."""
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is in use (fix: pass --port with a free port, e.g. "
                             f"--port {port + 1}, or stop the server that holds it)") from None
        if exc.errno == errno.EACCES:
            raise ServeError(f"port {port} on {host}: permission denied (fix: use a port above 1023)") from None
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}) (fix: pass --host with an "
                         f"address of this machine, e.g. {DEFAULT_HOST} or 0.0.0.0)") from None


class Server:
    """A running OpenAI-compatible server for one model, in a thread of this process.

        with Server(load_served("exports/shapes-merged"), port=0) as server:   # port 0: any free port
            print(server.url)        # http://127.0.0.1:PORT/v1, for any OpenAI client
            ...
        # stopped here; or server.wait() blocks until Ctrl-C / a kernel interrupt, then stops it
    """

    def __init__(self, served: Served, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 log_level: str = "warning", sock: Optional[socket.socket] = None):
        self.served, self.host = served, host
        self._socket = sock or listening_socket(host, port)  # bound now: a port in use is an error at once
        self.port = self._socket.getsockname()[1]
        self._log_level = log_level
        self._server = None
        self._thread: Optional[threading.Thread] = None
        self._done = threading.Event()  # set when the server's thread ends
        self._error: Optional[BaseException] = None

    @property
    def url(self) -> str:
        """The base URL OpenAI clients take (``…/v1``)."""
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.served.name

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> "Server":
        import uvicorn
        from transformers.utils import logging as hf_logging

        if self._log_level != "info":  # transformers serve logs every request as a warning
            hf_logging.get_logger("transformers.cli.serving").setLevel(hf_logging.ERROR)
        app = build_app(self.served)
        config = uvicorn.Config(app, log_level=self._log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        self._server = uvicorn.Server(config)

        def run():
            try:
                self._server.run(sockets=[self._socket])  # signals are left to the main thread
            except BaseException as exc:  # noqa: BLE001 - reported by start() or stop()
                self._error = exc
            finally:
                self._done.set()

        self._thread = threading.Thread(target=run, name=f"nbtools-serve-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._done.is_set() or time.monotonic() > deadline:
                self.stop()
                why = f": {type(self._error).__name__}: {one_line(self._error)}" if self._error else ""
                raise RuntimeError(f"the server on {self.host}:{self.port} did not start{why}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = GRACEFUL_SHUTDOWN_S + 5) -> None:
        """Stop serving (answers being generated get a few seconds) and close the port."""
        # An Event, not Thread.join: a join that a Ctrl-C interrupted leaves the thread marked as ended
        # (Python 3.11), and a later join would return at once, before the server has shut down.
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            if not self._done.wait(timeout):
                self._server.force_exit = True
                self._done.wait(timeout)
        with contextlib.suppress(OSError):
            self._socket.close()

    def wait(self) -> None:
        """Block while the server runs; Ctrl-C (or a notebook's interrupt) stops it, then re-raises."""
        try:
            while self._thread is not None and not self._done.is_set():
                time.sleep(0.25)
        except KeyboardInterrupt:
            self.stop()
            raise

    def __enter__(self) -> "Server":
        return self if self._server is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(path, *, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, base: bool = False,
          name: Optional[str] = None, device: Optional[str] = None, log_level: str = "warning") -> Server:
    """Load ``path`` (see :func:`load_served`) and start serving it; returns the running :class:`Server`.

    The port is taken before the model loads, so a port in use is reported at once.
    """
    sock = listening_socket(host, port)
    try:
        served = load_served(path, base=base, name=name, device=device)
        return Server(served, host, port, log_level, sock=sock).start()
    except BaseException:
        sock.close()
        raise


# --- what to tell the user ------------------------------------------------------------------

def curl_snippet(url: str, model: str) -> str:
    """A ready ``curl`` call of ``url``'s chat completions for ``model`` with ``photo.png``."""
    from nbtools.export import curl_command

    return curl_command(model, url)


def python_snippet(url: str, model: str) -> str:
    """The same call with the OpenAI Python client."""
    from nbtools.export import _python_str

    return (
        "import base64\n"
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url={_python_str(url)}, api_key="none")\n'
        'picture = base64.b64encode(open("photo.png", "rb").read()).decode()\n'
        "reply = client.chat.completions.create(\n"
        f"    model={_python_str(model)},\n"
        '    messages=[{"role": "user", "content": [\n'
        '        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + picture}},\n'
        '        {"type": "text", "text": "What colour is the shape?"}]}],\n'
        "    max_tokens=128, temperature=0)\n"
        "print(reply.choices[0].message.content)"
    )


def banner(server: Server) -> str:
    """What ``python -m nbtools serve`` prints once the server answers."""
    served = server.served
    video = served.video
    frames = f"fps={video.fps:g}, max_frames={video.max_frames}, video_max_pixels={video.video_max_pixels}"
    if served.from_run:
        media = (f"images sized under the run's max_pixels={served.max_pixels}" if served.max_pixels
                 else "images sized as in training") + f", videos sampled as training did ({frames})"
    else:
        media = f"images sized by the folder's processor, videos sampled at nbtools' defaults ({frames})"
    return (f"serving {served.name!r} ({served.source}) at {server.url}\n"
            f"OpenAI-compatible (transformers serve): POST {server.url}/chat/completions, GET {server.url}/models; "
            f"{media}. Ctrl-C stops it.\n\n"
            f"Try it with curl:\n\n{curl_snippet(server.url, served.name)}\n\n"
            f"or with the OpenAI Python client:\n\n{python_snippet(server.url, served.name)}\n")
