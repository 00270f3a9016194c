"""Step 0 (nbtools.prepare) without a model: judges, strategies, the resume key and store,
inputs, the pipeline end to end with a fake sampling backend, the form and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from nbtools.data import validate_dataset
from nbtools.judges import PairReferenceJudge, prefer, run_judge, similarity
from nbtools.prepare import (
    JudgeError, PairwiseJudge, PrepareConfig, PrepareConfigError, PrepareInputError, ReferenceJudge, RuleJudge,
    SampleRequest, SampleStore, VocabularyJudge, prepare, read_inputs, resume_key,
)
from nbtools.prepare.strategies import Judged, make_pairs
from nbtools.prepare.inputs import PromptRow

REPO = Path(__file__).resolve().parent.parent
COLOUR_RGB = {"red": (214, 39, 40), "green": (40, 160, 60), "blue": (31, 90, 205)}


# --------------------------------------------------------------------------- a fake backend

class FakeBackend:
    """Answers from the image's colour: the first ``right`` of K answers name it, the rest say 'green'.

    A blanked (grey) image gets 'It is a grey shape.'. ``fail_after`` raises after that many prompts
    (an interrupted run)."""

    def __init__(self, right: int = 2, fail_after: int | None = None, name: str = "fake"):
        self.right, self.fail_after, self.name = right, fail_after, name
        self.calls = []

    def fingerprint(self) -> str:
        return self.name

    def sample(self, request: SampleRequest) -> list[str]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls.append(request)
        pixel = Image.open(request.images[0]).convert("RGB").getpixel((0, 0)) if request.images else None
        colour = next((name for name, rgb in COLOUR_RGB.items() if rgb == pixel), "grey")
        return [f"It is a {colour} shape." if i < self.right or colour == "grey" else "It is a green shape."
                for i in range(request.k)]


def colour_images(folder: Path, colours=("red", "blue", "red", "blue")) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"{i:02d}_{colour}.png"
        image = Image.new("RGB", (64, 64), COLOUR_RGB[colour])
        image.putpixel((63, 63), (i, i, i))  # every picture distinct, as real photos are
        image.save(path)
        paths.append(path)
    return paths


def supervised_file(tmp_path: Path, colours=("red", "blue", "red", "blue")) -> Path:
    images = colour_images(tmp_path / "images", colours)
    rows = [{"messages": [{"role": "user", "content": "<image>What colour is the shape?"},
                          {"role": "assistant", "content": f"It is a {c} shape."}],
             "images": [f"images/{p.name}"]} for c, p in zip(colours, images)]
    path = tmp_path / "supervised.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- judges

def test_rule_judge_scores_one_when_every_rule_holds_and_below_half_otherwise():
    judge = RuleJudge(["red"], ["green", "blue"])
    scores = judge("q", [], ["It is a red circle.", "A green circle.", "A reddish circle.", "Red and blue."])
    assert scores[0] == 1.0
    assert all(s < 0.5 for s in scores[1:])  # wrong colour; "reddish" is not the word red; an extra forbidden term
    assert RuleJudge()("q", [], ["anything"]) is None  # no rules: cannot judge


def test_rule_judge_terms_may_depend_on_the_reference():
    judge = RuleJudge(lambda prompt, reference: [reference.split()[-1]])
    assert judge("q", [], ["a cat", "a dog"], reference="the cat") == [1.0, 0.0]


def test_vocabulary_judge_requires_the_reference_term_and_no_other():
    judge = VocabularyJudge(["red", "green", "blue", "yellow"])
    assert judge("q", [], ["It is a yellow circle.", "It is a green circle."], "A yellow circle.") == [1.0, 0.25]  # 2 of 4 rules hold: 0.5 * 2/4
    assert judge("q", [], ["x"], reference=None) is None
    assert judge("q", [], ["x"], reference="red or green") is None  # reference names two terms: not judgeable


def test_reference_judge_is_not_fooled_by_one_changed_word():
    reference = "It is a yellow circle."
    wrong, paraphrase = "It is a green circle.", "A yellow circle on a light background."
    assert similarity(wrong, reference) > 0.7  # the word-overlap score the evaluation uses calls it close
    judge = ReferenceJudge()
    wrong_score, paraphrase_score, right_score = judge("q", [], [wrong, paraphrase, reference], reference)
    assert wrong_score < 0.5 <= paraphrase_score < right_score == 1.0
    assert judge.score("The picture shows a green square.", reference) < wrong_score  # two changed words: worse
    assert judge.score("", reference) == 0.0
    assert judge("q", [], ["x"]) is None  # no reference


def test_a_pairwise_function_becomes_a_judge_that_scores_answers():
    def pairwise(prompt, a, b):  # closer to "red" than to "blue" wins
        return prefer(PairReferenceJudge("It is a red circle.", "It is a blue circle."), prompt, [], a, b)

    scores = PairwiseJudge(pairwise)("q", [], ["It is a blue circle.", "It is a red circle.", "Red circle."])
    assert scores[1] > scores[0] and scores[2] > scores[0]
    assert all(0.0 <= s <= 1.0 for s in scores)
    with pytest.raises(JudgeError, match="the pairwise judge <lambda> returned 'first'; it must return 'a', 'b' or 'tie'"):
        PairwiseJudge(lambda p, a, b: "first")("q", [], ["x", "y"])


def test_prepare_refuses_a_pairwise_function_passed_as_it_is(tmp_path):
    config = PrepareConfig(input_file=str(supervised_file(tmp_path)), output_dir=str(tmp_path / "out"))

    def my_judge(prompt, a, b):
        return "a"

    with pytest.raises(TypeError, match=r"prepare\(judge=...\): a judge is called as judge\(prompt, images, answers, "
                                        r"reference=None\).*my_judge\(prompt, a, b\) looks like a pairwise judge.*"
                                        r"fix: pass PairwiseJudge\(my_judge\)"):
        prepare(config, judge=my_judge, backend=(backend := FakeBackend()), progress=False)
    assert backend.calls == []  # refused before sampling
    with pytest.raises(JudgeError, match="returned 'a', a verdict, not scores .*PairwiseJudge"):
        run_judge(lambda *args, **kwargs: "a", "q", [], ["x", "y"])


def test_a_judge_returning_the_wrong_number_or_range_is_refused_with_the_rule():
    with pytest.raises(JudgeError, match="one score in \\[0, 1\\] per answer"):
        run_judge(lambda p, i, a, reference=None: [0.5], "q", [], ["a", "b"])
    with pytest.raises(JudgeError, match="one score in \\[0, 1\\] per answer"):
        run_judge(lambda p, i, a, reference=None: [7, 0.1], "q", [], ["a", "b"])
    assert run_judge(lambda p, i, a, reference=None: [1, 0], "q", [], ["a", "b"]) == [1.0, 0.0]


# --------------------------------------------------------------------------- strategies

def _judged(answers, scores, reference=None, images=("x.png",), **extra):
    return Judged(PromptRow("f:1", [{"role": "user", "content": "<image>q"}], list(images), [], reference),
                  answers, scores, **extra)


def test_reference_strategy_rejects_the_worst_wrong_sample_and_never_a_correct_one():
    judged = _judged(["right", "bad", "worse"], [1.0, 0.4, 0.1], reference="ref")
    [(strategy, pair, reason)] = make_pairs(judged, ["reference"], wrong_below=0.5, min_score_gap=0.3)
    assert (strategy, reason, pair.chosen, pair.rejected) == ("reference", "made", "ref", "worse")
    all_right = _judged(["right", "also right"], [1.0, 0.6], reference="ref")
    assert make_pairs(all_right, ["reference"], wrong_below=0.5, min_score_gap=0.3) == [("reference", None, "agreement")]
    assert make_pairs(_judged(["a"], [0.1]), ["reference"], wrong_below=0.5, min_score_gap=0.3)[0][2] == "no_reference"


def test_ranking_keeps_best_vs_worst_above_the_gap_and_counts_ties():
    [(_, pair, reason)] = make_pairs(_judged(["best", "mid", "worst"], [0.9, 0.5, 0.2]), ["ranking"],
                                     wrong_below=0.5, min_score_gap=0.3)
    assert (reason, pair.chosen, pair.rejected) == ("made", "best", "worst")
    assert make_pairs(_judged(["a", "b"], [0.6, 0.5]), ["ranking"], wrong_below=0.5, min_score_gap=0.3)[0][2] == "tie"
    assert make_pairs(_judged(["same", " same"], [0.9, 0.1]), ["ranking"], wrong_below=0.5, min_score_gap=0.3)[0][2] == "tie"
    assert make_pairs(_judged(["a", "b"], None), ["ranking"], wrong_below=0.5, min_score_gap=0.3)[0][2] == "not_judged"
    # with a reference and the reference strategy selected, ranking leaves the prompt to it
    both = make_pairs(_judged(["a", "b"], [1.0, 0.0], reference="ref"), ["reference", "ranking"],
                      wrong_below=0.5, min_score_gap=0.3)
    assert [(s, pair is None, reason) for s, pair, reason in both] == [("reference", False, "made"),
                                                                       ("ranking", True, "has_reference")]


def test_corrupted_strategy_as_text_or_image_contrast():
    judged = _judged(["It is red."], [1.0], reference="It is red.", corrupted_images=["c.png"],
                     corrupted_answers=["It is grey."], corrupted_scores=[0.0])
    [(_, text_pair, _)] = make_pairs(judged, ["corrupted"], wrong_below=0.5, min_score_gap=0.3)
    [(_, image_pair, _)] = make_pairs(judged, ["corrupted"], wrong_below=0.5, min_score_gap=0.3, contrast="image")
    assert (text_pair.rejected, text_pair.rejected_images) == ("It is grey.", None)
    assert image_pair.rejected_images == ["c.png"]
    still_right = _judged(["It is red."], [1.0], reference="It is red.", corrupted_images=["c.png"],
                          corrupted_answers=["It is red!"], corrupted_scores=[1.0])
    assert make_pairs(still_right, ["corrupted"], wrong_below=0.5, min_score_gap=0.3)[0][2] == "agreement"


# --------------------------------------------------------------------------- resume key and store

def test_resume_key_covers_model_settings_prompt_and_image_bytes():
    settings = {"k": 4, "temperature": 1.0}
    messages = [{"role": "user", "content": "<image>q"}]
    key = resume_key("model-a", settings, messages, ["digest1"])
    assert key == resume_key("model-a", dict(settings), list(messages), ["digest1"])
    assert key != resume_key("model-b", settings, messages, ["digest1"])
    assert key != resume_key("model-a", {**settings, "temperature": 0.7}, messages, ["digest1"])
    assert key != resume_key("model-a", settings, [{"role": "user", "content": "<image>q2"}], ["digest1"])
    assert key != resume_key("model-a", settings, messages, ["digest2"])


def test_store_ignores_a_half_written_last_line_and_appends_after_it(tmp_path):
    store = SampleStore(tmp_path)
    store.put("k1", ["a", "b"])
    with open(store.path, "a") as handle:
        handle.write('{"key": "k2", "answers": ["c"')  # the run died mid-write
    reopened = SampleStore(tmp_path)
    assert (reopened.get("k1"), reopened.get("k2"), reopened.damaged_lines) == (["a", "b"], None, 1)
    reopened.put("k2", ["c", "d"])
    assert SampleStore(tmp_path).get("k2") == ["c", "d"]
    assert SampleStore(tmp_path).damaged_lines == 0


# --------------------------------------------------------------------------- inputs

def test_inputs_from_a_folder_a_prompt_file_and_a_supervised_file(tmp_path):
    colour_images(tmp_path / "pics", ("red", "blue"))
    rows = read_inputs(images_dir=str(tmp_path / "pics"), prompts=["What colour?", "Describe it."]).rows
    assert len(rows) == 4 and rows[0].messages == [{"role": "user", "content": "<image>What colour?"}]
    assert all(r.reference is None and Path(r.images[0]).is_file() for r in rows)
    supervised = read_inputs(input_file=str(supervised_file(tmp_path))).rows
    assert [r.reference for r in supervised[:2]] == ["It is a red shape.", "It is a blue shape."]
    prompts_only = tmp_path / "prompts.jsonl"
    prompts_only.write_text(json.dumps({"messages": [{"role": "user", "content": "Hello?"}]}) + "\n")
    [row] = read_inputs(input_file=str(prompts_only)).rows
    assert (row.images, row.reference) == ([], None)


def test_bad_input_lines_are_refused_with_file_line_field_and_fix(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([
        json.dumps({"messages": [{"role": "user", "content": "<image>q"}], "images": []}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "<image>q"}], "images": ["missing.png"]}),
    ]) + "\n")
    with pytest.raises(PrepareInputError) as caught:
        read_inputs(input_file=str(path))
    message = str(caught.value)
    assert f"{path}:1: error: images: 0 images but 1 <image> tag(s)" in message
    assert f"{path}:2: error: line: not valid JSON" in message
    assert f"{path}:3: error: images: missing.png: no such file" in message
    assert "(fix:" in message


def test_the_validation_file_is_never_a_prompt_source(tmp_path, make_pair):
    train = supervised_file(tmp_path)
    with pytest.raises(PrepareInputError, match="is the validation file"):
        read_inputs(input_file=str(train), validation_file=str(train))
    validation = tmp_path / "validation.jsonl"  # one held-out pair on the first training image
    validation.write_text(json.dumps(make_pair(images=["images/00_red.png"])) + "\n")
    inputs = read_inputs(input_file=str(train), validation_file=str(validation))
    assert len(inputs.rows) == 3 and inputs.skipped_validation == [f"{train}:1"]


def test_config_refuses_impossible_settings_naming_the_field():
    with pytest.raises(PrepareConfigError, match="input_file: no prompt source"):
        PrepareConfig().check()
    with pytest.raises(PrepareConfigError, match="prompts: images_dir needs at least one prompt"):
        PrepareConfig(images_dir="x").check()
    with pytest.raises(PrepareConfigError, match="strategies: 'best' is not one of"):
        PrepareConfig(input_file="x", strategies=["best"]).check()
    with pytest.raises(PrepareConfigError, match="must_include: the rule judge has no terms"):
        PrepareConfig(input_file="x", judge="rule").check()
    with pytest.raises(PrepareConfigError, match="samples_per_prompt: 0 is below 1"):
        PrepareConfig(input_file="x", samples_per_prompt=0).check()


# --------------------------------------------------------------------------- the pipeline with a fake backend

def _config(tmp_path, input_file, **changes):
    settings = dict(input_file=str(input_file), output_dir=str(tmp_path / "out"), judge="vocabulary",
                    vocabulary=["red", "green", "blue"], strategies=["reference", "corrupted"], samples_per_prompt=4)
    settings.update(changes)
    return PrepareConfig(**settings)


def test_prepare_writes_valid_pairs_a_report_and_corrupted_images(tmp_path):
    config = _config(tmp_path, supervised_file(tmp_path))
    result = prepare(config, backend=FakeBackend(right=2), progress=False)
    rows = [json.loads(line) for line in result.pairs_file.read_text().splitlines()]
    assert len(rows) == 8 and result.report.pairs_made == 8
    reference_rows = rows[::2]
    assert all(r["rejected_response"] == "It is a green shape." for r in reference_rows)
    assert [r["messages"][-1]["content"] for r in reference_rows] == [f"It is a {c} shape." for c in
                                                                      ("red", "blue", "red", "blue")]
    assert all(r["rejected_response"] == "It is a grey shape." for r in rows[1::2])
    assert result.report.strategies == {"reference": {"made": 4, "dropped": {}}, "corrupted": {"made": 4, "dropped": {}}}
    # images are referenced (relative to the output folder), not copied; corrupted ones live under it
    assert (config.output_dir and Path(config.output_dir, rows[0]["images"][0]).resolve()
            == (tmp_path / "images" / "00_red.png").resolve())
    assert not (Path(config.output_dir) / "images").exists()
    assert len(list((Path(config.output_dir) / "corrupted").glob("*.png"))) == 4  # one per source image
    report = validate_dataset(result.pairs_file)
    assert not report.has_errors() and report.stats["valid_rows"] == 8
    saved = json.loads((Path(config.output_dir) / "report.json").read_text())
    assert saved["pairs_made"] == 8 and saved["validation"]["errors"] == 0 and len(saved["pairs"]) == 8
    # the judge agreement with the reference judge: the vocabulary judge and it agree on these answers
    assert saved["judge_agreement"]["samples"] == 16 and saved["judge_agreement"]["rate"] == 1.0
    assert "pairs made: 8" in result.report.summary()


def test_image_contrast_pairs_carry_rejected_images_that_validate(tmp_path):
    config = _config(tmp_path, supervised_file(tmp_path), strategies=["corrupted"], contrast="image",
                     corruption="swap")
    result = prepare(config, backend=FakeBackend(), progress=False)
    rows = [json.loads(line) for line in result.pairs_file.read_text().splitlines()]
    assert rows and all(len(r["rejected_images"]) == 1 for r in rows)
    for row in rows:  # a swapped image is another input picture, never the row's own
        swapped = Image.open(Path(config.output_dir, row["rejected_images"][0])).getpixel((0, 0))
        own = Image.open(Path(config.output_dir, row["images"][0])).getpixel((0, 0))
        assert swapped != own
    assert not validate_dataset(result.pairs_file).has_errors()


def test_agreement_and_ties_are_dropped_and_counted(tmp_path):
    config = _config(tmp_path, supervised_file(tmp_path), strategies=["reference", "ranking"])
    result = prepare(config, backend=FakeBackend(right=4), progress=False)  # every sample right
    assert result.report.pairs_made == 0
    assert result.report.strategies["reference"]["dropped"] == {"agreement": 4}
    prompts = tmp_path / "prompts.jsonl"  # no references: ranking; all samples alike -> ties
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say {i}."}]}) + "\n"
                               for i in range(3)))
    ranked = prepare(_config(tmp_path, prompts, output_dir=str(tmp_path / "o2"), strategies=["ranking"]),
                     judge=lambda p, i, a, reference=None: [0.5] * len(a), backend=FakeBackend(), progress=False)
    assert ranked.report.strategies["ranking"] == {"made": 0, "dropped": {"tie": 3}}


def test_a_rerun_samples_nothing_and_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    config = _config(tmp_path, supervised_file(tmp_path, ("red", "blue", "red", "green", "blue")),
                     strategies=["reference"])
    with pytest.raises(KeyboardInterrupt):
        prepare(config, backend=FakeBackend(fail_after=2), progress=False)
    resumed = FakeBackend()
    first = prepare(config, backend=resumed, progress=False)
    assert len(resumed.calls) == 3 and first.report.samples_reused == 2  # only the three unanswered prompts
    again = FakeBackend()
    second = prepare(config, backend=again, progress=False)
    assert again.calls == [] and second.report.samples_generated == 0
    assert second.pairs_file.read_text() == first.pairs_file.read_text()
    changed = FakeBackend()
    prepare(PrepareConfig(**{**config.to_dict(), "temperature": 0.7}), backend=changed, progress=False)
    assert len(changed.calls) == 5  # new sampling settings: nothing reused
    seeds = {request.seed for request in changed.calls}
    assert len(seeds) == 5  # each prompt has its own seed, derived from its key


# --------------------------------------------------------------------------- faces

def test_form_is_a_view_over_the_config(tmp_path):
    from nbtools.prepare.form import PrepareForm

    form = PrepareForm(PrepareConfig(input_file="x.jsonl"))
    assert form.controls["must_include"].box.layout.display == "none"
    form.controls["judge"].control.value = "rule"
    assert form.controls["must_include"].box.layout.display == ""
    form.controls["must_include"].control.value = "red, a red"
    form.controls["strategies"].control.value = "ranking, corrupted"
    config = form.config
    assert (config.judge, config.must_include, config.strategies, config.input_file) == \
        ("rule", ["red", "a red"], ["ranking", "corrupted"], "x.jsonl")
    form.controls["min_score_gap"].control.value = 2.0
    with pytest.raises(PrepareConfigError, match="min_score_gap"):
        form.config
    assert "maximum" in form.controls["min_score_gap"].error
    form.controls["min_score_gap"].control.value = 0.3


def test_the_form_shows_a_server_s_fields_when_it_is_chosen():
    from nbtools.prepare.form import PrepareForm

    form = PrepareForm(PrepareConfig(input_file="x.jsonl"))
    shown = lambda name: form.controls[name].box.layout.display != "none"  # noqa: E731
    assert not any(shown(n) for n in ("base_url", "served_model", "concurrency", "judge_url", "judge_template"))
    form.controls["backend"].control.value = "openai"
    assert shown("base_url") and shown("concurrency") and not shown("judge_url")
    with pytest.raises(PrepareConfigError, match="base_url: backend openai needs"):
        form.config
    form.controls["base_url"].control.value = "http://localhost:8000/v1"
    form.controls["judge"].control.value = "endpoint"
    assert shown("judge_url") and shown("judge_template")
    form.controls["judge_url"].control.value = "http://localhost:8001/v1"
    config = form.config
    assert (config.backend, config.base_url, config.judge, config.judge_url, config.concurrency) == \
        ("openai", "http://localhost:8000/v1", "endpoint", "http://localhost:8001/v1", 4)


def test_command_line_usage_errors_exit_2_with_one_line(tmp_path):
    env_python = [sys.executable, "-m", "nbtools", "prepare"]
    missing = subprocess.run(env_python + [str(tmp_path / "nope.jsonl"), "--output-dir", str(tmp_path / "o")],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2
    assert "input_file:" in missing.stderr and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    rule = subprocess.run(env_python + [str(tmp_path), "--judge", "rule", "--prompts", "q"],
                          capture_output=True, text=True, cwd=REPO)
    assert rule.returncode == 2 and "must_include: the rule judge has no terms" in rule.stderr
    no_model = subprocess.run(env_python + [str(supervised_file(tmp_path)), "--model", str(tmp_path / "no-model"),
                                            "--output-dir", str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert no_model.returncode == 2 and no_model.stderr.startswith("error: model:") and "does not exist" in no_model.stderr
    assert "Traceback" not in no_model.stderr


def test_an_image_that_cannot_be_decoded_stops_with_its_row_and_the_fix(tmp_path):
    train = supervised_file(tmp_path)
    (tmp_path / "images" / "01_blue.png").write_bytes(b"not a png")

    class DecodingBackend(FakeBackend):
        def sample(self, request):
            Image.open(request.images[0]).load()  # what a real backend does first
            return super().sample(request)

    with pytest.raises(PrepareInputError, match=f"{train}:2: images: cannot be read .*fix: replace or remove"):
        prepare(_config(tmp_path, train, strategies=["reference"]), backend=DecodingBackend(), progress=False)
    assert len(SampleStore(tmp_path / "out")) == 1  # the first prompt's answers are kept for the rerun


def test_preview_gallery_of_the_written_pairs_with_or_without_validation(tmp_path):
    config = _config(tmp_path, supervised_file(tmp_path), strategies=["reference"])
    validated = prepare(config, backend=FakeBackend(), progress=False)
    unvalidated = prepare(config, backend=FakeBackend(), progress=False, validate=False)
    assert unvalidated.validation is None
    for result in (validated, unvalidated):
        html = result.preview(n=2)._repr_html_()
        assert html.count("nbt-rejected") == 2 + 1 and "It is a green shape." in html  # 2 rows (+ the style rule)


def test_images_are_copied_only_when_asked_and_video_prompts_are_sampled_with_the_run_settings(tmp_path):
    colour_images(tmp_path / "pics", ("red", "blue"))
    (tmp_path / "pics" / "clip.mp4").write_bytes(b"\x00" * 64)  # the fake backend does not decode it
    config = PrepareConfig(images_dir=str(tmp_path / "pics"), prompts=["What colour is the shape?"],
                           output_dir=str(tmp_path / "out"), strategies=["ranking"], judge="rule",
                           must_not_include=["green"], copy_images=True, fps=1.0, max_frames=4)
    backend = FakeBackend(right=2)
    result = prepare(config, backend=backend, progress=False)
    assert result.report.skipped == {}
    assert result.report.prompts_read == 3 and result.report.prompts_sampled == 3
    [video_request] = [r for r in backend.calls if r.videos]
    assert video_request.videos == [str(tmp_path / "pics" / "clip.mp4")] and video_request.images == []
    assert (video_request.video.fps, video_request.video.max_frames, video_request.video.video_max_pixels) == \
        (1.0, 4, config.video_max_pixels)
    assert result.report.strategies["ranking"] == {"made": 2, "dropped": {"tie": 1}}  # the clip's answers agree
    rows = [json.loads(line) for line in result.pairs_file.read_text().splitlines()]
    assert len(rows) == 2 and all(r["images"][0].startswith("images/") for r in rows)
    assert all((tmp_path / "out" / r["images"][0]).is_file() for r in rows)
    assert [r["rejected_response"] for r in rows] == ["It is a green shape."] * 2
    assert not validate_dataset(result.pairs_file).has_errors()
    # the frames taken are part of a video prompt's resume key, not of an image prompt's
    again = FakeBackend(right=2)
    prepare(PrepareConfig(**{**config.to_dict(), "fps": 2.0}), backend=again, progress=False)
    assert [r.videos for r in again.calls] == [[str(tmp_path / "pics" / "clip.mp4")]]


def test_a_video_prompt_makes_pairs_that_carry_the_video(tmp_path):
    from video_files import write_clip

    clip = write_clip(tmp_path / "pics" / "clip.mkv", frames=8, rate=4)

    class VideoBackend(FakeBackend):
        def sample(self, request):
            self.calls.append(request)
            return ["It is a red shape.", "It is a green shape."][:request.k]

    config = PrepareConfig(images_dir=str(tmp_path / "pics"), prompts=["What colour is the shape?"],
                           output_dir=str(tmp_path / "out"), strategies=["ranking"], judge="rule",
                           must_not_include=["green"], samples_per_prompt=2)
    result = prepare(config, backend=VideoBackend(), progress=False)
    [row] = [json.loads(line) for line in result.pairs_file.read_text().splitlines()]
    assert row["messages"][0]["content"] == "<video>What colour is the shape?" and "images" not in row
    assert (tmp_path / "out" / row["videos"][0]).resolve() == clip.resolve()
    assert (row["messages"][-1]["content"], row["rejected_response"]) == ("It is a red shape.", "It is a green shape.")
    assert not validate_dataset(result.pairs_file).has_errors()


def test_prompts_per_batch_groups_the_unanswered_prompts_into_backend_calls(tmp_path):
    class BatchingBackend(FakeBackend):
        batches = []

        def sample_many(self, requests):
            self.batches.append(len(requests))
            return [self.sample(r) for r in requests]

    config = _config(tmp_path, supervised_file(tmp_path, ("red", "blue", "red", "green", "blue")),
                     strategies=["reference"], prompts_per_batch=3)
    backend = BatchingBackend()
    batched = prepare(config, backend=backend, progress=False)
    assert backend.batches == [3, 2]
    unbatched = prepare(PrepareConfig(**{**config.to_dict(), "prompts_per_batch": 1,
                                         "output_dir": str(tmp_path / "one")}), backend=FakeBackend(), progress=False)
    assert batched.pairs_file.read_text() == unbatched.pairs_file.read_text()


def test_among_equally_wrong_samples_the_one_worded_like_the_reference_is_rejected():
    judged = _judged(["A green square on a light background.", "It is a green circle.", "It is a red circle."],
                     [0.25, 0.25, 1.0], reference="It is a red circle.")
    [(_, pair, _)] = make_pairs(judged, ["reference"], wrong_below=0.5, min_score_gap=0.3)
    assert pair.rejected == "It is a green circle."  # differs from the reference only in the mistake
