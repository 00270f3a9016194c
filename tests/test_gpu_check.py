"""The prepared GPU check on a CPU machine: its plan, its verdicts, and the whole check rehearsed on the CPU.

``gpu_check.sh --rehearse`` runs every stage's own code on the CPU with a shrunken Qwen3-VL-4B that keeps the
real vocabulary and special-token ids (benchmarks/gpu_stage.py); the module fixture runs it once and the
tests below read what it wrote. A stage that would crash on the GPU for a reason the CPU can see fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_stage  # noqa: E402

STAGES = ("install", "throughput 896x896", "estimate check", "train bf16", "train fsdp", "long pairs 8k")
FILES = {"versions.txt", "install.json", "throughput_896.json", "estimate_check.json", "train_bf16.json",
         "train_fsdp.json", "long_pairs_8k.json", "summary.md", "gpu_check.log"}


def _run(*args, timeout=120, **env):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def probe_wheel(folder: Path, requires=("numpy",), version="1.0") -> Path:
    """A small real wheel (a package of its own, with requirements) for the install stage to install."""
    name, info = "nbtools_rehearsal_probe", f"nbtools_rehearsal_probe-{version}.dist-info"
    files = {f"{name}/__init__.py": "",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: nbtools-rehearsal-probe\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires),
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """``gpu_check.sh OUT --rehearse --wheels DIR`` once: (finished process, OUT, the imports each process made)."""
    root = tmp_path_factory.mktemp("rehearsal")
    wheels = root / "wheels"
    probe_wheel(wheels)
    imports = root / "imports.txt"
    done = _run(root / "out", "--rehearse", "--wheels", wheels, timeout=900,
                **{gpu_stage.IMPORTS_ENV: str(imports)})
    return done, root / "out", imports


# --- the plan ------------------------------------------------------------------------------------------

def test_dry_run_plans_every_stage_and_writes_at_most_9_files(tmp_path):
    done = _run(tmp_path / "out", "--dry-run", "--wheels", tmp_path)
    assert done.returncode == 0, done.stderr
    for stage in STAGES:
        assert stage in done.stdout, stage
    assert "--image-size 896" in done.stdout and "--distributed fsdp" in done.stdout
    assert "gpu_long_step.py --tokens 8192" in done.stdout and "gpu_deps.py" in done.stdout
    # every file the real run writes is named inside OUT_DIR, and there are at most 9 of them
    mentioned = {name for name in FILES if name in SCRIPT.read_text()}
    assert mentioned == FILES and len(FILES) <= 9
    assert "at most 9 files" in SCRIPT.read_text()
    assert {p.name for p in (tmp_path / "out").iterdir()} <= FILES


def test_the_header_states_the_sum_of_the_stage_limits_and_it_fits_5_minutes(tmp_path):
    done = _run(tmp_path / "out", "--dry-run")
    limits = [int(limit) for limit in re.findall(r"\(limit (\d+)s\)", done.stdout)]
    assert len(limits) == len(STAGES)  # the install stage included
    header = SCRIPT.read_text()
    stated = re.search(r"stage limits add up to\s*#\s*(\d+) s", header)
    assert stated and int(stated.group(1)) == sum(limits)
    # each stage's limit is also stated next to it in the header's list of stages
    listed = [int(n) for n in re.findall(r"^#\s+\d\.\s+[\w ]+?\s+(\d+)\s{2}", header, flags=re.M)]
    assert listed == limits
    # the check, install included, is planned to fit 300 s with the ~10 s around the stages (probe, summary)
    assert "fit 300 s" in header and sum(limits) + 10 <= 300


def test_refuses_without_a_gpu_or_with_bad_arguments(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run for real")
    done = _run(tmp_path / "out")
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr
    assert _run(tmp_path / "out", "--bogus").returncode == 2
    assert _run().returncode == 2  # no output folder
    missing = _run(tmp_path / "out", "--wheels", tmp_path / "nowhere")
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


# --- verdicts on goals, on made-up figures (labelled as such: no GPU measured them) --------------------------

@pytest.fixture
def on_the_gpu(monkeypatch):
    """Judge as the GPU check does (not the rehearsal)."""
    monkeypatch.delenv(gpu_stage.REHEARSE_ENV, raising=False)


def made_up_throughput(speed_nbtools=6.4, precompute=0.05, memory=2.0, diff=0.03):
    return {"TRL DPOTrainer": {"pairs_per_s": 2.0, "memory_above_weights_gib": 4.0},
            "nbtools ref/step": {"pairs_per_s": 4.0, "memory_above_weights_gib": 2.5, "logp_max_abs_diff": 0.02,
                                 "logp_max_abs_value": 450.0},
            "nbtools": {"pairs_per_s": speed_nbtools, "memory_above_weights_gib": memory, "logp_max_abs_diff": diff,
                        "logp_max_abs_value": 450.0, "precompute_s_per_pair": precompute}}


def test_throughput_goals_amortise_the_precompute_and_a_missed_goal_fails(on_the_gpu):
    from train_throughput import throughput_verdicts

    verdicts = throughput_verdicts(made_up_throughput(), "bf16")
    speed = verdicts[0]
    # 6.4 pairs/s and 0.05 s/pair of precompute over one epoch: 1 / (1/6.4 + 0.05) = 4.85 pairs/s, 2.42x TRL
    assert speed["figure"] == pytest.approx(1 / (1 / 6.4 + 0.05) / 2.0) and speed["met"] is False
    assert verdicts[1]["figure"] == pytest.approx(3.2) and verdicts[1]["met"] is None  # precompute not counted
    assert verdicts[3]["figure"] == pytest.approx(0.5) and verdicts[3]["met"] is True  # memory 2.0 / 4.0
    assert verdicts[4]["met"] is True  # 0.03 <= 2^-8 * 450
    assert gpu_stage.exit_code(verdicts) == 1
    fast = throughput_verdicts(made_up_throughput(speed_nbtools=9.0, precompute=0.01), "bf16")
    assert gpu_stage.exit_code(fast) == 0
    wrong = throughput_verdicts(made_up_throughput(speed_nbtools=9.0, precompute=0.01, diff=5.0), "bf16")
    assert [v["met"] for v in wrong][4] is False and gpu_stage.exit_code(wrong) == 1
    failed_side = throughput_verdicts({"TRL DPOTrainer": {"error": "OutOfMemoryError"}, **{
        k: v for k, v in made_up_throughput().items() if k != "TRL DPOTrainer"}}, "bf16")
    assert failed_side[0]["met"] is False and "no figure" in failed_side[0]["note"]


def test_training_goals_need_falling_losses_and_the_long_stage_has_goals(on_the_gpu):
    from gpu_long_step import long_verdicts
    from gpu_train_run import run_verdicts

    def run(losses):
        return {"status": "finished", "packing_on": True, "losses": losses, "peak_memory_gib": 30.0,
                "_adapter_verdict": gpu_stage.verdict("adapter reloads", "42 tensors, all equal", True)}

    assert gpu_stage.exit_code(run_verdicts(run([0.6931, 0.6931, 0.690, 0.688]))) == 0
    flat = run_verdicts(run([0.6931, 0.6931, 0.6932, 0.6931]))
    assert [v["met"] for v in flat][2] is False and gpu_stage.exit_code(flat) == 1
    assert gpu_stage.exit_code(run_verdicts(run([0.6931, float("nan"), 0.5, 0.4]))) == 1

    side = {"s_per_step": 2.0, "tokens_per_pair": 8300, "memory_above_weights_gib": 6.0, "logp_max_abs_diff": 0.5,
            "logp_max_abs_value": 24000.0}
    results = {"nbtools block mask": dict(side, s_per_step=1.5, memory_above_weights_gib=5.0),
               "nbtools sdpa": side, "TRL DPOTrainer": dict(side, s_per_step=3.0, memory_above_weights_gib=9.0)}
    from gpu_long_step import ratios

    summary = {"results": results, "ratios": ratios(results), "precision": "bf16"}
    assert gpu_stage.exit_code(long_verdicts(summary)) == 0
    results["nbtools block mask"]["memory_above_weights_gib"] = 6.5  # more than sdpa's
    summary["ratios"] = ratios(results)
    missed = [v for v in long_verdicts(summary) if v["met"] is False]
    assert [v["goal"] for v in missed] == ["block mask memory above weights <= sdpa's"]
    del results["TRL DPOTrainer"]  # the stage ran out of time before TRL's side
    summary["ratios"] = ratios(results)
    assert any(v["goal"] == "TRL DPOTrainer: completes" and v["met"] is False for v in long_verdicts(summary))


def test_summary_renders_goal_figure_and_verdict(tmp_path, on_the_gpu):
    """The summary arithmetic and the goals table, on made-up numbers."""
    from train_throughput import throughput_verdicts

    results = made_up_throughput()
    (tmp_path / "throughput_896.json").write_text(json.dumps(
        {"results": results, "verdicts": throughput_verdicts(results, "bf16")}))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_train_run.py"), "--summarise", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| 896x896 | 2.00 | 6.40 | 3.20 | 2.42 | 4.00 | 2.00 | 0.50 | 0.0300 (450) |" in done.stdout
    assert re.search(r"\| throughput 896x896 \| pairs/s vs TRL >= 3x .*\| 2\.42x \| \*\*MISSED\*\* \|", done.stdout)
    assert re.search(r"\| throughput 896x896 \| memory above weights vs TRL <= 0.6x .*\| 0\.50x \| met \|", done.stdout)
    # a stage that wrote nothing is a missed verdict too, named
    assert ("| train bf16 | the stage's figures | no train_bf16.json: the stage crashed or ran out of time"
            in done.stdout)


def test_a_failing_stage_fails_the_check_and_is_named_in_the_summary(tmp_path):
    """The script's own bookkeeping, with a stand-in Python that fails every stage (exit 1, as a missed goal)."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/bash\ncase \"$*\" in *--summarise*) exec {sys.executable} \"$@\";; esac\n"
                    "echo 'made-up failure' >&2; exit 1\n")
    fake.chmod(0o755)
    done = _run(tmp_path / "out", "--rehearse", PYTHON=str(fake))
    assert done.returncode == 1, done.stdout + done.stderr
    summary = (tmp_path / "out" / "summary.md").read_text()
    for stage in STAGES:
        assert re.search(rf"\| {stage}[^|]* \| FAILED \(exit 1: a goal missed, or a crash: see the goals below\) \|",
                         summary), stage
    assert summary.count("**MISSED**") == len(STAGES)
    assert "made-up failure" in (tmp_path / "out" / "gpu_check.log").read_text()


