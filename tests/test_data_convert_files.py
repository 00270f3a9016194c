"""``python -m nbtools convert`` and nbtools.data.convert_files: JSONL <-> Parquet, pictures kept byte for byte."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from nbtools.__main__ import main
from nbtools.atomic import leftovers
from nbtools.data.convert_files import ConvertError, to_jsonl, to_parquet
from nbtools.data.load import load_records
from nbtools.media_ref import media_source

SAMPLES = Path(__file__).resolve().parent.parent / "data_samples"
# Preference-pair files only: a benchmark's question file (e.g. shapes/colour_questions.jsonl) has no pairs.
SAMPLE_FILES = sorted(p for p in SAMPLES.glob("*/*.jsonl") if '"rejected_response"' in p.read_text().partition("\n")[0])
MEDIA = ("images", "videos", "rejected_images")


def media_bytes(ref: str) -> bytes:
    source = media_source(ref)
    return source.getvalue() if isinstance(source, io.BytesIO) else Path(source).read_bytes()


def comparable(record) -> dict:
    """A record as JSON, pictures replaced by their bytes; absent, null and empty media lists alike."""
    obj = {"prompt": record.prompt, "chosen": record.chosen, "rejected": record.rejected}
    for key in MEDIA:
        refs = getattr(record, key)
        if refs:
            obj[key] = [media_bytes(r) for r in refs]
    return obj


def test_every_sample_set_is_covered():
    assert {p.parent.name for p in SAMPLE_FILES} >= {"shapes", "showcase", "stripes_contrast", "stripes_video"}


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_round_trip_through_parquet(tmp_path, sample):
    parquet = tmp_path / "pairs.parquet"
    forward = to_parquet(sample, parquet)
    assert (forward.left_out, forward.problems) == (0, [])
    back = to_jsonl(parquet, tmp_path / "back.jsonl")
    assert back.written == forward.written == back.rows
    original = load_records(sample)
    again = load_records(tmp_path / "back.jsonl")
    assert original.problems == [] and again.problems == []
    assert [comparable(r) for r in again.records] == [comparable(r) for r in original.records]
    assert leftovers(tmp_path) == []
    if any(r.images for r in original.records):
        assert back.images_dir == str(tmp_path / "back_images")


def test_reference_keeps_paths(tmp_path):
    sample = SAMPLES / "showcase" / "mixed_media.jsonl"
    parquet = tmp_path / "ref.parquet"
    to_parquet(sample, parquet, embed=False)
    table = pq.read_table(parquet)
    assert all(cell["bytes"] is None for row in table.column("images").to_pylist() for cell in row)
    back = to_jsonl(parquet, tmp_path / "back.jsonl")
    assert back.images_dir is None and not (tmp_path / "back_images").exists()
    original, again = load_records(sample), load_records(tmp_path / "back.jsonl")
    assert [r.images + r.videos for r in again.records] == [r.images + r.videos for r in original.records]


def test_parquet_output_is_hub_shaped(tmp_path):
    out = tmp_path / "train.parquet"
    to_parquet(SAMPLES / "shapes" / "validation.jsonl", out, row_group_rows=25)
    handle = pq.ParquetFile(out)
    assert [handle.metadata.row_group(i).num_rows for i in range(handle.num_row_groups)] == [25, 25, 10]
    features = datasets.Features.from_arrow_schema(handle.schema_arrow)
    assert features["images"] == datasets.List(datasets.Image())


def rlaif_shard(path: Path, good: int = 3, bad: int = 1) -> list[bytes]:
    pictures = []
    rows = []
    for i in range(good + bad):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(buffer, "JPEG")
        pictures.append(buffer.getvalue())
        rows.append({"image": {"bytes": pictures[-1], "path": None}, "question": f"Q{i}?", "chosen": "yes",
                     "rejected": "no" if i < good else "yes"})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return pictures


def test_parquet_to_jsonl_names_pictures_by_content(tmp_path):
    pictures = rlaif_shard(tmp_path / "rlaif.parquet")
    result = to_jsonl(tmp_path / "rlaif.parquet", tmp_path / "out.jsonl", images_dir=tmp_path / "pics")
    assert (result.rows, result.written, result.left_out) == (4, 3, 1)
    lines = [json.loads(t) for t in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines[0]["messages"][0] == {"role": "user", "content": "<image>Q0?"}
    names = [line["images"][0] for line in lines]
    assert all(n.startswith("pics/") and n.endswith(".jpg") for n in names)
    assert [(tmp_path / n).read_bytes() for n in names] == pictures[:3]


def test_cli_exit_codes(tmp_path, capsys):
    rlaif_shard(tmp_path / "in.parquet")
    out = tmp_path / "out.jsonl"
    assert main(["convert", str(tmp_path / "in.parquet"), str(out)]) == 1
    captured = capsys.readouterr()
    assert "in.parquet: row 3: error: rejected: the rejected answer is identical to the chosen one" in captured.err
    assert captured.out.strip() == (f"wrote 3 of 4 rows to {out} (pictures in {tmp_path / 'out_images'}); "
                                    "1 row with errors left out")
    assert main(["convert", str(tmp_path / "in.parquet"), str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {out}: already exists (fix: choose another name, or pass "
                                               "--force to replace it)")
    assert main(["convert", str(out), str(tmp_path / "again.parquet")]) == 0
    assert main(["convert", str(out), str(tmp_path / "again.parquet"), "--force", "--reference"]) == 0
    assert main(["convert", str(out), str(tmp_path / "x.csv")]) == 2
    assert main(["convert", str(tmp_path / "in.parquet"), str(tmp_path / "m.jsonl"), "--columns",
                 "prompt=nope,chosen=chosen,rejected=rejected"]) == 2
    assert "columns mapping names 'nope', which is not a column here" in capsys.readouterr().err
    assert leftovers(tmp_path) == []


def test_missing_picture_file_leaves_the_row_out(data_dir, make_pair, tmp_path):
    data_dir.image("img.jpg")
    source = data_dir.jsonl([make_pair(), make_pair(images=["gone.jpg"])])
    result = to_parquet(source, tmp_path / "out.parquet")
    assert (result.written, result.left_out) == (1, 1)
    [problem] = result.problems
    assert (problem.line, problem.field) == (2, "images[0]") and problem.message.startswith("cannot read ")


def test_refuses_to_overwrite_and_wrong_suffix(tmp_path):
    (tmp_path / "x.parquet").write_text("keep me")
    with pytest.raises(ConvertError, match="already exists"):
        to_parquet(SAMPLES / "shapes" / "validation.jsonl", tmp_path / "x.parquet")
    assert (tmp_path / "x.parquet").read_text() == "keep me"
    with pytest.raises(ConvertError, match="must end with .jsonl"):
        to_jsonl(SAMPLES / "shapes" / "validation.jsonl", tmp_path / "x.txt")
