"""Open a finished run: its config, processor, and base model with the trained adapter on top.

Evaluation, the model lab and export all start here, so they see the same model: the
run's base model, the processor saved with the run's ``max_pixels`` and video settings, and the final LoRA
adapter from ``<run>/adapter``. When the run started from an SFT adapter
(``adapter_path``), that adapter is loaded as ``"ref"``: it is what DPO measured rewards
against, so it is the "base" the tuned model is compared with.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nbtools.errors import UserError

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


def adapter_dir(run_dir) -> Path:
    path = Path(run_dir) / ADAPTER_DIR
    if not (path / "adapter_config.json").is_file():
        raise RunFolderError(
            f"{path}: no trained adapter (adapter_config.json missing); the run has not finished or failed "
            "(fix: check `python -m nbtools runs`, resume or re-run training, or pick a checkpoint folder)"
        )
    return path


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
