"""``prepare()``: prompts -> sampled answers -> judged -> pairs.jsonl + report.json (+ the validator's report).

Output folder layout::

    OUTPUT/pairs.jsonl      the pairs in the data format (images referenced relative to OUTPUT)
    OUTPUT/report.json      counts per strategy and reason, judge agreement, validation summary
    OUTPUT/samples.jsonl    the resumable sample store (delete it to sample afresh)
    OUTPUT/judgments.jsonl  the judge cache (delete it to judge afresh)
    OUTPUT/corrupted/       corrupted images (corrupted strategy)
    OUTPUT/images/          copies of the images (copy_images only)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nbtools.endpoint import EndpointClient
from nbtools.images import is_remote
from nbtools.judges import (
    OpenAICompatibleJudge, ReferenceJudge, RuleJudge, ScoreJudge, VocabularyJudge, judge_fingerprint, require_judge,
    run_judge,
)

from .backends import SampleRequest, SamplingBackend, TransformersBackend
from .config import PrepareConfig
from .corrupt import corrupted_paths
from .inputs import PrepareInputError, PromptRow, file_digest, read_inputs
from .report import REPORT_FILE, PrepareReport, write_json_atomic
from .served_backend import RESUMABLE_FIX, OpenAICompatibleBackend
from .store import JudgmentStore, SampleStore, judgment_key, prompt_seed, resume_key
from .strategies import Judged, Pair, make_pairs

PAIRS_FILE = "pairs.jsonl"


@dataclass(repr=False)
class PrepareResult:
    pairs_file: Path
    report: PrepareReport
    validation: object  # nbtools.data.ValidationReport of pairs_file

    def preview(self, n: int = 8):
        """The preview gallery of the written pairs, with the validator's findings."""
        from nbtools.data import load_records, preview

        return preview(self.validation if self.validation is not None else load_records(self.pairs_file), n=n)

    def _repr_html_(self) -> str:
        return self.report._repr_html_()

    def __repr__(self) -> str:
        return f"<PrepareResult {self.report.pairs_made} pairs in {self.pairs_file}>"


def prompt_text(row: PromptRow) -> str:
    """The last user turn without media tags: what judges read as the prompt."""
    return row.messages[-1]["content"].replace("<image>", "").replace("<video>", "").strip()


@dataclass
class SampleTask:
    """One prompt on one set of images (the real ones, or their corrupted versions) and its resume key."""

    row: PromptRow
    images: list
    key: str


def _task(row: PromptRow, images: list, fingerprint: str, config: PrepareConfig) -> SampleTask:
    media = [file_digest(p) for p in images] + [file_digest(p) for p in row.videos]
    return SampleTask(row, list(images), resume_key(fingerprint, config.sampling_settings(videos=bool(row.videos)),
                                                    row.messages, media))


def _request(task: SampleTask, config: PrepareConfig) -> SampleRequest:
    return SampleRequest(task.row.messages, task.images, config.samples_per_prompt, config.temperature, config.top_p,
                         config.max_new_tokens, prompt_seed(config.seed, task.key), videos=list(task.row.videos),
                         video=config.video_settings() if task.row.videos else None)


def _unreadable(tasks: list, exc: OSError) -> PrepareInputError:
    """An image or video that exists but cannot be decoded: the rows, and the fix."""
    index = getattr(exc, "index", None)
    sources = ", ".join(sorted({t.row.source for t in (tasks if index is None else [tasks[index]])}))
    return PrepareInputError(f"{sources}: images: cannot be read ({exc}) (fix: replace or remove the file; "
                             "`python -m nbtools validate --deep` checks every image; answers so far are kept "
                             "and a rerun resumes)")


def _call_backend(backend: SamplingBackend, tasks: list, config: PrepareConfig) -> list:
    """Answers for a batch of tasks: ``sample_many`` when the backend has it and the batch has several prompts."""
    requests = [_request(t, config) for t in tasks]
    try:
        if len(requests) > 1 and hasattr(backend, "sample_many"):
            return [list(a) for a in backend.sample_many(requests)]
        return [list(backend.sample(r)) for r in requests]
    except OSError as exc:  # e.g. an image file that exists but cannot be decoded
        raise _unreadable(tasks, exc) from None


