#!/usr/bin/env bash
# The benchmark and parity checks in ONE prepared run for the lent GPU machine (shared/gpu/README.md):
#
#   bash .gpu/pN/recv.sh && source .gpu/bin/setup.sh && bash bench/gpu/run_all.sh
#
# (setup.sh is sourced here too when deno is not on PATH yet). Steps, each under `timeout` so that one
# failure or hang does not lose the rest, in groups by priority (ONLY=tp,torch,... runs some of them):
#   tp       train_throughput on cuda: full, lora, nca (GPT-2 124M, 8 × 512 tokens), 8 steps per run
#   ffi      the C API backend (issue 12): train_throughput full and lora through node and ffi in one call,
#            bench/decode.ts greedy (GPT-2-124M, Llama-3.2-1B and SmolLM-135M shapes; batch 1 and 16; both
#            backends and samplers, weights cast per use and once) and sampled (SmolLM-135M, batch 16,
#            temperature 1) on cuda, and transformers' generate on the same folders (bench/gpu/decode_torch.py,
#            bf16, dynamic and static cache)
#   tp64     the same for full and lora at 64 steps per run (full fine-tuning's state transfer amortized)
#   torch    torch_baseline: PyTorch eager TF32 and bf16 autocast, full and LoRA
#   dropout  LoRA with step-keyed dropout: throughput, and bench/gpu/dropout_check.ts (masks vs the CPU)
#   e2e      bench/gpu/e2e_cuda.sh: the demo trains on CUDA, the server answers on CUDA (in the ffi group
#            also with NCA_ORT_BACKEND=ffi: the same through the C API)
#   parity   PyTorch reference (bench/parity/parity.py, reward_head.py) vs our graphs on cuda and on cpu
#   profile  profiled runs of $PROFILE_CASE (default lora) and of full, summarized by profile_summary
#   blocking the $PROFILE_CASE profile again with CUDA_LAUNCH_BLOCKING=1 (GPU time per node)
#   dist     training past one device (issue 22) on the one GPU lent: bench/gpu/nccl_check.ts (NCCL, a world of
#            one: device buffers, host arrays staged whole and in pieces) and bench/gpu/ddp_check.ts (the data-
#            parallel step's graphs against the one-process Loop, fp32 and fp16) through onnxruntime-node (host
#            arrays staged) and through the C API (NCA_ORT_BACKEND=ffi: state and gradient kept on the device,
#            NCCL in place); their two-rank parts run where two GPUs are visible
#   fp16     bench/gpu/fp16_check.ts and fp16 throughput
#   block    block_step: one GPT-2 block, B=8 T=512, and a small launch-bound shape B=1 T=64
#   loop     bench/sample.ts (SmolLM-135M shape, K = 4, batch 8/32/128) beside transformers' generate on the
#            same folder and prompt ids (bench/gpu/sample_torch.py), and bench/score.ts (reward-model scoring)
#   big      the shapes people align (issue 11): NCA K=4, LoRA r=16 on every linear layer, random bf16 folders
#            made first; ours (bench/big_throughput.ts) then PyTorch + PEFT (bench/torch_big_baseline.py,
#            bf16 autocast, gradient checkpointing) on the same shape and batch, tokens/s and peak memory:
#            Mistral-7B at 4 prompts × 4 × 1024 tokens, Llama-3.2-1B and Qwen2.5-1.5B at the same batch.
#            Not in the default list (the 7B folder alone is 14 GB and minutes to write): ONLY=big
# Each step gets at most what is left of $BUDGET seconds (default 420); once it is spent the rest is skipped.
#
# Everything lands in $OUT (at most 8 files come back):
#   results.jsonl         every JSON line of every step, plus {"bench":"run_all","step":..,"rc":..} per step
#   log.txt               stderr of every step, versions, timings
#   profile_top.txt       the profile summary of $PROFILE_CASE (text); profile_top_full.txt that of full;
#                         profile_top_blocking.txt that of the blocking run
#   profile.json.gz       the raw ONNX Runtime profile of $PROFILE_CASE, when it fits (< 15 MB compressed)
#   parity_reference.tgz  what parity.py wrote: rerun `deno run -A bench/parity/ours.ts --dir DIR` anywhere
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
  TP64=("${TINY[@]}" --cases full --batch 4 --seq 16 --steps 4 --steps-per-run 4)
  TORCH=(--layers 2 --hidden 32 --heads 4 --vocab 64 --batch 4 --seq 16 --steps 2 --warmup 1)
  BIG_SHAPES=(tiny)
  BIG=(--prompts 1 --k 4 --seq 32 --steps 1 --warmup 1)
  FFI_TP=("${TINY[@]}" --cases full,lora --batch 4 --seq 16 --steps 2 --steps-per-run 2 --overhead-runs 0)
  DECODE=(--shape tiny --batch 1,2 --tokens 4 --prompt 4 --sampler host,graph --temperature 1)
  DECODE_TORCH_SHAPES=(tiny)
  DECODE_TORCH=(--batch 1,2 --tokens 4 --prompt 4)
  SAMPLE_SHAPE=tiny
  SAMPLE=(--shape tiny --batch 8 --prompts 2 --k 4 --tokens 4)
  SAMPLE_TORCH=(--k 4 --tokens 4 --batch 8)
