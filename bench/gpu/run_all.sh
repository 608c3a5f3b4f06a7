#!/usr/bin/env bash
# The benchmark and parity checks in ONE prepared run for the lent GPU machine (shared/gpu/README.md):
#
#   bash .gpu/pN/recv.sh && source .gpu/bin/setup.sh && bash bench/gpu/run_all.sh
#
# (setup.sh is sourced here too when deno is not on PATH yet). Steps, each under `timeout` so that one
# failure or hang does not lose the rest; about 4-5 minutes on an H100/H200, at most ~7.5:
#   1. parity: PyTorch reference (bench/parity/parity.py) vs our graphs on cuda and on cpu
#   2. block_step on cuda: one GPT-2 block, B=8 T=512, and a small launch-bound shape B=1 T=64
#   3. train_throughput on cuda: full, lora, nca (GPT-2 124M, 8 x 512 tokens)
#   4. torch_baseline: PyTorch eager fp32/TF32/bf16, full and LoRA (+ full TF32 with eager attention)
#   5. a profiled train_throughput run of one case ($PROFILE_CASE, default lora) and its profile_summary
#
# Everything lands in $OUT (at most 8 files come back):
#   results.jsonl        every JSON line of every step, plus {"bench":"run_all","step":..,"rc":..} per step
#   log.txt              stderr of every step, versions, timings
#   profile_top.txt      the profile summary (text)
#   profile.json.gz      the raw ONNX Runtime profile, when it fits (< 15 MB compressed)
#   parity_reference.tgz what parity.py wrote: rerun `deno run -A bench/parity/ours.ts --dir DIR` anywhere
#
# Local smoke test (no GPU, tiny sizes; Python steps skipped without torch):
#   SMOKE=1 DEVICE=cpu OUT=/tmp/gpu-smoke bash bench/gpu/run_all.sh
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
if ! command -v deno >/dev/null 2>&1 && [ -f .gpu/bin/setup.sh ]; then
  # shellcheck disable=SC1091
  source .gpu/bin/setup.sh
fi
OUT=${OUT:-$PWD/runs/gpu-bench}
DEVICE=${DEVICE:-cuda}
PROFILE_CASE=${PROFILE_CASE:-lora}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"
RES=$OUT/results.jsonl
LOG=$OUT/log.txt
TMP=$(mktemp -d)
: >"$RES"
: >"$LOG"
export PYTHONUNBUFFERED=1
DENO=(deno run --cached-only -A)
START=$SECONDS

# the whole script's time budget: a step gets at most what is left of it, and none once it is spent
BUDGET=${BUDGET:-420}

# step NAME LIMIT_SECONDS COMMAND...: stdout → results.jsonl, stderr → log.txt, status recorded
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 15 ]; then
    echo "=== $name: skipped, the ${BUDGET}s budget is spent" >>"$LOG"
    echo "{\"bench\":\"run_all\",\"step\":\"$name\",\"rc\":\"skipped\"}" >>"$RES"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  echo "=== $name ($(date +%T), limit ${limit}s): $*" >>"$LOG"
  timeout -k 10 "$limit" "$@" >>"$RES" 2>>"$LOG"
  local rc=$?
  echo "=== $name: rc=$rc after $((SECONDS - t0)) s" >>"$LOG"
  echo "{\"bench\":\"run_all\",\"step\":\"$name\",\"rc\":$rc,\"seconds\":$((SECONDS - t0))}" >>"$RES"
  return $rc
}

{
  echo "run_all: $(date -u +%FT%TZ) device=$DEVICE smoke=$SMOKE profile_case=$PROFILE_CASE"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  deno --version 2>&1 | head -1
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1 | tail -1
  git log --oneline -1 2>/dev/null
} >>"$LOG"

if [ "$SMOKE" = 1 ]; then
  TINY=(--layers 2 --hidden 32 --heads 4 --vocab 64)
  BLOCK=(--hidden 64 --heads 4 --batch 2 --seq 32 --runs 1 --steps-per-run 2)
  BLOCK_SMALL=(--hidden 64 --heads 4 --batch 1 --seq 16 --runs 1 --steps-per-run 2)
  TP=("${TINY[@]}" --batch 4 --seq 16 --steps 2 --steps-per-run 2)
  TORCH=(--layers 2 --hidden 32 --heads 4 --vocab 64 --batch 4 --seq 16 --steps 2 --warmup 1)