def _store(store: SampleStore, task: SampleTask, answers) -> None:
    store.put(task.key, list(answers), source=task.row.source, images=[str(p) for p in task.images],
              **({"videos": list(task.row.videos)} if task.row.videos else {}))


def sample_tasks(backend: SamplingBackend, store: SampleStore, tasks: list, config: PrepareConfig,
                 progress: bool = True) -> dict:
    """Answer every task whose key the store lacks, storing each answer set as it comes: ``prompts_per_batch``
    prompts per backend call, or, for a backend with ``sample_iter`` (a server), all of them at once with
    the backend deciding how many are in flight. Returns ``{"generated": n, "reused": n}`` (tasks sharing a key
    are answered once)."""
    from tqdm.auto import tqdm

    pending, seen = [], set()
    for task in tasks:
        stored = store.get(task.key)
        if (stored is None or len(stored) != config.samples_per_prompt) and task.key not in seen:
            seen.add(task.key)
            pending.append(task)
    size = config.prompts_per_batch
    with tqdm(total=len(pending), desc="sampling", unit="prompt", disable=not progress or not pending) as bar:
        if hasattr(backend, "sample_iter") and pending:
            try:
                for index, answers in backend.sample_iter([_request(t, config) for t in pending]):
                    _store(store, pending[index], answers)
                    bar.update(1)
            except OSError as exc:
                raise _unreadable(pending, exc) from None
        else:
            for start in range(0, len(pending), size):
                batch = pending[start:start + size]
                for task, answers in zip(batch, _call_backend(backend, batch, config)):
                    _store(store, task, answers)
                bar.update(len(batch))
    return {"generated": len(pending), "reused": len(tasks) - len(pending)}


def _media_path(path: str, out_dir: Path, copy: bool) -> str:
    """How a pair names an image: relative to OUTPUT (so the folder moves as one), or a copy inside it."""
    if is_remote(path):
        return path
    if copy:
        target = out_dir / "images" / f"{file_digest(path)[:24]}{Path(path).suffix.lower()}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target.with_name(target.name + ".tmp"))
            os.replace(target.with_name(target.name + ".tmp"), target)
        path = str(target)
    return os.path.relpath(os.path.abspath(path), out_dir)


def pair_row(pair: Pair, out_dir: Path, copy_images: bool) -> dict:
    """One pair in the data format."""
    row = {"messages": [*pair.messages, {"role": "assistant", "content": pair.chosen}]}
    if pair.images:
        row["images"] = [_media_path(p, out_dir, copy_images) for p in pair.images]
    if pair.videos:
        row["videos"] = [_media_path(p, out_dir, copy_images) for p in pair.videos]
    row["rejected_response"] = pair.rejected
    if pair.rejected_images:
        row["rejected_images"] = [_media_path(p, out_dir, False) for p in pair.rejected_images]
    return row


def write_pairs(pairs: list, out_dir: Path, copy_images: bool) -> Path:
    path = out_dir / PAIRS_FILE
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair_row(pair, out_dir, copy_images), ensure_ascii=False) + "\n")
    os.replace(temporary, path)
    return path


def _agreement(judge: ScoreJudge, judged: list, wrong_below: float) -> Optional[dict]:
    """How often the judge's right/wrong verdict on a sample matches the reference judge's, where a reference
    exists (not computed when the judge is the reference judge itself)."""
    if isinstance(judge, ReferenceJudge):
        return None
    reference_judge, agree, total = ReferenceJudge(), 0, 0
    for item in judged:
        if not item.row.reference or item.scores is None:
            continue
        ref_scores = reference_judge(prompt_text(item.row), item.row.images, item.answers, item.row.reference)
        for own, ref in zip(item.scores, ref_scores):
            agree += (own < wrong_below) == (ref < wrong_below)
            total += 1
    if not total:
        return None
    return {"with": "reference judge", "samples": total, "agree": agree, "rate": agree / total}


