"""Which training file the notebooks use when none is named: 00's prepared pairs, else the bundled sample.

00_prepare_data.ipynb writes its pairs to ``runs/prepared/pairs.jsonl`` (its default ``output_dir``);
01 and 02 start from whatever this module picks, and say which, so following the notebooks'
defaults trains on the pairs step 0 just made. A ``train_file`` set in a notebook always wins.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PREPARED_DIR = "runs/prepared"  # 00_prepare_data.ipynb's default output_dir (a test keeps the two equal)
PREPARED_PAIRS = f"{PREPARED_DIR}/pairs.jsonl"
SAMPLE_PAIRS = "data_samples/shapes/train.jsonl"


@dataclass(frozen=True)
class CurrentData:
    """The chosen training file (absolute, or a Hub id as given), where it came from, and a sentence saying so."""

    path: str
    source: str  # "given" | "prepared" | "sample"
    note: str

    def __str__(self) -> str:
        return self.path

    def show(self) -> None:
        """The note in a notebook, wrapped between words (a printed line would break mid-word there)."""
        from nbtools.display import show_log_line

        show_log_line(self.note)


def _pairs_in(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def current_train_file(train_file: str = "", prepared: str = PREPARED_PAIRS, sample: str = SAMPLE_PAIRS) -> CurrentData:
    """``train_file`` when set; else 00's prepared pairs when they exist and hold pairs; else the bundled sample."""
    from nbtools.display import short_path
    from nbtools.widgets.notebook import project_path

    if train_file and str(train_file).strip():
        path = project_path(train_file, data=True)
        return CurrentData(path, "given", f"train_file: {short_path(path)} (set in the parameters)")
    prepared_path = Path(project_path(prepared))
    sample_path = project_path(sample)
    if prepared_path.is_file():
        pairs = _pairs_in(prepared_path)
        if pairs:
            written = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(prepared_path)))
            return CurrentData(str(prepared_path), "prepared",
                               f"train_file: {short_path(prepared_path)}, the {pairs} pairs 00_prepare_data.ipynb "
                               f"wrote at {written} (set train_file to use another file, e.g. {sample})")
        return CurrentData(sample_path, "sample",
                           f"train_file: {short_path(sample_path)}, the bundled sample: {short_path(prepared_path)} "
                           "holds no pairs (00_prepare_data.ipynb's report says why)")
    return CurrentData(sample_path, "sample",
                       f"train_file: {short_path(sample_path)}, the bundled sample (00_prepare_data.ipynb writes "
                       f"{prepared} when run; set train_file to use your own pairs)")
