"""Step 0: from images and prompts to preference pairs (AI dataset preparation).

    from nbtools.prepare import PrepareConfig, prepare
    result = prepare(PrepareConfig(input_file="prompts.jsonl", output_dir="runs/prepared"))
    result.report          # pairs made, dropped per reason, judge agreement, validation
    result.preview()       # gallery of the written pairs

Modules: ``config`` (the settings), ``inputs`` (prompt sources), ``backends`` (sampling),
``endpoint`` (sampling and judging through an OpenAI-compatible server), ``judges`` (scoring answers),
``strategies`` (samples -> pairs), ``corrupt`` (corrupted images), ``store`` (resumable samples and judge
scores), ``report``, ``pipeline`` (the ``prepare()`` call), ``form`` (widgets).
"""

from .backends import SampleRequest, SamplingBackend, TransformersBackend
from .config import PrepareConfig, PrepareConfigError
from .endpoint import EndpointError, OpenAICompatibleBackend, OpenAICompatibleJudge
from .inputs import PrepareInputError, PromptRow, read_inputs
from .judges import (
    JudgeError, PairwiseAdapter, ReferenceJudge, RuleJudge, VocabularyJudge, judge_fingerprint, make_judge, parse_score,
)
from .pipeline import PAIRS_FILE, PrepareResult, make_backend, prepare
from .report import PrepareReport
from .store import JudgmentStore, SampleStore, resume_key

__all__ = [
    "EndpointError", "JudgeError", "JudgmentStore", "OpenAICompatibleBackend", "OpenAICompatibleJudge", "PAIRS_FILE",
    "PairwiseAdapter", "PrepareConfig", "PrepareConfigError", "PrepareInputError", "PrepareReport", "PrepareResult",
    "PromptRow", "ReferenceJudge", "RuleJudge", "SampleRequest", "SampleStore", "SamplingBackend",
    "TransformersBackend", "VocabularyJudge", "judge_fingerprint", "make_backend", "make_judge", "parse_score",
    "prepare", "read_inputs", "resume_key",
]
