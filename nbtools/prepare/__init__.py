"""Step 0: from images and prompts to preference pairs (AI dataset preparation).

    from nbtools.prepare import PrepareConfig, prepare
    result = prepare(PrepareConfig(input_file="prompts.jsonl", output_dir="runs/prepared"))
    result.report          # pairs made, dropped per reason, judge agreement, validation
    result.preview()       # gallery of the written pairs

Modules: ``config`` (the settings), ``inputs`` (prompt sources), ``backends`` (sampling),
``judges`` (scoring answers), ``strategies`` (samples -> pairs), ``corrupt`` (corrupted images),
``store`` (resumable samples), ``report``, ``pipeline`` (the ``prepare()`` call), ``form`` (widgets).
"""

from .backends import SampleRequest, SamplingBackend, TransformersBackend
from .config import PrepareConfig, PrepareConfigError
from .inputs import PrepareInputError, PromptRow, read_inputs
from .judges import JudgeError, PairwiseAdapter, ReferenceJudge, RuleJudge, VocabularyJudge, make_judge
from .pipeline import PAIRS_FILE, PrepareResult, prepare
from .report import PrepareReport
from .store import SampleStore, resume_key

__all__ = [
    "JudgeError", "PAIRS_FILE", "PairwiseAdapter", "PrepareConfig", "PrepareConfigError", "PrepareInputError",
    "PrepareReport", "PrepareResult", "PromptRow", "ReferenceJudge", "RuleJudge", "SampleRequest", "SampleStore",
    "SamplingBackend", "TransformersBackend", "VocabularyJudge", "make_judge", "prepare", "read_inputs", "resume_key",
]
