"""``evaluate --data`` applies the checks training applies, and says what it left out.

Before: an over-long pair was scored silently (training would have dropped it) and a
decompression-bomb PNG ended in a traceback after the model had loaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import shapes_rows

from nbtools.__main__ import main
from nbtools.config import RunConfig
from nbtools.evaluate import EvaluationDataError, held_out_pairs

pytestmark = pytest.mark.slow





def write_video(path: Path) -> Path:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def mixed_pairs(tmp_path) -> Path:
    """Lines 1-3, 5 and 6 scorable (5 asks about a video); 4 over the run's max_context_length (256)."""
    rows = shapes_rows(4)
    long = json.loads(json.dumps(rows[0]))
    long["messages"][0]["content"] = "<image>" + "Describe every detail of the picture. " * 80 + "Which colour?"
    video = json.loads(json.dumps(rows[1]))
    video["messages"][0]["content"] = "<video>What happens?"
    video["images"] = []
    video["videos"] = [str(write_video(tmp_path / "clip.mp4"))]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:3] + [long, video, rows[3]]))
    return path


@pytest.fixture
def run_copy(eval_run_dir, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(eval_run_dir, run, ignore=shutil.ignore_patterns("export", "lab", "evaluation*"))
    return run


def test_pairs_training_would_drop_are_left_out_listed_and_printed(mixed_pairs, run_copy, eval_run_model,
                                                                   monkeypatch, capsys):
    monkeypatch.setattr("nbtools.evaluate.pipeline.load_run_model", lambda run_dir: eval_run_model)
    assert main(["evaluate", str(run_copy), "--data", str(mixed_pairs), "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    payload = json.loads((run_copy / "evaluation.json").read_text())
    assert payload["n_pairs"] == 5
    assert payload["pairs"]["lines"] == [1, 2, 3, 5, 6]  # the video pair is scored like the others
    left_out = payload["left_out"]
    assert left_out["count"] == 1 and [p["line"] for p in left_out["pairs"]] == [4]
    assert "over max_context_length=256" in left_out["pairs"][0]["reason"]
    assert "left out 1 pair(s)" in out
    assert f"{mixed_pairs}:4: too long: prompt + chosen is " in out
    assert ":5:" not in out and "videos" not in out


def test_too_long_error_in_the_run_config_stops_the_evaluation(mixed_pairs, run_copy):
    config = RunConfig.from_yaml(run_copy / "config.yaml").replace(too_long="error")
    with pytest.raises(EvaluationDataError, match=r"pairs.jsonl: 1 pair\(s\) longer than max_context_length=256, "
                                                  r"and the run says too_long: error .*\n.*pairs.jsonl:4: error: "
                                                  r"prompt\+chosen: "):
        held_out_pairs(config, data=str(mixed_pairs))


def test_a_decompression_bomb_is_one_clear_message(run_copy, tmp_path, capsys, monkeypatch):
    from PIL import Image

    def no_model(run_dir):
        raise AssertionError("the data must be refused before the model loads")

    monkeypatch.setattr("nbtools.evaluate.pipeline.load_run_model", no_model)
    Image.new("1", (14_000, 14_000)).save(tmp_path / "bomb.png")  # 196 Mpx in 24 kB
    rows = shapes_rows(2)
    rows[1]["images"] = [str(tmp_path / "bomb.png")]
    data = tmp_path / "bomb.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["evaluate", str(run_copy), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: error: images[0]: " in err and "bomb.png" in err
    assert "Traceback" not in err
    assert not (run_copy / "evaluation.json").exists()
