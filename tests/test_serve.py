"""``python -m nbtools serve`` and the model lab over endpoints, against real servers on free ports.

The tuned side is the command itself (a child process on the shared run's merged export), the base side
:func:`nbtools.serve.serve` in this process on the run's base model (``--base``); both are transformers serve on the
CPU. Served greedy answers must equal nbtools' in-process ones: for pictures (a PNG over the run's ``max_pixels``
gets the same prompt tokens), for a silent clip (sampled as training did, not transformers serve's 32 frames),
for the printed curl and Python calls, and for the model lab's samples.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import SHAPES_DIR
from PIL import Image
from video_files import write_clip

from nbtools import __main__ as nbtools_main
from nbtools.config import RunConfig
from nbtools.evaluate import Decoding, Endpoint, EndpointError, InProcess, ModelLab, side_by_side
from nbtools.evaluate.endpoint import image_part
from nbtools.evaluate.generation import build_inputs
from nbtools.export import export_merged, export_video_settings, generate, load_export, save_adapter
from nbtools.serve import curl_snippet, python_snippet, serve
from nbtools.video import load_clip

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PROMPT = "What colour is the shape?"
PICTURE = SHAPES_DIR / "images" / "validation_0004.png"  # a red square the base model calls green


@pytest.fixture(scope="module")
def export_dir(eval_run_dir, tmp_path_factory):
    return export_merged(eval_run_dir, tmp_path_factory.mktemp("serve") / "merged", device="cpu")


def _read_banner(process: subprocess.Popen, timeout: float = 240.0) -> str:
    """stdout up to the end of the printed Python call (the banner is written at once, when the server answers)."""
    lines: queue.Queue = queue.Queue()

    def read():  # all along: the server's access log must not fill the pipe
        with contextlib.suppress(ValueError, OSError):
            for line in iter(process.stdout.readline, ""):
                lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    while not seen or not seen[-1].startswith("print(reply"):
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            line = ""
        if not line:
            process.kill()
            raise AssertionError(f"no banner from nbtools serve: {''.join(seen)}{process.stderr.read()[-3000:]}")
        seen.append(line)
    return "".join(seen)


@pytest.fixture(scope="module")
def servers(export_dir, eval_run_dir):
    """(tuned: the ``nbtools serve`` process, its URL and banner; base: an in-process Server on the run's base)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nbtools", "serve", str(export_dir), "--port", "0"], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    try:
        with serve(eval_run_dir, base=True, port=0) as base:  # loads while the child starts
            banner = _read_banner(process)
            url = banner.split(" at ", 1)[1].split()[0]
            name = RunConfig.from_yaml(eval_run_dir / "config.yaml").model_name
            yield {"process": process, "url": url, "banner": banner, "name": name, "base": base}
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def _client(url):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key="none", max_retries=0)


def _picture_request(image, max_tokens=16):
    return {"messages": [{"role": "user", "content": [image_part(image), {"type": "text", "text": PROMPT}]}],
            "max_tokens": max_tokens, "temperature": 0}


def test_the_banner_names_the_model_url_and_ready_calls(servers):
    banner, url, name = servers["banner"], servers["url"], servers["name"]
    assert banner.startswith(f"serving {name!r} (the merged export ") and url.startswith("http://127.0.0.1:")
    assert "images sized under the run's max_pixels=16384" in banner and "fps=2, max_frames=16" in banner
    assert curl_snippet(url, name) in banner and python_snippet(url, name) in banner
    assert [m.id for m in _client(url).models.list()] == [name]  # the name the card's vLLM/SGLang commands use
    assert servers["base"].model == "tiny-qwen3-vl-warm"


def test_a_picture_over_max_pixels_is_sized_as_in_process(servers, export_dir):
    """A PNG (lossless) over the run's max_pixels: the same prompt tokens and the same greedy answer as in-process."""
    from nbtools.models import load_processor

    model, processor = load_export(str(export_dir.resolve()))
    picture = Image.open(PICTURE).convert("RGB")
    for image in (picture, picture.resize((400, 300))):
        reply = _client(servers["url"]).chat.completions.create(model=servers["name"], **_picture_request(image))
        assert reply.choices[0].message.content.strip() == generate(export_dir, [image], PROMPT, max_new_tokens=16)
        assert reply.usage.prompt_tokens == build_inputs(processor, [image], PROMPT)["input_ids"].shape[1]
    # the big one costs fewer tokens under the run's max_pixels (16384) than under the base processor's own cap
    default = build_inputs(load_processor("tiny-qwen3-vl-warm"), [image], PROMPT)["input_ids"].shape[1]
    assert reply.usage.prompt_tokens < default


