#!/usr/bin/env bash
# One prepared GPU check for one H100/H200-class GPU, in one command. Its stage limits add up to
# 470 s plus the install (the stages have not been timed on a GPU yet: none was lent so far).
#
#   bash benchmarks/gpu_check.sh OUT_DIR [--wheels DIR] [--dry-run]
#   bash benchmarks/gpu_check.sh --prepare-wheels DIR      # on a machine with internet, before
#
# Stages (each under its own time limit; a failed stage is recorded and the next one runs):
#   1. install   what the GPU image lacks from the wheels in --wheels DIR (pip --no-index; a package is
#                installed when it is missing or its version differs from the carried wheel; torch is
#                never replaced), then record the versions the check ran with
#   2. throughput benchmarks/train_throughput.py --gpu at 896x896 and 1280x1280: nbtools vs plain TRL
#                (pairs/s, memory above weights, packed-vs-TRL log-prob difference)
#   3. estimate  benchmarks/estimate_check.py: the memory estimate next to a measured TRL step
#   4. train     nbtools.train.train() on a random Qwen3-VL-4B-shaped model (weights built on the GPU
#                instead of read from disk; everything else as a real run), bf16, packing on, 8 steps
#   5. fsdp      the same run with distributed: fsdp through torchrun (one process: the Trainer's FSDP2
#                path, packed step and adapter gather end to end; no real sharding with one GPU)
#   6. long 8k   benchmarks/gpu_long_step.py: a packed training step at ~8k tokens per pair (one 2048x2048
#                picture, ~2k-token answers) on the random 4B-shaped model: block mask vs sdpa vs TRL's
#                own step, peak memory and s/step (2 warm-up steps, where the block-mask kernel compiles)
#
# OUT_DIR receives at most 9 files: versions.txt, throughput_896.json, throughput_1280.json,
# estimate_check.json, train_bf16.json, train_fsdp.json, long_pairs_8k.json, summary.md, gpu_check.log.
# Exit code: 0 all stages passed, 1 some stage failed (see summary.md), 2 bad usage / no GPU.
set -u -o pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="" WHEELS="" DRY_RUN=0 PREPARE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="${2:-}"; shift 2 || { echo "gpu_check: --wheels needs a folder" >&2; exit 2; } ;;
    --dry-run) DRY_RUN=1; shift ;;
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
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.md"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nbtools-gpu-check.XXXXXX")"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export NBTOOLS_CACHE_DIR="$WORK/cache"
: > "$LOG"
printf '# nbtools GPU check\n\n| stage | result | seconds |\n|---|---|---|\n' > "$SUMMARY"
FAILED=0

# run_stage NAME LIMIT_S COMMAND...: runs COMMAND (or prints it with --dry-run), logs, records the outcome
run_stage() {
  local name="$1" limit="$2"; shift 2
  if [ "$DRY_RUN" = 1 ]; then
    echo "[dry-run] $name (limit ${limit}s): $*" | tee -a "$LOG"
    printf '| %s | not run (dry run) | 0 |\n' "$name" >> "$SUMMARY"
    return 0
  fi
  echo "=== $name: $*" >> "$LOG"
  local start=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1 || rc=$?
  local took=$((SECONDS - start)) result="ok"
  if [ $rc -ne 0 ]; then
    FAILED=1
    result="FAILED (exit $rc$([ $rc -eq 124 ] && echo ", over ${limit}s"))"
  fi
  printf '| %s | %s | %s |\n' "$name" "$result" "$took" >> "$SUMMARY"
  echo "$name: $result in ${took}s"
}

if [ "$DRY_RUN" != 1 ]; then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>>"$LOG" \
    || { echo "gpu_check: no CUDA GPU visible to $PYTHON (torch.cuda.is_available() is False); nothing run" >&2; exit 2; }
fi

# --- 1. install what is missing, record versions ----------------------------------------------------
install_missing() {
  [ -n "$WHEELS" ] || { echo "no --wheels folder: using the installed packages"; return 0; }
  local wheel name version installed
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
      "$PYTHON" -m pip install --no-index --no-deps --quiet "$wheel" || return 1
    fi
  done
}
write_versions() {
  {
    date -u +"checked %Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
    "$PYTHON" - <<'PY'
import importlib.metadata as m, platform, subprocess
print("python", platform.python_version())
for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "pillow", "numpy"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "MISSING")
import torch
print("cuda", torch.version.cuda, "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
try:
    print("nbtools revision", subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown")
except OSError:
    print("nbtools revision unknown")
PY
  } > "$OUT/versions.txt" 2>&1
}
if [ "$DRY_RUN" = 1 ]; then
  echo "[dry-run] install: wheels from ${WHEELS:-<none>}, then versions.txt" | tee -a "$LOG"
  printf '| install | not run (dry run) | 0 |\n' >> "$SUMMARY"
else
  start=$SECONDS
  if install_missing >> "$LOG" 2>&1; then result=ok; else result="FAILED (see gpu_check.log)"; FAILED=1; fi
  write_versions
  printf '| install | %s | %s |\n' "$result" "$((SECONDS - start))" >> "$SUMMARY"
fi

# --- 2. throughput against plain TRL at two image sizes ---------------------------------------------
run_stage "throughput 896x896" 70 "$PYTHON" "$REPO/benchmarks/train_throughput.py" --gpu \
  --image-size 896 --steps 6 --warmup 2 --json "$OUT/throughput_896.json"
run_stage "throughput 1280x1280" 75 "$PYTHON" "$REPO/benchmarks/train_throughput.py" --gpu \
  --image-size 1280 --steps 4 --warmup 1 --json "$OUT/throughput_1280.json"

# --- 3. the memory estimate against a measured TRL step -----------------------------------------------
run_stage "estimate check" 45 bash -c "\"$PYTHON\" \"$REPO/benchmarks/estimate_check.py\" --steps 2 > \"$OUT/estimate_check.json\""

# --- 4./5. short training runs on the random 4B-shaped model: DDP path (one process), then FSDP ----------
run_stage "train bf16 (random 4B-shaped)" 50 "$PYTHON" "$REPO/benchmarks/gpu_train_run.py" --work "$WORK/train" \
  --out "$OUT/train_bf16.json" --steps 8
run_stage "train fsdp (torchrun, 1 process)" 50 "$PYTHON" "$REPO/benchmarks/gpu_train_run.py" --work "$WORK/train" \
  --out "$OUT/train_fsdp.json" --steps 4 --distributed fsdp --reuse-model

# --- 6. a packed training step at ~8k tokens per pair: block mask vs sdpa vs TRL ----------------------------
# three sides of 4 steps each, a fresh 4B-shaped model per side; the block-mask side runs first and compiles
# FlexAttention several times (no-grad and training passes, static then dynamic lengths): the limit is a guess
run_stage "long pairs 8k (block mask vs sdpa vs TRL)" 180 "$PYTHON" "$REPO/benchmarks/gpu_long_step.py" \
  --tokens 8192 --steps 2 --warmup 2 --json "$OUT/long_pairs_8k.json"

# --- summary ----------------------------------------------------------------------------------------
if [ "$DRY_RUN" != 1 ]; then
  "$PYTHON" "$REPO/benchmarks/gpu_train_run.py" --summarise "$OUT" >> "$SUMMARY" 2>>"$LOG" || true
fi
rm -rf "$WORK"
echo "results in $OUT ($(ls "$OUT" | wc -l) files); summary:"
cat "$SUMMARY"
exit $FAILED
