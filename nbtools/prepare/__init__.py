"""Step 0: from images and prompts to preference pairs (AI dataset preparation).

    from nbtools.prepare import PrepareConfig, prepare
    result = prepare(PrepareConfig(input_file="prompts.jsonl", output_dir="runs/prepared"))
    result.report          # pairs made, dropped per reason, judge agreement, validation
    result.preview()       # gallery of the written pairs

Modules: ``config`` (the settings), ``inputs`` (prompt sources), ``backends`` (sampling),
``served_backend`` (sampling through an OpenAI-compatible server), ``strategies`` (samples -> pairs),
``corrupt`` (corrupted images), ``store`` (resumable samples and judge scores), ``report``, ``pipeline``
(the ``prepare()`` call, and the backend and judge a config names), ``form`` (widgets).
The judges themselves are :mod:`nbtools.judges` (shared with evaluation); the server client
:mod:`nbtools.endpoint`. Both are re-exported here where step 0 names them.
"""

from nbtools.endpoint import EndpointError
from nbtools.judges import (
    JudgeError, OpenAICompatibleJudge, PairwiseJudge, ReferenceJudge, RuleJudge, VocabularyJudge, judge_fingerprint,
    parse_score,
)

from .backends import SampleRequest, SamplingBackend, TransformersBackend
from .config import PrepareConfig, PrepareConfigError
from .inputs import PrepareInputError, PromptRow, read_inputs
from .pipeline import PAIRS_FILE, PrepareResult, make_backend, make_judge, prepare
from .report import PrepareReport
from .served_backend import OpenAICompatibleBackend
from .store import JudgmentStore, SampleStore, resume_key

__all__ = [
    "EndpointError", "JudgeError", "JudgmentStore", "OpenAICompatibleBackend", "OpenAICompatibleJudge", "PAIRS_FILE",
    "PairwiseJudge", "PrepareConfig", "PrepareConfigError", "PrepareInputError", "PrepareReport", "PrepareResult",
    "PromptRow", "ReferenceJudge", "RuleJudge", "SampleRequest", "SampleStore", "SamplingBackend",
    "TransformersBackend", "VocabularyJudge", "judge_fingerprint", "make_backend", "make_judge", "parse_score",
    "prepare", "read_inputs", "resume_key",
]