def test_the_printed_curl_and_python_calls_answer(servers, export_dir, tmp_path, monkeypatch):
    shutil.copy(PICTURE, tmp_path / "photo.png")
    expected = generate(export_dir, [PICTURE], PROMPT, max_new_tokens=128)
    name = servers["name"]
    done = subprocess.run(["bash", "-c", curl_snippet(servers["url"], name)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["choices"][0]["message"]["content"].strip() == expected
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(python_snippet(servers["url"], name), {})
    assert printed.getvalue().strip() == expected


def test_a_silent_clip_is_sampled_as_training_did(servers, export_dir, tmp_path):
    """The clip (no audio track) goes as its file; the server samples the run's frames, with their times."""
    clip_file = write_clip(tmp_path / "silent.mkv", "ffv1", frames=12, rate=4)  # 3 s: 6 frames at the run's 2 fps
    prompt = "What happens in the video?"
    model, processor = load_export(str(export_dir.resolve()))
    clip = load_clip(str(clip_file), export_video_settings(export_dir), "qwen3_vl")
    assert clip.sampled_indices == [0, 2, 4, 6, 8, 10]
    endpoint = Endpoint(servers["url"])
    answer = endpoint.answer([], prompt, Decoding(max_new_tokens=8), videos=[clip])
    assert answer == generate(export_dir, [], prompt, videos=[clip_file], max_new_tokens=8)
    reply = _client(servers["url"]).chat.completions.create(
        model=endpoint.model, max_tokens=1, temperature=0,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(clip_file)}},
                                               {"type": "text", "text": prompt}]}])  # a path on the server's disk
    assert reply.usage.prompt_tokens == build_inputs(processor, [], prompt, videos=[clip])["input_ids"].shape[1]


def test_temperature_samples_with_the_seed(servers, export_dir):
    """transformers serve alone would stay greedy (the model's do_sample is off); the same seed, the same answer."""
    image = Image.open(PICTURE).convert("RGB")
    sampled = Decoding(max_new_tokens=12, temperature=2.0, seed=3)
    in_process = generate(export_dir, [image], PROMPT, **sampled.to_dict())
    assert in_process != generate(export_dir, [image], PROMPT, max_new_tokens=12)  # sampling changed the answer
    assert Endpoint(servers["url"]).answer([image], PROMPT, sampled) == in_process


def test_the_lab_over_endpoints_answers_as_in_process(servers, eval_run_model, evaluation_result):
    run, samples = eval_run_model, evaluation_result.examples[:3]
    decoding = Decoding(max_new_tokens=12)
    local = side_by_side(run.model, run.processor, samples, decoding, progress=False)
    remote = side_by_side(samples=samples, decoding=decoding, progress=False, base=servers["base"].url,
                          tuned=servers["url"])
    assert [(r["base"], r["tuned"]) for r in remote] == [(r["base"], r["tuned"]) for r in local]
    assert any(r["base"] != r["tuned"] for r in local)  # the tuning shows

    lab = ModelLab(samples=samples, decoding=decoding, base=servers["base"].url, tuned=servers["url"])
    in_process = ModelLab(run.model, run.processor, samples, decoding)
    for index in range(len(samples)):
        lab.sample.value = in_process.sample.value = index
        streamed = lab.on_generate()  # streams into the two answer boxes
        assert streamed == in_process.on_generate() and lab.status.value.startswith("done")
        assert (lab.base_output.value, lab.tuned_output.value) == (streamed["base"], streamed["tuned"])
    assert servers["url"] in lab.widget.children[-2].children[1].children[0].value  # the tuned side says where

    mixed = ModelLab(run.model, run.processor, samples, decoding, tuned=servers["url"])  # base in this process
    in_process.sample.value = 0
    assert mixed.on_generate() == in_process.on_generate()


def test_refusals_name_the_problem(servers, export_dir, eval_run_dir, tmp_path, capsys):
    missing = tmp_path / "nothing"
    assert nbtools_main.main(["serve", str(missing), "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {missing}: no such folder (fix: pass the folder `python -m "
                                               "nbtools export RUN_DIR --merged` wrote, or a run folder)")
    assert nbtools_main.main(["serve", str(export_dir), "--base", "--port", "0"]) == 2
    assert "--base serves a run's base model, and this is not a run folder" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        assert nbtools_main.main(["serve", str(eval_run_dir), "--port", str(port)]) == 2
        assert time.monotonic() - started < 5  # refused before the model loads
    assert capsys.readouterr().err.strip() == (f"error: port {port} on 127.0.0.1 is in use (fix: pass --port with a "
                                               f"free port, e.g. --port {port + 1}, or stop the server that holds it)")
    with pytest.raises(EndpointError, match=r"chat completion: the server answered 400: video 1: cannot be read"):
        Endpoint(servers["url"]).answer([], "What happens?", videos=["data:video/mp4;base64,AAAA"])
    with pytest.raises(EndpointError, match=r"http://127.0.0.1:9/v1: chat completion: cannot connect .*fix: start one, "
                                            r"e.g. `python -m nbtools serve EXPORT --port PORT`"):
        Endpoint("http://127.0.0.1:9/v1", model="m").answer([], "hello")


def test_an_adapter_export_is_served_on_its_base_model(eval_run_dir, eval_run_model, tmp_path):
    adapter = save_adapter(eval_run_dir, tmp_path / "adapter")
    image, decoding = Image.open(PICTURE).convert("RGB"), Decoding(max_new_tokens=12)
    with serve(adapter, port=0) as server:
        assert server.served.source == f"the adapter export {adapter}"
        served = Endpoint(server.url).answer([image], PROMPT, decoding)
    assert served == InProcess(eval_run_model.model, eval_run_model.processor, adapter=True).answer([image], PROMPT,
                                                                                                  decoding)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
    return kids


def test_ctrl_c_stops_the_server_and_leaves_no_process(servers):
    process, url = servers["process"], servers["url"]
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert _children(process.pid) == []  # transformers serve runs in the command's own process
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    assert process.stderr.read().strip().splitlines()[-1] == f"nbtools serve: stopped (Ctrl-C); {url} no longer answers"
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass

