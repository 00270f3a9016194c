"""Hostile input for the loader and validator (issue 11): every class a mutation run crashed
with now gives problems (file, line, field, fix) in a report, never a traceback."""

from __future__ import annotations

import gc
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nbtools.data import load_records, validate_dataset

REPO = Path(__file__).resolve().parents[1]


def problems_at(report, line, field=None):
    return [p for p in report.problems if p.line == line and (field is None or p.field == field)]


def one_error(report, line, field=None):
    found = [p for p in problems_at(report, line, field) if p.severity == "error"]
    assert len(found) == 1, [p.format() for p in report.problems]
    return found[0]


def cli(*args, cwd=REPO):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "nbtools", "validate", *args], capture_output=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.fixture
def img(data_dir):
    return data_dir.image("img.jpg", (64, 64))


# --------------------------------------------------------------------------- JSON that crashed the parser

def test_deeply_nested_lines_are_problems_and_good_lines_stay(data_dir, img, make_pair):
    deep_list = "[" * 1000 + "]" * 1000
    deep_object = '{"a":' * 1000 + "1" + "}" * 1000
    cut_deep = "{" + '"a": [' * 1000  # the pretty-printed-object detection used to recurse on this
    path = data_dir.jsonl([make_pair(), deep_list, deep_object, cut_deep, "}", make_pair(chosen="Yes.")])
    report = validate_dataset(path)
    for line in (2, 3):
        problem = one_error(report, line, "line")
        assert "nested" in problem.message and problem.fix
    assert one_error(report, 4, "line")
    assert [r.line for r in report.valid_records] == [1, 6]


def test_integer_literal_over_4300_digits(data_dir, img, make_pair):
    row = json.dumps(make_pair())[:-1] + ', "id": ' + "7" * 5000 + "}"
    report = validate_dataset(data_dir.jsonl([row, make_pair(chosen="Yes.")]))
    problem = one_error(report, 1, "line")
    assert "digits" in problem.message and "string" in problem.fix
    assert [r.line for r in report.valid_records] == [2]


@pytest.mark.parametrize("text", ["[", "[" * 1000 + "]" * 1000, "[\n  {\"messages\": [}\n", "[1e99999999999999999999]",
                                  "[" + "1" * 5000 + "]"])
def test_broken_json_list_file_is_one_problem_and_never_negative_valid(data_dir, text):
    path = data_dir.root / "d.json"
    path.write_text(text)
    report = validate_dataset(path)
    assert report.valid == 0 and report.rows >= 0
    assert report.has_errors()
    assert all(p.fix for p in report.problems)


def test_gzip_file_named_jsonl_is_one_problem(data_dir, make_pair):
    path = data_dir.root / "train.jsonl"
    path.write_bytes(gzip.compress(("\n".join(json.dumps(make_pair()) for _ in range(50)) + "\n").encode()))
    report = validate_dataset(path)
    errors = [p for p in report.problems if p.severity == "error"]
    assert len(errors) == 1 and "gzip" in errors[0].message
    assert errors[0].fix == f"decompress it first: `zcat {path} > {data_dir.root / 'train-decompressed.jsonl'}`"
    assert report.valid == 0


def test_duplicate_keys_nan_and_infinity_are_problems(data_dir, img, make_pair):
    good = json.dumps(make_pair())
    twice = good[:-1] + ', "rejected_response": "Green."}'
    nan = good[:-1] + ', "score": NaN}'
    inf = good[:-1] + ', "score": -Infinity}'
    nested_twice = good.replace('"role": "user"', '"role": "user", "role": "system"', 1)
    report = validate_dataset(data_dir.jsonl([twice, nan, inf, nested_twice, good.replace("Red.", "Yes.")]))
    assert "rejected_response" in one_error(report, 1, "line").message
    assert "duplicate" in one_error(report, 1, "line").message
    assert "NaN" in one_error(report, 2, "line").message
    assert "Infinity" in one_error(report, 3, "line").message
    assert "role" in one_error(report, 4, "line").message
    assert [r.line for r in report.valid_records] == [5]


