"""Does the data layer scale? Validation of 1M-row JSONL and Parquet, and training's first step on 100k pairs.

Every measurement runs in a fresh child process (``python -c``) with ``PYTHONPATH`` set to the tree under
test, so the numbers belong to that tree's ``nbtools`` and to nothing the parent did (data generation
included). Memory is the child's ``VmHWM`` from ``/proc/self/status``, read inside the child: right after its
imports (``import_mb``) and at the end, hence ``above_import_mb``. Validation of a big JSONL file runs worker
processes: ``workers_peak_mb`` is the largest one's peak (``RUSAGE_CHILDREN``), and ``peak_mb`` is the main
process's peak plus that (an upper bound: the two peaks need not coincide). VmHWM, not
``ru_maxrss``: on Linux ru_maxrss carries the high-water mark of the process image replaced by exec over
into the child, VmHWM belongs to the child's own address space only. Seconds are timed inside the child
around the measured call (interpreter start and imports left out); ``process_s`` is the child's whole life
as the parent saw it.

Cases (each alone, several, or ``--all``); the data is generated into ``--work`` (a temporary folder by
default, never committed) and generation is not timed:

    validate_jsonl_10     import floor: ``import nbtools.data`` + validate_dataset on 10 rows (which modules?)
    validate_jsonl_1m     validate_dataset on 1,000,000 JSONL rows / 10,000 JPEGs   goal <= 30 s, <= 400 MB
    validate_parquet_1m   validate_dataset on 1,000,000 Parquet rows (RLAIF-V schema, pictures embedded,
                          about 1 GB in shards data/train-0000K-of-0000N.parquet)     goal <= 60 s, <= 600 MB
    validate_jsonl_100k   100,000 rows, default options: tree vs baseline             goal tree <= 0.6 x baseline
    train_first_step      train() on 100,000 vs 1,000 pairs, tiny-qwen3-vl, max_steps 1, reference precompute
                          off: time to the end of the first optimizer step, peak RSS  goal +<= 150 MB, <= 15 s
    ref_store             benchmarks/ref_store.py's measure(n_pairs=100_000), where the tree has it
    form_pair_count_1m    the 02 form's pair count (nbtools.widgets.estimate_view.pair_count), first time, on
                          the 1M-row JSONL and Parquet data above                      goal <= 2 s each

    python benchmarks/scale.py --all [--baseline-tree ../wt-baseline] [--work DIR] [--out FILE]
    python benchmarks/scale.py validate_jsonl_1m train_first_step --tree /path/to/tree
    python benchmarks/scale.py --all --scale 0.0002 --out /tmp/s.json     # tiny sizes: checks the harness

Results are merged by case name into ``--out`` (default benchmarks/results/scale.json): one case can be
rerun without losing the others. Each entry holds the figures per tree ("tree", "baseline"), the goal as
numbers, ``met`` (against the goal, for the tree under test; null where the goal cannot be judged), and
the machine and trees (git commit) it was measured on. Full sizes need about 3 GB of disk in --work.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "scale.json"
RSS_METHOD = ("VmHWM of /proc/self/status read inside the child (after imports and at the end); "
              "not ru_maxrss, which on Linux keeps the pre-exec image's high-water mark")

# --- child programs: what runs in the fresh process ---------------------------------------------------

# Shared head of every child: reads the child's own memory high-water mark and current RSS in MB.
CHILD_HEAD = r"""
import json, os, sys, time

def vm(key="VmHWM:"):
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(key)).split()[1]) / 1024

def loaded():
    names = ("torch", "transformers", "datasets", "pyarrow", "numpy", "PIL.Image", "tokenizers", "av")
    return [name for name in names if name in sys.modules]
"""

VALIDATE_CHILD = CHILD_HEAD + r"""
import nbtools
from nbtools.data import validate_dataset
import_mb, after_import = vm(), loaded()
start = time.perf_counter()
report = validate_dataset(sys.argv[1])
seconds = time.perf_counter() - start
import resource
workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest worker process, if any
print(json.dumps({"seconds": seconds, "import_mb": import_mb, "main_peak_mb": vm(), "workers_peak_mb": workers_mb,
                  "peak_mb": vm() + workers_mb, "rss_end_mb": vm("VmRSS:"),
                  "rows": report.rows, "valid": report.valid, "errors": report.count("error"),
                  "warnings": report.count("warning"), "modules_after_import": after_import,
                  "modules_after_validate": loaded(), "nbtools": nbtools.__file__}))