def _sampleable(inputs, report: PrepareReport) -> list:
    """The rows to sample; those left out are listed in the report with the reason."""
    if inputs.skipped_validation:
        report.skipped["shares an image with validation_file"] = inputs.skipped_validation
    return list(inputs.rows)


def plan_tasks(rows: list, fingerprint: str, config: PrepareConfig, out_dir: Path) -> tuple[list, dict]:
    """One task per row on its images, and (corrupted strategy) one on its corrupted images, keyed by row id."""
    pool = sorted({(p, file_digest(p)) for row in rows for p in row.images})
    originals, corrupted = [], {}
    for row in rows:
        originals.append(_task(row, row.images, fingerprint, config))
        if "corrupted" in config.strategies and row.images:
            images = corrupted_paths(row.images, [file_digest(p) for p in row.images], config.corruption, out_dir,
                                     config.seed, pool)
            corrupted[id(row)] = _task(row, images, fingerprint, config)
    return originals, corrupted


class CachedJudge:
    """``judge`` behind the judge cache: a prompt's scores are looked up by :func:`judgment_key`, else asked
    for, checked (:func:`run_judge`) and appended to ``judgments.jsonl`` at once. Counts what it did, and
    the replies a model judge could not read a score from (its ``failed_replies``), also for reused entries."""

    def __init__(self, judge: ScoreJudge, cache: JudgmentStore):
        self.judge, self.cache = judge, cache
        self.fingerprint = judge_fingerprint(judge)
        self.judged = self.reused = self.failures = 0

    def __call__(self, row: PromptRow, images: list, answers: list) -> Optional[list]:
        prompt = prompt_text(row)
        key = judgment_key(self.fingerprint, prompt, [file_digest(p) for p in images]
                           + [file_digest(p) for p in row.videos], answers, row.reference)
        hit = self.cache.get(key)
        if hit is not None:
            self.reused += 1
            self.failures += hit["failures"]
            return hit["scores"]
        before = len(getattr(self.judge, "failed_replies", ()))
        scores = run_judge(self.judge, prompt, images, answers, row.reference)
        failed = len(getattr(self.judge, "failed_replies", ())) - before
        self.cache.put(key, scores, failures=failed, source=row.source)
        self.judged += 1
        self.failures += failed
        return scores


def judge_tasks(judge, store: SampleStore, originals: list, corrupted: dict, progress: bool = False) -> list:
    """Each row's stored answers with the judge's scores (and those of its corrupted-image answers).
    ``judge``: a :class:`CachedJudge`, or any judge (then nothing is cached)."""
    from tqdm.auto import tqdm

    if not isinstance(judge, CachedJudge):
        plain = judge
        judge = lambda row, images, answers: run_judge(plain, prompt_text(row), images, answers, row.reference)  # noqa: E731
    judged = []
    for task in tqdm(originals, desc="judging", unit="prompt", disable=not progress or not originals):
        row, answers = task.row, store.get(task.key)
        item = Judged(row, answers, judge(row, row.images, answers))
        if id(row) in corrupted:
            bad = corrupted[id(row)]
            item.corrupted_images, item.corrupted_answers = bad.images, store.get(bad.key)
            item.corrupted_scores = judge(row, bad.images, item.corrupted_answers)
        judged.append(item)
    return judged


def pair_up(judged: list, config: PrepareConfig, report: PrepareReport) -> list:
    """The selected strategies over every judged row; each outcome is counted in the report."""
    pairs = []
    for item in judged:
        for strategy, pair, reason in make_pairs(item, config.strategies, wrong_below=config.wrong_below,
                                                 min_score_gap=config.min_score_gap, contrast=config.contrast):
            report.count(strategy, reason)
            if pair is not None:
                pairs.append(pair)
                report.pairs.append({"line": len(pairs), "strategy": strategy, "source": pair.source,
                                     "chosen_score": pair.chosen_score, "rejected_score": pair.rejected_score})
    return pairs


