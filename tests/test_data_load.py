"""Loading: formats, encodings, line numbers and path resolution."""

from __future__ import annotations

import json
import os

import pytest

from nbtools.data import UnreadableFile, load_records


def test_jsonl_with_bom_and_crlf_keeps_line_numbers(tmp_path, make_pair):
    rows = [json.dumps(make_pair(images=[], prompt="Hi")), "", json.dumps(make_pair(images=[], prompt="Yo"))]
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    result = load_records(path)
    assert (result.rows, [r.line for r in result.records], result.problems) == (2, [1, 3], [])
    assert result.records[1].prompt == [{"role": "user", "content": "Yo"}]


def test_relative_paths_resolve_against_the_data_files_folder(tmp_path, make_pair, monkeypatch):
    sub = tmp_path / "set"
    sub.mkdir()
    (sub / "d.jsonl").write_text(json.dumps(make_pair(images=["pics/a.jpg"])) + "\n")
    monkeypatch.chdir(tmp_path)
    record = load_records("set/d.jsonl").records[0]
    assert record.images == [str(sub / "pics" / "a.jpg")]
    assert record.file == "set/d.jsonl"


def test_absolute_and_url_paths_are_kept(tmp_path, make_pair):
    row = make_pair(prompt="<image><image>", images=["/abs/a.jpg", "https://example.com/b.jpg"])
    (tmp_path / "d.jsonl").write_text(json.dumps(row) + "\n")
    assert load_records(tmp_path / "d.jsonl").records[0].images == ["/abs/a.jpg", "https://example.com/b.jpg"]


def test_json_list_invalid_and_not_a_list(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"messages": []},\n  {"messages": [}\n]')
    result = load_records(bad)
    assert [(p.line, p.field, p.severity) for p in result.problems] == [(3, "file", "error")]
    assert "not valid JSON" in result.problems[0].message
    obj = tmp_path / "obj.json"
    obj.write_text('{"messages": []}')
    result = load_records(obj)  # a single object in a .json file is read like a one-line JSONL
    assert [(p.line, p.field) for p in result.problems] == [(1, "messages"), (1, "rejected_response")]


def test_unreadable_file_raises(tmp_path):
    with pytest.raises(UnreadableFile, match="no such file"):
        load_records(tmp_path / "nope.jsonl")
    with pytest.raises(UnreadableFile, match="is a folder"):
        load_records(tmp_path)


def test_rows_with_answer_errors_are_records_but_not_valid(tmp_path, make_pair):
    (tmp_path / "d.jsonl").write_text(json.dumps(make_pair(images=[], prompt="Hi", chosen="x", rejected="x")) + "\n")
    result = load_records(tmp_path / "d.jsonl")
    assert len(result.records) == 1 and result.valid_records == []


def test_trl_string_answers_and_roles(tmp_path):
    row = {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
           "chosen": "Hello!", "rejected": [{"role": "user", "content": "Bye"}]}
    (tmp_path / "t.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "rejected": "Bye"}) + "\n")
    result = load_records(tmp_path / "t.jsonl")
    assert [(p.line, p.field) for p in result.problems] == [(1, "rejected[0].role")]
    assert result.records[0].line == 2 and result.records[0].chosen == "Hello!"
    assert os.path.basename(result.file) == "t.jsonl"