# --- the rehearsal's model and install check ------------------------------------------------------------------

def test_the_shrunken_4b_keeps_the_real_vocabulary_and_token_ids(monkeypatch):
    """So that a stage which forgets to re-point the ids to the tiny processor's fails on the CPU too."""
    import torch

    from nbtools.models import load_processor
    from nbtools.models.reference_configs import reference_config

    monkeypatch.setenv(gpu_stage.REHEARSE_ENV, "1")
    real = reference_config("Qwen/Qwen3-VL-4B-Instruct")
    shrunk = gpu_stage.reference_4b_config()
    assert shrunk.text_config.vocab_size == real.text_config.vocab_size == 151936
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        assert getattr(shrunk, key) == getattr(real, key)
    assert shrunk.image_token_id == 151655
    for key in ("patch_size", "spatial_merge_size", "temporal_patch_size"):
        assert getattr(shrunk.vision_config, key) == getattr(real.vision_config, key)
    assert shrunk.text_config.hidden_size < real.text_config.hidden_size

    processor = load_processor("tiny-qwen3-vl", max_pixels=64 * 64)
    from PIL import Image

    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                                            "text": "Hi"}]}],
                                         tokenize=False)
    inputs = processor(text=[text], images=[Image.new("RGB", (64, 64), "red")], return_tensors="pt")
    model = gpu_stage.random_model(shrunk, "fp32", seed=0)
    with torch.no_grad(), pytest.raises(ValueError, match="[Ii]mage features and image tokens do not match"):
        model(**inputs)  # the real 4B id (151655) is not what the tiny processor writes
    gpu_stage.point_vision_tokens_at(shrunk, processor.tokenizer)
    assert shrunk.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") != 151655
    model = gpu_stage.random_model(shrunk, "fp32", seed=0)
    with torch.no_grad():
        assert model(**inputs).logits.shape[-1] == 151936