"""

# Times train() and, through CallbackHandler (every Trainer has one; train() takes no callbacks), the
# moment training starts and the end of the first optimizer step, with the memory peak at that moment.
TRAIN_CHILD = CHILD_HEAD + r"""
import torch, transformers
from transformers.trainer_callback import CallbackHandler
import nbtools
from nbtools.config import RunConfig
from nbtools.train import train
import_mb = vm()
marks = {}

def marking(name, original):
    def hook(self, args, state, control, **kwargs):
        if name not in marks:
            marks[name] = (time.perf_counter(), vm())
        return original(self, args, state, control, **kwargs)
    return hook

CallbackHandler.on_train_begin = marking("train_begin", CallbackHandler.on_train_begin)
CallbackHandler.on_step_end = marking("first_step", CallbackHandler.on_step_end)
start = time.perf_counter()
result = train(RunConfig(**json.loads(sys.argv[1])), live=False)
total = time.perf_counter() - start
step_at, step_mb = marks["first_step"]
pairs = ((result.data or {}).get("train") or {}).get("pairs")
print(json.dumps({"seconds": step_at - start, "peak_mb": step_mb, "import_mb": import_mb,
                  "train_begin_s": marks["train_begin"][0] - start, "train_total_s": total,
                  "peak_end_mb": vm(), "status": result.status, "pairs": pairs, "nbtools": nbtools.__file__}))
"""

REF_STORE_CHILD = CHILD_HEAD + r"""
import importlib
import nbtools
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # by name: its spawned probes import it again
os.environ["PYTHONPATH"] = os.pathsep.join([os.path.dirname(sys.argv[1]), os.environ.get("PYTHONPATH", "")])
module = importlib.import_module("ref_store")
import_mb = vm()
start = time.perf_counter()
result = module.measure(n_pairs=int(sys.argv[2]))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "import_mb": import_mb, "peak_mb": vm(), "result": result,
                  "nbtools": nbtools.__file__}, default=str))
"""

# What the 02 form does to show a run's length: count the pairs of the training file (its first count of a
# file version; later ones are cached).
COUNT_CHILD = CHILD_HEAD + r"""
import nbtools
from nbtools.config import RunConfig
from nbtools.widgets.estimate_view import pair_count
config = RunConfig(train_file=sys.argv[1])
import_mb = vm()
start = time.perf_counter()
pairs = pair_count(config)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "import_mb": import_mb, "peak_mb": vm(), "pairs": pairs,
                  "nbtools": nbtools.__file__}))
"""

BUILD_MODEL_CHILD = r"""
import json, sys
import nbtools
from nbtools.models import build_tiny_model
print(json.dumps({"folder": str(build_tiny_model(sys.argv[1])), "nbtools": nbtools.__file__}))
"""


def child_env(tree: Path) -> dict:
    """The environment of a measured child: the tree's nbtools first on the path, nothing online."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}
    return env