else
  BLOCK=(--runs 5 --steps-per-run 10)
  BLOCK_SMALL=(--batch 1 --seq 64 --runs 5 --steps-per-run 10)
  TP=(--steps 16 --steps-per-run 8 --warmup 1 --overhead-runs 1)
  TP64=(--cases full,lora --steps 64 --steps-per-run 64 --warmup 1 --overhead-runs 1)
  TORCH=(--steps 20 --warmup 3)
  BIG_SHAPES=(${BIG_SHAPES:-mistral-7b llama-3.2-1b qwen2.5-1.5b})
  BIG=(--prompts 4 --k 4 --seq 1024 --steps 2 --warmup 1)
  FFI_TP=(--cases full,lora --steps 16 --steps-per-run 8 --warmup 1 --overhead-runs 0)
  # greedy: the tokens/s transformers' greedy generate is compared with; both samplers at temperature 1
  DECODE=(--shape gpt2-124m,llama-3.2-1b,smollm-135m --batch 1,16 --tokens 64 --prompt 128 \
    --sampler host,graph --temperature 0)
  DECODE_SAMPLED=(--shape smollm-135m --batch 16 --tokens 64 --prompt 128 --sampler host,graph --temperature 1)
  DECODE_TORCH_SHAPES=(gpt2-124m llama-3.2-1b smollm-135m)
  DECODE_TORCH=(--batch 1,16 --tokens 64 --prompt 128 --cache dynamic,static)
  SAMPLE_SHAPE=smollm-135m
  SAMPLE=(--shape smollm-135m --batch 8,32,128 --prompts 32 --k 4 --tokens 64 --ignore-eos)
  SAMPLE_TORCH=(--k 4 --tokens 64 --batch 8,32,128 --ignore-eos)
fi
MODELS=${MODELS:-$TMP/models}
HAVE_TORCH=0
python3 -c 'import torch, transformers' >/dev/null 2>&1 && HAVE_TORCH=1
# ONLY=group,group,...: run these groups alone (default all, in this order of priority)
ONLY=${ONLY:-tp,ffi,dist,tp64,torch,dropout,e2e,parity,loop,profile,blocking,fp16,block}
want() { [[ ",$ONLY," == *",$1,"* ]]; }

# 1. GPT-2 124M training throughput, every case (8 steps per session run)
want tp && step train_throughput 200 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" "${TP[@]}"
# full fine-tuning moves its 1.5 GB of state across the JS boundary once per run: 64 steps per run amortize it
want tp64 && step train_throughput_s64 120 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" \
  "${TP64[@]}"

# 2. the PyTorch baseline on the same model and batch
if want torch && [ "$HAVE_TORCH" = 1 ]; then
  step torch_baseline 120 python3 bench/torch_baseline.py --device "$DEVICE" \
    --cases full-tf32,full-bf16,lora-tf32,lora-bf16 "${TORCH[@]}"
fi

# 3. LoRA with step-keyed dropout: its cost per step, and its masks and losses against the CPU
if want dropout; then
  step train_throughput_dropout 90 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" --cases lora \
    --lora-dropout 0.05 "${TP[@]}"
  [ "$DEVICE" = cuda ] && step dropout_check 60 env -u OUT "${DENO[@]}" bench/gpu/dropout_check.ts
