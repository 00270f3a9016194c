"""Text that is not valid Unicode (issue "Nothing lost, nothing false", item 9).

``"\\ud800"`` is a valid JSON escape but no character: Python reads it into a string holding a lone
surrogate, which the tokenizer refuses (``TypeError: TextEncodeInput must be ...``). The validator
must report it as an error at its row and field, keep every other row, and stop training before
the model is loaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbtools.__main__ import main
from nbtools.config import RunConfig
from nbtools.data import validate_dataset
from nbtools.train import DataError, train

REPO = Path(__file__).resolve().parents[1]
NOT_UNICODE = "text is not valid Unicode (lone surrogate"
FIX = "re-encode the text as UTF-8; remove or replace the character"


def messages_row(system=None, prompt="<image>What colour is the shape?", chosen="Red.", rejected="Blue."):
    head = [{"role": "system", "content": system}] if system is not None else []
    return {"messages": head + [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
            "images": ["img.jpg"], "rejected_response": rejected}


def trl_row(prompt="What colour is the shape?", chosen="Red.", rejected="Blue.", blocks=False):
    if blocks:
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "images": ["img.jpg"]}


# (the bad row, the field the error names, the character index of the surrogate)
CASES = {
    "system": (messages_row(system="Be brief.\ud800"), "messages[0].content", 9),
    "user": (messages_row(prompt="<image>What \udfff colour?"), "messages[0].content", 12),
    "chosen": (messages_row(chosen="\ud83dRed."), "messages[1].content", 0),
    "rejected_response": (messages_row(rejected="\ud800"), "rejected_response", 0),
    "trl prompt text": (trl_row(prompt="Colour\udc80?"), "prompt[0].content", 6),
    "trl prompt block": (trl_row(prompt="Colour?\ud800", blocks=True), "prompt[0].content[1].text", 7),
    "trl chosen": (trl_row(chosen="R\ud800ed."), "chosen[0].content", 1),
    "trl rejected": (trl_row(rejected="Blue.\ud800"), "rejected[0].content", 5),
}


def write_rows(data_dir, rows, name="data.jsonl"):
    """JSONL as json.dumps writes it: the surrogates become ``\\udXXX`` escapes, the file is ASCII."""
    data_dir.image("img.jpg", (64, 64))
    return data_dir.jsonl(rows, name)


def errors_at(report, line):
    return [p for p in report.problems if p.line == line and p.severity == "error"]


def test_cli_exits_1_and_names_line_and_field(data_dir, make_pair):
    path = write_rows(data_dir, [make_pair(), make_pair(rejected="\ud800"), make_pair(chosen="Yes.")])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "nbtools", "validate", str(path)], capture_output=True, cwd=REPO,
                          env=env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout.decode("utf-8")  # strict: the report itself holds no surrogate
    assert (f"{path}:2: error: rejected_response: text is not valid Unicode (lone surrogate \\ud800 at character 0)"
            f" (fix: {FIX})") in out
    assert "3 rows, 2 valid; 1 errors" in out and "Traceback" not in done.stderr.decode()

    raw = io.BytesIO()  # --json into a strict UTF-8 stream, as a pipe would be
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(io.StringIO()):
        code = main(["validate", str(path), "--json"])
        stream.flush()
    printed = json.loads(raw.getvalue().decode("utf-8"))
    assert code == 1 and printed["valid"] == 2
    [error] = [p for p in printed["problems"] if p["severity"] == "error"]
    assert (error["line"], error["field"], error["fix"]) == (2, "rejected_response", FIX)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_surrogate_in_each_text_field_is_an_error_of_its_row(data_dir, make_pair, case):
    bad, field, at = CASES[case]
    path = write_rows(data_dir, [make_pair(), bad, make_pair(chosen="Yes.")])
    report = validate_dataset(path)
    [error] = errors_at(report, 2)
    assert error.field == field and error.fix == FIX
    assert error.message.startswith(NOT_UNICODE) and error.message.endswith(f"at character {at})")
    assert [r.line for r in report.valid_records] == [1, 3]  # valid data is never dropped
    assert report.valid == 2 and [r.line for r in report.records] == [1, 3]  # the bad row reaches no later stage
    assert report.summary().encode("utf-8") and report._repr_html_().encode("utf-8")
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")


def test_a_json_list_file_reports_the_item(data_dir, make_pair):
    data_dir.image("img.jpg", (64, 64))
    path = data_dir.root / "data.json"
    path.write_text(json.dumps([make_pair(), make_pair(chosen="Red\ud800.")]), encoding="utf-8")
    report = validate_dataset(path)
    [error] = errors_at(report, 2)
    assert error.field == "messages[1].content" and error.message.startswith(NOT_UNICODE)
    assert [r.line for r in report.valid_records] == [1]


def test_exact_token_counts_never_see_the_row(data_dir, make_pair):
    """The model's tokenizer refuses the text: the row must be an error before counting, not a crash."""
    path = write_rows(data_dir, [make_pair(), make_pair(prompt="<image>Col\ud800our?"), make_pair(chosen="Yes.")])
    report = validate_dataset(path, model="tiny-qwen3-vl", max_pixels=64 * 64, max_context_length=256)
    assert errors_at(report, 2)[0].field == "messages[0].content"
    assert [r.line for r in report.valid_records] == [1, 3]
    assert not report.tokens.estimated and 2 not in report.tokens and report.tokens[1].prompt > 0


def test_train_stops_with_data_error_naming_the_row(data_dir, make_pair, tmp_path):
    rows = [make_pair(chosen=f"Red {i}.") for i in range(4)]
    rows[2] = make_pair(rejected="Blue.\ud800")
    path = write_rows(data_dir, rows)
    config = RunConfig(model="tiny-qwen3-vl", train_file=str(path), validation_split=0.0,
                       output_dir=str(tmp_path / "run"))
    with pytest.raises(DataError) as err:
        train(config, live=False)
    assert [(p.line, p.field) for p in err.value.problems] == [(3, "rejected_response")]
    assert f"{path}:3: error: rejected_response: {NOT_UNICODE} \\ud800 at character 5)" in str(err.value)
    str(err.value).encode("utf-8")
    assert not (tmp_path / "run").exists()  # stopped before a run folder (or a model) was made
