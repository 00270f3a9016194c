"""Training: DPO of a VLM with LoRA from one RunConfig, into one run folder.

    from nbtools.train import train
    result = train("my_run.yaml")           # or a RunConfig; resume=True continues a killed run
    result.metrics["eval_rewards/accuracies"]

``read_run(run_dir)`` reads run.json the way the run list should (a stale heartbeat means
the run was interrupted).
"""

from nbtools.train.dataset import DataError
from nbtools.train.diagnose import Diagnosis, diagnose
from nbtools.train.run_record import read_run
from nbtools.train.runner import RunFolderError, RunResult, resolve_config, train
from nbtools.train.trainer import NbDPOTrainer, NonFiniteLossError

__all__ = ["DataError", "Diagnosis", "NbDPOTrainer", "NonFiniteLossError", "RunFolderError", "RunResult",
           "diagnose", "read_run", "resolve_config", "train"]
