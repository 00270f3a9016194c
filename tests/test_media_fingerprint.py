"""The media fingerprint: validation sums a digest of (path, size, mtime) over every local media
reference of the rows without errors, so a resumed run can tell that a picture changed under it."""

from __future__ import annotations

import os
import time
from hashlib import blake2b

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nbtools.data import source, validate_dataset
from nbtools.data.fingerprint import ChangedMedia, changed_media

OLD = time.time() - 3600  # every picture's mtime, so "changed after the run started" is unambiguous


def _pictures(data_dir, n=4):
    paths = [data_dir.image(f"pics/{k}.png", size=(40 + k, 40), colour=(60 * k, 0, 0)) for k in range(n)]
    for path in paths:
        os.utime(path, (OLD, OLD))
    return paths


def _rows(make_pair, n):
    """Rows naming pictures once, twice and as rejected_images, one row with a missing picture
    (an error: not counted) and a line that is not JSON."""
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append(make_pair(prompt="<image><image>Same?", chosen=f"Yes {i}.",
                                  images=[f"pics/{i % 4}.png", f"pics/{(i + 1) % 4}.png"]))
        elif i % 3 == 1:
            rows.append(make_pair(chosen=f"Red {i}.", images=[f"pics/{i % 4}.png"],
                                  rejected_images=[f"pics/{(i + 2) % 4}.png"]))
        else:
            rows.append(make_pair(chosen=f"Red {i}.", images=[f"pics/{i % 4}.png"]))
    rows[5] = make_pair(chosen="Lost.", images=["pics/missing.png"])
    rows[8] = "not json"
    return rows


def _count_worker_runs(monkeypatch) -> list:
    runs, real = [], source._in_workers
    monkeypatch.setattr(source, "_in_workers", lambda *args: runs.append(args[1]) or real(*args))
    return runs


def _expected(data_dir, rows) -> dict:
    """The fingerprint computed here from scratch: one digest per occurrence, summed mod 2**128."""
    total = count = 0
    for row in rows:
        if isinstance(row, str) or "missing" in row["images"][0]:
            continue
        for name in row["images"] + row.get("rejected_images", []):
            path = str(data_dir.root / name)
            st = os.stat(path)
            text = f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()
            total += int.from_bytes(blake2b(text, digest_size=16).digest(), "little")
            count += 1
    return {"references": count, "files_digest": f"{total % 2**128:032x}"}


