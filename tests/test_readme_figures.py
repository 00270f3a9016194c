"""The README quotes benchmarks/results/*.json (scale, ref_store, media_fingerprint, long_pairs, served_reply),
generated, never typed."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import readme_figures  # noqa: E402


def test_the_readme_figures_are_the_committed_results():
    text = (REPO / "README.md").read_text()
    for mark, value in readme_figures.figures().items():
        end = mark.replace("<!-- ", "<!-- end ")
        assert f"{mark}{value}{end}" in text, f"README out of step with the results at {mark}: " \
                                              "run python benchmarks/readme_figures.py"