def run_child(tree: Path, code: str, argv: list[str], timeout: float) -> dict:
    """Run ``code`` in a fresh interpreter on ``tree``; its last stdout line is its JSON figures.

    A failure (exit status, timeout, unparsable output, nbtools imported from elsewhere) becomes an entry
    with ``error`` instead of an exception: one broken case must not lose the other measurements."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", code, *argv], cwd=tree, env=child_env(tree),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    process_s = round(time.perf_counter() - start, 2)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit status {done.returncode}", "stderr_tail": done.stderr[-2000:],
                "process_s": process_s}
    try:
        figures = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": "no JSON on the last line", "stdout_tail": done.stdout[-2000:], "process_s": process_s}
    origin = figures.pop("nbtools", "")
    if not str(origin).startswith(str(tree)):
        return {"error": f"nbtools was imported from {origin}, not from {tree}"}
    return rounded({**figures, "process_s": process_s,
                    **({"above_import_mb": figures["peak_mb"] - figures["import_mb"]}
                       if "peak_mb" in figures and "import_mb" in figures else {})})


def rounded(value):
    """Floats to 2 decimals, recursively: the JSON is read by people."""
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


# --- data generation (not timed) -------------------------------------------------------------------------

def make_images(work: Path, count: int) -> Path:
    """``count`` small distinct JPEGs ``img/K.jpg`` (48x48, one colour each), made once per --work folder."""
    from PIL import Image

    folder = work / "img"
    done = folder / f".done-{count}"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            colour = (k * 37 % 256, k * 91 % 256, k * 151 % 256)
            Image.new("RGB", (48, 48), colour).save(folder / f"{k}.jpg", quality=85)
        done.touch()
    return folder


def make_jsonl(work: Path, rows: int, images: int) -> Path:
    """``rows`` distinct lines in the seed format, row N showing picture N mod ``images``; written by template."""
    path = work / f"rows-{rows}-img-{images}.jsonl"
    if path.exists():
        return path
    make_images(work, images)
    template = ('{{"messages":[{{"role":"user","content":"<image>question {n}"}},{{"role":"assistant",'
                '"content":"answer {n}"}}],"images":["img/{k}.jpg"],"rejected_response":"other {n}"}}\n')
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as handle:
        for first in range(0, rows, 100_000):
            handle.write("".join(template.format(n=n, k=n % images) for n in range(first, min(rows, first + 100_000))))
    partial.rename(path)
    return path


def jpeg_bases(count: int) -> list[bytes]:
    """``count`` distinct 32x32 JPEGs of random pixels: about 1.5 KB each, 1 KB after Parquet's snappy (a JPEG
    this small is mostly its header tables, which snappy removes; noise keeps the rest, as a photo would)."""
    from PIL import Image

    rng, bases = random.Random(0), []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.frombytes("RGB", (32, 32), rng.randbytes(32 * 32 * 3)).save(buffer, "JPEG", quality=90)
        bases.append(buffer.getvalue())
    return bases


def with_row_number(jpeg: bytes, row: int) -> bytes:
    """The same JPEG with a comment segment naming ``row`` after its SOI marker: distinct bytes per row for the
    cost of a concatenation (encoding a million pictures would take minutes)."""
    text = b"row %d" % row
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def parquet_table(first: int, count: int, bases: list[bytes]):
    """Rows ``first`` .. ``first + count - 1`` in RLAIF-V's flat schema (all strings but the image struct)."""
    import pyarrow as pa

    rows = range(first, first + count)
    image = pa.StructArray.from_arrays(
        [pa.array([with_row_number(bases[n % len(bases)], n) for n in rows], pa.binary()),
         pa.array([f"{n}.jpg" for n in rows], pa.string())], names=["bytes", "path"])
    columns = {
        "ds_name": ["scale-bench"] * count, "image": image,
        "question": [f"What is in picture {n}?" for n in rows],
        "chosen": [f"Picture {n} shows a coloured square." for n in rows],
        "rejected": [f"Picture {n} shows a dog on a beach." for n in rows],
        "origin_dataset": ["synthetic"] * count,
        "origin_split": ['{"model": "none", "type": "question answering"}'] * count,
        "idx": [str(n) for n in rows], "image_path": [f"scale/{n}.jpg" for n in rows],
    }
    table = pa.table(columns)
    # the `datasets` feature metadata the Hub's files carry, so readers see an Image column as they would there
    features = {name: {"dtype": "string", "_type": "Value"} for name in columns}
    features["image"] = {"_type": "Image"}
    return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})


