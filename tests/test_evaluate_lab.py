"""The model lab: side-by-side answers saved as HTML, and the widget driven without a browser."""

import datetime
import io

import pytest
from PIL import Image

from nbtools.evaluate import Decoding, ModelLab, generate_pair, generate_text, save_side_by_side, side_by_side
from nbtools.models import load_model_and_processor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def samples(evaluation_result):
    return evaluation_result.examples[:3]


def test_base_side_is_the_plain_base_model(eval_run_model, samples):
    """Switching the adapter off gives exactly the base model's answer; on gives the tuned one."""
    run = eval_run_model
    decoding = Decoding(max_new_tokens=12)
    answers = generate_pair(run.model, run.processor, samples[0]["images"], samples[0]["prompt"], decoding)
    base_model, _ = load_model_and_processor(run.config.model, max_pixels=run.config.max_pixels, device="cpu")
    plain = generate_text(base_model, run.processor, samples[0]["images"], samples[0]["prompt"], decoding)
    assert answers["base"] == plain
    assert answers["tuned"] == generate_text(run.model, run.processor, samples[0]["images"], samples[0]["prompt"],
                                             decoding)
    assert answers["base"] and answers["tuned"]


def test_sampling_is_reproducible_with_the_seed(eval_run_model, samples):
    run = eval_run_model
    sampled = Decoding(max_new_tokens=10, temperature=1.5, seed=11)
    first = generate_pair(run.model, run.processor, samples[1]["images"], samples[1]["prompt"], sampled)
    again = generate_pair(run.model, run.processor, samples[1]["images"], samples[1]["prompt"], sampled)
    assert first == again


def test_streaming_delivers_growing_text_that_ends_as_the_answer(eval_run_model, samples):
    run = eval_run_model
    seen = []
    decoding = Decoding(max_new_tokens=12)
    text = generate_text(run.model, run.processor, samples[0]["images"], samples[0]["prompt"], decoding,
                         on_text=seen.append)
    assert text == generate_text(run.model, run.processor, samples[0]["images"], samples[0]["prompt"], decoding)
    assert len(seen) >= 2 and all(seen[i + 1].startswith(seen[i]) for i in range(len(seen) - 1))
    assert seen[-1].strip() == text


def test_side_by_side_html_saved_in_the_run_folder(eval_run_model, samples):
    run = eval_run_model
    decoding = Decoding(max_new_tokens=8, seed=3)
    rows = side_by_side(run.model, run.processor, samples, decoding, progress=False)
    assert len(rows) == 3
    assert rows[0]["chosen"] == samples[0]["chosen"][0]["content"][0]["text"]
    path = save_side_by_side(run.run_dir, rows, decoding)
    assert path == run.run_dir / "lab" / "side_by_side.html"
    page = path.read_text()
    assert page.count("<tr>") == 4 and "max_new_tokens=8" in page and "seed=3" in page
    for i, row in enumerate(rows):
        assert (run.run_dir / "lab" / "images" / f"sample_{i:03d}_0.png").is_file()
        assert f'src="images/sample_{i:03d}_0.png"' in page
        assert row["base"].replace("&", "&amp;").replace("<", "&lt;")[:5] in page


def png(colour, size=(96, 96)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_lab_widget_handlers_without_a_browser(eval_run_model, samples):
    run = eval_run_model
    lab = ModelLab(run.model, run.processor, samples, Decoding(max_new_tokens=6))
    assert lab.prompt.value == samples[0]["prompt"][0]["content"][1]["text"]
    assert lab.image.value[:4] == b"\x89PNG"
    lab.sample.value = 2
    assert lab.current_images()[0].size == samples[2]["images"][0].size
    lab.temperature.value, lab.seed.value, lab.max_new_tokens.value = 0.9, 5, 7
    answers = lab.on_generate()
    expected = generate_pair(run.model, run.processor, samples[2]["images"], lab.prompt.value,
                             Decoding(max_new_tokens=7, temperature=0.9, seed=5))
    assert answers == expected
    assert (lab.base_output.value, lab.tuned_output.value) == (expected["base"], expected["tuned"])
    assert "seed 5" in lab.status.value and not lab.generate_button.disabled

    data = png("red", (80, 48))
    lab.upload.value = ({"name": "mine.png", "type": "image/png", "size": len(data), "content": memoryview(data),
                         "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert lab.sample.value == ModelLab.UPLOAD
    assert lab.current_images()[0].size == (80, 48)
    lab.prompt.value = "What colour is the shape?"
    assert set(lab.on_generate()) == {"base", "tuned"}

    lab.prompt.value = "   "
    assert lab.on_generate() == {}
    assert "Type a prompt first" in lab.status.value


class _Failing:
    def __init__(self, error: Exception):
        self.error = error

    def describe(self) -> str:
        return "failing side"

    def answer(self, *args, **kwargs):
        raise self.error


def test_a_failed_generation_says_why_and_a_bug_names_its_error_log(tmp_path, monkeypatch):
    """A user error shows its message; an error of nbtools' own is not relabelled "generation failed"."""
    import nbtools.errors
    from nbtools.errors import UserError

    monkeypatch.setattr(nbtools.errors, "errors_dir", lambda: tmp_path / "errors")
    lab = ModelLab(base=_Failing(UserError("the server is gone (fix: start it)")), tuned=_Failing(UserError("x")))
    lab.prompt.value = "What colour is the shape?"
    assert lab.on_generate() == {}
    assert lab.status.value == "<b>Generation failed:</b> the server is gone (fix: start it)"
    lab = ModelLab(base=_Failing(RuntimeError("planted bug")), tuned=_Failing(RuntimeError("planted bug")))
    lab.prompt.value = "What colour is the shape?"
    assert lab.on_generate() == {}
    (log,) = (tmp_path / "errors").iterdir()
    assert lab.status.value == (f"<b>model lab: internal error: RuntimeError: planted bug (details: {log}; please "
                                "report this with that file)</b>")