def test_same_data_gives_the_same_fingerprint_in_one_process_and_in_workers(data_dir, make_pair, monkeypatch):
    _pictures(data_dir)
    rows = _rows(make_pair, 300)
    path = data_dir.jsonl(rows)
    monkeypatch.setenv(source.WORKERS_ENV, "0")
    alone = validate_dataset(path)  # one block, one chunk
    assert alone.valid == 298
    assert alone.media_fingerprint == _expected(data_dir, rows)
    assert alone.media_fingerprint["references"] == 100 * 2 + 100 * 2 + 100 - 2  # rows 5 and 8 are left out

    monkeypatch.setattr(source, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(source.load, "BLOCK_BYTES", 2048)  # many chunks, each with its own first inspections
    monkeypatch.setattr(source, "MIN_BLOCK_BYTES", 2048)
    runs = _count_worker_runs(monkeypatch)
    assert validate_dataset(path).media_fingerprint == alone.media_fingerprint
    monkeypatch.setenv(source.WORKERS_ENV, "2")  # worker processes, each with its own cache of inspected files
    assert validate_dataset(path).media_fingerprint == alone.media_fingerprint
    assert runs == [2]


def test_replacing_or_touching_a_picture_changes_it_and_an_unrelated_file_does_not(data_dir, make_pair):
    pictures = _pictures(data_dir)
    path = data_dir.jsonl(_rows(make_pair, 30))
    before = validate_dataset(path)
    started = time.time()  # the run's start: after setting the old mtimes, which set every ctime to now
    time.sleep(0.05)  # file times come from a coarse clock (up to a tick behind time.time())

    data_dir.image("pics/unused.png", size=(50, 50))
    (data_dir.root / "notes.txt").write_text("not data")
    assert validate_dataset(path).media_fingerprint == before.media_fingerprint
    assert changed_media(before.records, started) == []

    pictures[2].write_bytes(data_dir.image("other.png", size=(90, 70), colour="blue").read_bytes())
    modified = validate_dataset(path)
    assert modified.media_fingerprint["files_digest"] != before.media_fingerprint["files_digest"]
    assert modified.media_fingerprint["references"] == before.media_fingerprint["references"]
    [changed] = changed_media(before.records, started)
    assert changed.path == str(pictures[2]) and changed.how == "modified" and changed.at > started

    os.utime(pictures[2], (OLD, OLD))  # new content (another size) under the old mtime: cp -p, mv
    replaced = validate_dataset(path).media_fingerprint
    assert replaced["files_digest"] not in (before.media_fingerprint["files_digest"],
                                            modified.media_fingerprint["files_digest"])
    assert changed_media(before.records, started) == [ChangedMedia(str(pictures[2]), "replaced",
                                                                   os.stat(pictures[2]).st_ctime)]

    mtime_ns = os.stat(pictures[0]).st_mtime_ns
    os.utime(pictures[0], ns=(mtime_ns, mtime_ns + 1))  # touched: same bytes, mtime 1 ns later
    assert validate_dataset(path).media_fingerprint["files_digest"] != replaced["files_digest"]

    pictures[1].unlink()
    assert changed_media(before.records, started, limit=1) == [ChangedMedia(str(pictures[1]), "missing", None)]


def test_parquet_paths_count_and_embedded_pictures_do_not(tmp_path, data_dir, make_pair, monkeypatch):
    pictures = _pictures(data_dir)
    rows = [make_pair(chosen=f"Red {i}.", images=[f"pics/{i % 4}.png"]) for i in range(120)]
    for k in range(2):
        pq.write_table(pa.Table.from_pylist(rows[k * 60:(k + 1) * 60]), tmp_path / f"train-0000{k}-of-00002.parquet",
                       row_group_size=20)
    shards = str(tmp_path / "train-*.parquet")
    alone = validate_dataset(shards, workers=0)
    assert alone.valid == 120 and alone.media_fingerprint["references"] == 120
    monkeypatch.setattr(source, "PARALLEL_MIN_ROWS", 0)
    runs = _count_worker_runs(monkeypatch)
    together = validate_dataset(shards, workers=2)  # one part per shard, checked in worker processes
    assert together.media_fingerprint == alone.media_fingerprint and runs == [2]

    os.utime(pictures[3], (OLD + 1, OLD + 1))
    assert validate_dataset(shards, workers=0).media_fingerprint != alone.media_fingerprint

    embedded = [{"image": {"bytes": p.read_bytes(), "path": None}, "question": f"What is {i}?",
                 "chosen": f"It is {i}.", "rejected": "No."} for i, p in enumerate(pictures)]
    pq.write_table(pa.Table.from_pylist(embedded), tmp_path / "embedded.parquet")
    report = validate_dataset(tmp_path / "embedded.parquet")
    assert report.valid == 4 and report.media_fingerprint == {"references": 0, "files_digest": "0" * 32}
    assert changed_media(report.records, 0.0) == []  # embedded pictures are not files


@pytest.mark.parametrize("split", [0.0, 0.25])
def test_prepared_data_records_the_fingerprint_of_the_pairs_it_trains_on(data_dir, make_pair, monkeypatch, split):
    import nbtools.data
    from nbtools.config import RunConfig
    from nbtools.train.dataset import prepare_data

    real = nbtools.data.validate_dataset  # validate by family geometry: the processor is not what is tested here
    monkeypatch.setattr(nbtools.data, "validate_dataset", lambda path, **kw: real(path, **{**kw, "model": None}))
    _pictures(data_dir)
    clean = [row for row in _rows(make_pair, 30) if not isinstance(row, str) and "missing" not in row["images"][0]]
    too_long = make_pair(chosen="word " * 400, images=["pics/3.png"])  # dropped, so not in the fingerprint
    config = RunConfig(model="tiny-qwen3-vl", train_file=str(data_dir.jsonl(clean + [too_long])),
                       validation_split=split, max_context_length=256, too_long="drop",
                       validation_file=None if split else str(data_dir.jsonl(clean[:4], name="val.jsonl")))
    data = prepare_data(config, "qwen3_vl").to_dict()
    assert data["train"]["dropped_too_long"] == 1
    assert data["train"]["media_fingerprint"] == _expected(data_dir, clean)
    held_out = clean if split else clean[:4]  # a split holds out part of the same file: that file's fingerprint
    assert data["validation"]["media_fingerprint"] == _expected(data_dir, held_out)