def make_parquet(work: Path, rows: int, shards: int = 4, row_group: int = 10_000) -> Path:
    """A Hub-like dataset folder: ``data/train-0000K-of-0000N.parquet``, written row group by row group."""
    import pyarrow.parquet as pq

    root = work / f"parquet-{rows}"
    if (root / ".done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    bases, per_shard = jpeg_bases(min(1000, rows)), -(-rows // shards)
    for shard in range(shards):
        first, last = shard * per_shard, min(rows, (shard + 1) * per_shard)
        with pq.ParquetWriter(root / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet",
                              parquet_table(0, 1, bases).schema) as writer:
            for start in range(first, last, row_group):
                writer.write_table(parquet_table(start, min(row_group, last - start), bases))
    (root / ".done").touch()
    return root


def folder_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


# --- facts about the machine and the trees ---------------------------------------------------------------

def machine_facts() -> dict:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    with open("/proc/meminfo") as meminfo:
        total_kb = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    return {"cpu_count": os.cpu_count(), "memory_gb": round(total_kb / 2**20, 1), "platform": platform.platform(),
            "python": platform.python_version(), "load_average": [round(x, 2) for x in os.getloadavg()],
            **{name: version(name) for name in ("torch", "transformers", "trl", "datasets", "pyarrow", "pillow")}}


def tree_facts(tree: Path) -> dict:
    """Which code was measured: the tree's path, git commit and whether it had uncommitted changes."""
    def git(*args):
        done = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"path": str(tree), "commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None
            else None}


# --- the cases -----------------------------------------------------------------------------------------

class Context:
    """What every case needs: the trees (role -> path), the work folder, the size scale, the child timeout."""

    def __init__(self, trees: dict[str, Path], work: Path, scale: float, timeout: float):
        self.trees, self.work, self.scale, self.timeout = trees, work, scale, timeout

    def size(self, full: int, least: int = 10) -> int:
        return max(least, round(full * self.scale))

    @property
    def images(self) -> int:
        return self.size(10_000, least=20)


def within(figures: dict, **limits) -> bool | None:
    """``seconds``/``peak_mb`` against ``seconds_max``/``peak_mb_max`` (other limits are the caller's);
    None when there is no such limit or the figures are missing."""
    keys = {"seconds_max": "seconds", "peak_mb_max": "peak_mb"}
    limits = {name: limit for name, limit in limits.items() if name in keys}
    if not limits or any(keys[name] not in figures for name in limits):
        return None
    return all(figures[keys[name]] <= limit for name, limit in limits.items())


def validate_case(ctx: Context, data: Path, goal: dict, probe: Path | None = None) -> dict:
    """Validate ``data`` with each tree; a tree that cannot read the format (``probe`` fails) is recorded so."""
    results = {}
    for role, tree in ctx.trees.items():
        if probe is not None:
            support = run_child(tree, VALIDATE_CHILD, [str(probe)], ctx.timeout)
            if "error" in support or not support.get("valid"):
                reason = (support.get("stderr_tail") or "").strip().splitlines()[-1:] or [support.get("error")]
                results[role] = {"supported": False, "note": "this tree cannot read the format (a 2-row probe "
                                 "failed or gave no valid row)", "reason": reason[0], "probe": support}
                continue
        results[role] = run_child(tree, VALIDATE_CHILD, [str(data)], ctx.timeout)
    return {"path": str(data), "data_mb": folder_mb(data), "goal": goal, "results": results,
            "met": within(results.get("tree", {}), **goal)}


def case_validate_jsonl_10(ctx: Context) -> dict:
    """The floor under every validation figure: importing nbtools.data and validating 10 rows."""
    data = make_jsonl(ctx.work, 10, min(3, ctx.images))
    return {"rows": 10, **validate_case(ctx, data, {})}


def case_validate_jsonl_1m(ctx: Context) -> dict:
    rows = ctx.size(1_000_000)
    data = make_jsonl(ctx.work, rows, ctx.images)
    return {"rows": rows, "images": ctx.images,
            **validate_case(ctx, data, {"seconds_max": 30.0, "peak_mb_max": 400.0})}


def case_validate_parquet_1m(ctx: Context) -> dict:
    rows = ctx.size(1_000_000)
    data, probe = make_parquet(ctx.work, rows), make_parquet(ctx.work, 2, shards=1)
    return {"rows": rows, "shards": 4,
            **validate_case(ctx, data, {"seconds_max": 60.0, "peak_mb_max": 600.0}, probe=probe)}


