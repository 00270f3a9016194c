"""A real DPO run on the tiny model: what it learns, what it leaves in the run folder."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from nbtools.config import RunConfig
from nbtools.train import DataError, read_run, train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "data_samples" / "shapes"


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_first_step_is_ln2_with_zero_rewards(shapes_config, small_shapes, tmp_path):
    # A fresh LoRA adapter (B = 0) makes policy == reference: the DPO loss is ln 2, rewards and margins 0.
    config = shapes_config(tmp_path / "dpo", train_file=str(small_shapes / "train.jsonl"),
                           validation_file=str(small_shapes / "validation.jsonl"), max_steps=1, eval_steps=1,
                           save_steps=1, logging_steps=1, loss_type=["sigmoid"], loss_weights=None)
    first = next(r for r in _rows(train(config, live=False).run_dir) if "loss" in r)
    assert first["step"] == 1
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    assert first["rewards/rejected"] == pytest.approx(0.0, abs=1e-5)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)


def test_shared_run_adds_the_sft_term_to_ln2(trained_shapes):
    # The shared (demo) recipe is DPO + SFT: at step 1 the DPO part is still ln 2, so the loss is ln 2 plus
    # the chosen answers' negative log-likelihood per token, which is positive.
    first = next(r for r in _rows(trained_shapes.run_dir) if "loss" in r)
    assert first["step"] == 1 and first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert first["loss"] > math.log(2) + 1e-3


def test_images_drive_learning_reward_accuracy(trained_shapes):
    # The shapes task is balanced so that text alone scores exactly 50%: only the picture decides.
    # benchmarks/warm_spread.py measured, over 20 builds and thread counts, accuracies >= 0.933 and
    # margins >= 0.54: the thresholds keep a margin of more than 0.05 below both.
    assert trained_shapes.metrics["eval_rewards/accuracies"] >= 0.85
    assert trained_shapes.metrics["eval_rewards/margins"] > 0.25
    assert trained_shapes.diagnosis["verdict"] == "learning"


def test_blank_image_control_stays_at_chance(shapes_config, tmp_path):
    from PIL import Image

    blank_dir = tmp_path / "blank"
    for split in ("train", "validation"):
        source = SHAPES / f"{split}.jsonl"
        rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
        out = []
        for row in rows:
            name = f"{split}_{len(out)}.png"
            (blank_dir / "images").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (128, 128), (235, 235, 235)).save(blank_dir / "images" / name)
            out.append({**row, "images": [f"images/{name}"]})
        (blank_dir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    config = shapes_config(tmp_path / "run", train_file=str(blank_dir / "train.jsonl"),
                           validation_file=str(blank_dir / "validation.jsonl"))
    result = train(config, live=False)
    assert result.metrics["eval_rewards/accuracies"] <= 0.65


def test_lora_changed_base_and_vision_tower_did_not(trained_shapes):
    from peft import get_peft_model
    from transformers import set_seed

    from nbtools.models import load_model_and_processor
    from nbtools.models.lora import lora_config

    trained = trained_shapes.model
    config = RunConfig.from_yaml(trained_shapes.run_dir / "config.yaml")
    base, _ = load_model_and_processor(config.model, dtype="float32", device="cpu")
    set_seed(config.seed)  # the adapter's initial weights, exactly as training created them
    fresh = get_peft_model(base, lora_config(base, config.target_modules, config.lora_rank,
                                             config.resolved_lora_alpha, config.lora_dropout))
    before = dict(fresh.named_parameters())
    lora_changed, base_checked, vision_checked = 0, 0, 0
    for name, param in trained.named_parameters():
        start = before[name].detach()
        if "lora_" in name:
            lora_changed += not torch.equal(param.detach().cpu(), start)
        else:
            assert torch.equal(param.detach().cpu(), start), f"base weight {name} changed"
            base_checked += 1
            vision_checked += ".visual." in name
    lora_total = sum("lora_" in n for n, _ in trained.named_parameters())
    assert lora_total > 0 and lora_changed == lora_total
    assert vision_checked > 10 and base_checked > vision_checked
    assert not any(".visual." in n for n, p in trained.named_parameters() if "lora_" in n)


def test_run_folder_holds_everything(trained_shapes):
    run = trained_shapes.run_dir
    assert RunConfig.from_yaml(run / "config.yaml").output_dir == str(run)
    record = read_run(run)
    assert record["status"] == "finished"
    assert record["task_display_name"] == "shapes-test" and record["custom_model_name"] == "shapes-tiny"
    assert record["model"] == "tiny-qwen3-vl-warm"
    for key in ("started_at", "heartbeat_at", "finished_at"):
        assert record[key]
    assert record["duration_s"] > 0 and record["timings"]["train_s"] > 0
    assert record["metrics"]["eval_rewards/accuracies"] == trained_shapes.metrics["eval_rewards/accuracies"]
    assert record["best"]["step"] in (20, 40) and record["best"]["eval_loss"] > 0
    assert record["diagnosis"]["verdict"] == "learning"
    assert record["data"]["train"]["pairs"] == 240 and record["data"]["validation"]["pairs"] == 60
    provenance = record["provenance"]
    assert provenance["packages"]["trl"] and provenance["packages"]["torch"]
    import hashlib

    train_file = RunConfig.from_yaml(run / "config.yaml").train_file
    assert provenance["data_files"]["train_file"]["sha256"] == hashlib.sha256(open(train_file, "rb").read()).hexdigest()
    assert "git" in provenance

    rows = _rows(run)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps[:3] == [1, 5, 10] and steps[-1] == 40
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [20, 40]  # one row per evaluation: the closing one scored step 40's or the
    # best checkpoint's weights, both already a row (run.json keeps the final metrics)
    best = next(r for r in evals if r["step"] == record["best"]["step"])
    assert record["metrics"]["eval_loss"] == pytest.approx(best["eval_loss"], abs=1e-5)
    for key in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_logps/chosen", "eval_logps/rejected"):
        assert key in evals[0]
    assert all("epoch" in r for r in rows)
    assert not any(r.get("final") for r in rows)

    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-20", "checkpoint-40"]
    for ck in checkpoints:
        assert (run / "checkpoints" / ck / "adapter_model.safetensors").is_file()
        assert (run / "checkpoints" / ck / "trainer_state.json").is_file()
        assert (run / "checkpoints" / ck / "optimizer.pt").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] == 8
    from nbtools.models import load_processor

    saved = load_processor(str(run / "processor"))
    size = saved.image_processor.size
    longest = size["longest_edge"] if isinstance(size, dict) else size.longest_edge
    assert longest == 128 * 128  # the run's max_pixels travels with the processor
    assert (run / "plots" / "training.png").stat().st_size > 5000


def test_health_probe_answers_at_each_evaluation_and_the_demo_recipe_raises_no_alarm(trained_shapes):
    # The answer-length probe: the starting model's greedy answers and each evaluation's, on 4 validation prompts.
    # benchmarks/health_alarms.py measured the demo's recipe far from every threshold (strengths <= 0.27 of 1).
    from nbtools.train.health import alarm_strengths

    evals = [r for r in _rows(trained_shapes.run_dir) if "eval_loss" in r]
    assert all(r["eval_answer_tokens"] > 0 and r["eval_answer_tokens_start"] > 0 for r in evals)
    assert len({r["eval_answer_tokens_start"] for r in evals}) == 1  # measured once, at the start
    probe = read_run(trained_shapes.run_dir)["answer_probe"]
    assert probe["step"] == 40 and len(probe["samples"]) == 4
    assert all(s["prompt"] and s["start"] and s["latest"] for s in probe["samples"])
    assert trained_shapes.diagnosis["alarms"] == []
    config = RunConfig.from_yaml(trained_shapes.run_dir / "config.yaml")
    strengths = alarm_strengths(trained_shapes.history, config.beta)
    assert all(v is None or v <= 0.75 for v in strengths.values()), strengths


def test_mixed_image_counts_train_and_too_long_pairs_are_dropped(tmp_path):
    from nbtools.data import validate_dataset

    pairs = tmp_path / "showcase"
    shutil.copytree(REPO / "data_samples" / "showcase", pairs)
    limit = 160
    report = validate_dataset(pairs / "pairs.jsonl", max_pixels=64 * 64, max_context_length=limit,
                              model="tiny-qwen3-vl")
    too_long = sorted({p.line for p in report.problems if p.field in ("prompt+chosen", "prompt+rejected")})
    assert too_long, "the showcase should have pairs over the limit"
    kept_counts = {len(r.images) for r in report.records if r.line not in too_long}
    assert {0, 1, 2} <= kept_counts
    config = RunConfig(model="tiny-qwen3-vl", train_file=str(pairs / "pairs.jsonl"), validation_split=0.0,
                       output_dir=str(tmp_path / "run"), max_steps=3, batch_size=len(report.records),
                       gradient_accumulation_steps=1, learning_rate=1e-3, max_pixels=64 * 64,
                       max_context_length=limit, gradient_checkpointing=False, num_workers=0, seed=1,
                       save_steps=3, logging_steps=1, load_best_model_at_end=False)
    result = train(config, live=False)
    assert result.status == "finished"
    assert result.data["train"]["dropped_lines"] == too_long
    assert result.data["train"]["pairs"] == len(report.records) - len(too_long)
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert read_run(result.run_dir)["data"]["train"]["dropped_too_long"] == len(too_long)

    with pytest.raises(DataError) as err:
        train(config.replace(output_dir=str(tmp_path / "run2"), too_long="error"), live=False)
    message = str(err.value)
    assert f"{len(too_long)} pair(s) are longer than max_context_length={limit} (too_long: error)" in message
    assert f"pairs.jsonl:{too_long[0]}: error: prompt+" in message
    assert not (tmp_path / "run2").exists()  # data problems stop the run before a folder is made


def test_other_data_errors_stop_with_the_list(data_dir, make_pair, tmp_path):
    data_dir.image("a.png", size=(64, 64))
    path = data_dir.jsonl([make_pair(images=["a.png"]), make_pair(images=["missing.png"]), "{not json"])
    config = RunConfig(model="tiny-qwen3-vl", train_file=str(path), validation_split=0.0,
                       output_dir=str(tmp_path / "run"))
    with pytest.raises(DataError) as err:
        train(config, live=False)
    lines = sorted({p.line for p in err.value.problems})
    assert lines == [2, 3]
    assert "problem(s) must be fixed before training" in str(err.value)
    assert f"{path}:2: error: images[0]" in str(err.value)


def test_existing_run_folder_needs_resume(trained_shapes):
    from nbtools.train import RunFolderError

    config = RunConfig.from_yaml(trained_shapes.run_dir / "config.yaml")
    step = read_run(trained_shapes.run_dir)["progress"]["step"]
    with pytest.raises(RunFolderError, match=re.escape(
            f"{trained_shapes.run_dir}: this folder holds a finished run (step {step}), and a new run never writes "
            "over it (fix: leave output_dir empty to start each run in a new folder")):
        train(config, live=False)


def test_a_refused_resume_of_the_finished_run_changes_nothing(trained_shapes, tmp_path):
    from nbtools.train import RunFolderError

    copy = tmp_path / "copy"  # a copied run folder: its config.yaml still names the original folder
    shutil.copytree(trained_shapes.run_dir, copy)
    files = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    step = read_run(copy)["progress"]["step"]
    with pytest.raises(RunFolderError, match=f"{copy}: this run already finished at step {step}; there is nothing"):
        train(copy, resume=True, live=False)
    stored = RunConfig.from_yaml(copy / "config.yaml")
    changed = stored.replace(beta=stored.beta * 2, max_steps=step + 20, output_dir=str(copy))
    with pytest.raises(RunFolderError, match=re.escape(f"changed: beta: {stored.beta!r} -> {stored.beta * 2!r} "
                                                       "(fix: undo these changes")):
        train(changed, resume=True, live=False)
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == files
    assert read_run(copy)["status"] == "finished"
