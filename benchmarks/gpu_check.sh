#!/usr/bin/env bash
# One prepared GPU check for one H100/H200-class GPU, in one command, planned to fit 300 s (5 minutes) of a
# 15-minute device budget: a machine start costs 1-2 minutes and a rerun of the whole check must still fit.
# Its stage limits add up to
# 290 s, install included; the GPU probe before the stages and the summary after them take about 5 s each.
# The limits are estimates (no stage has run on a GPU yet: none was lent so far), from: ~10 s per stage to
# start Python and import torch/transformers/trl on a cold machine, 2-5 s to build the random 4B (8.9 GB of
# bf16 weights, initialised on the GPU), about 1-2 s per training step of 4 pairs at 896x896 and 1 s per
# packed step at 8k tokens (FLOP counts at a third of an H100's bf16 peak), and FlexAttention's compile of
# the block-mask kernel (fwd+bwd, then once more for dynamic lengths) at 20-30 s each. To fit, steps are few
# (3 timed, after 1 warm-up), the 1280x1280 throughput stage is cut (the speed goal is at 896x896; run
# train_throughput.py --gpu --image-size 1280 by hand when there is time), the sdpa and TRL sides of the
# 8k stage warm up once, and the install stage's import check also writes versions.txt.
# A stage over its limit is stopped (SIGTERM, SIGKILL 5 s later) and recorded; the next one runs.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [--wheels DIR] [--dry-run]
#   bash benchmarks/gpu_check.sh OUT_DIR --rehearse [--wheels DIR]   # the same stages on the CPU (CI)
#   bash benchmarks/gpu_check.sh --prepare-wheels DIR      # on a machine with internet, before
#
# Stages, each with its limit in seconds and its goals (every stage writes its figures and its verdicts;
# a missed goal fails the stage, exit 1, and summary.md shows the figure next to the goal):
#   1. install     35  the wheels in --wheels DIR that the image lacks or has in another version (pip
#                      --no-index --no-deps; torch is never replaced), then benchmarks/gpu_deps.py: every
#                      requirement of the carried packages and of nbtools met by the image (torch >= 2.6,
#                      huggingface-hub, safetensors, fsspec bounds, pyarrow/dill/xxhash/multiprocess, ...)
#                      and every module the stages import importable; versions.txt
#   2. throughput  65  benchmarks/train_throughput.py --gpu at 896x896, nbtools vs plain TRL: pairs/s >= 3x
#                      TRL's (train() as it runs, its reference precompute amortised over one epoch), memory
#                      above the weights <= 0.6x TRL's, packed log-probs = TRL's within bf16 tolerance
#   3. estimate    30  benchmarks/estimate_check.py: a measured TRL step's peak within 10 % of the estimate
#   4. train       40  nbtools.train.train() on a random Qwen3-VL-4B-shaped model (weights built on the GPU
#                      instead of read from disk; everything else as a real run), bf16, packing on, 6 steps
#                      over 8 pairs: finishes with packing on, losses finite and falling, the adapter reloads
#   5. fsdp        40  the same run with distributed: fsdp through torchrun, 4 steps (one process: the
#                      Trainer's FSDP2 path, packed step and adapter gather end to end; no real sharding with
#                      one GPU); the same goals
#   6. long 8k     80  benchmarks/gpu_long_step.py: a packed training step at ~8k tokens per pair (one
#                      2048x2048 picture, ~2k-token answers) on the random 4B-shaped model, block mask vs
#                      sdpa vs TRL's own step: every side completes, packed log-probs = TRL's, the block
#                      mask's memory above the weights and s/step <= sdpa's and <= TRL's
#
# --rehearse runs every stage's own code on the CPU (NBTOOLS_GPU_REHEARSE=1, see benchmarks/gpu_stage.py):
# the 4B model shrunken in width and depth but with its real vocabulary and special-token ids, small
# pictures, one or two steps, fp32, one thread per process; the install stage installs the wheels into a
# scratch folder (never into this Python) and checks this Python. Goals the CPU cannot measure (speed and
# memory) are "not judged"; every other goal is judged as on the GPU. The fsdp stage rehearses its
# plumbing only (torchrun relaunch, the Trainer's FSDP2 settings, train()'s refusal of fsdp on the CPU);
# the block-mask side of the 8k stage is skipped (FlexAttention has no backward on the CPU). Sized to take
# under 90 s on 2 idle CPU cores (about 65 s of CPU time in all, a third of it starting Python and importing
# torch in each stage); its stage limits (180 s each) only guard against a hang on a busy machine.
#
# OUT_DIR receives at most 9 files: versions.txt, install.json, throughput_896.json, estimate_check.json,
# train_bf16.json, train_fsdp.json, long_pairs_8k.json, summary.md, gpu_check.log.
# Exit code: 0 all stages passed, 1 some stage failed (see summary.md), 2 bad usage / no GPU.
set -u -o pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="" WHEELS="" DRY_RUN=0 PREPARE="" REHEARSE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="${2:-}"; shift 2 || { echo "gpu_check: --wheels needs a folder" >&2; exit 2; } ;;
    --dry-run) DRY_RUN=1; shift ;;
    --rehearse) REHEARSE=1; shift ;;
    --prepare-wheels) PREPARE="${2:-}"; shift 2 || { echo "gpu_check: --prepare-wheels needs a folder" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) if [ -n "$OUT" ]; then echo "gpu_check: one output folder only, got $OUT and $1" >&2; exit 2; fi
       OUT="$1"; shift ;;
  esac