def test_install_check_lists_what_the_image_lacks(tmp_path):
    """A GPU image without pyarrow (hidden here) and with an fsspec newer than datasets accepts (a fake
    distribution first on the path): both named, with who needs them, and the stage fails."""
    fake = tmp_path / "site" / "fsspec-2099.1.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: fsspec\nVersion: 2099.1.0\n")
    out = tmp_path / "install.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_deps.py"), "--hide", "pyarrow",
                           "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO)])))
    assert done.returncode == 1, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    problems = figures["requirement_problems"]
    assert any(p.startswith("missing: pyarrow (") and "datasets needs pyarrow>=" in p for p in problems), problems
    assert any(p.startswith("version: fsspec 2099.1.0 is installed, but datasets needs fsspec<=") for p in problems)
    assert any(p.startswith("import pyarrow: ModuleNotFoundError") for p in figures["import_problems"])
    assert any(p.startswith("import datasets:") for p in figures["import_problems"])
    assert [v["met"] for v in figures["verdicts"]] == [False, False]
    assert "missing: pyarrow" in done.stderr


# --- the rehearsal ------------------------------------------------------------------------------------------

def failed_stages(out: Path) -> str:
    """The stage table of summary.md, the missed goals, and the end of each failed stage's part of the log."""
    summary = (out / "summary.md").read_text() if (out / "summary.md").is_file() else ""
    table = [line for line in summary.split("## Goals")[0].splitlines() if line.startswith("| ")]
    missed = [line for line in summary.splitlines() if "MISSED" in line]
    parts = re.split(r"^=== ", (out / "gpu_check.log").read_text(), flags=re.M)
    failed = [line.split(" | ")[0].lstrip("| ") for line in table if "FAILED" in line]
    logs = [f"--- {part.splitlines()[0][:120]}\n" + "\n".join(part.splitlines()[-25:])
            for part in parts if any(part.startswith(f"{name}: ") for name in failed)]
    return "\n".join(table + missed + logs)