def make_backend(config: PrepareConfig) -> SamplingBackend:
    """The sampling backend a config names: transformers in this process, or the server at ``base_url``."""
    if config.backend == "openai":
        return OpenAICompatibleBackend(config.base_url, config.served_model, concurrency=config.concurrency,
                                       timeout=config.request_timeout, max_retries=config.max_retries,
                                       max_pixels=config.max_pixels,
                                       extra_body=json.loads(config.extra_body) if config.extra_body else None)
    return TransformersBackend(config.model, max_pixels=config.max_pixels, device=config.device,
                               video=config.video_settings())


def make_judge(config: PrepareConfig) -> ScoreJudge:
    """The built-in judge a config names (see :mod:`nbtools.judges`)."""
    if config.judge == "endpoint":
        client = EndpointClient(config.judge_url, timeout=config.request_timeout, max_retries=config.max_retries,
                                fix=RESUMABLE_FIX)
        return OpenAICompatibleJudge(config.judge_url, config.judge_model, template=config.judge_template,
                                     scale=config.judge_scale, concurrency=config.concurrency,
                                     max_pixels=config.max_pixels, client=client)
    if config.judge == "rule":
        return RuleJudge(config.must_include, config.must_not_include)
    if config.judge == "vocabulary":
        return VocabularyJudge(config.vocabulary)
    return ReferenceJudge()


def prepare(config: PrepareConfig, *, judge: Optional[ScoreJudge] = None, backend: Optional[SamplingBackend] = None,
            progress: bool = True, validate: bool = True) -> PrepareResult:
    """Sample, judge and pair; write pairs.jsonl and report.json under ``config.output_dir``.

    ``judge``: any ``judge(prompt, images, answers, reference=None) -> scores`` (:mod:`nbtools.judges`;
    default: the one the config names); its scores are cached in ``judgments.jsonl``. ``backend``: any :class:`SamplingBackend`
    (default: the one the config names, see :func:`make_backend`).
    """
    started = time.monotonic()
    config.check()
    if judge is not None:
        require_judge(judge, "prepare(judge=...)")  # before minutes of sampling
    inputs = read_inputs(config.input_file, config.images_dir, config.prompts, config.validation_file,
                         config.max_prompts)
    out_dir = Path(config.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    judge = judge or make_judge(config)
    backend = backend or make_backend(config)
    report = PrepareReport(prompts_read=len(inputs.rows) + len(inputs.skipped_validation), judge=repr(judge),
                           ignored_rejected_responses=inputs.ignored_rejected)
    rows = _sampleable(inputs, report)
    store = SampleStore(out_dir)
    report.damaged_store_lines = store.damaged_lines
    originals, corrupted = plan_tasks(rows, backend.fingerprint(), config, out_dir)
    counts = sample_tasks(backend, store, originals + list(corrupted.values()), config, progress)
    report.prompts_sampled = len(rows)
    report.samples_generated, report.samples_reused = counts["generated"], counts["reused"]
    cached = CachedJudge(judge, JudgmentStore(out_dir))
    report.damaged_store_lines += cached.cache.damaged_lines
    judged = judge_tasks(cached, store, originals, corrupted, progress)
    report.judge_calls = {"judged": cached.judged, "reused": cached.reused}
    report.judge_failures = cached.failures
    report.judge_failure_examples = list(getattr(judge, "failed_replies", ()))[:3]
    pairs = pair_up(judged, config, report)
    report.judge_agreement = _agreement(judge, judged, config.wrong_below)
    pairs_file = write_pairs(pairs, out_dir, config.copy_images)
    validation = None
    if validate:
        from nbtools.data import validate_dataset

        validation = validate_dataset(pairs_file, max_pixels=config.max_pixels,
                                      validation_file=config.validation_file, progress=False)
        report.validation = {"valid": not validation.has_errors(), "errors": validation.count("error"),
                             "warnings": validation.count("warning"), "summary": validation.summary()}
    report.seconds = round(time.monotonic() - started, 2)
    report.files = {"pairs": str(pairs_file), "report": str(out_dir / REPORT_FILE), "samples": str(store.path),
                    "judgments": str(cached.cache.path)}
    write_json_atomic(out_dir / REPORT_FILE, {"config": config.to_dict(), **report.to_dict()})
    return PrepareResult(pairs_file, report, validation)
