"""Answer-level evaluation, base vs tuned: POPE's yes/no layout and short answers, read without guessing.

The POPE mode is tested with a scripted model whose answers are known (so every metric has a value worked out by
hand) on a small generated file in POPE's layout; the short-answer mode on the demo's colour questions with the
shared trained run (thresholds from benchmarks/warm_spread.py, with margin); bad files and odd answers are fuzzed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtools.__main__ import main
from nbtools.config import RunConfig
from nbtools.evaluate import (
    BenchmarkError,
    Decoding,
    adapter_enabled,
    answers_headline,
    evaluate_answers,
    generate_text,
    parse_yes_no,
    read_benchmark,
)
from nbtools.evaluate.answers import answers_table_text, read_answer
from nbtools.evaluate.benchmark import BenchmarkItem, read_short_answer

SHAPES = Path(__file__).resolve().parents[1] / "data_samples" / "shapes"
COLOURS = ["red", "green", "blue", "yellow"]
FUZZ = settings(max_examples=int(os.environ.get("NBTOOLS_FUZZ_EXAMPLES", "200")), deadline=None, database=None,
                derandomize=os.environ.get("NBTOOLS_FUZZ_SEED") is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------- reading answers

@pytest.mark.parametrize("answer, read", [
    ("Yes", "yes"), ("no", "no"), ("Yes.", "yes"), ("NO!", "no"), ("yes, there is a dog in the image.", "yes"),
    ("No, there is no dog.", "no"), ("**Yes**", "yes"), ("  \n'No'", "no"), ("Answer: yes", "yes"),
    ("**Answer:** No.", "no"), ("The answer is yes.", "yes"), ("<think>a dog? no, a cat</think>\n\nYes", "yes"),
    ("reasoning, no answer yet</think>No", "no"),  # Qwen3's Thinking template opens the block in the prompt
    ("There is a dog in the image.", None), ("I cannot tell.", None), ("Yes or no?", None), ("yes/no", None),
    ("", None), ("Yesterday I saw a dog.", None), ("<think>Is it a dog? Yes, it", None), ("Nope", None),
    ("It is a red square.", None), ("1. Yes", None),
])
def test_yes_no_is_read_from_the_start_and_never_guessed(answer, read):
    assert parse_yes_no(answer) == read


DECORATION = st.text(alphabet=list(" \n\t*_#>`\"'“”()[]:-"), max_size=6)
# what follows the answer word; a hedge ("Yes, or no") and a Thinking block are read as neither on purpose
REST = st.text().filter(lambda t: not re.match(r"\W*(?:or|and|/)", t, re.I) and "think>" not in t.lower())
TAIL = st.one_of(st.just(""), REST.map(lambda t: "," + t), REST.map(lambda t: ". " + t))


@FUZZ
@given(st.sampled_from(["yes", "no"]), st.sampled_from([str.lower, str.upper, str.capitalize]), DECORATION,
       DECORATION, TAIL)
def test_a_decorated_yes_or_no_is_read(word, case, before, after, tail):
    assert parse_yes_no(before + case(word) + after + tail) == word


@FUZZ
@given(st.text())
def test_any_answer_reads_as_yes_no_or_neither(text):
    assert parse_yes_no(text) in ("yes", "no", None)
    pope = BenchmarkItem("f:1", 1, "a.png", "a.png", "Is there a dog?", label="yes")
    assert read_answer(pope, text) in (("yes", True), ("no", False), ("neither", False))
    read, right = read_answer(short("red"), text)
    assert read in (*COLOURS, "none", "several") and right == (read == "red")


def short(answer: str, terms=tuple(COLOURS)) -> BenchmarkItem:
    return BenchmarkItem("f:1", 1, "a.png", "a.png", "What colour is the shape?", answer=answer, terms=tuple(terms))


@pytest.mark.parametrize("answer, right, named", [
    ("It is a red square.", True, "red"), ("RED", True, "red"), ("It is a green square.", False, "green"),
    ("It is a reddish square.", False, "none"), ("A red and green square.", False, "several"),
    ("<think>red or green?</think>It is red.", True, "red"), ("<think>red", False, "none"),
])
def test_short_answers_name_the_reference_term_and_no_other(answer, right, named):
    assert read_short_answer(answer, short("red")) == (right, named)


def test_short_answers_without_terms_match_exactly_after_normalising():
    item = short("the Eiffel Tower", terms=())
    assert read_answer(item, "Eiffel tower.") == ("match", True)
    assert read_answer(item, "It is the Eiffel Tower.") == ("no match", False)


# --------------------------------------------------------------------------- reading files

def pope_rows(n: int = 8) -> list[dict]:
    """POPE's layout on the shapes pictures: 'Is there a red shape in the image?' labelled from the picture."""
    rows = [json.loads(line) for line in (SHAPES / "colour_questions.jsonl").read_text().splitlines()[:n]]
    return [{"question_id": r["question_id"], "image": Path(r["image"]).name, "text": f"Is there a {c} shape?",
             "label": "yes" if c == r["answer"] else "no"}
            for r, c in zip(rows, [r["answer"] if i % 2 == 0 else "purple" for i, r in enumerate(rows)])]


