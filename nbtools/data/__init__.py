"""The preference-dataset layer: load, validate, describe, preview and convert pairs.

    report = validate_dataset("train.jsonl", max_pixels=401408, max_context_length=2048)
    report.problems        # Problem(file, line, field, severity, message, fix)
    report.valid_records   # rows training can use
    preview(report)        # HTML gallery in a notebook
"""

from nbtools.data.convert import to_training_example
from nbtools.data.load import LoadResult, UnreadableFile, load_records
from nbtools.data.preview import Preview, preview, preview_html
from nbtools.data.records import IMAGE_TAG, VIDEO_TAG, PreferenceRecord
from nbtools.data.stats import dataset_stats, plot_stats
from nbtools.data.tokens import PairTokens, TokenCounter
from nbtools.data.table import RecordTable
from nbtools.data.validate import ValidationReport, validate_dataset

__all__ = [
    "IMAGE_TAG", "VIDEO_TAG", "LoadResult", "PairTokens", "PreferenceRecord", "Preview", "TokenCounter",
    "UnreadableFile", "ValidationReport", "dataset_stats", "load_records",
    "plot_stats", "preview", "preview_html", "RecordTable", "to_training_example",
    "validate_dataset",
]
