"""Preparation through an OpenAI-compatible endpoint, without a model: the client's retries and top-ups
against a scripted loopback server, the request's media, the judge's score parser (fuzzed with
hypothesis) and the judge cache. ``test_prepare_served.py`` runs the same against a real server."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import threading
import unicodedata
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nbtools.prepare import (
    EndpointError, OpenAICompatibleBackend, OpenAICompatibleJudge, PrepareConfig, PrepareConfigError, SampleRequest,
    prepare, parse_score,
)
from nbtools.endpoint import api_root
from nbtools.judges import judge_fingerprint
from nbtools.prepare.served_backend import chat_messages

from test_prepare import FakeBackend, supervised_file

EXAMPLES = int(os.environ.get("NBTOOLS_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=os.environ.get("NBTOOLS_FUZZ_SEED") is None, deadline=None,
                database=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- a scripted loopback server

class ScriptedServer:
    """An OpenAI-compatible chat server on a free loopback port whose answers a test scripts.

    ``reply(body) -> (status, payload or texts, headers)``: texts (a list of str) become choices. Every
    request body is kept in ``bodies``."""

    def __init__(self, reply, models=("judge-model",)):
        server = self
        self.reply, self.models, self.bodies = reply, list(models), []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                             "owned_by": "test"} for m in server.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                status, payload, headers = server.reply(body)
                if isinstance(payload, list):
                    payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                               "choices": [{"index": i, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": t}}
                                           for i, t in enumerate(payload)]}
                self._send(status, payload, headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def start(reply, **kwargs):
        servers.append(ScriptedServer(reply, **kwargs))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def one_choice(body):  # transformers serve: ignores n, one choice, the seed shows in the answer
    return 200, [f"answer seed={body['seed']}"], {}


def request(k=3, temperature=1.0, seed=100, images=(), messages=None, videos=(), video=None):
    return SampleRequest(messages or [{"role": "user", "content": "Say something."}], list(images), k, temperature,
                         1.0, 8, seed, videos=list(videos), video=video)


# --------------------------------------------------------------------------- K answers, concurrency, retries

def test_a_server_that_ignores_n_is_topped_up_one_request_per_answer_with_its_own_seed(scripted):
    server = scripted(one_choice, models=["m"])
    backend = OpenAICompatibleBackend(server.url, concurrency=2)
    answers = backend.sample_many([request(seed=100), request(seed=200)])
    assert answers == [[f"answer seed={s}" for s in (100, 101, 102)], [f"answer seed={s}" for s in (200, 201, 202)]]
    assert backend.n_honoured is False
    # the first request of each prompt asked for n = 3; once the server showed it ignores n, one answer each
    assert sorted(b.get("n", 1) for b in server.bodies) == [1, 1, 1, 1, 3, 3] or \
        sorted(b.get("n", 1) for b in server.bodies) == [1, 1, 1, 1, 1, 3]
    assert all(b["model"] == "m" and b["max_tokens"] == 8 and b["temperature"] == 1.0 for b in server.bodies)
    again = OpenAICompatibleBackend(server.url, concurrency=1)
    assert again.sample_many([request(seed=100)]) == [answers[0]]  # the same seeds, however the answers came


def test_a_server_that_honours_n_gets_one_request_and_greedy_asks_once(scripted):
    server = scripted(lambda body: (200, [f"a{i}" for i in range(body.get("n", 1))], {}), models=["m"])
    backend = OpenAICompatibleBackend(server.url)
    assert backend.sample(request(k=4)) == ["a0", "a1", "a2", "a3"] and len(server.bodies) == 1
    assert backend.n_honoured is True
    assert backend.sample(request(k=4, temperature=0.0)) == ["a0"] * 4  # greedy: one answer, K times
    assert len(server.bodies) == 2 and "n" not in server.bodies[1] and "top_p" not in server.bodies[1]


def test_429_and_5xx_are_retried_with_backoff_and_other_4xx_fail_at_once(scripted):
    calls = {"n": 0}

    def flaky(body):
        calls["n"] += 1
        if calls["n"] == 1:
            return 429, {"error": "slow down"}, {"Retry-After": "0"}
        if calls["n"] == 2:
            return 503, {"error": "loading"}, {}
        return 200, ["fine"], {}

    server = scripted(flaky, models=["m"])
    backend = OpenAICompatibleBackend(server.url, backoff=0.01)
    assert backend.sample(request(k=1)) == ["fine"]
    assert backend.client.retries == 2

    refused = scripted(lambda body: (400, {"detail": "bad field"}, {}), models=["m"])
    backend = OpenAICompatibleBackend(refused.url, backoff=0.01)
    with pytest.raises(EndpointError, match="answered 400: bad field"):
        backend.sample(request(k=1))
    assert len(refused.bodies) == 1 and backend.client.retries == 0

    down = scripted(lambda body: (500, {"error": "boom"}, {}), models=["m"])
    backend = OpenAICompatibleBackend(down.url, max_retries=2, backoff=0.01)
    with pytest.raises(EndpointError, match="failed 3 time.*500: boom.*resumes"):
        backend.sample(request(k=1))
    assert len(down.bodies) == 3


def test_a_timeout_and_a_refused_connection_are_retried_then_named(scripted):
    import time

    def slow(body):
        time.sleep(1.5)
        return 200, ["late"], {}

    server = scripted(slow, models=["m"])
    backend = OpenAICompatibleBackend(server.url, timeout=0.3, max_retries=1, backoff=0.01)
    with pytest.raises(EndpointError, match="no answer within 0.3 s"):
        backend.sample(request(k=1))
    url = server.url
    server.close()
    backend = OpenAICompatibleBackend(url, "m", max_retries=1, backoff=0.01)
    with pytest.raises(EndpointError, match="cannot connect"):
        backend.sample(request(k=1))


def test_the_model_name_is_checked_against_the_server_and_is_the_fingerprint(scripted):
    server = scripted(one_choice, models=["a", "b"])
    with pytest.raises(EndpointError, match="serves 2 models .*set served_model"):
        OpenAICompatibleBackend(server.url).fingerprint()
    with pytest.raises(EndpointError, match="does not serve 'c'"):
        OpenAICompatibleBackend(server.url, "c").fingerprint()
    one = OpenAICompatibleBackend(server.url, "a").fingerprint()
    assert '"model": "a"' in one and server.url not in one  # another address serving "a" resumes the same samples
    assert one != OpenAICompatibleBackend(server.url, "a", extra_body={"top_k": 5}).fingerprint()
    assert api_root("http://h:8000") == "http://h:8000/v1" and api_root("http://h:8000/v1/") == "http://h:8000/v1"
    with pytest.raises(EndpointError, match="not a server address"):
        api_root("localhost:8000")


def test_concurrency_is_bounded(scripted):
    import time

    active, peak = [0], [0]
    lock = threading.Lock()

    def counting(body):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return 200, ["x"], {}

    server = scripted(counting, models=["m"])
    backend = OpenAICompatibleBackend(server.url, concurrency=3)
    assert len(backend.sample_many([request(k=2, seed=i) for i in range(6)])) == 6
    assert len(server.bodies) == 12 and peak[0] == 3


# --------------------------------------------------------------------------- what a request carries

def test_messages_keep_the_tag_order_and_images_are_sent_as_they_are_or_shrunk(tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(small)
    Image.new("RGB", (640, 480), (10, 200, 10)).save(large)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "First <image> then<image>: which is red?"}]
    [system, user] = chat_messages(messages, [str(small), str(large)], max_pixels=128 * 128)
    assert system == {"role": "system", "content": "Be brief."}
    kinds = [p["type"] for p in user["content"]]
    assert kinds == ["text", "image_url", "text", "image_url", "text"]
    first, second = (p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url")
    assert base64.b64decode(first.split(",", 1)[1]) == small.read_bytes()  # the file's own bytes: lossless
    shrunk = Image.open(io.BytesIO(base64.b64decode(second.split(",", 1)[1])))
    assert second.startswith("data:image/png;") and shrunk.width * shrunk.height <= 128 * 128


def test_a_video_is_sent_as_the_frames_training_takes(tmp_path):
    from video_files import write_clip

    from nbtools.video import VideoSettings, load_clip

    clip = write_clip(tmp_path / "clip.mkv", frames=8, rate=4)  # 2 s; at fps 2: frames 0, 2, 4, 6
    settings = VideoSettings(fps=2.0, max_frames=16, video_max_pixels=32 * 32 * 4)
    [user] = chat_messages([{"role": "user", "content": "<video>What moves?"}], videos=[str(clip)], video=settings)
    frames = [p for p in user["content"] if p["type"] == "image_url"]
    expected = load_clip(str(clip), settings)
    assert len(frames) == len(expected.sampled_indices) == 4 and user["content"][-1]["type"] == "text"
    first = Image.open(io.BytesIO(base64.b64decode(frames[0]["image_url"]["url"].split(",", 1)[1])))
    assert first.size == (expected.frames.shape[2], expected.frames.shape[1])


# --------------------------------------------------------------------------- the judge and its cache

def test_the_judge_scores_each_answer_and_counts_replies_that_are_no_score(scripted, tmp_path):
    replies = {"It is a red shape.": "Score: 9/10", "It is a blue shape.": "**8**", "It is a green shape.": "2",
               "It is a grey shape.": "I cannot tell."}

    def grade(body):
        graded = body["messages"][0]["content"][-1]["text"].split("Answer to grade: ")[-1]  # not the reference
        return 200, [next(reply for answer, reply in replies.items() if answer in graded)], {}

    server = scripted(grade)
    judge = OpenAICompatibleJudge(server.url, concurrency=2)
    assert judge("What colour?", [], ["It is a red shape.", "It is a green shape."], "A red shape.") == [0.9, 0.2]
    assert judge("What colour?", [], ["It is a red shape.", "It is a grey shape."]) is None  # not judged
    assert judge.failed_replies == ["I cannot tell."]
    body = server.bodies[0]
    assert body["temperature"] == 0 and "Reference answer: A red shape." in body["messages"][0]["content"][-1]["text"]
    assert "Reference answer: (none given)" in server.bodies[-1]["messages"][0]["content"][-1]["text"]

    # through prepare(): scored prompts make pairs, failures are counted, and every verdict is cached
    config = PrepareConfig(input_file=str(supervised_file(tmp_path, ("red", "blue", "red", "blue"))),
                           output_dir=str(tmp_path / "out"), strategies=["ranking"], samples_per_prompt=4,
                           judge="endpoint", judge_url=server.url)
    sampler = FakeBackend(right=2)
    first = prepare(config, backend=sampler, progress=False)
    assert first.report.judge_calls == {"judged": 4, "reused": 0} and first.report.judge_failures == 0
    assert first.report.pairs_made == 4
    sent = len(server.bodies)
    second = prepare(config, backend=FakeBackend(right=2), progress=False)
    assert second.report.judge_calls == {"judged": 0, "reused": 4} and len(server.bodies) == sent
    assert second.pairs_file.read_text() == first.pairs_file.read_text()
    # another template is another judge: judged afresh
    third = prepare(PrepareConfig(**{**config.to_dict(), "judge_template": "Grade 0-{scale}: {answer}"}),
                    backend=FakeBackend(right=2), progress=False)
    assert third.report.judge_calls == {"judged": 4, "reused": 0}


def test_every_judge_is_cached_and_a_resumed_run_judges_only_what_is_new(tmp_path):
    calls = []

    def judge(prompt, images, answers, reference=None):
        calls.append(prompt)
        return [1.0 if "green" not in a else 0.0 for a in answers]

    config = PrepareConfig(input_file=str(supervised_file(tmp_path, ("red", "blue", "green"))),
                           output_dir=str(tmp_path / "out"), strategies=["reference", "corrupted"])
    prepare(config, judge=judge, backend=FakeBackend(), progress=False)
    assert len(calls) == 6  # 3 prompts, on real and on corrupted images
    lines = (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["failures"] == 0 for line in lines)
    # a run stopped after two verdicts (and a half-written third) judges the rest only
    (tmp_path / "out" / "judgments.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    calls.clear()
    resumed = prepare(config, judge=judge, backend=FakeBackend(), progress=False)
    assert len(calls) == 4 and resumed.report.judge_calls == {"judged": 4, "reused": 2}
    assert judge_fingerprint(judge) == judge_fingerprint(judge) and "judge" in judge_fingerprint(judge)


def test_config_and_command_line_refuse_an_endpoint_without_its_address():
    with pytest.raises(PrepareConfigError, match="base_url: backend openai needs"):
        PrepareConfig(input_file="x", backend="openai").check()
    with pytest.raises(PrepareConfigError, match="judge_url: is set but judge is reference"):
        PrepareConfig(input_file="x", judge_url="http://h/v1").check()
    with pytest.raises(PrepareConfigError, match="judge_template: the template never shows"):
        PrepareConfig(input_file="x", judge="endpoint", judge_url="http://h/v1", judge_template="{prompt}").check()
    from nbtools.__main__ import build_parser
    from nbtools.cli.prepare import config_from_args

    args = build_parser().parse_args(["prepare", "x.jsonl", "--base-url", "http://h:1/v1", "--judge-url", "http://j/v1"])
    config = config_from_args(args).check()
    assert (config.backend, config.judge, config.judge_url) == ("openai", "endpoint", "http://j/v1")


# --------------------------------------------------------------------------- the score parser, fuzzed

def number_text(value: float, places: int) -> str:
    return f"{value:.{places}f}" if places else str(int(value))


SCORE_FORMS = ["{x}", "Score: {x}", "**{x}**", "{x}/{s}", "I'd rate it {x} out of {s}.", "Rating = {x}",
               "The colour is wrong.\nScore: {x}", "`{x}`.", "{x}!", "  {x}\n", "Grade: {x}/{s} - mostly right"]


@FUZZ
@given(text=st.text(max_size=200), scale=st.sampled_from([1.0, 5.0, 10.0, 100.0]))
def test_any_reply_gives_a_score_in_range_or_none(text, scale):
    score = parse_score(text, scale)
    assert score is None or (isinstance(score, float) and 0.0 <= score <= 1.0)


@FUZZ
@given(units=st.integers(0, 1000), places=st.sampled_from([0, 1, 2]), scale=st.sampled_from([5, 10, 100]),
       form=st.sampled_from(SCORE_FORMS), prefix=st.sampled_from(["", "Sure. ", "Reasoning: it says red.\n"]))
def test_a_score_in_any_usual_form_is_read(units, places, scale, form, prefix):
    value = scale * units / 1000
    x = number_text(round(value, places), places)
    if float(x) > scale:
        return
    text = prefix + form.format(x=x, s=scale)
    assert math.isclose(parse_score(text, scale), float(x) / scale, abs_tol=1e-9), text


@FUZZ
@given(text=st.text(max_size=120).filter(lambda t: not any(c.isdigit() for c in unicodedata.normalize("NFKC", t))))
def test_a_reply_without_digits_is_no_score(text):
    assert parse_score(text) is None


@FUZZ
@given(over=st.floats(10.01, 1e6, allow_nan=False), negative=st.floats(-1e6, -0.01, allow_nan=False))
def test_numbers_outside_the_scale_are_no_score(over, negative):
    assert parse_score(f"{over:.2f}", 10) is None and parse_score(f"Score: {negative:.2f}", 10) is None
    assert parse_score(f"{over + 100:.2f}%") is None and parse_score("11/10") is None


def test_ambiguous_replies_are_no_score():
    assert parse_score("It has 3 sides and 4 corners") is None
    assert parse_score("7 or 8") is None
    assert parse_score("Score: 3. On reflection, final score: 9") == 0.9  # the last scored number
    assert parse_score(None) is None and parse_score("7", scale=0) is None
