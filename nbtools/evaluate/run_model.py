"""Open a finished run: its config, processor, and base model with the trained adapter on top.

Evaluation, the model lab and export all start here, so they see the same model: the
run's base model, the processor saved with the run's ``max_pixels`` and video settings, and the final LoRA
adapter from ``<run>/adapter``. When the run started from an SFT adapter
(``adapter_path``), that adapter is loaded as ``"ref"``: it is what DPO measured rewards
against, so it is the "base" the tuned model is compared with.
"""

from __future__ import annotations

import json
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nbtools.errors import UserError, one_line
from nbtools.models.weights import weights_problem

CONFIG_FILE = "config.yaml"
ADAPTER_DIR = "adapter"
PROCESSOR_DIR = "processor"
REFERENCE_ADAPTER = "ref"


class RunFolderError(UserError, FileNotFoundError):
    """The folder is not a usable run folder; the message says what is missing and what to do."""


@dataclass
class RunModel:
    run_dir: Path
    config: Any  # nbtools.config.RunConfig
    model: Any  # peft.PeftModel: adapter on = tuned, off (or "ref") = base
    processor: Any
    family: str


def load_run_config(run_dir):
    from nbtools.config import RunConfig

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder (fix: pass the output_dir of a training run)")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunFolderError(f"{path}: missing, so this is not a run folder "
                             "(fix: pass the folder that `python -m nbtools train` wrote)")
    return RunConfig.from_yaml(path)


def existing_run_folder(run_dir) -> Optional[Path]:
    """``run_dir`` when it is a run folder (it has its config.yaml), else None: where a command on the run
    writes an internal error's details (see nbtools.errors.details_in); never into some other folder."""
    path = Path(run_dir)
    return path if (path / CONFIG_FILE).is_file() else None


ADAPTER_CONFIG = "adapter_config.json"
# The weights peft reads, in its order of preference: the safetensors file when there is one, else the .bin.
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PROCESSOR_CONFIGS = ("processor_config.json", "preprocessor_config.json")
RUN_RECORD = "run.json"


def _json_object(path: Path) -> tuple[Optional[dict], str]:
    """``(the object, "")`` when ``path`` holds a JSON object, else ``(None, why not)``."""
    try:
        value = json.loads(path.read_bytes())
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except (ValueError, RecursionError) as exc:
        return None, f"is not valid JSON ({one_line(exc)[:120]})"
    return (value, "") if isinstance(value, dict) else (None, "is not a JSON object")


def _damaged(path: Path, problem: str, what: str, fix: str) -> RunFolderError:
    return RunFolderError(f"{path}: {problem}, so {what} (fix: {fix})")


def adapter_dir(run_dir) -> Path:
    """The run's adapter folder, checked whole before anything loads or writes: its config, its weights and
    the run's saved processor. Evaluation, the model lab and both exports start here, so a run with a missing
    or damaged file is refused the same way everywhere (a UserError naming the file and the fix), never
    exported half or failing later inside peft."""
    run_dir = Path(run_dir)
    path = run_dir / ADAPTER_DIR
    run = shlex.quote(str(run_dir))
    if not (path / ADAPTER_CONFIG).is_file():
        raise RunFolderError(
            f"{path}: no trained adapter (adapter_config.json missing); the run has not finished or failed "
            "(fix: check `python -m nbtools runs`, resume or re-run training, or pick a checkpoint folder)"
        )
    adapter_fix = (f"resume an unfinished run with `python -m nbtools train {run} --resume`, re-run training, or "
                   f"copy adapter_config.json and adapter_model.safetensors of a checkpoint (the adapter at its "
                   f"step) from {run_dir / 'checkpoints'} into {path}")
    what = "the trained adapter cannot be used"
    config, problem = _json_object(path / ADAPTER_CONFIG)
    if config is not None and "peft_type" not in config:  # every peft adapter config names its type
        problem = "names no peft_type"
    if problem:
        raise _damaged(path / ADAPTER_CONFIG, problem, what, adapter_fix)
    weights = next((path / name for name in ADAPTER_WEIGHTS if (path / name).exists()), path / ADAPTER_WEIGHTS[0])
    problem = weights_problem(weights)
    if problem is not None:
        raise _damaged(weights, problem, what, adapter_fix)
    _check_processor(run_dir)
    return path