fi

# 4. the user's commands end to end: the demo trains on the device, the server answers on it
want e2e && [ "$DEVICE" = cuda ] && step e2e_cuda 120 bash bench/gpu/e2e_cuda.sh
# the same through ONNX Runtime's C API on CUDA (issue 12): what switching CUDA's default backend waits for
want ffi && [ "$DEVICE" = cuda ] && step e2e_cuda_ffi 120 env NCA_ORT_BACKEND=ffi bash bench/gpu/e2e_cuda.sh

# 4b. parity with PyTorch
if want parity && [ "$HAVE_TORCH" = 1 ]; then
  step parity_reference 150 python3 bench/parity/parity.py --out "$TMP/parity"
  if [ -f "$TMP/parity/manifest.json" ]; then # the models that did get written, even if one failed
    tar -C "$TMP" -czf "$OUT/parity_reference.tgz" parity 2>>"$LOG"
    step parity_"$DEVICE" 120 "${DENO[@]}" bench/parity/ours.ts --dir "$TMP/parity" --device "$DEVICE"
    [ "$DEVICE" = cpu ] || step parity_cpu 120 "${DENO[@]}" bench/parity/ours.ts --dir "$TMP/parity" --device cpu
  fi
  # the reward models' score head against AutoModelForSequenceClassification
  step reward_reference 120 python3 bench/parity/reward_head.py --out "$TMP/reward"
  [ -d "$TMP/reward" ] && step reward_"$DEVICE" 90 "${DENO[@]}" bench/parity/reward_ours.ts --dir "$TMP/reward" \
    --device "$DEVICE"
fi

# 5. profiled runs (separate sessions: profiling slows them), summarized
profile() { # CASE FILE-SUFFIX
  step "profile_run_$1" 120 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" --cases "$1" \
    "${TP[@]}" --steps-per-run 8 --steps 8 --overhead-runs 0 --profile "$TMP/prof"
  local trace
  trace=$(ls -t "$TMP"/prof-"$1"_*.json 2>/dev/null | head -1)
  if [ -z "$trace" ]; then
    echo "=== profile $1: no profile was written" >>"$LOG"
    return
  fi
  step "profile_summary_$1" 60 "${DENO[@]}" bench/profile_summary.ts "$trace" --json --top 25
  timeout 60 "${DENO[@]}" bench/profile_summary.ts "$trace" --top 25 >"$OUT/profile_top$2.txt" 2>>"$LOG"
  gzip -c "$trace" >"$TMP/profile.json.gz"
  if [ -n "$2" ]; then
    : # only the first case's raw trace comes back (8 files at most)
  elif [ "$(stat -c %s "$TMP/profile.json.gz")" -lt 15000000 ]; then
    cp "$TMP/profile.json.gz" "$OUT/profile$2.json.gz"
  else
    echo "profile$2.json.gz is $(stat -c %s "$TMP/profile.json.gz") bytes: not copied to \$OUT" >>"$LOG"
  fi
  rm -f "$trace"
}
if want profile; then
  profile "$PROFILE_CASE" ""
  [ "$PROFILE_CASE" = full ] || profile full _full
fi

# 5b. the same profile with CUDA_LAUNCH_BLOCKING=1: each launch waits for its kernel, so node times are
# GPU time (plus ~10-20 µs of launch and synchronization each): where the GPU spends a step
if want blocking && [ "$DEVICE" = cuda ]; then
  step profile_run_blocking 90 env CUDA_LAUNCH_BLOCKING=1 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" \
    --cases "$PROFILE_CASE" "${TP[@]}" --steps-per-run 2 --steps 2 --overhead-runs 0 --profile "$TMP/block"
  trace=$(ls -t "$TMP"/block-"$PROFILE_CASE"_*.json 2>/dev/null | head -1)
  [ -n "$trace" ] && timeout 60 "${DENO[@]}" bench/profile_summary.ts "$trace" --top 30 \
    >"$OUT/profile_top_blocking.txt" 2>>"$LOG"
fi

# 6. fp16 mixed precision: throughput, and its numbers against fp32 on the device
if want fp16 && [ "$DEVICE" = cuda ]; then
  step fp16_check 60 env -u OUT "${DENO[@]}" bench/gpu/fp16_check.ts
  step train_throughput_fp16 150 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" \
    --cases full,lora --precision fp16 "${TP[@]}"