def test_rehearsal_runs_every_stage_and_meets_every_goal_it_can_judge(rehearsal):
    done, out, _ = rehearsal
    assert done.returncode == 0, failed_stages(out) + "\n" + done.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == FILES
    summary = (out / "summary.md").read_text()
    assert "CPU rehearsal" in summary.splitlines()[0] and "MISSED" not in summary
    for stage in STAGES:
        assert re.search(rf"\| {stage}[^|]* \| ok \|", summary), stage
    judged = {stage: [] for stage in STAGES}
    for stage, name in gpu_stage.STAGE_FILES:
        for v in json.loads((out / name).read_text())["verdicts"]:
            judged[stage].append(v["met"])
    assert all(all(m in (True, None) for m in marks) and True in marks for marks in judged.values()), judged
    # what the CPU cannot measure is said so, not passed
    assert "pairs/s vs TRL >= 3x" in summary and "not judged: CPU rehearsal" in summary


def test_rehearsal_installs_the_wheels_beside_this_python_and_checks_it(rehearsal):
    done, out, _ = rehearsal
    log = (out / "gpu_check.log").read_text()
    assert "installing nbtools-rehearsal-probe 1.0 (found: none)" in log
    figures = json.loads((out / "install.json").read_text())
    assert figures["wheels"] == {"nbtools-rehearsal-probe": "1.0"}
    assert figures["requirement_problems"] == [] and figures["import_problems"] == []
    import importlib.util

    assert importlib.util.find_spec("nbtools_rehearsal_probe") is None  # never installed into this Python
    versions = (out / "versions.txt").read_text()
    assert "transformers 5.24.0" in versions and "nbtools revision" in versions