def test_media_tags_inside_answers_are_problems(data_dir, img, make_pair):
    rows = [make_pair(rejected="Blue <image>."), make_pair(chosen="Red <video>.", rejected="Green."),
            make_pair(chosen="Red!")]
    report = validate_dataset(data_dir.jsonl(rows))
    assert "<image>" in one_error(report, 1, "rejected_response").message
    assert "<video>" in one_error(report, 2, "messages[1].content").message
    assert problems_at(report, 3) == []


# --------------------------------------------------------------------------- media references

def test_png_listed_as_a_video_is_a_problem_without_deep(data_dir, make_pair):
    data_dir.image("still.png", (64, 64), fmt="PNG")
    row = make_pair(prompt="<video>What happens?", images=[], videos=["still.png"])
    problem = one_error(validate_dataset(data_dir.jsonl([row])), 1, "videos[0]")
    assert "PNG image" in problem.message and "video" in problem.fix


@pytest.mark.parametrize("url, words", [
    ("github://owner:repo@main/a.png", "github://"),
    ("reference://a.png", "reference://"),
    ("dir://a.png", "dir://"),
    ("zip://a.png::memory://x.zip", "zip://"),
    ("ftp://127.0.0.1:9/a.png", "cannot read"),  # discard port: connection refused at once
    ("hf://datasets/nobody/nothing/a.png", "cannot read"),  # offline
])
def test_remote_schemes_that_are_unusable_here_are_problems(data_dir, make_pair, monkeypatch, url, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [make_pair(images=[url]), make_pair(prompt="<video>?", images=[], videos=[url.replace(".png", ".mp4")])]
    report = validate_dataset(data_dir.jsonl(rows))
    for line, field in ((1, "images[0]"), (2, "videos[0]")):
        problem = one_error(report, line, field)
        assert words in problem.message and problem.fix


def test_tar_and_zip_urls_for_videos_are_problems(data_dir, make_pair):
    rows = [make_pair(prompt="<video>?", images=[], videos=["tar://clip.mp4::" + str(data_dir.root / "x.tar")])]
    assert "tar://" in one_error(validate_dataset(data_dir.jsonl(rows)), 1, "videos[0]").message


def test_remote_media_that_never_answers_times_out(data_dir, make_pair, monkeypatch):
    from nbtools.data import media

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    monkeypatch.setattr(media, "REMOTE_TIMEOUT_S", 1.0)
    url = f"ftp://127.0.0.1:{server.getsockname()[1]}/a.png"  # the server accepts and never greets
    start = time.perf_counter()
    report = validate_dataset(data_dir.jsonl([make_pair(images=[url])]))
    assert time.perf_counter() - start < 8
    assert "timed out" in one_error(report, 1, "images[0]").message
    server.close()


def test_nul_byte_and_lone_surrogate_in_media_paths(data_dir, img, make_pair):
    rows = [make_pair(images=["im\u0000g.jpg"]), make_pair(chosen="Yes.", images=["\ud800.jpg"]),
            make_pair(chosen="Sure.")]
    report = validate_dataset(data_dir.jsonl(rows), root=data_dir.root)
    report._repr_html_().encode("utf-8")  # a notebook can show it (strict UTF-8)
    assert "NUL" in one_error(report, 1, "images[0]").message
    assert one_error(report, 2, "images[0]")
    assert [r.line for r in report.valid_records] == [3]


def test_undecodable_file_name_and_surrogates_print_and_json_stays_utf8(tmp_path, make_pair):
    folder = os.fsencode(str(tmp_path))
    name = os.path.join(folder, b"bad\xff.jsonl")
    rows = [make_pair(images=["\ud800.jpg"]), make_pair(images=["\udcff-x.jpg"], chosen="Yes.")]
    with open(name, "w", encoding="utf-8") as handle:  # json.dumps escapes the surrogates: \ud800
        handle.write("\n".join(json.dumps(r) for r in rows) + "\n")
    text = cli(os.fsdecode(name))
    assert text.returncode == 1, text.stderr
    assert b"Traceback" not in text.stderr
    assert b"bad\\xff.jsonl" in text.stdout or b"bad\\udcff.jsonl" in text.stdout
    as_json = cli(os.fsdecode(name), "--json")
    assert as_json.returncode == 1 and b"Traceback" not in as_json.stderr
    report = json.loads(as_json.stdout.decode("utf-8"))  # strict UTF-8, then JSON
    assert report["valid"] == 0 and len(report["problems"]) >= 2
    assert "\\ud800" in json.dumps(report["problems"])  # shown, escaped, not dropped


# --------------------------------------------------------------------------- geometry

def test_extreme_aspect_ratio_next_to_a_normal_image_in_a_too_long_pair(data_dir, make_pair):
    data_dir.image("strip.png", (4020, 16))
    data_dir.image("big.jpg", (640, 480))
    row = make_pair(prompt="<image><image>Compare.", images=["strip.png", "big.jpg"])
    report = validate_dataset(data_dir.jsonl([row]), max_context_length=200)
    assert "aspect ratio" in one_error(report, 1, "images[0]").message
    assert "lower max_pixels to" in one_error(report, 1, "prompt+chosen").fix


# --------------------------------------------------------------------------- scale

def test_one_cut_line_costs_about_what_a_clean_file_costs(data_dir, img, make_pair):
    good = [json.dumps(make_pair(chosen=f"Red {i}.")) for i in range(3000)]
    cut = good[:]
    for at in (10, 500, 1500, 2500):
        cut[at] = good[at][:-1]  # `{` without its `}`
    clean_path = data_dir.jsonl(good, "clean.jsonl")
    cut_path = data_dir.jsonl(cut, "cut.jsonl")

    def best(path):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            result = load_records(path)
            times.append(time.perf_counter() - start)
        return min(times), result

    clean_s, _ = best(clean_path)
    cut_s, result = best(cut_path)
    assert [p.line for p in result.problems] == [11, 501, 1501, 2501]
    assert len(result.records) == 2996
    assert cut_s < 2.5 * clean_s + 0.05, (cut_s, clean_s)


def test_repeated_findings_are_summarised_in_text_and_json(data_dir, img, make_pair):
    path = data_dir.jsonl([make_pair()] * 12 + [make_pair(chosen="Yes.")])
    text = cli(str(path))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.decode().splitlines()
    shown = [ln for ln in lines if "duplicate pair" in ln and ": warning: messages:" in ln and "more" not in ln]
    assert [ln.split(":")[1] for ln in shown] == ["2", "3", "4", "5", "6"]
    summary = [ln for ln in lines if "6 more lines" in ln]
    assert len(summary) == 1 and "7-12" in summary[0]
    report = json.loads(cli(str(path), "--json").stdout)
    duplicates = [p for p in report["problems"] if "duplicate pair" in p["message"]]
    assert [p["line"] for p in duplicates] == [2, 3, 4, 5, 6]
    (repeat,) = report["repeated"]
    assert (repeat["count"], repeat["shown"], repeat["first_line"], repeat["last_line"]) == (11, 5, 2, 12)
    shown_in_notebook = validate_dataset(path)._repr_html_()
    assert shown_in_notebook.count("duplicate pair") == 6 and "6 more lines like this" in shown_in_notebook
    everything = json.loads(cli(str(path), "--json", "--all").stdout)
    assert len([p for p in everything["problems"] if "duplicate pair" in p["message"]]) == 11
    assert everything["repeated"] == []


def test_progress_is_shown_on_stderr_for_large_files(data_dir, img, make_pair, monkeypatch, capsys):
    from nbtools.data import load

    monkeypatch.setattr(load, "PROGRESS_MIN_BYTES", 1000)
    path = data_dir.jsonl([make_pair(chosen=f"Red {i}.") for i in range(200)])
    validate_dataset(path, progress=True)
    err = capsys.readouterr().err
    assert "reading" in err and "200 lines" in err
    validate_dataset(path, progress=False)
    assert capsys.readouterr().err == ""


def test_duplicate_check_keeps_hashes_but_confirms_every_match(data_dir, img, make_pair, monkeypatch):
    from nbtools.data import rules

    monkeypatch.setattr(rules, "pair_key_hash", lambda record: bytes(16))  # every pair collides
    rows = [make_pair(), make_pair(chosen="Yes."), make_pair(), make_pair(chosen="Yes.")]
    report = validate_dataset(data_dir.jsonl(rows))
    duplicates = [(p.line, p.message) for p in report.problems if "duplicate" in p.message]
    assert duplicates == [(3, "duplicate pair: same prompt, images and answers as line 1"),
                          (4, "duplicate pair: same prompt, images and answers as line 2")]
    assert gc.isenabled()  # validation pauses the cyclic collector only while it builds records


def test_duplicate_check_holds_no_record_but_the_one_it_reads():
    """The checker keeps the keys still awaiting copies, not the copies: a file of one line repeated
    850,000 times once had every copy read back at once (1.8 GB)."""
    import weakref

    from nbtools.data.rules import check_duplicates, keys_array
    from nbtools.data.records import PreferenceRecord

    class Tracked(PreferenceRecord):  # not slotted, so it can be weakly referenced
        pass

    def record(line, chosen):
        return Tracked("d.jsonl", line, [{"role": "user", "content": "<image>What colour?"}], chosen, "Blue.",
                       ["/d/a.png"])

    # lines 1-200: one pair; 201-400: a pair each; 401-600: copies of 201-400, far from their firsts
    chosen = ["Red."] * 200 + [f"Red {i}." for i in range(200)] * 2
    keys = keys_array([record(i + 1, text) for i, text in enumerate(chosen)])
    alive, most = [], 0

    def read_back(positions):  # what the record table does: one new record per position, in order
        nonlocal most
        for position in positions.tolist():
            copy = record(position + 1, chosen[position])
            alive.append(weakref.ref(copy))
            most = max(most, sum(r() is not None for r in alive))
            yield position, copy
            del copy

    problems = check_duplicates(keys, read_back)
    assert [p.line for p in problems] == [*range(2, 201), *range(401, 601)]
    assert problems[0].message == "duplicate pair: same prompt, images and answers as line 1"
    assert problems[-1].message == "duplicate pair: same prompt, images and answers as line 400"
    assert len(alive) == 600 and most <= 2, most  # the one being read, and the last one keyed
    # the copies of one pair share its message, and every finding one file-name string
    assert len({id(p.message) for p in problems[:199]}) == 1 and len({id(p.file) for p in problems}) == 1


def test_repeated_line_is_read_back_as_one_pair_per_stored_batch(data_dir, img, make_pair, monkeypatch):
    import pyarrow as pa

    from nbtools.data import rules

    keyed = []
    real = rules.pair_key
    monkeypatch.setattr(rules, "pair_key", lambda record: keyed.append(record.line) or real(record))
    report = validate_dataset(data_dir.jsonl([make_pair()] * 3000))
    duplicates = [p for p in report.problems if p.field == "messages"]
    assert [p.line for p in duplicates] == list(range(2, 3001))
    assert {p.message for p in duplicates} == {"duplicate pair: same prompt, images and answers as line 1"}
    with pa.OSFile(str(report.records.path)) as source:
        batches = sum(1 for _ in pa.ipc.open_stream(source))
    assert len(keyed) == batches < 30, (len(keyed), batches)  # not once per line


def test_output_piped_into_head_ends_without_a_traceback(data_dir):
    path = data_dir.jsonl([f"not json {i}" for i in range(3000)])  # --all: ~400 KB, more than a pipe holds
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "nbtools", "validate", str(path), "--all"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=REPO, env=env)
    assert child.stdout.readline().startswith(str(path).encode() + b":1: error: line: not valid JSON")
    child.stdout.close()  # as `| head -1` does
    stderr = child.stderr.read()
    assert child.wait(timeout=60) == 1
    assert b"Traceback" not in stderr and b"Broken pipe" not in stderr, stderr.decode(errors="replace")