def write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_pope_file_is_read_with_images_from_a_folder(tmp_path):
    rows = pope_rows()
    rows[0]["text"] = "<image>" + rows[0]["text"]  # the project's image tag: the picture goes on its own
    bench = read_benchmark(write(tmp_path / "coco_pope_random.json", rows), images=SHAPES / "images")
    assert bench.items[0].text == pope_rows()[0]["text"]
    assert (bench.mode, bench.name, len(bench)) == ("pope", "coco_pope_random", 8)
    assert [item.label for item in bench.items] == ["yes", "no"] * 4
    assert bench.items[0].image == str(SHAPES / "images" / "validation_0001.png")
    as_array = read_benchmark(write(tmp_path / "array.json", [json.dumps(pope_rows())]), images=SHAPES / "images")
    assert as_array.items[3].row == f"{tmp_path / 'array.json'}: item 4"


BAD_ROWS = [
    ("not json", "1: not valid JSON"),
    ("42", "1: not a JSON object"),
    ({"question_id": 1, "image": "validation_0001.png", "text": "Is there a dog?"}, "1: label/answer: missing"),
    ({"question_id": 1, "image": "validation_0001.png", "text": "Is there a dog?", "label": "maybe"},
     '1: label: "maybe" is not "yes" or "no"'),
    ({"question_id": True, "image": "validation_0001.png", "text": "Dog?", "label": "no"}, "1: question_id: true"),
    ({"question_id": 1.5, "image": "validation_0001.png", "text": "Dog?", "label": "no"}, "1: question_id: 1.5"),
    ({"question_id": 1, "image": "gone.png", "text": "Dog?", "label": "no"}, "gone.png: no such file"),
    ({"question_id": 1, "image": "validation_0001.png", "text": "  ", "label": "no"}, "1: text: empty"),
    ({"question_id": 1, "image": ["validation_0001.png"], "text": "Dog?", "label": "no"}, "1: image: [\"valid"),
    ({"question_id": 1, "image": "validation_0001.png", "text": "Colour?", "answer": "purple", "terms": COLOURS},
     '1: answer: "purple" names none of the terms red, green, blue, yellow'),
    ({"question_id": 1, "image": "validation_0001.png", "text": "Colour?", "answer": "red", "terms": "red"},
     '1: terms: "red" is not a list of words'),
]


@pytest.mark.parametrize("row, message", BAD_ROWS, ids=[m for _, m in BAD_ROWS])
def test_a_bad_row_is_named_with_its_field_and_fix(tmp_path, row, message):
    path = write(tmp_path / "bench.jsonl", [row])
    with pytest.raises(BenchmarkError) as caught:
        read_benchmark(path, images=SHAPES / "images")
    text = str(caught.value)
    assert text.startswith(f"{path}:") and message in text and "(fix: " in text and "\n" not in text


def test_every_problem_of_a_file_is_listed_at_once(tmp_path):
    rows = pope_rows(3)
    rows[1]["question_id"] = rows[0]["question_id"]
    mixed = {"question_id": 9, "image": rows[0]["image"], "text": "Colour?", "answer": "red"}
    path = write(tmp_path / "bench.jsonl", rows + [mixed, "{"])
    with pytest.raises(BenchmarkError) as caught:
        read_benchmark(path, images=SHAPES / "images")
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: 3 problems in the benchmark file; fix them first:"
    assert lines[1].startswith(f"{path}:2: question_id: 1 repeats {path}:1")
    assert lines[2].startswith(f"{path}:4: answer: this row is a short answers row but {path}:1 is a yes/no")
    assert lines[3].startswith(f"{path}:5: not valid JSON")