done

# Pure-python packages the project pins that a GPU image may lack or carry in another version.
# torch stays the image's own (too big to carry); transformers is carried because nbtools is pinned to it.
CARRIED="trl peft accelerate transformers tokenizers datasets"

if [ -n "$PREPARE" ]; then
  mkdir -p "$PREPARE"
  specs=()
  for name in $CARRIED; do
    spec=$(grep -E "^${name}==" "$REPO/requirements.txt") || { echo "gpu_check: $name is not pinned in requirements.txt" >&2; exit 2; }
    specs+=("$spec")
  done
  # --no-deps: only the pinned packages themselves; their own dependencies are on GPU images already
  # (numpy, safetensors, huggingface_hub, ...) or the install stage says which one is missing.
  "$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$PREPARE" "${specs[@]}" || exit 2
  du -sh "$PREPARE"
  echo "carry $PREPARE with the repository (together at most 64 MiB) and pass --wheels $PREPARE"
  exit 0
fi

[ -n "$OUT" ] || { echo "gpu_check: give the output folder (see --help)" >&2; exit 2; }
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then echo "gpu_check: --wheels $WHEELS is not a folder" >&2; exit 2; fi
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
[ -z "$WHEELS" ] || WHEELS="$(cd "$WHEELS" && pwd)"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.md"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nbtools-gpu-check.XXXXXX")"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export NBTOOLS_CACHE_DIR="$WORK/cache"
if [ "$REHEARSE" = 1 ]; then
  # the stages' own code on the CPU (benchmarks/gpu_stage.py), even where a GPU is visible; one thread per process
  # (tiny matrices: several threads only wait on each other on a busy machine); the wheels go into a scratch
  # folder, never into this Python
  export NBTOOLS_GPU_REHEARSE=1 CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 PYTHONPATH="$WORK/site:$PYTHONPATH"
fi
: > "$LOG"
if [ "$REHEARSE" = 1 ]; then
  printf '# nbtools GPU check: CPU rehearsal (shrunken 4B; no figure here was measured on a GPU)\n\n' > "$SUMMARY"
else
  printf '# nbtools GPU check\n\n' > "$SUMMARY"
fi
printf '| stage | result | seconds | limit |\n|---|---|---|---|\n' >> "$SUMMARY"
FAILED=0

# pick GPU_LIMIT REHEARSAL_LIMIT: the stage's limit for this run
pick() { if [ "$REHEARSE" = 1 ]; then echo "$2"; else echo "$1"; fi; }

# run_stage NAME LIMIT_S COMMAND...: runs COMMAND (or prints it with --dry-run), logs, records the outcome
run_stage() {
  local name="$1" limit="$2"; shift 2
  if [ "$DRY_RUN" = 1 ]; then
    echo "[dry-run] $name (limit ${limit}s): $*" | tee -a "$LOG"
    printf '| %s | not run (dry run) | 0 | %s |\n' "$name" "$limit" >> "$SUMMARY"
    return 0
  fi
  echo "=== $name: $*" >> "$LOG"
  local start=$SECONDS rc=0
  timeout --kill-after=5 "$limit" "$@" >> "$LOG" 2>&1 || rc=$?
  local took=$((SECONDS - start)) result="ok"
  if [ $rc -ne 0 ]; then
    FAILED=1
    case $rc in
      1) result="FAILED (exit 1: a goal missed, or a crash: see the goals below)" ;;
      124|137) result="FAILED: over its ${limit}s limit (exit $rc)" ;;
      *) result="FAILED (exit $rc, see gpu_check.log)" ;;
    esac
  fi
  printf '| %s | %s | %s | %s |\n' "$name" "$result" "$took" "$limit" >> "$SUMMARY"
  echo "$name: $result in ${took}s"
}

if [ "$DRY_RUN" != 1 ] && [ "$REHEARSE" != 1 ]; then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>>"$LOG" \
    || { echo "gpu_check: no CUDA GPU visible to $PYTHON (torch.cuda.is_available() is False); nothing run" >&2; exit 2; }
