"""Validation streams the data: worker processes give the same report as one process, the records live
in a memory-mapped table, and the dataset-wide rules work from 16-byte keys."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from nbtools.data import source, validate_dataset
from nbtools.data.table import RecordTable


def _rows(make_pair, n: int) -> list:
    rows = [make_pair(chosen=f"Red {i}.") for i in range(n)]
    rows[7] = "not json"
    rows[11] = make_pair(chosen="Red 3.")  # a duplicate of row 4 (line 4)
    rows[20] = make_pair(images=["missing.jpg"])
    rows[33] = make_pair(rejected="Red 33.", chosen="Red 33.")  # identical answers
    return rows


def _same_reports(a, b) -> None:
    assert (a.rows, a.valid) == (b.rows, b.valid)
    assert [p.format() for p in a.problems] == [p.format() for p in b.problems]
    assert a.stats == b.stats
    assert list(a.records) == list(b.records)


def test_worker_processes_give_the_report_of_one_process(data_dir, make_pair, monkeypatch):
    data_dir.image()
    path = data_dir.jsonl(_rows(make_pair, 600))
    monkeypatch.setattr(source, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(source.load, "BLOCK_BYTES", 4096)  # many blocks, in one process and in workers
    monkeypatch.setattr(source, "MIN_BLOCK_BYTES", 4096)
    alone = validate_dataset(path, workers=0)
    together = validate_dataset(path, workers=2)
    _same_reports(alone, together)
    assert alone.rows == 600 and alone.valid == 597
    duplicate = [p for p in together.problems if "duplicate" in p.message]
    assert [(p.line, p.message) for p in duplicate] == [(12, "duplicate pair: same prompt, images and answers "
                                                             "as line 4")]


def _jpeg(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (i % 256, 40, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_parquet_row_groups_checked_by_workers_match_one_process(tmp_path, monkeypatch):
    rows = [{"image": {"bytes": _jpeg(i), "path": None}, "question": f"What is {i}?", "chosen": f"It is {i}.",
             "rejected": "No." if i != 5 else f"It is {i}."} for i in range(300)]
    rows[9]["image"] = {"bytes": b"not a picture", "path": None}
    folder = tmp_path / "data"
    folder.mkdir()
    for k in range(3):
        pq.write_table(pa.Table.from_pylist(rows[k * 100:(k + 1) * 100]), folder / f"train-0000{k}-of-00003.parquet",
                       row_group_size=25)
    monkeypatch.setattr(source, "PARALLEL_MIN_ROWS", 0)
    alone = validate_dataset(tmp_path, workers=0)
    from nbtools.data import sources

    monkeypatch.setattr(sources.TableSource, "parts",
                        lambda self, max_rows=60, max_bytes=2**30, _parts=sources.TableSource.parts:
                        _parts(self, max_rows, max_bytes))
    together = validate_dataset(tmp_path, workers=2)
    _same_reports(alone, together)
    assert (alone.rows, alone.valid) == (300, 298)
    bad = [p for p in alone.problems if p.severity == "error"]
    assert [(p.row, p.file.endswith("train-00000-of-00003.parquet")) for p in bad] == [(5, True), (9, True)]
    assert together.records[150].row == 50 and together.records[150].line == 151


def test_the_report_holds_a_memory_mapped_table_not_a_list(data_dir, make_pair):
    data_dir.image()
    report = validate_dataset(data_dir.jsonl([make_pair(chosen=f"Red {i}.") for i in range(50)]))
    assert isinstance(report.records, RecordTable) and report.records.path.is_file()
    assert [r.chosen for r in report.records[10:13]] == ["Red 10.", "Red 11.", "Red 12."]
    assert 11 in report.tokens and report.tokens[11].chosen > 0 and len(report.tokens) == 50
    dataset = report.records.select([3, 1]).dataset()
    assert [json.loads(row["record"])[1] for row in dataset] == ["Red 3.", "Red 1."]
    path = report.records.path
    del report, dataset
    import gc

    gc.collect()
    assert not path.exists()  # the table file goes with the last table using it


def test_pairs_are_counted_without_parsing_where_the_format_allows(data_dir, make_pair, tmp_path, monkeypatch):
    """The form's step count: JSONL lines of one whole object each, or Parquet's metadata; a file the fast
    count cannot judge (a pretty-printed object) is read through and counts what the reader counts."""
    from nbtools.data.load import read_block

    def parsing(*args, **kwargs):
        raise AssertionError("parsed")

    plain = data_dir.jsonl([make_pair(chosen=f"Red {i}.") for i in range(40)] + ["", "   "], name="plain.jsonl")
    with_bom = data_dir.root / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    pretty = data_dir.jsonl([make_pair()] + json.dumps(make_pair(), indent=2).splitlines() + [make_pair()],
                            name="pretty.jsonl")
    monkeypatch.setattr(source, "read_block", parsing)
    assert source.open_data(plain).count_pairs() == 40
    assert source.open_data(with_bom).count_pairs() == 40
    with pytest.raises(AssertionError, match="parsed"):
        source.open_data(pretty).count_pairs()
    monkeypatch.setattr(source, "read_block", read_block)
    assert source.open_data(pretty).count_pairs() == 2  # the pretty-printed one is an error, as in 01

    folder = tmp_path / "shards"
    folder.mkdir()
    rows = [{"image": {"bytes": _jpeg(i), "path": None}, "question": f"What is {i}?", "chosen": "Yes.",
             "rejected": "No."} for i in range(30)]
    for k, (first, last) in enumerate([(0, 10), (10, 30)]):
        pq.write_table(pa.Table.from_pylist(rows[first:last]), folder / f"train-0000{k}-of-00002.parquet")
    from nbtools.data import sources

    monkeypatch.setattr(sources.TableSource, "iter_records", parsing)
    assert source.open_data(folder).count_pairs() == 30


@pytest.mark.parametrize("broken", [b"PAR1", b"PAR1" + b"\0" * 100])
def test_a_cut_parquet_file_is_a_finding_not_a_crash(tmp_path, broken):
    path = tmp_path / "train.parquet"
    path.write_bytes(broken)
    report = validate_dataset(path)
    assert report.rows == 0 and report.has_errors()
    assert report.problems[0].field == "file" and "Parquet" in report.problems[0].message


@pytest.mark.parametrize("model", ["tiny-qwen3-vl", "tiny-qwen2.5-vl", "tiny-qwen2-vl", "tiny-llava"])
def test_the_chat_template_rendered_per_shape_gives_every_pair_s_own_rendering(make_pair, data_dir, model):
    """Rendering once per shape of pair and filling in the text must equal rendering each pair, for every
    text a template could treat differently (markup, edge whitespace, empty answers fall back)."""
    from nbtools.data import TokenCounter
    from nbtools.data.convert import to_training_example
    from nbtools.data.load import load_records

    rows = [make_pair(), make_pair(prompt="<image>Which one?<image>", images=["a.jpg", "b.jpg"]),
            make_pair(chosen=" padded answer "), make_pair(chosen="<think>hm</think>Red."),
            make_pair(prompt="<image>{{ not jinja }}"), make_pair(chosen="Rot, nicht Blau 🙂."),
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>Colour?"},
                          {"role": "assistant", "content": "Red."}, {"role": "user", "content": "Sure?"},
                          {"role": "assistant", "content": "Yes."}], "images": ["a.jpg"],
             "rejected_response": "No."}]
    records = load_records(data_dir.jsonl(rows)).records * 2
    counter = TokenCounter.for_model(model)
    for record in records:
        example = to_training_example(record, load_images=False)
        assert counter._rendered(example) == counter._render(example)
    assert any(shape is not None for shape in counter._shapes.values())  # the fast path was taken