def test_rehearsal_stages_import_nothing_the_install_check_does_not(rehearsal):
    """Every third-party module a stage imported in the rehearsal is imported by the install stage's check too,
    so a package the GPU image lacks is named there, not found missing mid-stage."""
    _, _, imports = rehearsal
    lines = [line.split() for line in imports.read_text().splitlines()]
    first_party = {"nbtools", "gpu_stage", "gpu_deps", "train_throughput", "gpu_train_run", "gpu_long_step",
                   "estimate_check"}

    def third_party(names):
        return {n for n in names if n not in sys.stdlib_module_names and not n.startswith("_")
                and n not in first_party}

    checked = set().union(*(third_party(line[1:]) for line in lines if line[0] == "gpu_deps.py"))
    stages = {line[0] for line in lines if line[0] != "gpu_deps.py"}
    assert stages >= {"train_throughput.py", "estimate_check.py", "gpu_train_run.py", "gpu_long_step.py"}, stages
    used = set().union(*(third_party(line[1:]) for line in lines if line[0] != "gpu_deps.py"))
    assert used - checked == set(), f"add to gpu_deps.STAGE_MODULES: {sorted(used - checked)}"


def test_rehearsal_training_runs_learn_and_reload_and_fsdp_reaches_the_trainer(rehearsal):
    _, out, _ = rehearsal
    run = json.loads((out / "train_bf16.json").read_text())
    assert run["status"] == "finished" and run["packing_on"] and run["world_size"] == 1
    assert run["losses"][0] == pytest.approx(0.6931, abs=1e-4) and len(run["losses"]) == 6
    assert {v["goal"].split(":")[0]: v["met"] for v in run["verdicts"]}["adapter reloads"] is True
    fsdp = {v["goal"]: v["met"] for v in json.loads((out / "train_fsdp.json").read_text())["verdicts"]}
    assert fsdp["relaunched under torchrun, arguments passed through"] is True
    assert fsdp["the Trainer gets FSDP2 settings, rank-zero loading on (as on a GPU)"] is True
    assert fsdp["train() receives distributed: fsdp (and refuses it on the CPU)"] is True


def test_long_pairs_stage_rehearsed_on_the_cpu(rehearsal):
    """The 8k stage's own code on the CPU (the shrunken 4B, ~192 tokens per pair): TRL's step and the packed
    sdpa step through trainer.train(); the block-mask side is skipped (no FlexAttention backward on the CPU).
    Then the summary renders its table."""
    _, out, _ = rehearsal
    figures = json.loads((out / "long_pairs_8k.json").read_text())
    results = figures["results"]
    trl, sdpa = results["TRL DPOTrainer"], results["nbtools sdpa"]
    assert "skipped" in results["nbtools block mask"]
    assert figures["attention"] == {"TRL DPOTrainer": "sdpa", "nbtools sdpa": "sdpa"}
    # one packed row holds the prompt once: about the target, and fewer tokens than TRL's two rows
    assert 0.8 * figures["tokens_target"] <= sdpa["tokens_per_pair"] <= 1.3 * figures["tokens_target"]
    assert sdpa["tokens_per_pair"] < trl["tokens_per_pair"]
    assert sdpa["logp_max_abs_diff"] < 1e-3 < 10 < sdpa["logp_max_abs_value"]
    assert figures["ratios"]["time_block_vs_sdpa"] is None and figures["ratios"]["time_block_vs_trl"] is None
    summary = (out / "summary.md").read_text()
    assert "| nbtools block mask | not run: FlexAttention has no backward pass on the CPU |" in summary
    assert "| nbtools sdpa | sdpa |" in summary and "block mask / sdpa: memory above weights n/a" in summary


def test_logp_difference_reports_packed_against_two_rows():
    from train_throughput import logp_difference

    from nbtools.models import load_model_and_processor
    from test_packing import batches

    model, processor = load_model_and_processor("tiny-qwen3-vl", dtype="float32", device="cpu")
    found = logp_difference(model, processor, batches()["mixed"], "cpu")
    assert found["logp_max_abs_value"] > 10  # sums over whole answers
    assert found["logp_max_abs_diff"] < 1e-3  # fp32: the packed layout gives TRL's log-probs