def case_validate_jsonl_100k(ctx: Context) -> dict:
    rows = ctx.size(100_000)
    data = make_jsonl(ctx.work, rows, ctx.images)
    entry = validate_case(ctx, data, {"ratio_max": 0.6})
    new, old = entry["results"].get("tree", {}), entry["results"].get("baseline", {})
    if "seconds" in new and "seconds" in old:
        entry["ratio"] = round(new["seconds"] / old["seconds"], 3)
        entry["met"] = entry["ratio"] <= 0.6
    else:
        entry["met"], entry["note"] = None, "the goal is relative: run with --baseline-tree"
    return {"rows": rows, "images": ctx.images, **entry}


def case_form_pair_count_1m(ctx: Context) -> dict:
    """The 02 form's run-length line counts the training file's pairs: 1M JSONL rows and 1M Parquet rows."""
    rows = ctx.size(1_000_000)
    data = {"jsonl": make_jsonl(ctx.work, rows, ctx.images), "parquet": make_parquet(ctx.work, rows)}
    goal = {"seconds_max": 2.0}
    results = {role: {kind: run_child(tree, COUNT_CHILD, [str(path)], ctx.timeout) for kind, path in data.items()}
               for role, tree in ctx.trees.items()}
    tree = results.get("tree", {})
    met = all(tree.get(kind, {}).get("seconds", goal["seconds_max"] + 1) <= goal["seconds_max"]
              and tree[kind].get("pairs") == rows for kind in data)
    entry = {"rows": rows, "data_mb": {kind: folder_mb(path) for kind, path in data.items()}, "goal": goal,
             "results": results, "met": met}
    old = results.get("baseline", {})
    if all("seconds" in old.get(kind, {}) and "seconds" in tree.get(kind, {}) for kind in data):
        entry["ratio"] = {kind: round(tree[kind]["seconds"] / max(old[kind]["seconds"], 1e-6), 4) for kind in data}
    return entry


def train_settings(data: Path, output_dir: Path) -> dict:
    """One optimizer step of the tests' tiny model on small pictures; no validation, no reference precompute."""
    return dict(model="tiny-qwen3-vl", train_file=str(data), validation_file=None, validation_split=0.0,
                output_dir=str(output_dir), task_display_name="scale-bench", max_steps=1, batch_size=2,
                gradient_accumulation_steps=1, num_workers=0, max_pixels=56 * 56, max_context_length=256,
                precompute_ref_log_probs=False, gradient_checkpointing=False, lora_rank=8, logging_steps=1,
                loss_type=["sigmoid"], loss_weights=None)


def case_train_first_step(ctx: Context) -> dict:
    """train() on many vs few pairs: the data layer must not make the first step wait or grow with the file."""
    small, large = ctx.size(1_000), ctx.size(100_000, least=20)
    goal = {"peak_delta_mb_max": 150.0, "seconds_max": 15.0}
    results = {}
    for role, tree in ctx.trees.items():
        built = run_child(tree, BUILD_MODEL_CHILD, ["tiny-qwen3-vl"], ctx.timeout)  # not timed: build once
        if "error" in built:
            results[role] = {"error": "building tiny-qwen3-vl failed", "build": built}
            continue
        figures = {}
        for pairs in (small, large):
            data = make_jsonl(ctx.work, pairs, ctx.images)
            out = ctx.work / "runs" / f"{role}-{pairs}"
            shutil.rmtree(out, ignore_errors=True)
            figures[f"pairs_{pairs}"] = run_child(tree, TRAIN_CHILD, [json.dumps(train_settings(data, out))],
                                                  ctx.timeout)
        few, many = figures[f"pairs_{small}"], figures[f"pairs_{large}"]
        if "peak_mb" in few and "peak_mb" in many:
            figures["peak_delta_mb"] = round(many["peak_mb"] - few["peak_mb"], 1)
            figures["met"] = figures["peak_delta_mb"] <= goal["peak_delta_mb_max"] and many["seconds"] <= goal[
                "seconds_max"]
        results[role] = figures
    return {"pairs": [small, large], "images": ctx.images, "timing": "seconds: from calling train() to the end of "
            "the first optimizer step (CallbackHandler.on_step_end); peak_mb: VmHWM at that moment",
            "goal": goal, "results": results, "met": results.get("tree", {}).get("met")}


