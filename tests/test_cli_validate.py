"""``python -m nbtools validate``: exit codes, output format, --json schema, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbtools.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "nbtools", "validate", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)


@pytest.fixture
def clean(data_dir, make_pair):
    data_dir.image("img.jpg", (64, 64))
    return data_dir.jsonl([make_pair(), make_pair(chosen="Red it is.", rejected="Green.")])


def test_exit_0_with_only_warnings_and_1_with_strict(clean, capsys):
    assert main(["validate", str(clean)]) == 0
    out = capsys.readouterr().out
    assert f"{clean}:-: warning: dataset: only 2 valid pairs" in out  # FILE:LINE: SEVERITY: FIELD: MESSAGE
    assert out.splitlines()[-2] == f"{clean}: 2 rows, 2 valid; 0 errors, 1 warnings, 0 info"
    assert "estimate" in out.splitlines()[-1]
    assert main(["validate", str(clean), "--strict"]) == 1


def test_held_out_file_gets_no_advice_on_how_many_pairs_training_needs(clean, capsys):
    assert main(["validate", str(clean), "--held-out"]) == 0
    out = capsys.readouterr().out
    assert "valid pairs" not in out
    assert out.splitlines()[-2] == f"{clean}: 2 rows, 2 valid; 0 errors, 0 warnings, 0 info"


def test_exit_1_on_errors_with_file_line_severity_field(data_dir, make_pair, capsys):
    path = data_dir.jsonl([make_pair(images=["missing.jpg"])])
    assert main(["validate", str(path)]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{path}:1: error: images[0]: image file not found")


def test_exit_2_for_unreadable_file_and_usage_errors(tmp_path):
    result = cli(tmp_path / "absent.jsonl")
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr
    result = cli(tmp_path)
    assert result.returncode == 2 and "is a folder" in result.stderr
    result = cli(tmp_path / "x.jsonl", "--max-pixels", "lots")
    assert result.returncode == 2 and "--max-pixels" in result.stderr and "Traceback" not in result.stderr


def test_json_schema(data_dir, make_pair, capsys):
    data_dir.image("img.jpg", (64, 64))
    path = data_dir.jsonl([make_pair(), "not json", make_pair(images=["gone.jpg"])])
    assert main(["validate", str(path), "--json", "--max-context-length", "4096", "--max-pixels", "50000"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"file", "rows", "valid", "problems", "repeated", "stats"}
    assert (report["file"], report["rows"], report["valid"]) == (str(path), 3, 1)
    assert report["repeated"] == []  # nothing repeats on more than 5 lines here
    for problem in report["problems"]:
        assert list(problem) == ["line", "severity", "field", "message", "fix"]
        assert problem["severity"] in ("error", "warning", "info")
    assert [(p["line"], p["field"]) for p in report["problems"] if p["severity"] == "error"] == [
        (2, "line"), (3, "images[0]")]
    assert [p["line"] for p in report["problems"] if p["field"] == "dataset"] == [None]
    assert report["stats"]["rows"] == 3 and report["stats"]["max_pixels"] == 50000


def test_broken_lines_each_reported_good_lines_kept_no_traceback(data_dir, make_pair):
    data_dir.image("img.jpg", (64, 64))
    good = [make_pair(chosen=f"Red, number {i}.") for i in range(4)]
    rows = [
        good[0],
        '{"messages": [1, 2],}',  # 2 trailing comma
        '["not", "an object"]',  # 3
        good[1],  # 4
        {"messages": [{"role": "robot", "content": "x"}], "rejected_response": "y"},  # 5 bad role
        make_pair(chosen="Same.", rejected="Same."),  # 6 identical answers
        "",  # 7 blank: skipped
        make_pair(prompt="<image><image>Two?", images=["img.jpg"]),  # 8 tag count
        make_pair(chosen="Red?", images=["nowhere.png"]),  # 9 missing image
        good[2],  # 10
        {"prompt": "p"},  # 11 no messages
        '{"messages": [{"role": "user", "content": "caf\u00e9"',  # 12 cut-off line
        good[3],  # 13
    ]
    path = data_dir.jsonl(rows)
    with open(path, "ab") as handle:
        handle.write(b'{"messages": "\xff"}\n')  # 14 invalid UTF-8
    result = cli(path, "--json")
    assert "Traceback" not in result.stderr and result.returncode == 1
    report = json.loads(result.stdout)
    error_lines = sorted({p["line"] for p in report["problems"] if p["severity"] == "error"})
    assert error_lines == [2, 3, 5, 6, 8, 9, 11, 12, 14]
    assert report["rows"] == 13 and report["valid"] == 4
    text = cli(path)
    assert "Traceback" not in text.stderr
    assert all(f"{path}:{n}: error:" in text.stdout for n in error_lines)


def test_validation_file_flag_reports_leakage(data_dir, make_pair, capsys):
    data_dir.image("img.jpg", (64, 64))
    train = data_dir.jsonl([make_pair(), make_pair(chosen="Other.")], name="train.jsonl")
    val = data_dir.jsonl([make_pair(chosen="Other.")], name="val.jsonl")
    assert main(["validate", str(train), "--validation-file", str(val), "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [(p["line"], p["severity"]) for p in problems if "leakage" in p["message"]] == [(2, "warning")]


SAMPLES = REPO / "data_samples"


@pytest.mark.parametrize("name", ["shapes/train.jsonl", "shapes/validation.jsonl", "showcase/pairs.jsonl"])
def test_sample_data_has_no_errors(name, capsys):
    path = SAMPLES / name
    assert main(["validate", str(path), "--json"]) == 0, capsys.readouterr().out
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] == report["rows"] > 0


def test_unusable_model_is_a_usage_error(clean, tmp_path, capsys):
    assert main(["validate", str(clean), "--model", str(tmp_path / "no-such-model")]) == 2
    assert "cannot use model" in capsys.readouterr().err


def test_a_model_transformers_refuses_is_a_usage_error(clean, tmp_path, capsys):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # no model_type: transformers cannot tell what it is
    assert main(["validate", str(clean), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot use model {str(folder)!r}: ") and "Traceback" not in err


def test_a_bug_under_model_is_an_internal_error_not_an_unusable_model(clean, tmp_path, capsys, monkeypatch):
    """Only "cannot load that model" is exit 2; a failure after loading goes through the contract (exit 3 + log)."""
    import nbtools.errors
    import nbtools.images

    def planted(_processor):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(nbtools.errors, "errors_dir", lambda: tmp_path / "errors")
    monkeypatch.setattr(nbtools.images, "processor_geometry", planted)
    assert main(["validate", str(clean), "--model", "tiny-qwen3-vl"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("nbtools validate: internal error: RuntimeError: planted bug (details: ")
    assert "cannot use model" not in err
    (log,) = (tmp_path / "errors").iterdir()
    assert "planted bug" in log.read_text()
