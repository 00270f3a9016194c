"""Reading preference data as the Hub publishes it (nbtools.data.sources): the three public schemas in every
container, bad containers and rows with exact messages, a fuzz test and a memory bound."""

from __future__ import annotations

import io
import tracemalloc

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nbtools.data.sources import TableSourceError, is_table_source, open_table_source
from nbtools.errors import UserError
from nbtools.media_ref import EmbeddedMedia


def jpeg(seed: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 91) % 256, 7)).save(buffer, "JPEG")
    return buffer.getvalue()


PICTURES = [jpeg(i) for i in range(3)]


def rlaif_rows() -> list[dict]:
    return [{"ds_name": "vqa", "image": {"bytes": PICTURES[i], "path": f"{i}.jpg"}, "question": f"What is {i}?",
             "chosen": f"It is {i}.", "rejected": "No idea.", "origin_dataset": "coco", "origin_split": "train",
             "idx": i, "image_path": f"coco/{i}.jpg"} for i in range(3)]


def trl_conversational_rows() -> list[dict]:
    def message(role, *blocks):
        return {"role": role, "content": list(blocks)}
    return [{"prompt": [message("user", {"type": "image", "text": None}, {"type": "text", "text": f"What is {i}?"})],
             "chosen": [message("assistant", {"type": "text", "text": f"It is {i}."})],
             "rejected": [message("assistant", {"type": "text", "text": "No idea."})],
             "images": [{"bytes": PICTURES[i], "path": f"{i}.jpg"}]} for i in range(3)]


def trl_standard_rows() -> list[dict]:
    return [{"prompt": f"What is {i}?", "chosen": f"It is {i}.", "rejected": "No idea.",
             "images": [{"bytes": PICTURES[i], "path": f"{i}.jpg"}]} for i in range(3)]


SCHEMAS = {
    "rlaif_v": (rlaif_rows, "RLAIF-V (question → user turn, image → images[0], placed before the question; "
                            "ds_name, origin_dataset, origin_split, idx, image_path ignored)", "image"),
    "trl_conversational": (trl_conversational_rows, 'TRL conversational (prompt/chosen/rejected message lists with '
                                                    '{"type": "image"} content blocks, images → images)', "images"),
    "trl_standard": (trl_standard_rows, "TRL standard (prompt text → user turn, chosen/rejected text, images → "
                                        "images, placed before the prompt as TRL does)", "images"),
}


def as_dataset(rows: list[dict], picture_column: str) -> datasets.Dataset:
    """A Dataset typed as the Hub types it (pictures as datasets.Image)."""
    dataset = datasets.Dataset(pa.Table.from_pylist(rows))
    feature = datasets.Image() if picture_column == "image" else datasets.List(datasets.Image())
    return dataset.cast_column(picture_column, feature)


def write_container(kind: str, rows: list[dict], picture_column: str, root) -> object:
    table = pa.Table.from_pylist(rows)
    if kind == "file":
        pq.write_table(table, root / "train.parquet")
        return str(root / "train.parquet")
    if kind == "shards":
        (root / "data").mkdir()
        pq.write_table(table.slice(0, 2), root / "data" / "train-00000-of-00002.parquet")
        pq.write_table(table.slice(2), root / "data" / "train-00001-of-00002.parquet")
        return str(root)
    if kind == "save_to_disk":
        as_dataset(rows, picture_column).save_to_disk(str(root / "saved"))
        return str(root / "saved")
    return as_dataset(rows, picture_column)


@pytest.mark.parametrize("kind", ["file", "shards", "save_to_disk", "dataset"])
@pytest.mark.parametrize("schema", list(SCHEMAS))
def test_public_schemas_in_every_container(tmp_path, schema, kind):
    make_rows, sentence, picture_column = SCHEMAS[schema]
    spec = write_container(kind, make_rows(), picture_column, tmp_path)
    assert is_table_source(spec)
    source = open_table_source(spec)
    assert source.schema == sentence
    assert source.rows == 3 and source.problems == []
    items = list(source.iter_records())
    assert [problems for _, problems in items] == [[], [], []]
    records = [record for record, _ in items]
    assert [r.line for r in records] == [1, 2, 3]
    assert [r.row for r in records] == ([0, 1, 0] if kind == "shards" else [0, 1, 2])
    for i, record in enumerate(records):
        assert record.prompt == [{"role": "user", "content": f"<image>What is {i}?"}]
        assert (record.chosen, record.rejected) == (f"It is {i}.", "No idea.")
        [picture] = record.images
        assert isinstance(picture, EmbeddedMedia) and picture.data == PICTURES[i]
    label = "train-00001-of-00002.parquet: row 0" if kind == "shards" else "row 2"
    assert label in str(records[2].images[0])
    if kind == "shards":
        assert records[2].file.endswith("train-00001-of-00002.parquet")
    note = source.disk_note
    assert note.startswith("read in place") or note.startswith("held in memory") or "memory-mapped" in note