def _check_processor(run_dir: Path) -> None:
    """The processor training saved (its chat template, image and video settings), when the run has one, must
    be whole: a damaged one must not be replaced in silence by the base model's, which may differ."""
    saved = run_dir / PROCESSOR_DIR
    if not saved.exists() and not saved.is_symlink():
        return  # no saved processor: the base model's, with the run's settings applied (load_run_processor)
    fix = "restore the processor folder from a backup, or re-run training"
    what = "the run's processor (chat template, image and video settings) cannot be used"
    if not saved.is_dir():
        raise _damaged(saved, "is not a folder", what, fix)
    if not any((saved / name).is_file() for name in PROCESSOR_CONFIGS):
        raise _damaged(saved / PROCESSOR_CONFIGS[0], "is missing", what, fix)
    for path in sorted(saved.glob("*.json")):
        _, problem = _json_object(path)
        if problem:
            raise _damaged(path, problem, what, fix)


def read_run_record(run_dir) -> dict:
    """run.json as stored, for evaluation and export: they report its metrics, data statistics and provenance,
    and evaluation takes the validation split's lines from it, so a missing or unreadable one is refused rather
    than giving a model card without metrics or evaluating the wrong pairs. (Training writes run.json before
    anything else, so a run folder with an adapter and no run.json was damaged or copied partly.)"""
    path = Path(run_dir) / RUN_RECORD
    fix = ("restore it from a backup or from the machine the run trained on; without it the run's metrics, data "
           "statistics and validation lines are unknown")
    if not path.exists():
        raise RunFolderError(f"{path}: missing (fix: {fix})")
    record, problem = _json_object(path)
    if problem:
        raise RunFolderError(f"{path}: {problem} (fix: {fix})")
    return record


def load_run_processor(run_dir, config=None):
    """The processor saved with the run (its chat template), else the base model's, with the run's
    ``max_pixels`` and video settings (``fps``, ``max_frames``, ``video_max_pixels``) applied: whatever
    the saved files say, evaluation, the lab and every export see images and frames as training did."""
    from nbtools.models import load_processor
    from nbtools.video import VideoSettings

    config = config or load_run_config(run_dir)
    video = VideoSettings.from_config(config)
    saved = Path(run_dir) / PROCESSOR_DIR
    if (saved / "preprocessor_config.json").is_file() or (saved / "processor_config.json").is_file():
        return load_processor(saved, max_pixels=config.max_pixels, video=video)
    return load_processor(config.model, max_pixels=config.max_pixels, video=video)


def attach_adapter(base, folder):
    """``PeftModel`` of ``base`` with the LoRA adapter saved in ``folder``."""
    from peft import PeftModel

    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question; nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return PeftModel.from_pretrained(base, str(folder))


def load_run_model(run_dir, *, device: Optional[str] = None, dtype: Any = "auto",
                   with_reference: bool = True) -> RunModel:
    """Base model + the run's adapter (one model in memory; the adapter toggles base/tuned).

    ``with_reference=False`` skips loading the SFT reference adapter (export merges only
    the trained adapter, which already started from the SFT weights).
    """
    from nbtools.models import detect_family, load_model_and_processor

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    adapter = adapter_dir(run_dir)
    base, _ = load_model_and_processor(config.model, max_pixels=config.max_pixels, dtype=dtype, device=device)
    processor = load_run_processor(run_dir, config)  # with the run's image and video settings
    model = attach_adapter(base, adapter)
    if config.adapter_path and with_reference:
        model.load_adapter(str(config.adapter_path), adapter_name=REFERENCE_ADAPTER)
        model.set_adapter("default")
    model.eval()
    return RunModel(run_dir, config, model, processor, detect_family(base.config).name)
