"""Plain labels for the metric names TRL logs (``eval_logits/chosen`` -> what it measures).

Tables keep the raw name too: it is what ``metrics.jsonl``, ``run.json`` and TRL's docs use.
"""

from __future__ import annotations

# the part after an optional eval_ prefix -> what it measures
LABELS = {
    "loss": "loss",
    "rewards/accuracies": "reward accuracy: share of pairs where chosen beats rejected",
    "rewards/margins": "reward margin: reward of chosen minus rejected",
    "rewards/chosen": "reward of the chosen answers",
    "rewards/rejected": "reward of the rejected answers",
    "logps/chosen": "log-probability of the chosen answers (sum over tokens)",
    "logps/rejected": "log-probability of the rejected answers (sum over tokens)",
    "logits/chosen": "mean logit over the chosen answers' tokens",
    "logits/rejected": "mean logit over the rejected answers' tokens",
    "entropy": "entropy of the next-token predictions",
    "mean_token_accuracy": "share of answer tokens predicted exactly",
    "num_tokens": "tokens processed",
    "grad_norm": "gradient norm",
    "learning_rate": "learning rate",
}


def metric_label(name: str) -> str:
    """``eval_loss`` -> ``validation loss``; a name this table does not know is returned as it is."""
    validation = name.startswith("eval_")
    label = LABELS.get(name[len("eval_"):] if validation else name)
    if label is None:
        return name
    return f"validation {label}" if validation else f"training {label}"