def test_glob_of_shards_and_seed_format_with_paths(tmp_path, data_dir, make_pair):
    data_dir.image("img.jpg")
    rows = [make_pair(), make_pair(chosen="Green.")]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "train-00000.parquet")
    pq.write_table(table, tmp_path / "train-00001.parquet")
    source = open_table_source(str(tmp_path / "train-*.parquet"))
    assert source.schema == "nbtools pairs (messages, rejected_response, images as in our JSONL, pictures as paths)"
    records = [r for r, p in source.iter_records() if not p]
    assert len(records) == 4
    assert records[3].images == [str(tmp_path / "img.jpg")] and records[3].line == 4 and records[3].row == 1


def test_path_pictures_resolve_against_the_shard_folder(tmp_path, data_dir):
    data_dir.image("pics/a.jpg")
    rows = rlaif_rows()[:1]
    rows[0]["image"] = {"bytes": None, "path": "pics/a.jpg"}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    [(record, problems)] = list(open_table_source(str(tmp_path / "t.parquet")).iter_records())
    assert problems == [] and record.images == [str(tmp_path / "pics" / "a.jpg")]


def test_jsonl_is_not_a_table_source(data_dir, make_pair):
    assert not is_table_source(str(data_dir.jsonl([make_pair()])))
    assert not is_table_source(str(data_dir.jsonl([make_pair()], name="x.json")))


# --------------------------------------------------------------------------- bad input

def shard_of(rows, root, name="train.parquet"):
    """Write one shard and name it relative to ``root``, the working folder (messages then show short names)."""
    pq.write_table(pa.Table.from_pylist(rows), root / name)
    return name


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def formatted(source) -> list[str]:
    return [p.format() for _, problems in source.iter_records() for p in problems]


def test_wrong_column_types(here):
    tmp_path = here
    rows = rlaif_rows()
    for i, row in enumerate(rows):
        row["question"] = i
    problems = formatted(open_table_source(shard_of(rows, tmp_path)))
    assert problems == [f"train.parquet: row {i}: error: question: the prompt in column question is an int (the "
                        "column's type is int64), not text (fix: store the prompt as a string (or a list of chat "
                        "messages))" for i in range(3)]
    rows = trl_standard_rows()
    for row in rows:
        row["chosen"] = [1, 2]
    problems = formatted(open_table_source(shard_of(rows, tmp_path, "b.parquet")))
    assert problems[0] == ('b.parquet: row 0: error: chosen: chosen must be a list holding one assistant message '
                           '(fix: write "chosen": [{"role": "assistant", "content": "..."}])')
    assert len(problems) == 3


def test_missing_picture_struct(here):
    tmp_path = here
    rows = rlaif_rows()
    rows[1]["image"] = None
    rows[2]["image"] = {"bytes": None, "path": None}
    items = list(open_table_source(shard_of(rows, tmp_path)).iter_records())
    assert items[0][0] is not None and items[1][0] is None and items[2][0] is None
    assert [p.format() for p in items[1][1] + items[2][1]] == [
        "train.parquet: row 1: error: image: the picture in column image is missing (null), not a {bytes, path} "
        "struct or a path (fix: store the image as a {bytes, path} struct (datasets.Image) or a path string)",
        'train.parquet: row 2: error: image: the picture struct in column image has neither bytes nor a path (fix: '
        'store {"bytes": <the encoded image>, "path": <its file name>} or a path to the file)']
    rows = trl_standard_rows()
    rows[0]["images"] = [{"bytes": None, "path": None}]
    [first] = formatted(open_table_source(shard_of(rows, tmp_path, "s.parquet")))
    assert first.startswith("s.parquet: row 0: error: images[0]: the picture struct in column images has neither")


def test_problems_are_numbered_per_shard(tmp_path):
    rows = rlaif_rows()
    rows[2]["chosen"] = ""
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:2]), tmp_path / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[2:]), tmp_path / "data" / "train-00001-of-00002.parquet")
    items = list(open_table_source(str(tmp_path)).iter_records(start_line=11))
    [problem] = items[2][1]
    assert (problem.row, problem.line, problem.field) == (0, 13, "chosen")
    shard = str(tmp_path / "data" / "train-00001-of-00002.parquet")
    assert problem.file == shard
    assert problem.format().startswith(f"{shard}: row 0: error: chosen: the chosen answer (last assistant message) is "
                                       "empty")


