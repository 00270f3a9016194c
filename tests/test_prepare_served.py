"""Preparation through a real OpenAI-compatible server on the CPU: nbtools' own (:func:`nbtools.serve.serve`,
transformers serve in a thread of this process) on a free loopback port with the warm tiny model, started once
for this module.

Prompts -> pairs through it with K = 2 (the command line), the judge through it (the tiny model answers
no number: every reply is a counted failure, the run goes on), greedy answers equal to the in-process
backend's (one request at a time), sampled answers the same again only one request at a time (the server
seeds its whole process), a video prompt sent as its frames, and a server stopped while sampling and
again while judging: samples.jsonl and judgments.jsonl keep what was done and a third run resumes.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from nbtools.prepare import (
    EndpointError, OpenAICompatibleBackend, OpenAICompatibleJudge, PrepareConfig, SampleRequest, SampleStore, prepare,
)
from nbtools.prepare.store import JudgmentStore
from nbtools.serve import Server, serve

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "data_samples" / "shapes"
# extra request fields (--extra-body) go with every request: here transformers serve's own generation_config, which
# turns sampling on (plain transformers serve keeps the model's do_sample false; nbtools serve samples at
# temperature > 0 without it)
SAMPLE = json.dumps({"generation_config": json.dumps({"do_sample": True})})

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def model_folder():
    from nbtools.models.loading import local_model_folder

    return local_model_folder("tiny-qwen3-vl-warm")


@pytest.fixture(scope="module")
def servers(model_folder):
    """Three servers: one that lives through the module, two to stop mid-run."""
    started = []
    try:
        for _ in range(3):
            started.append(serve(model_folder, port=0))
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers[0]


@pytest.fixture(scope="module")
def in_process():
    import torch

    from nbtools.prepare import TransformersBackend

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the server has the other core
    yield TransformersBackend("tiny-qwen3-vl-warm", device="cpu")
    torch.set_num_threads(before)


def shapes_requests(n: int, k: int, temperature: float, seed: int = 0) -> list[SampleRequest]:
    rows = [json.loads(line) for line in (SHAPES / "train.jsonl").read_text().splitlines()[:n]]
    return [SampleRequest(r["messages"][:-1], [str(SHAPES / r["images"][0])], k, temperature, 1.0, 16, seed + i)
            for i, r in enumerate(rows)]


def test_prepare_to_pairs_and_the_judge_through_the_server(server, tmp_path, capsys):
    from nbtools.__main__ import main
    from nbtools.data import validate_dataset

    out = tmp_path / "prepared"
    command = ["prepare", str(SHAPES / "train.jsonl"), "--base-url", server.url, "--output-dir", str(out),
               "--max-prompts", "6", "--samples-per-prompt", "2", "--temperature", "1.0", "--max-new-tokens", "16",
               "--extra-body", SAMPLE, "--concurrency", "2", "--strategies", "reference", "ranking",
               "--validation-file", str(SHAPES / "validation.jsonl"), "--json"]
    assert main(command + ["--judge", "vocabulary", "--vocabulary", "red", "green", "blue", "yellow"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["prompts_sampled"], report["samples_generated"]) == (6, 6)
    store = SampleStore(out)
    assert len(store) == 6 and store.damaged_lines == 0
    assert all(len(json.loads(line)["answers"]) == 2 for line in (out / "samples.jsonl").read_text().splitlines())
    assert report["pairs_made"] >= 1  # the warm model mixes up red and green
    assert not validate_dataset(out / "pairs.jsonl").has_errors()

    # the judge through the same server: the tiny model answers "It is a red circle.", never a number
    assert main(command + ["--judge-url", server.url]) == 0
    judged = json.loads(capsys.readouterr().out)
    assert (judged["samples_generated"], judged["samples_reused"]) == (0, 6)  # nothing sampled again
    assert judged["judge_calls"] == {"judged": 6, "reused": 0} and judged["judge_failures"] == 12
    assert judged["pairs_made"] == 0 and judged["strategies"]["reference"]["dropped"] == {"not_judged": 6}
    assert judged["judge"].startswith("OpenAICompatibleJudge(")
    assert len(JudgmentStore(out)) == 12  # 6 verdicts of each judge, kept apart


def test_greedy_answers_equal_the_in_process_backend_one_request_at_a_time(server, in_process):
    requests = shapes_requests(4, k=2, temperature=0.0)
    served = OpenAICompatibleBackend(server.url, concurrency=1).sample_many(requests)
    assert served == [in_process.sample(r) for r in requests]
    assert all(a[0] == a[1] and a[0] for a in served)


def test_sampled_answers_repeat_one_request_at_a_time(server):
    requests = shapes_requests(2, k=3, temperature=1.0, seed=5)
    extra = json.loads(SAMPLE)
    first = OpenAICompatibleBackend(server.url, concurrency=1, extra_body=extra)
    answers = first.sample_many(requests)
    assert first.n_honoured is False and first.requests_sent == 6  # n ignored: topped up, one answer a request
    assert OpenAICompatibleBackend(server.url, concurrency=1, extra_body=extra).sample_many(requests) == answers
    assert len({a for row in answers for a in row}) > 2  # sampled, not greedy


def test_a_video_prompt_is_answered_in_process_and_through_the_server(server, in_process, tmp_path):
    from video_files import write_clip

    from nbtools.video import VideoSettings

    clip = write_clip(tmp_path / "clip.mkv", frames=8, rate=4)
    settings = VideoSettings(fps=2.0, max_frames=16, video_max_pixels=64 * 64)
    request = SampleRequest([{"role": "user", "content": "<video>What do you see?"}], [], 2, 0.0, 1.0, 12, 0,
                            videos=[str(clip)], video=settings)
    local = in_process.sample(request)
    assert len(local) == 2 and local[0]
    backend = OpenAICompatibleBackend(server.url, concurrency=1)
    sent = []
    chat = backend.client.chat
    backend.client.chat = lambda body, *a: sent.append(body) or chat(body, *a)
    remote = backend.sample(request)
    assert len(remote) == 2 and remote[0]
    parts = sent[0]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 4 + ["text"]  # frames 0, 2, 4, 6 of the 2 s clip


def _stop_when(server: Server, path: Path, lines: int) -> threading.Thread:
    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= lines:
                server.stop()
                return
            time.sleep(0.005)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_server_stopped_mid_run_leaves_resumable_samples_and_judge_scores(servers, tmp_path):
    shared, first, second = servers
    out = tmp_path / "prepared"
    config = PrepareConfig(input_file=str(SHAPES / "train.jsonl"), output_dir=str(out), max_prompts=10,
                           samples_per_prompt=2, temperature=0.0, max_new_tokens=12, strategies=["ranking"])

    def run(server: Server):
        backend = OpenAICompatibleBackend(server.url, concurrency=1, max_retries=1, backoff=0.05, timeout=30)
        judge = OpenAICompatibleJudge(server.url, concurrency=1, max_retries=1, backoff=0.05, timeout=30)
        return prepare(config, backend=backend, judge=judge, progress=False, validate=False)

    # stopped while sampling: the prompts answered so far are stored, whole
    watcher = _stop_when(first, out / "samples.jsonl", 3)
    with pytest.raises(EndpointError, match="cannot connect|failed 2 time"):
        run(first)
    watcher.join()
    sampled = SampleStore(out)
    assert 3 <= len(sampled) < 10 and sampled.damaged_lines == 0

    # stopped while judging: the rest was sampled, the verdicts so far are stored
    watcher = _stop_when(second, out / "judgments.jsonl", 2)
    with pytest.raises(EndpointError):
        run(second)
    watcher.join()
    assert len(SampleStore(out)) == 10
    verdicts = JudgmentStore(out)
    assert 2 <= len(verdicts) < 10 and verdicts.damaged_lines == 0

    # the same model on another server (another port): nothing sampled again, only the rest judged
    done = run(shared)
    assert (done.report.samples_generated, done.report.samples_reused) == (0, 10)
    assert done.report.judge_calls == {"judged": 10 - len(verdicts), "reused": len(verdicts)}
    assert done.report.judge_failures == 20  # every reply of the tiny model, cached ones included
