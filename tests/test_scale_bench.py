"""benchmarks/scale.py on tiny sizes (200 rows, 20 pictures): the harness must keep running as the code changes.

The full-size figures come from running the script by hand (see its docstring); here only the plumbing is
checked: data generation, one child per tree, figures and goals merged by case name into the results file.
"""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import scale  # noqa: E402

TINY = ["--scale", "0.0002", "--tree", str(REPO)]  # 1M rows -> 200, 10,000 pictures -> 20


@pytest.fixture
def bench(tmp_path):
    """Runs scale.main with tiny sizes into tmp_path; returns the results file's cases."""
    out, work = tmp_path / "scale.json", tmp_path / "work"

    def run(*cases, extra=()):
        assert scale.main([*cases, *TINY, "--work", str(work), "--out", str(out), *extra]) == 0
        return json.loads(out.read_text())["cases"]

    return run


def test_validation_cases_record_figures_and_merge_by_name(bench):
    first = bench("validate_jsonl_1m")
    entry = first["validate_jsonl_1m"]
    figures = entry["results"]["tree"]
    assert entry["rows"] == 200 and entry["images"] == 20
    assert figures["rows"] == figures["valid"] == 200 and figures["errors"] == 0
    assert 0 < figures["import_mb"] <= figures["peak_mb"] and figures["seconds"] >= 0
    assert entry["goal"] == {"seconds_max": 30.0, "peak_mb_max": 400.0} and entry["met"] is True
    assert entry["trees"]["tree"]["path"] == str(REPO) and entry["machine"]["cpu_count"] >= 1

    both = bench("validate_jsonl_10", "validate_jsonl_100k", extra=["--baseline-tree", str(REPO)])
    assert set(both) == {"validate_jsonl_1m", "validate_jsonl_10", "validate_jsonl_100k"}  # merged, not replaced
    assert "torch" not in both["validate_jsonl_10"]["results"]["tree"]["modules_after_validate"]
    relative = both["validate_jsonl_100k"]
    assert set(relative["results"]) == {"tree", "baseline"} and relative["ratio"] > 0
    assert isinstance(relative["met"], bool)


def test_parquet_is_hub_shaped_and_unreadable_formats_are_recorded_not_raised(bench, tmp_path):
    import pyarrow.parquet as pq

    entry = bench("validate_parquet_1m")["validate_parquet_1m"]
    shards = sorted((tmp_path / "work" / "parquet-200" / "data").iterdir())
    assert [p.name for p in shards] == [f"train-0000{k}-of-00004.parquet" for k in range(4)]
    table = pq.read_table(shards[0])
    assert table.schema.field("image").type.names == ["bytes", "path"] and "origin_split" in table.column_names
    pictures = [row["bytes"] for row in table.column("image").to_pylist()]
    assert len(set(pictures)) == len(pictures)  # distinct per row
    tree = entry["results"]["tree"]
    assert ("seconds" in tree) or tree["supported"] is False


def test_missing_ref_store_module_is_an_entry(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "run_child", lambda *a, **k: pytest.fail("no child for a missing module"))
    tree = tmp_path / "bare"
    (tree / "benchmarks").mkdir(parents=True)
    out = tmp_path / "ref.json"
    assert scale.main(["ref_store", "--tree", str(tree), "--scale", "0.0002", "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["cases"]["ref_store"]
    assert entry["results"]["tree"]["available"] is False and entry["met"] is None


def test_form_pair_count_case_counts_every_row_of_both_formats(bench):
    entry = bench("form_pair_count_1m", extra=["--baseline-tree", str(REPO)])["form_pair_count_1m"]
    for role in ("tree", "baseline"):
        assert {kind: figures["pairs"] for kind, figures in entry["results"][role].items()} == {
            "jsonl": 200, "parquet": 200}
    assert entry["met"] is True and set(entry["ratio"]) == {"jsonl", "parquet"}