def test_empty_shard_and_shard_cut_short(tmp_path):
    rows = rlaif_rows()
    folder = tmp_path / "data"
    folder.mkdir()
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, folder / "train-00000-of-00003.parquet")
    pq.write_table(table.slice(0, 0), folder / "train-00001-of-00003.parquet")
    whole = (folder / "train-00000-of-00003.parquet").read_bytes()
    (folder / "train-00002-of-00003.parquet").write_bytes(whole[: len(whole) // 2])
    source = open_table_source(str(folder))
    assert source.rows == 3
    records = [r for r, p in source.iter_records() if not p]
    assert len(records) == 3
    assert [p.format() for p in source.problems if p.severity == "warning"] == [
        f"{folder / 'train-00001-of-00003.parquet'}:-: warning: file: this shard holds no rows (fix: nothing to do "
        "if that is expected; otherwise download the shard again)"]
    [broken] = [p for p in source.problems if p.severity == "error"]
    assert broken.file == str(folder / "train-00002-of-00003.parquet")
    assert broken.message.startswith("not a readable Parquet file (") and broken.message.endswith(
        "); its rows are left out")


def test_single_file_cut_short_is_one_error(here):
    tmp_path = here
    path = shard_of(rlaif_rows(), tmp_path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:100])
    with pytest.raises(TableSourceError, match=r"train.parquet: nothing could be read \(.*not a readable Parquet"):
        open_table_source(path)


def test_column_mapping(here):
    tmp_path = here
    rows = [{"q": f"Q{i}?", "good": "yes", "bad": "no", "img": PICTURES[i], "sys": "Be brief."} for i in range(2)]
    path = shard_of(rows, tmp_path)
    source = open_table_source(path, {"prompt": "q", "chosen": "good", "rejected": "bad", "image": "img",
                                      "system": "sys"})
    assert source.schema == ("column mapping (q → user turn, sys → system message, img → images, placed before "
                             "the prompt, good → chosen, bad → rejected)")
    record, problems = next(source.iter_records())
    assert problems == [] and record.prompt == [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "<image>Q0?"}]
    assert record.images[0].data == PICTURES[0] and str(record.images[0]) == "train.parquet: row 0: img"
    with pytest.raises(TableSourceError) as caught:
        open_table_source(path, {"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert str(caught.value) == (f"{path}: columns mapping names 'question', which is not a column here; columns "
                                 "found: q (string), good (string), bad (string), img (binary), sys (string) "
                                 "(fix: use one of those names)")


def test_unknown_schema_lists_columns(here):
    tmp_path = here
    path = shard_of([{"text": "a", "score": 1.5}], tmp_path)
    with pytest.raises(TableSourceError) as caught:
        open_table_source(path)
    assert str(caught.value) == (
        f"{path}: cannot tell which columns hold the prompt, the answers and the pictures; columns found: text "
        '(string), score (double) (fix: pass a column mapping, e.g. columns={"prompt": "...", "chosen": "...", '
        '"rejected": "...", "image": "..."} in Python or --columns prompt=COL,chosen=COL,rejected=COL,image=COL '
        "on the command line; keys: prompt, chosen, rejected, image, images, system)")
    assert isinstance(caught.value, UserError)


def test_hub_id_offline_and_not_cached(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert is_table_source("nbtools-tests/no-such-dataset")
    with pytest.raises(TableSourceError) as caught:
        open_table_source("nbtools-tests/no-such-dataset:validation")
    message = str(caught.value)
    assert message.startswith("nbtools-tests/no-such-dataset:validation: HF_HUB_OFFLINE is set and the dataset "
                              "nbtools-tests/no-such-dataset (split validation) is not in the local cache (")
    assert "download it on a machine with network access" in message and "or unset HF_HUB_OFFLINE" in message


def test_dataset_dict_without_train(tmp_path):
    splits = datasets.DatasetDict({"test": as_dataset(rlaif_rows(), "image"), "dev": as_dataset(rlaif_rows(), "image")})
    with pytest.raises(TableSourceError, match=r"holds the splits test, dev and no 'train' split"):
        open_table_source(splits)
    splits["train"] = splits.pop("dev")
    assert open_table_source(splits).rows == 3


# --------------------------------------------------------------------------- fuzz

_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    ["", "\x00", "😀<image>", "<image><image>", " ", "\ud800x"])
_CELLS = {  # a column type -> values of that type (None allowed everywhere)
    "text": _TEXT,
    "int": st.integers(-5, 5),
    "binary": st.binary(max_size=8),
    "texts": st.lists(_TEXT, max_size=2),
    "picture": st.fixed_dictionaries({}, optional={"bytes": st.none() | st.binary(max_size=8),
                                                   "path": st.none() | _TEXT}),
    "pictures": st.lists(st.fixed_dictionaries({"bytes": st.none() | st.binary(max_size=8),
                                                "path": st.none() | _TEXT}), max_size=2),
}


def _clean(value):
    """Parquet strings are UTF-8: lone surrogates become their escapes, as a writer would have to."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


FUZZ_READ: list[int] = []  # rows that reached iter_records (the test checks the fuzzing was not vacuous)


@settings(max_examples=100, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), layout=st.sampled_from(["rlaif", "trl"]))
def test_fuzz_rows_never_raise(tmp_path, data, layout):
    names = ["question", "chosen", "rejected", "image"] if layout == "rlaif" else ["prompt", "chosen", "rejected",
                                                                                  "images"]
    kinds = {name: data.draw(st.sampled_from(sorted(_CELLS))) for name in names}
    count = data.draw(st.integers(1, 5))
    rows = [{name: _clean(data.draw(st.none() | _CELLS[kinds[name]])) for name in names} for _ in range(count)]
    path = tmp_path / f"fuzz-{layout}.parquet"
    try:
        pq.write_table(pa.Table.from_pylist(rows), path)
    except (pa.ArrowException, TypeError):  # e.g. all-empty structs: Parquet cannot store them
        return
    source = open_table_source(str(path))
    items = list(source.iter_records())
    FUZZ_READ.append(count)
    assert len(items) == count
    for record, problems in items:
        assert record is not None or problems
        for problem in problems:
            problem.format()


# --------------------------------------------------------------------------- memory

def test_iterating_does_not_hold_every_picture(tmp_path):
    rows = 20_000
    picture = jpeg(1, size=32)
    table = pa.table({"question": pa.array(["What is it?"] * rows), "chosen": pa.array(["A."] * rows),
                      "rejected": pa.array(["B."] * rows),
                      "image": pa.array([{"bytes": picture, "path": None}] * rows,
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())]))})
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=1000)
    del table
    source = open_table_source(str(path))
    total = rows * len(picture)
    tracemalloc.start()
    try:
        kept = sum(record is not None for record, _ in source.iter_records())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept == rows
    print(f"peak {peak:,} of {total:,} picture bytes")
    assert peak < total / 10, (peak, total)


def test_folder_without_shards(tmp_path):
    (tmp_path / "empty").mkdir()
    assert not is_table_source(str(tmp_path / "empty"))
    with pytest.raises(TableSourceError, match="a folder without .parquet files"):
        open_table_source(str(tmp_path / "empty"))


def test_damaged_row_group_costs_only_its_rows(tmp_path):
    rows = [{"question": f"Question {i}?" * 20, "chosen": "A." * 50, "rejected": "B.",
             "image": {"bytes": PICTURES[i % 3], "path": None}} for i in range(40)]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10)
    column = pq.ParquetFile(path).metadata.row_group(2).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + 200] = b"\xff" * 200  # the third row group's first page header is garbage
    path.write_bytes(bytes(data))
    source = open_table_source(str(path))
    items = list(source.iter_records())
    assert [r.row for r, _ in items] == list(range(20)) + list(range(30, 40))
    assert [r.line for r, _ in items][-1] == 40
    [problem] = source.problems
    assert problem.format().startswith(f"{path}:-: error: file: rows 20-29 of this shard cannot be read (")
    assert problem.message.endswith("); they are left out")


def test_fuzz_reached_the_reader():
    if FUZZ_READ:  # only meaningful when the fuzz test ran in this session (it runs first, in file order)
        assert len(FUZZ_READ) >= 10


def test_hub_id_goes_through_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(repo, split):
        calls.append((repo, split))
        return as_dataset(trl_standard_rows(), "images")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = open_table_source("trl-lib/rlaif-v:test")
    assert calls == [("trl-lib/rlaif-v", "test")]
    assert source.name == "trl-lib/rlaif-v:test" and source.rows == 3
    assert source.disk_note.startswith("load_dataset keeps an Arrow copy in the Hugging Face cache: ")
    record, problems = next(source.iter_records())
    assert problems == [] and str(record.images[0]) == "rlaif-v:test: row 0: images[0]"