fi

# --- 1. install what is missing, then check what the image holds ------------------------------------------
install_missing() {
  [ -n "$WHEELS" ] || { echo "no --wheels folder: using the installed packages"; return 0; }
  local wheel name version installed target=()
  [ "$REHEARSE" = 1 ] && target=(--target "$WORK/site")
  for wheel in "$WHEELS"/*.whl; do
    [ -e "$wheel" ] || continue
    name=$(basename "$wheel" | cut -d- -f1 | tr '_' '-' | tr 'A-Z' 'a-z')
    version=$(basename "$wheel" | cut -d- -f2)
    [ "$name" = torch ] && continue
    installed=$("$PYTHON" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
    if [ "$installed" = "$version" ]; then
      echo "$name $version already installed"
    else
      echo "installing $name $version (found: ${installed:-none})"
      "$PYTHON" -m pip install --no-index --no-deps --quiet "${target[@]}" "$wheel" || return 1
    fi
  done
}
install_stage() {
  local rc=0
  install_missing || rc=1
  "$PYTHON" "$REPO/benchmarks/gpu_deps.py" ${WHEELS:+--wheels "$WHEELS"} --json "$OUT/install.json" \
    --versions "$OUT/versions.txt" || rc=1
  return $rc
}
export -f install_missing install_stage
export REHEARSE WHEELS PYTHON REPO OUT WORK
run_stage "install" "$(pick 35 180)" \
  bash -c "install_stage  # pip --no-deps from ${WHEELS:-<no --wheels>}, then gpu_deps.py"

# --- 2. throughput against plain TRL at 896x896 ----------------------------------------------------------------
if [ "$REHEARSE" = 1 ]; then SIZES=(--image-size 64 --batch-size 2 --answer-tokens 8 --steps 1 --warmup 1)
else SIZES=(--image-size 896 --steps 3 --warmup 1); fi
run_stage "throughput 896x896" "$(pick 65 180)" "$PYTHON" "$REPO/benchmarks/train_throughput.py" --gpu "${SIZES[@]}" \
  --json "$OUT/throughput_896.json"

# --- 3. the memory estimate against a measured TRL step -----------------------------------------------
if [ "$REHEARSE" = 1 ]; then SIZES=(--side 64 --batch-size 1 --answer-words 8 --steps 1); else SIZES=(--steps 2); fi
run_stage "estimate check" "$(pick 30 180)" "$PYTHON" "$REPO/benchmarks/estimate_check.py" "${SIZES[@]}" \
  --json "$OUT/estimate_check.json"

# --- 4./5. short training runs on the random 4B-shaped model: DDP path (one process), then FSDP ----------
if [ "$REHEARSE" = 1 ]; then SIZES=(--image-size 64 --batch-size 2 --answer-tokens 8); else SIZES=(); fi
run_stage "train bf16 (random 4B-shaped)" "$(pick 40 180)" "$PYTHON" "$REPO/benchmarks/gpu_train_run.py" \
  --work "$WORK/train" --out "$OUT/train_bf16.json" --steps 6 ${SIZES[@]+"${SIZES[@]}"}
run_stage "train fsdp (torchrun, 1 process)" "$(pick 40 180)" "$PYTHON" "$REPO/benchmarks/gpu_train_run.py" \
  --work "$WORK/train" --out "$OUT/train_fsdp.json" --steps 4 --distributed fsdp ${SIZES[@]+"${SIZES[@]}"}

# --- 6. a packed training step at ~8k tokens per pair: block mask vs sdpa vs TRL ----------------------------
# three sides, a fresh 4B-shaped model each; the block-mask side runs first (if the stage runs out of time, the
# figure it is there for is written) and compiles FlexAttention twice (static, then dynamic lengths): 2 warm-ups
if [ "$REHEARSE" = 1 ]; then SIZES=(--tokens 192 --warmup 1); else SIZES=(--tokens 8192 --warmup 2); fi
run_stage "long pairs 8k (block mask vs sdpa vs TRL)" "$(pick 80 180)" "$PYTHON" "$REPO/benchmarks/gpu_long_step.py" \
  "${SIZES[@]}" --plain-warmup 1 --steps 1 --json "$OUT/long_pairs_8k.json"

# --- summary ----------------------------------------------------------------------------------------
if [ "$DRY_RUN" != 1 ]; then
  "$PYTHON" "$REPO/benchmarks/gpu_train_run.py" --summarise "$OUT" >> "$SUMMARY" 2>>"$LOG" \
    || { echo "summary: the tables could not be written (see gpu_check.log)" >> "$SUMMARY"; FAILED=1; }
fi
rm -rf "$WORK"
echo "results in $OUT ($(ls "$OUT" | wc -l) files); summary:"
cat "$SUMMARY"
exit $FAILED
