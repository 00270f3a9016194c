"""The three public preference schemas, as Parquet with embedded JPEG bytes, all the way through:
validated with every row kept, trained through 03_train.ipynb under papermill, evaluated with
``python -m nbtools evaluate RUN --data X.parquet``.

The rows are the shapes sample pairs ("What colour is the shape?") rewritten in each schema, with the
sample pictures' own bytes embedded, so the records must equal the JSONL ones picture for picture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import papermill
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nbtools.data import validate_dataset
from nbtools.media_ref import EmbeddedMedia

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "data_samples" / "shapes"
MODEL = "tiny-qwen3-vl"

pytestmark = pytest.mark.slow


def shapes_pairs(file: str, n: int) -> list[dict]:
    """The first ``n`` shapes pairs: question text, answers and the picture's bytes."""
    pairs = []
    for line in (SHAPES / file).read_text().splitlines()[:n]:
        row = json.loads(line)
        question = row["messages"][-2]["content"].replace("<image>", "")
        pairs.append({"question": question, "chosen": row["messages"][-1]["content"],
                      "rejected": row["rejected_response"], "image": (SHAPES / row["images"][0]).read_bytes(),
                      "name": row["images"][0]})
    return pairs


def in_schema(schema: str, pairs: list[dict]) -> list[dict]:
    if schema == "rlaif_v":
        return [{"ds_name": "shapes", "image": {"bytes": p["image"], "path": p["name"]}, "question": p["question"],
                 "chosen": p["chosen"], "rejected": p["rejected"], "origin_dataset": "shapes",
                 "origin_split": "train", "idx": i, "image_path": p["name"]} for i, p in enumerate(pairs)]
    if schema == "trl_conversational":
        def said(role, *blocks):
            return [{"role": role, "content": list(blocks)}]
        return [{"prompt": said("user", {"type": "image", "text": None}, {"type": "text", "text": p["question"]}),
                 "chosen": said("assistant", {"type": "text", "text": p["chosen"]}),
                 "rejected": said("assistant", {"type": "text", "text": p["rejected"]}),
                 "images": [{"bytes": p["image"], "path": p["name"]}]} for p in pairs]
    return [{"prompt": p["question"], "chosen": p["chosen"], "rejected": p["rejected"],
             "images": [{"bytes": p["image"], "path": p["name"]}]} for p in pairs]


SCHEMAS = ("rlaif_v", "trl_conversational", "trl_standard")


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub-schemas")
    files = {}
    for schema in SCHEMAS:
        for split, source, n in (("train", "train.jsonl", 24), ("validation", "validation.jsonl", 8)):
            path = folder / f"{schema}-{split}.parquet"
            pq.write_table(pa.Table.from_pylist(in_schema(schema, shapes_pairs(source, n))), path)
            files[schema, split] = path
    return files


@pytest.mark.parametrize("schema", SCHEMAS)
def test_each_schema_validates_every_row_with_the_pictures_bytes(hub_files, schema):
    report = validate_dataset(hub_files[schema, "train"], max_context_length=2048)
    assert (report.rows, report.valid, report.count("error")) == (24, 24, 0), report.problems
    jsonl = validate_dataset(SHAPES / "train.jsonl")
    for mine, theirs in zip(report.records, list(jsonl.records)[:24]):
        assert isinstance(mine.images[0], EmbeddedMedia)
        assert mine.images[0].data == Path(theirs.images[0]).read_bytes()
        assert (mine.chosen, mine.rejected, mine.prompt[-1]["content"]) == (
            theirs.chosen, theirs.rejected, theirs.prompt[-1]["content"])
    assert report.records[3].row == 3 and report.records[3].file == str(hub_files[schema, "train"])


@pytest.fixture(scope="module")
def parquet_run(hub_files, tmp_path_factory):
    """03_train.ipynb under papermill, its train_file and validation_file pointing at Parquet files."""
    project = tmp_path_factory.mktemp("hub-train")
    (project / "notebooks").mkdir()
    run_dir = project / "runs" / "parquet"
    parameters = {"config_file": "", "model": MODEL, "train_file": str(hub_files["rlaif_v", "train"]),
                  "validation_file": str(hub_files["rlaif_v", "validation"]), "output_dir": str(run_dir),
                  "max_steps": 2, "batch_size": 2, "task_display_name": "parquet"}
    out = project / "notebooks" / "03_train.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "03_train.ipynb"), str(out), parameters=parameters,
                               cwd=str(project / "notebooks"), progress_bar=False, kernel_name="python3")
    return run_dir


def test_notebook_03_trains_on_a_parquet_file(parquet_run, hub_files):
    record = json.loads((parquet_run / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["data"]["train"]["pairs"] == 24 and record["data"]["validation"]["pairs"] == 8
    steps = [json.loads(line).get("step") for line in (parquet_run / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 2
    assert (parquet_run / "adapter" / "adapter_model.safetensors").is_file()


def test_evaluate_command_takes_a_parquet_file(parquet_run, hub_files):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    data = hub_files["rlaif_v", "validation"]
    done = subprocess.run([sys.executable, "-m", "nbtools", "evaluate", str(parquet_run), "--data", str(data),
                           "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert (payload["n_pairs"], payload["data"]) == (8, str(data))


@pytest.mark.parametrize("schema", ["trl_conversational", "trl_standard"])
def test_evaluation_takes_the_trl_schemas(parquet_run, hub_files, schema):
    from nbtools.evaluate import evaluate_run

    run = _loaded(parquet_run)
    result = evaluate_run(parquet_run, str(hub_files[schema, "validation"]), run=run, progress=False, write=False)
    assert (result.payload["n_pairs"], result.payload["data"]) == (8, str(hub_files[schema, "validation"]))


_MODELS: dict = {}


def _loaded(run_dir):
    from nbtools.evaluate import load_run_model

    if run_dir not in _MODELS:
        _MODELS.clear()
        _MODELS[run_dir] = load_run_model(run_dir, device="cpu")
    return _MODELS[run_dir]


def test_train_takes_a_folder_of_shards_with_a_validation_split(hub_files, tmp_path):
    from nbtools.config import RunConfig
    from nbtools.train import train

    folder = tmp_path / "hub" / "data"
    folder.mkdir(parents=True)
    table = pq.read_table(hub_files["trl_standard", "train"])
    pq.write_table(table.slice(0, 12), folder / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(12), folder / "train-00001-of-00002.parquet")
    config = RunConfig(model=MODEL, train_file=str(tmp_path / "hub"), validation_split=0.25, max_steps=1,
                       batch_size=2, output_dir=str(tmp_path / "run"), task_display_name="shards")
    result = train(config)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert result.status == "finished"
    assert (record["data"]["train"]["pairs"], record["data"]["validation"]["pairs"]) == (18, 6)
    assert len(record["data"]["validation"]["lines"]) == 6  # evaluation reads the same held-out rows back
    assert record["provenance"]["data_files"]["train_file"]["sha256"]  # a digest of the shards' listing