def test_files_and_folders_that_cannot_be_benchmarks(tmp_path):
    for path, message in ((tmp_path / "nope.jsonl", "no such file"), (tmp_path, "is a folder")):
        with pytest.raises(BenchmarkError, match=message):
            read_benchmark(path)
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(BenchmarkError, match="not UTF-8 text"):
        read_benchmark(tmp_path / "latin.jsonl")
    with pytest.raises(BenchmarkError, match="no questions"):
        read_benchmark(write(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(BenchmarkError, match="no such image folder"):
        read_benchmark(write(tmp_path / "b.jsonl", pope_rows(1)), images=tmp_path / "missing")


def lmms_pope_folder(root: Path, rows: list[dict], shards: int = 2) -> Path:
    """POPE as lmms-lab publishes it: data/test-0000K-of-0000N.parquet, string ids, question/answer columns, the
    COCO picture embedded as a datasets Image struct, the subset in category."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table_rows = [{"id": str(i), "question_id": str(r["question_id"]), "question": r["text"], "answer": r["label"],
                   "image_source": Path(r["image"]).stem,
                   "image": {"bytes": (SHAPES / "images" / r["image"]).read_bytes(), "path": None},
                   "category": ("adversarial", "popular", "random")[i * 3 // len(rows)]} for i, r in enumerate(rows)]
    (root / "data").mkdir(parents=True)
    per = -(-len(table_rows) // shards)
    for k in range(shards):
        pq.write_table(pa.Table.from_pylist(table_rows[k * per:(k + 1) * per]),
                       root / "data" / f"test-{k:05d}-of-{shards:05d}.parquet")
    return root


def test_pope_as_published_in_parquet_with_embedded_pictures(tmp_path, scripted_run):
    from nbtools.media_ref import EmbeddedMedia

    rows = pope_rows(8)
    folder = lmms_pope_folder(tmp_path / "POPE", rows)
    bench = read_benchmark(folder)
    assert (bench.mode, bench.name, len(bench)) == ("pope", "POPE", 8)
    assert [(i.question_id, i.text, i.label) for i in bench.items] == [
        (str(r["question_id"]), r["text"], r["label"]) for r in rows]
    first = bench.items[4]
    assert isinstance(first.image, EmbeddedMedia) and first.row == f"{folder}/data/test-00001-of-00002.parquet: row 0"
    assert first.image.data == (SHAPES / "images" / rows[4]["image"]).read_bytes()
    base, tuned = Scripted(["Yes"] * 8), Scripted(["Yes", "No"] * 4)
    p = evaluate_answers(scripted_run, folder, base=base, tuned=tuned, progress=False, seed=3, n_resamples=200).payload
    assert (p["base"]["accuracy"], p["tuned"]["accuracy"]) == (0.5, 1.0)
    assert json.loads((scripted_run / "answers" / "POPE.json").read_text())["items"][4]["image"] == str(first.image)
    assert "data:image/jpeg;base64" in (scripted_run / "answers" / "POPE_flipped.html").read_text()
    assert tuned.seen[4][0][0].size == base.seen[4][0][0].size  # the embedded picture reached both sides
    # POPE's three subsets, each with its own metrics: 3, 2 and 3 questions; the base says yes to all
    assert [i.category for i in bench.items] == ["adversarial"] * 3 + ["popular"] * 3 + ["random"] * 2
    groups = p["by_category"]
    assert {name: (g["n_items"], g["base"]["accuracy"], g["tuned"]["accuracy"]) for name, g in groups.items()} == {
        "adversarial": (3, 2 / 3, 1.0), "popular": (3, 1 / 3, 1.0), "random": (2, 0.5, 1.0)}
    table = answers_table_text(p).splitlines()
    at = table.index("by category:")
    assert table[at + 1].split() == ["category", "questions", "base", "accuracy", "tuned", "accuracy", "base", "f1",
                                     "tuned", "f1"]
    assert table[at + 3].startswith("adversarial  3 ") and "66.7%" in table[at + 3]


def test_pope_by_hub_id_goes_through_load_dataset(tmp_path, monkeypatch):
    import datasets

    folder = lmms_pope_folder(tmp_path / "POPE", pope_rows(4), shards=1)
    published = datasets.load_dataset("parquet", data_files=str(folder / "data" / "*.parquet"), split="train",
                                      cache_dir=str(tmp_path / "cache")).cast_column("image", datasets.Image())
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, split: asked.append((repo, split)) or published)
    bench = read_benchmark("lmms-lab/POPE:test")
    assert asked == [("lmms-lab/POPE", "test")]
    assert (bench.mode, bench.name, [i.label for i in bench.items]) == ("pope", "POPE_test", ["yes", "no"] * 2)
    assert bench.items[1].image.data == (SHAPES / "images" / pope_rows(4)[1]["image"]).read_bytes()


def test_benchmark_tables_that_cannot_be_used_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pope_rows(3)
    folder = lmms_pope_folder(tmp_path / "broken", rows, shards=1)
    shard = folder / "data" / "test-00000-of-00001.parquet"
    table = pq.read_table(shard).to_pylist()
    table[1]["image"] = {"bytes": b"not a picture", "path": None}
    table[2]["answer"] = "maybe"  # a short answer, then: the table is not POPE's yes/no layout
    pq.write_table(pa.Table.from_pylist(table), shard)
    with pytest.raises(BenchmarkError) as caught:
        read_benchmark(folder)
    assert str(caught.value).startswith(f"{shard}: row 1: image: the embedded picture is not a readable image (")
    assert str(caught.value).endswith("(fix: download the shard again; if the row stays damaged, remove it)")
    table[1]["image"] = {"bytes": None, "path": None}  # the data layer's picture rules, with their message
    pq.write_table(pa.Table.from_pylist(table[:2]), shard)
    with pytest.raises(BenchmarkError) as caught:
        read_benchmark(folder)
    assert str(caught.value) == (f"{shard}: row 1: image: the picture struct in column image has neither bytes nor "
                                 'a path (fix: store {"bytes": <the encoded image>, "path": <its file name>} or a '
                                 "path to the file)")
    pq.write_table(pa.Table.from_pylist([{"prompt": "Dog?", "picture": b"x"}]), tmp_path / "other.parquet")
    with pytest.raises(BenchmarkError, match=r"other.parquet: no image, text or question, label or answer column "
                                             r"\(its columns: picture, prompt\) \(fix: "):
        read_benchmark(tmp_path / "other.parquet")
    if os.environ.get("HF_HUB_OFFLINE") == "1":  # as make test and CI run: nothing is downloaded
        with pytest.raises(BenchmarkError, match=r"HF_HUB_OFFLINE is set and the dataset lmms-lab/POPE \(split test\)"):
            read_benchmark("lmms-lab/POPE:test")


VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                    max_size=3), max_leaves=6)
ROW = st.fixed_dictionaries({}, optional={
    "question_id": st.one_of(st.integers(0, 3), st.text(max_size=3), VALUES),
    "image": st.one_of(st.sampled_from(["validation_0001.png", "validation_0002.png", "gone.png", "", "/"]), VALUES),
    "text": st.one_of(st.just("Is there a dog?"), VALUES),
    "label": st.one_of(st.sampled_from(["yes", "no", "Yes ", "maybe"]), VALUES),
    "answer": st.one_of(st.sampled_from(["red", "a red one", "red or green", "purple"]), VALUES),
    "terms": st.one_of(st.just(COLOURS), VALUES),
    "category": st.one_of(st.sampled_from(["random", "popular", " "]), VALUES),
})
LINE = st.one_of(ROW.map(json.dumps), st.text(max_size=20), st.binary(max_size=20).map(lambda b: b.decode("latin-1")))


@FUZZ
@given(st.lists(LINE, max_size=6))
def test_any_file_is_read_or_refused_with_the_projects_message(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        bench = read_benchmark(path, images=SHAPES / "images", terms="red,green,blue,yellow")
    except BenchmarkError as exc:
        assert str(exc).startswith(str(path)) and "fix: " in str(exc)
    else:
        assert bench.items and bench.mode in ("pope", "short_answer")
        assert len({(type(i.question_id), i.question_id) for i in bench.items}) == len(bench.items)
        assert all(i.category is None or (isinstance(i.category, str) and i.category.strip() == i.category != "")
                   for i in bench.items)


# --------------------------------------------------------------------------- POPE with a scripted model

class Scripted:
    """A model whose answers are known: the next one of ``answers`` each time it is asked (questions are asked in
    file order); it keeps what it was shown."""

    def __init__(self, answers):
        self.answers, self.seen = list(answers), []

    def describe(self) -> str:
        return "scripted"

    def answer(self, images, prompt, decoding=None, on_text=None, videos=()):
        self.seen.append((list(images), prompt, decoding))
        return self.answers[len(self.seen) - 1]


@pytest.fixture
def scripted_run(tmp_path) -> Path:
    """A run folder with only its config: scripted sides need no adapter and no model."""
    run = tmp_path / "run"
    run.mkdir()
    RunConfig(model="tiny-qwen3-vl", train_file=str(SHAPES / "train.jsonl"), output_dir=str(run),
              max_pixels=64 * 64).to_yaml(run / "config.yaml")
    return run


def test_pope_metrics_from_known_answers(tmp_path, scripted_run):
    rows = pope_rows(8)  # labelled yes, no, yes, no, ...
    bench = write(tmp_path / "pope.json", rows)
    base = Scripted(["Yes"] * 8)  # says yes to everything
    # yes-labelled: TP, neither (wrong), neither (wrong), TP; no-labelled: TN, TN, TN, neither (wrong, not a false
    # positive)
    tuned = Scripted(["Yes", "no", "Yes or no", "No.", "I cannot tell.", "No", "**yes**", "There is a shape."])
    result = evaluate_answers(scripted_run, bench, base=base, tuned=tuned, images=SHAPES / "images", seed=3,
                              n_resamples=500, progress=False)
    p = result.payload
    assert (p["mode"], p["n_items"], p["label_yes_ratio"]) == ("pope", 8, 0.5)
    metrics = ("accuracy", "precision", "recall", "f1", "yes_ratio", "neither_ratio")
    assert [p["base"][m] for m in metrics] == [0.5, 0.5, 1.0, pytest.approx(2 / 3), 1.0, 0.0]
    assert [item["tuned"]["read"] for item in p["items"]] == ["yes", "no", "neither", "no", "neither", "no", "yes",
                                                              "neither"]
    assert [p["tuned"][m] for m in metrics] == [5 / 8, 1.0, 0.5, pytest.approx(2 / 3), 0.25, 3 / 8]
    assert p["counts"]["tuned"] == {"yes": 2, "no": 3, "neither": 3}
    for side in ("base", "tuned"):  # every interval holds its value
        for metric, (low, high) in p[side]["ci95"].items():
            assert low <= p[side][metric] <= high, (side, metric)
    assert p["difference"]["yes_ratio"]["value"] == -0.75
    assert [(f["question_id"], f["direction"]) for f in p["flipped"]] == [(2, "fixed"), (3, "broken"), (4, "fixed"),
                                                                        (5, "broken"), (6, "fixed")]
    # each question with its picture, sized by the run's max_pixels; the same greedy settings for both sides
    assert [prompt for _, prompt, _ in tuned.seen] == [r["text"] for r in rows]
    images, _, decoding = tuned.seen[0]
    assert len(images) == 1 and images[0].width * images[0].height <= 64 * 64
    assert base.seen[0][2] == decoding and decoding.temperature == 0
    saved = json.loads((scripted_run / "answers" / "pope.json").read_text())
    assert saved["tuned"] == p["tuned"] and saved["sides"] == {"base": "scripted", "tuned": "scripted"}
    flipped = (scripted_run / "answers" / "pope_flipped.html").read_text()
    assert flipped.count("<tr>") == 5 + 1 and "data:image/jpeg;base64" in flipped
    table = answers_table_text(p)
    assert "Answers neither yes nor no (counted wrong, not guessed): base 0, tuned 3 of 8." in table
    assert "Flipped: 3 fixed by tuning, 2 broken." in table


@pytest.fixture
def thinking_run(tmp_path) -> Path:
    """A run folder whose model is a Thinking one: a processor-only folder with the Thinking chat template."""
    from nbtools.models import load_processor
    from nbtools.models.chat_templates import THINKING_CHAT_TEMPLATE

    processor = load_processor("tiny-qwen3-vl")
    processor.chat_template = processor.tokenizer.chat_template = THINKING_CHAT_TEMPLATE
    processor.save_pretrained(str(tmp_path / "tiny-thinking"))
    run = tmp_path / "thinking-run"
    run.mkdir()
    RunConfig(model=str(tmp_path / "tiny-thinking"), train_file=str(SHAPES / "train.jsonl"), output_dir=str(run),
              max_pixels=64 * 64).to_yaml(run / "config.yaml")
    return run


def test_answers_cut_off_while_reasoning_are_counted_and_the_fix_is_named(tmp_path, scripted_run, thinking_run):
    bench = write(tmp_path / "pope.json", pope_rows(4))
    # the Thinking template opens <think> in the prompt: an answer is what follows </think>
    cut = ["The picture shows a red", "Hm.</think>Yes", "Yes, I see it. Let me check the", "It could be</think> No."]
    p = evaluate_answers(thinking_run, bench, base=Scripted(["Yes", "No"] * 2), tuned=Scripted(cut),
                         images=SHAPES / "images", progress=False, write=False).payload
    # the third is read as yes (nothing tells it from a stripped answer) and is not counted as cut
    assert [item["tuned"]["read"] for item in p["items"]] == ["neither", "yes", "yes", "no"]
    assert p["cut_while_reasoning"] == {"base": 0, "tuned": 1}
    notes = [line for line in answers_table_text(p).splitlines() if "reasoning" in line]
    assert notes == ["note: answers cut off while reasoning (base 0 of 4, tuned 1 of 4): the <think> block had not "
                     f"closed after max_new_tokens {p['decoding']['max_new_tokens']}, so they count as wrong; a "
                     "Thinking model needs room to reason before it answers: raise max_new_tokens "
                     "(--max-new-tokens on the command line) to 1024 or more"]
    # an Instruct model: only an opened and never closed block is a cut answer; a plain unread one is not
    opened = ["<think>The picture shows", "Yes", "I cannot tell.", "No"]
    p = evaluate_answers(scripted_run, bench, base=Scripted(["Yes", "No"] * 2), tuned=Scripted(opened),
                         images=SHAPES / "images", progress=False, write=False).payload
    assert p["cut_while_reasoning"] == {"base": 0, "tuned": 1}
    p = evaluate_answers(scripted_run, bench, base=Scripted(["No"] * 4), tuned=Scripted(["Yes", "No"] * 2),
                         images=SHAPES / "images", progress=False, write=False).payload
    assert p["cut_while_reasoning"] == {"base": 0, "tuned": 0} and p["notes"] == []


def test_two_benchmarks_of_the_same_name_keep_their_own_results(tmp_path, scripted_run):
    first = write((tmp_path / "a").mkdir() or tmp_path / "a" / "pope.jsonl", pope_rows(4))
    second = write((tmp_path / "b").mkdir() or tmp_path / "b" / "pope.jsonl", pope_rows(2))

    def evaluate(path):
        return evaluate_answers(scripted_run, path, base=Scripted(["Yes"] * 4), tuned=Scripted(["No"] * 4),
                                images=SHAPES / "images", progress=False, n_resamples=100).paths["answers"]

    kept, other, again = evaluate(first), evaluate(second), evaluate(first)
    assert kept == again == scripted_run / "answers" / "pope.json"  # the same benchmark again: replaced
    assert other.name.startswith("pope-") and other != kept
    assert json.loads(other.read_text())["n_items"] == 2 and json.loads(kept.read_text())["n_items"] == 4
    assert sorted(p.name for p in (scripted_run / "answers").glob("*.json")) == sorted([kept.name, other.name])


def test_undefined_precision_is_shown_as_such(tmp_path, scripted_run):
    bench = write(tmp_path / "pope.json", pope_rows(4))
    never_yes = Scripted(["No"] * 8)
    p = evaluate_answers(scripted_run, bench, base=never_yes, tuned=Scripted(["No"] * 4), images=SHAPES / "images",
                         progress=False, write=False).payload
    assert p["base"]["precision"] is None and p["base"]["ci95"]["precision"] is None
    assert p["base"]["recall"] == 0.0 and p["base"]["accuracy"] == 0.5
    row = next(line for line in answers_table_text(p).splitlines() if line.startswith("precision"))
    assert row.split()[1:] == ["n/a", "n/a", "n/a"]
    assert json.loads(json.dumps(p, allow_nan=False))  # strict JSON: no NaN


def test_no_benchmark_evaluates_nothing(scripted_run):
    result = evaluate_answers(scripted_run, "")
    assert result.payload is None and "No benchmark file given" in result._repr_html_()
    assert answers_headline(None).startswith("No benchmark file given")


# --------------------------------------------------------------------------- the trained run (slow)

@pytest.mark.slow
def test_demo_colour_accuracy_base_vs_tuned_with_intervals(colour_answers):
    from nbtools.demo import COLOUR_BASE_MAX, COLOUR_TUNED_MIN

    p = colour_answers.payload
    base, tuned = p["base"], p["tuned"]
    assert (p["mode"], p["n_items"], p["terms"]) == ("short_answer", 60, COLOURS)
    assert sum(p["counts"]["base"].values()) == 60 and p["counts"]["base"]["right"] == round(60 * base["accuracy"])
    assert base["accuracy"] <= COLOUR_BASE_MAX and tuned["accuracy"] >= COLOUR_TUNED_MIN, answers_table_text(p)
    assert tuned["ci95"]["accuracy"][0] > base["ci95"]["accuracy"][1] and p["tuned_better"]
    # the base model's mistake is the built-in one: red and green swapped
    partner = {"red": "green", "green": "red"}
    mixed = [item for item in p["items"] if item["expected"] in partner]
    assert sum(item["base"]["read"] == partner[item["expected"]] for item in mixed) >= 0.9 * len(mixed)
    assert "the tuned model answers better beyond sampling noise" in answers_headline(p)
    assert colour_answers.paths["answers"].is_file() and colour_answers.paths["flipped"].is_file()


@pytest.mark.slow
def test_batched_answers_equal_one_at_a_time(colour_answers, eval_run_model):
    run = eval_run_model
    for item in colour_answers.payload["items"][2:4]:  # a yellow and a red shape
        for side, adapter in (("base", False), ("tuned", True)):
            with adapter_enabled(run.model, adapter):
                alone = generate_text(run.model, run.processor, [item["image_path"]], item["text"],
                                      Decoding(max_new_tokens=32))
            assert alone == item[side]["answer"]


@pytest.mark.slow
def test_cli_answers_a_pope_file_with_the_run_and_counts_captions_as_neither(eval_run_dir, tmp_path, capsys):
    bench = write(tmp_path / "pope_shapes.jsonl", pope_rows(6))
    code = main(["evaluate", str(eval_run_dir), "--benchmark", str(bench), "--images", str(SHAPES / "images"),
                 "--max-new-tokens", "12", "--json"])
    assert code == 0
    p = json.loads(capsys.readouterr().out)
    assert p["mode"] == "pope" and p["n_items"] == 6
    # the warm model answers with captions ("It is a red square."): neither yes nor no, so wrong, not guessed
    assert p["counts"] == {"base": {"neither": 6}, "tuned": {"neither": 6}}
    assert p["tuned"]["accuracy"] == 0.0 and p["tuned"]["yes_ratio"] == 0.0 and p["tuned"]["precision"] is None
    assert (eval_run_dir / "answers" / "pope_shapes.json").is_file()


@pytest.mark.slow
def test_cli_refuses_bad_benchmarks_in_one_line(eval_run_dir, tmp_path, capsys):
    bench = write(tmp_path / "bad.jsonl", [{"question_id": 1, "image": "gone.png", "text": "Dog?", "label": "yes"}])
    assert main(["evaluate", str(eval_run_dir), "--benchmark", str(bench)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {bench}:1: image: ") and "--images DIR" in err
    assert main(["evaluate", str(eval_run_dir), "--terms", "red"]) == 2
    assert "only used with --benchmark" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nowhere"), "--benchmark", str(bench)]) == 2
    assert "no such run folder" in capsys.readouterr().err
    copy = tmp_path / "run"
    shutil.copytree(eval_run_dir, copy, ignore=shutil.ignore_patterns("answers", "lab", "plots"))
    (copy / "adapter" / "adapter_config.json").unlink()
    assert main(["evaluate", str(copy), "--benchmark", str(bench)]) == 2  # the run is refused before the file
    assert "no trained adapter" in capsys.readouterr().err
