"""Property-based fuzzing of the loader and validator (hypothesis): any bytes, any JSON-ish
line and any media path give a report, never an exception; valid lines are never rejected;
``--json`` output is always strict UTF-8 JSON.

Repeatable (``derandomize=True``, no example database) and bounded: ``NBTOOLS_FUZZ_EXAMPLES``
(default 200) examples per property. ``benchmarks/fuzz_validate.py`` runs the same properties
much longer. Fuzzed URLs only name ``127.0.0.1`` or ``.invalid`` hosts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtools.__main__ import main
from nbtools.data import load_records, media, validate_dataset
from nbtools.problems import printable

EXAMPLES = int(os.environ.get("NBTOOLS_FUZZ_EXAMPLES", "200"))
DERANDOMIZE = os.environ.get("NBTOOLS_FUZZ_SEED") is None
FUZZ = settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def good_line(i: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"What colour is shape {i}?"},
                                    {"role": "assistant", "content": f"Red number {i}."}],
                       "rejected_response": f"Blue number {i}."})


GOOD = [good_line(i) for i in range(4)]
JSONISH = st.sampled_from(list('{}[]",:\\ ') + ["true", "null", "NaN", "-Infinity", "1e999", "9" * 5000,
                                                "\\ud800", "\\u0000", '"messages"', '"role"', "<image>", "<video>",
                                                "\x00", "\ufeff", "é", "\ud800", "[" * 1200, '{"a":' * 1200])


@st.composite
def mutated_lines(draw) -> str:
    """A valid line with a few edits: cut, inserted JSON-ish tokens, duplicated slices."""
    text = draw(st.sampled_from(GOOD + [GOOD[0].replace('"rejected_response"', '"images": [], "rejected_response"')]))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["cut", "insert", "duplicate", "truncate"]))
        if kind == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 12)):]
        elif kind == "insert":
            text = text[:at] + draw(JSONISH) + text[at:]
        elif kind == "duplicate":
            text = text[:at] + text[max(0, at - 20):at] + text[at:]
        else:
            text = text[:at]
    return text


def write(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def json_cli(path: str, *args: str) -> tuple[int, dict]:
    """``validate --json`` in-process, into a strict UTF-8 stream (as a pipe would be)."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(io.StringIO()):
        code = main(["validate", path, "--json", *args])
        stream.flush()
    return code, json.loads(raw.getvalue().decode("utf-8"))


def assert_sound(report) -> None:
    assert 0 <= report.valid <= report.rows
    assert all(p.fix for p in report.problems if p.severity == "error")
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")  # strict: no surrogates left


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        yield name


@FUZZ
@given(data=st.binary(max_size=400), name=st.sampled_from(["d.jsonl", "d.json", "d.txt"]))
def test_any_bytes_give_a_report(folder, data, name):
    path = write(folder, name, data)
    assert_sound(validate_dataset(path))


@FUZZ
@given(lines=st.lists(mutated_lines(), min_size=1, max_size=4), order=st.randoms(use_true_random=False))
def test_mutated_lines_never_cost_a_valid_line(folder, lines, order):
    rows = [(True, g) for g in GOOD] + [(False, m) for m in lines]
    order.shuffle(rows)
    text = "\n".join(line for _, line in rows) + "\n"
    path = write(folder, "m.jsonl", text.encode("utf-8", "surrogatepass"))
    report = validate_dataset(path)
    assert_sound(report)
    valid_lines = {r.line for r in report.valid_records}
    for line_no, (good, _) in enumerate(rows, start=1):
        if good:
            assert line_no in valid_lines, [p.format() for p in report.problems if p.line == line_no]


ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)  # lone surrogates included


@settings(FUZZ, max_examples=min(EXAMPLES, 100))
@given(text=ANY_TEXT, where=st.sampled_from(["prompt", "chosen", "rejected"]))
def test_any_text_in_a_pair_is_kept_or_an_error_of_its_row(folder, text, where):
    """Text is kept exactly when it is valid Unicode; else its row has the error, and the next row stays."""
    row = json.loads(good_line(7))
    if where == "rejected":
        row["rejected_response"] += text
    else:
        row["messages"][0 if where == "prompt" else 1]["content"] += text
    path = write(folder, "t.jsonl", (json.dumps(row) + "\n" + good_line(8) + "\n").encode("utf-8"))
    report = validate_dataset(path)
    assert_sound(report)
    try:
        text.encode("utf-8")
        unicode = True
    except UnicodeEncodeError:
        unicode = False
    flagged = [p for p in report.problems if p.line == 1 and "not valid Unicode" in p.message]
    assert bool(flagged) != unicode
    valid = {r.line for r in report.valid_records}
    assert 2 in valid and (1 in valid or not unicode or "<" in text)  # "<" may write a media tag