def case_ref_store(ctx: Context) -> dict:
    """benchmarks/ref_store.py's own measurement, where the tree under test has that module."""
    pairs = ctx.size(100_000)
    results = {}
    for role, tree in ctx.trees.items():
        module = tree / "benchmarks" / "ref_store.py"
        if not module.exists():
            results[role] = {"available": False, "note": "benchmarks/ref_store.py not available in this tree"}
            continue
        results[role] = run_child(tree, REF_STORE_CHILD, [str(module), str(pairs)], ctx.timeout)
    outcome = results.get("tree", {}).get("result")
    return {"n_pairs": pairs, "results": results, "met": outcome.get("met") if isinstance(outcome, dict) else None}


CASES = {
    "validate_jsonl_10": case_validate_jsonl_10,
    "validate_jsonl_1m": case_validate_jsonl_1m,
    "validate_parquet_1m": case_validate_parquet_1m,
    "validate_jsonl_100k": case_validate_jsonl_100k,
    "train_first_step": case_train_first_step,
    "ref_store": case_ref_store,
    "form_pair_count_1m": case_form_pair_count_1m,
}


# --- running and recording -------------------------------------------------------------------------------

def merge_results(out: Path, name: str, entry: dict, label: str | None = None) -> None:
    """Write ``entry`` under ``name`` in ``out``, keeping the other cases (written whole, then renamed)."""
    payload = json.loads(out.read_text()) if out.exists() else {}
    if label:
        payload["label"] = label
    payload.setdefault("cases", {})[name] = entry
    payload["updated"] = entry["measured_at"]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".json.partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    partial.replace(out)


def run_case(name: str, ctx: Context, out: Path, label: str | None = None) -> dict:
    started = time.perf_counter()
    entry = CASES[name](ctx)
    entry = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "scale": ctx.scale,
             "rss_method": RSS_METHOD, "machine": machine_facts(),
             "trees": {role: tree_facts(tree) for role, tree in ctx.trees.items()}, **entry,
             "case_s": round(time.perf_counter() - started, 1)}
    merge_results(out, name, entry, label)
    return entry


def brief(name: str, entry: dict) -> str:
    """One line per tree: the figures people compare (seconds, peak, peak above imports)."""
    lines = [f"{name}: met={entry.get('met')}"]
    for role, figures in entry.get("results", {}).items():
        parts = figures.items() if name in ("train_first_step", "form_pair_count_1m") else [("", figures)]
        for label, one in parts:
            who = " ".join(filter(None, (role, label)))
            if isinstance(one, dict) and "seconds" in one:
                lines.append(f"  {who}: {one['seconds']:.2f} s, peak {one['peak_mb']:.0f} MB "
                             f"(imports {one['import_mb']:.0f} MB)")
            elif isinstance(one, dict):
                lines.append(f"  {who}: {json.dumps(one)[:300]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help="any of: " + ", ".join(CASES))
    parser.add_argument("--all", action="store_true", help="run every case, in the order listed")
    parser.add_argument("--tree", type=Path, default=REPO, help="the tree under test (default: this repository)")
    parser.add_argument("--baseline-tree", type=Path, help="also measure this tree's code, in the same run")
    parser.add_argument("--work", type=Path, help="keep the generated data here (reused when present)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON, merged by case name")
    parser.add_argument("--label", help="what these results are, kept at the top of --out")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size (tests use tiny sizes)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one child may run")
    args = parser.parse_args(argv)
    names = list(CASES) if args.all else args.cases
    if not names or set(names) - set(CASES):
        parser.error(f"name cases among {', '.join(CASES)}, or --all")
    trees = {"tree": args.tree.resolve()}
    if args.baseline_tree:
        trees["baseline"] = args.baseline_tree.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="nbtools-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ctx = Context(trees, work.resolve(), args.scale, args.timeout)
        for name in names:
            print(brief(name, run_case(name, ctx, args.out, args.label)), flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
