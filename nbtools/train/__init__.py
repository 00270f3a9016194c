"""Training: DPO of a VLM with LoRA from one RunConfig, into one run folder.

    from nbtools.train import train
    result = train("my_run.yaml")           # or a RunConfig; resume=True continues a killed run
    result.metrics["eval_rewards/accuracies"]

``read_run(run_dir)`` reads run.json the way the run list should (a stale heartbeat means
the run was interrupted).

Names are imported on first use, so reading run folders (the run list, ``python -m nbtools
runs``) does not pay for importing torch and TRL.
"""

import importlib

# Imported now, not on first use: the function shares its name with its module, and importing the
# module later (runner does) would make ``nbtools.train.diagnose`` the module instead. It is plain Python.
from .diagnose import Diagnosis, diagnose

_EXPORTS = {
    "DataError": "nbtools.train.dataset",
    "read_run": "nbtools.run_folder.record",
    "RunFolderError": "nbtools.run_folder.lifecycle",
    "RunResult": "nbtools.train.runner",
    "resolve_config": "nbtools.run_folder.lifecycle",
    "train": "nbtools.train.runner",
    "NbDPOTrainer": "nbtools.train.trainer",
    "NonFiniteLossError": "nbtools.train.trainer",
}

__all__ = sorted([*_EXPORTS, "Diagnosis", "diagnose"])


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nbtools.train' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