else
  BLOCK=(--runs 5 --steps-per-run 10)
  BLOCK_SMALL=(--batch 1 --seq 64 --runs 5 --steps-per-run 10)
  TP=(--steps 16 --steps-per-run 8 --warmup 1 --overhead-runs 1)
  TORCH=(--steps 20 --warmup 3)
fi
HAVE_TORCH=0
python3 -c 'import torch, transformers' >/dev/null 2>&1 && HAVE_TORCH=1

# 3. GPT-2 124M training throughput, every case
step train_throughput 300 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" "${TP[@]}"
[ "$DEVICE" = cuda ] && step train_throughput_fp16 150 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" \
  --cases full,lora --precision fp16 "${TP[@]}"

# 4. the PyTorch baseline on the same model and batch
if [ "$HAVE_TORCH" = 1 ]; then
  step torch_baseline 200 python3 bench/torch_baseline.py --device "$DEVICE" \
    --cases full-tf32,full-bf16,lora-tf32,lora-bf16 "${TORCH[@]}"
else
  echo "=== torch_baseline: skipped (no torch/transformers here)" >>"$LOG"
fi

# 2. one transformer block: per-step time and node count (and a small, launch-bound shape)
step block_step 90 "${DENO[@]}" bench/block_step.ts --device "$DEVICE" "${BLOCK[@]}"
step block_step_small 60 "${DENO[@]}" bench/block_step.ts --device "$DEVICE" "${BLOCK_SMALL[@]}"

# 5. one case profiled (a separate session: profiling slows it), summarized
step profile_run 150 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" --cases "$PROFILE_CASE" \
  "${TP[@]}" --steps-per-run 8 --steps 8 --overhead-runs 0 --profile "$TMP/prof"
PROFILE=$(ls -t "$TMP"/prof-"$PROFILE_CASE"_*.json 2>/dev/null | head -1)
if [ -n "$PROFILE" ]; then
  step profile_summary 60 "${DENO[@]}" bench/profile_summary.ts "$PROFILE" --json --top 25
  timeout 60 "${DENO[@]}" bench/profile_summary.ts "$PROFILE" --top 25 >"$OUT/profile_top.txt" 2>>"$LOG"
  gzip -c "$PROFILE" >"$TMP/profile.json.gz"
  if [ "$(stat -c %s "$TMP/profile.json.gz")" -lt 15000000 ]; then
    cp "$TMP/profile.json.gz" "$OUT/profile.json.gz"
  else
    echo "profile.json.gz is $(stat -c %s "$TMP/profile.json.gz") bytes: not copied to \$OUT" >>"$LOG"
  fi
else
  echo "=== profile_summary: no profile was written" >>"$LOG"
fi

# 6. fp16 mixed precision against fp32 on the device (when the check script exists)
if [ -f bench/gpu/fp16_check.ts ] && [ "$DEVICE" = cuda ]; then
  step fp16_check 90 "${DENO[@]}" bench/gpu/fp16_check.ts
fi

# 1. parity
if [ "$HAVE_TORCH" = 1 ]; then
  step parity_reference 150 python3 bench/parity/parity.py --out "$TMP/parity"
  if [ -f "$TMP/parity/manifest.json" ]; then # the models that did get written, even if one failed
    tar -C "$TMP" -czf "$OUT/parity_reference.tgz" parity 2>>"$LOG"
    step parity_"$DEVICE" 120 "${DENO[@]}" bench/parity/ours.ts --dir "$TMP/parity" --device "$DEVICE"
    [ "$DEVICE" = cpu ] || step parity_cpu 120 "${DENO[@]}" bench/parity/ours.ts --dir "$TMP/parity" --device cpu
  fi
else
  echo "=== parity: skipped (no torch/transformers here)" >>"$LOG"
fi

echo "run_all: done in $((SECONDS - START)) s" >>"$LOG"
rm -rf "$TMP"
grep -c '"rc":0' "$RES" | xargs -I{} echo "run_all: {} of $(grep -c '"bench":"run_all"' "$RES") steps succeeded" >>"$LOG"
tail -3 "$LOG"