fi

# 7. one transformer block: per-step time and node count (and a small, launch-bound shape)
if want block; then
  step block_step 90 "${DENO[@]}" bench/block_step.ts --device "$DEVICE" "${BLOCK[@]}"
  step block_step_small 60 "${DENO[@]}" bench/block_step.ts --device "$DEVICE" "${BLOCK_SMALL[@]}"
fi

# training past one device: NCCL and the data-parallel step, through both backends
if want dist && [ "$DEVICE" = cuda ]; then
  step nccl_check 60 env -u OUT "${DENO[@]}" bench/gpu/nccl_check.ts
  step ddp_check_node 120 env -u OUT NCA_ORT_BACKEND=node "${DENO[@]}" bench/gpu/ddp_check.ts --device cuda
  step ddp_check_ffi 120 env -u OUT NCA_ORT_BACKEND=ffi "${DENO[@]}" bench/gpu/ddp_check.ts --device cuda
fi

# the C API backend against onnxruntime-node, in one call each
if want ffi; then
  step ffi_train 300 "${DENO[@]}" bench/train_throughput.ts --device "$DEVICE" --backend node,ffi "${FFI_TP[@]}"
  step ffi_decode 300 "${DENO[@]}" bench/decode.ts --device "$DEVICE" --models "$MODELS" "${DECODE[@]}"
  [ -n "${DECODE_SAMPLED[*]:-}" ] && step ffi_decode_sampled 200 "${DENO[@]}" bench/decode.ts --device "$DEVICE" \
    --models "$MODELS" "${DECODE_SAMPLED[@]}"
  # transformers' generate on the same random folders (made by bench/decode.ts), dynamic and static cache
  if [ "$HAVE_TORCH" = 1 ]; then
    for shape in "${DECODE_TORCH_SHAPES[@]}"; do
      [ -d "$MODELS/$shape-bfloat16" ] && step "ffi_decode_torch_$shape" 200 python3 bench/gpu/decode_torch.py \
        --model "$MODELS/$shape-bfloat16" --device "$DEVICE" "${DECODE_TORCH[@]}"
    done
  fi
fi

# the loop's throughput: K sampled responses per prompt (ours, then transformers' generate on the same
# folder and prompt ids) and reward-model scoring
if want loop; then
  step loop_sample 300 "${DENO[@]}" bench/sample.ts --device "$DEVICE" --models "$MODELS" "${SAMPLE[@]}" \
    --dump-prompts "$TMP/sample_prompts.json"
  if [ "$HAVE_TORCH" = 1 ] && [ -f "$TMP/sample_prompts.json" ]; then
    step loop_sample_torch 300 python3 bench/gpu/sample_torch.py --model "$MODELS/$SAMPLE_SHAPE-bfloat16" \
      --prompts-json "$TMP/sample_prompts.json" --device "$DEVICE" "${SAMPLE_TORCH[@]}"
  fi
  step loop_score 120 "${DENO[@]}" bench/score.ts --device "$DEVICE"
fi

# 8. the shapes people align: ours, then PyTorch + PEFT on the same shape and batch (folder made by ours)
if want big; then
  for shape in "${BIG_SHAPES[@]}"; do
    step "big_make_$shape" 240 "${DENO[@]}" bench/big_throughput.ts --shape "$shape" --models "$MODELS" --make-only
    step "big_ours_$shape" 420 "${DENO[@]}" bench/big_throughput.ts --shape "$shape" --models "$MODELS" \
      --device "$DEVICE" "${BIG[@]}"
    if [ "$HAVE_TORCH" = 1 ] && [ "$DEVICE" = cuda ]; then
      step "big_torch_$shape" 300 python3 bench/torch_big_baseline.py --config "$MODELS/$shape-bfloat16/config.json" \
        --gc on "${BIG[@]}"
    fi
  done
fi

echo "run_all: done in $((SECONDS - START)) s" >>"$LOG"
rm -rf "$TMP"
grep -c '"rc":0' "$RES" | xargs -I{} echo "run_all: {} of $(grep -c '"bench":"run_all"' "$RES") steps succeeded" >>"$LOG"
tail -3 "$LOG"
