"""The exported model card is meant for the Hub: it names files (and their hashes), never a path of the machine.

The run below lives under a fake home folder whose user name appears in every path run.json and
the config record (data files, run folder, kernel command line, evaluation data, warnings); the
card built from it must carry none of them, in its text or its YAML header, while run.json keeps
them (the local record is where full paths belong).
"""

from __future__ import annotations

import json
import re
import sys

import yaml

from nbtools.config import RunConfig
from nbtools.export import write_model_card
from nbtools.public_text import public_text
from nbtools.run_folder import record as rr

USER = "zoe-private-7"


def fake_home_run(tmp_path, monkeypatch):
    home = tmp_path / "home" / USER
    data = home / "projects" / "shapes"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text('{"pair": 1}\n')
    (data / "validation.jsonl").write_text('{"pair": 2}\n')
    monkeypatch.setenv("HOME", str(home))
    # what a Jupyter kernel's command line looks like: sys.argv ends up in run.json's provenance
    monkeypatch.setattr(sys, "argv", [f"{home}/.venv/lib/python3.11/site-packages/ipykernel_launcher.py", "-f",
                                      f"{home}/.local/share/jupyter/runtime/kernel-0d1e.json"])
    run_dir = home / "projects" / "runs" / "notebooks" / "shapes-20261208-101500"
    run_dir.mkdir(parents=True)
    config = RunConfig(model=str(home / "models" / "my-vlm"), train_file=str(data / "train.jsonl"),
                       validation_file=str(data / "validation.jsonl"), output_dir=str(run_dir),
                       adapter_path=str(home / "adapters" / "start"), custom_model_name="shapes-tiny")
    config.to_yaml(run_dir / "config.yaml")
    split = {"file": str(data / "train.jsonl"), "pairs": 1, "dropped_too_long": 0, "warnings": 1,
             "warning_messages": [f"{data / 'train.jsonl'}: only 1 valid pair"]}
    record = {"task_display_name": "shapes", "status": "finished", "config": config.to_dict(),
              "data": {"train": split, "validation": {**split, "file": str(data / "validation.jsonl")}},
              "metrics": {"eval_loss": 0.5}, "best": {"step": 2, "checkpoint": "checkpoints/checkpoint-2"},
              "provenance": rr.provenance({"train_file": config.train_file,
                                           "validation_file": config.validation_file})}
    (run_dir / "run.json").write_text(json.dumps(record))
    side = {m: 0.5 for m in ("preference_accuracy", "preference_accuracy_normalized", "reward_accuracy",
                             "logprob_margin", "reward_margin", "chosen_logprob", "rejected_logprob")}
    side["ci95"] = {m: [0.4, 0.6] for m in side}
    (run_dir / "evaluation.json").write_text(json.dumps({
        "base": side, "tuned": side, "difference": {}, "n_pairs": 1, "confidence": 0.95,
        "data": str(data / "validation.jsonl"), "warnings": [f"{data / 'validation.jsonl'}: only 1 valid pair"]}))
    return home, run_dir, record


def test_the_card_names_files_and_hashes_and_no_path_of_the_machine(tmp_path, monkeypatch):
    home, run_dir, record = fake_home_run(tmp_path, monkeypatch)
    out = tmp_path / "export"
    out.mkdir()
    card = write_model_card(run_dir, out, kind="adapter").read_text()
    header = yaml.safe_load(card.split("---\n", 2)[1])
    for text in (card, json.dumps(header)):
        assert str(tmp_path) not in text and str(home) not in text
        assert USER not in text and "/home" not in text
        assert not re.search(r"(?<![\w.:/~<-])~?/[\w.-]+/", text), re.findall(r"(?<![\w.:/~<-])~?/[\w.-]+/\S*", text)
        assert "ipykernel_launcher" not in text and "kernel-0d1e" not in text
    assert header["base_model"] == "my-vlm"
    assert "| train | `train.jsonl` | 1 |" in card  # files by name ...
    digest = rr.sha256_file(home / "projects" / "shapes" / "train.jsonl")
    provenance = json.loads(card.split("## Provenance\n\n```json\n", 1)[1].split("```", 1)[0])
    assert provenance["data_files"]["train_file"] == {"file": "train.jsonl", "sha256": digest}  # ... and hashes
    assert "command" not in provenance
    assert "train_file: train.jsonl" in card and "output_dir: shapes-20261208-101500" in card
    assert 'from_pretrained("export")' in card and "python -m nbtools serve export --port 8000" in card
    assert "**Warning:** validation.jsonl: only 1 valid pair" in card
    # the local record keeps the full paths
    kept = json.loads((run_dir / "run.json").read_text())
    assert kept == record and kept["provenance"]["command"].startswith(f"{home}/.venv/")


def test_public_text_cuts_absolute_paths_and_leaves_urls_markup_and_names():
    assert public_text("python /home/zoe/k/ipykernel_launcher.py -f ~/r/kernel-1.json.") == \
        "python ipykernel_launcher.py -f kernel-1.json."
    for kept in ("http://127.0.0.1:8000/v1", "data:image/png;base64,AAAA", "</details>", "eval_logits/chosen",
                 "runs/notebooks/x", "a / b", "tuned - base"):
        assert public_text(kept) == kept
