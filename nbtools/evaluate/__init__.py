"""Base vs tuned: preference metrics with intervals, the model lab, and judged win rates.

    run = load_run_model("runs/shapes-dpo")          # one model; the adapter toggles base/tuned
    result = evaluate_run(run.run_dir, run=run)      # writes evaluation.json, plots/evaluation.png
    result                                            # the table in a notebook
    ModelLab(run.model, run.processor, result.examples[:8])   # the interactive lab
    ModelLab(samples=result.examples[:8], base="http://127.0.0.1:8001/v1", tuned="http://127.0.0.1:8000/v1")
    answers = evaluate_answers(run.run_dir, "pope_random.json", run=run, images="coco/val2014")  # on answers
"""

from .answers import AnswerEvaluation, answers_headline, evaluate_answers, read_answer_evaluations
from .benchmark import Benchmark, BenchmarkError, parse_yes_no, read_benchmark
from .generation import Decoding, generate_batch, generate_text
from .endpoint import Endpoint, EndpointError
from .lab import InProcess, ModelLab, answer_pair, answerers, generate_pair, save_side_by_side, side_by_side
from .logprobs import PairLogProbs, adapter_enabled, score_base_and_tuned, score_pairs
from .metrics import Estimate, PreferenceEvaluation, compare_models
from .pipeline import EvaluationDataError, EvaluationResult, evaluate_run, held_out_pairs
from .report import plot_evaluation, read_evaluation, table_html, table_text
from .run_model import RunFolderError, RunModel, load_run_model
from .win_rate import WinRate, judge_rows, win_rate

__all__ = [
    "AnswerEvaluation", "Benchmark", "BenchmarkError", "answers_headline", "evaluate_answers", "generate_batch",
    "parse_yes_no", "read_answer_evaluations", "read_benchmark",
    "Decoding", "Endpoint", "EndpointError", "EvaluationDataError", "EvaluationResult", "Estimate", "InProcess",
    "ModelLab", "PairLogProbs", "PreferenceEvaluation", "RunFolderError", "RunModel", "WinRate", "adapter_enabled",
    "answer_pair", "answerers", "compare_models", "evaluate_run", "generate_pair", "generate_text",
    "held_out_pairs", "judge_rows", "load_run_model", "plot_evaluation", "read_evaluation",
    "save_side_by_side", "score_base_and_tuned", "score_pairs", "side_by_side", "table_html", "table_text",
    "win_rate",
]