HOSTS = st.sampled_from(["127.0.0.1", "127.0.0.1:9", "media.invalid", "x.invalid:21"])
SCHEMES = st.sampled_from(["http", "https", "s3", "gs", "ftp", "sftp", "hf", "memory", "github", "reference", "dir",
                           "zip", "tar", "file", "data", "blockcache", "webdav", "gopher"])
PATH_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)


@st.composite
def media_paths(draw) -> str:
    kind = draw(st.sampled_from(["url", "local", "text"]))
    tail = draw(PATH_TEXT)
    if kind == "url":
        return f"{draw(SCHEMES)}://{draw(HOSTS)}/{tail}.png"
    if kind == "local":
        return draw(st.sampled_from(["", "../", "~/", "/", "./sub/", "img.jpg/"])) + tail + ".jpg"
    return tail


@FUZZ
@given(paths=st.lists(media_paths(), min_size=1, max_size=3), video=st.booleans(), root=st.booleans())
def test_any_media_path_gives_a_report_and_strict_json(folder, paths, video, root):
    old, media.REMOTE_TIMEOUT_S = getattr(media, "REMOTE_TIMEOUT_S", None), 0.5  # DNS may be slow here
    try:
        key, tag = ("videos", "<video>") if video else ("images", "<image>")
        row = {"messages": [{"role": "user", "content": tag * len(paths) + "What is it?"},
                            {"role": "assistant", "content": "A shape."}],
               key: paths, "rejected_response": "Nothing."}
        good = good_line(9)
        data = (json.dumps(row) + "\n" + good + "\n").encode("utf-8")
        path = write(folder, "p.jsonl", data)
        report = validate_dataset(path, root=folder if root else None)
        assert_sound(report)
        assert 2 in {r.line for r in report.valid_records}
        code, printed = json_cli(path, *(["--root", folder] if root else []))
        assert code in (0, 1) and printed["rows"] == 2
    finally:
        media.REMOTE_TIMEOUT_S = old


@FUZZ
@given(name=st.text(st.characters(codec=None, exclude_characters="/\x00"), min_size=1, max_size=10),
       undecodable=st.binary(min_size=0, max_size=3))
def test_any_file_name_prints_as_strict_utf8(folder, name, undecodable):
    try:
        file_name = os.fsencode(name) + undecodable.replace(b"/", b"").replace(b"\x00", b"") + b".jsonl"
    except UnicodeEncodeError:  # a lone surrogate is no file name on POSIX; nothing to print
        return
    if len(file_name) > 200:
        return
    path = os.fsdecode(os.path.join(os.fsencode(folder), file_name))
    write(folder, path, (good_line(1) + "\n{\n").encode())
    try:
        code, printed = json_cli(path)
        assert code == 1 and printed["file"] == printable(path)
        assert load_records(path).rows == 2
    finally:
        os.remove(path)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT | st.sampled_from(["user", "assistant", "system", "<image>", "text", "image"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["role", "content", "type", "text", "x"]) | ANY_TEXT.map(lambda t: t[:4]), children,
        max_size=3),
    max_leaves=8)


def _pair(trl: bool) -> dict:
    if trl:
        return {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}],
                "chosen": [{"role": "assistant", "content": "Red."}], "rejected": [{"role": "assistant",
                                                                                    "content": "Blue."}],
                "images": ["a.png"]}
    return {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Red."}],
            "rejected_response": "Blue.", "images": [], "videos": []}


@FUZZ
@given(trl=st.booleans(), where=st.lists(st.sampled_from(["messages", "prompt", "chosen", "rejected",
                                                           "rejected_response", "images", "videos",
                                                           "rejected_images", 0, 1, "role", "content"]),
                                          min_size=1, max_size=3),
       value=JSON_VALUES)
def test_any_json_value_in_any_field_gives_a_report(folder, trl, where, value):
    """Type confusion anywhere in a pair: a report with problems, and the next line still valid."""
    pair = _pair(trl)
    target = pair
    for key in where[:-1]:  # walk down as far as the structure goes, then replace
        nxt = target[key] if isinstance(target, dict) and key in target else (
            target[key] if isinstance(target, list) and isinstance(key, int) and key < len(target) else None)
        if not isinstance(nxt, (dict, list)):
            break
        target = nxt
    last = where[-1]
    if isinstance(target, dict) and isinstance(last, str):
        target[last] = value
    elif isinstance(target, list) and isinstance(last, int) and last < len(target):
        target[last] = value
    path = write(folder, "v.jsonl", (json.dumps(pair) + "\n" + good_line(7) + "\n").encode())
    report = validate_dataset(path)
    assert_sound(report)
    assert 2 in {r.line for r in report.valid_records}
