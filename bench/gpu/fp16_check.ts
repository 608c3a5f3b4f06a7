/**
 * fp16 (mixed precision) on CUDA, checked in one short run: for a tiny Llama and a tiny GPT-2 (random
 * weights),
 * 1. the policy's per-sequence log-prob sums (LoRA adapters active) in fp32 and in fp16: their largest
 *    difference, which must stay under 0.05·|sum|;
 * 2. 10 fp16 LoRA training steps with loss scaling (DPO on a fixed batch, reference log-probs from the
 *    fp16 reference graph) beside the same 10 steps in fp32: loss, skipped flag, loss scale and gradient
 *    norm per step, and 3 fp16 full fine-tuning steps. A first LoRA loss other than ln 2 (the policy must
 *    equal the reference at B = 0), a NaN loss after the first steps, or every step skipped fails.
 * One JSON line per result (also written to `$OUT/fp16_check.jsonl` when OUT is set); exit status 1 when
 * a check fails, 2 when CUDA cannot start. Takes a few seconds on a GPU.
 *
 * ```
 * deno run -A bench/gpu/fp16_check.ts                # CUDA (the provider and libraries must be there)
 * deno run -A bench/gpu/fp16_check.ts --device cpu   # a dry run: the CPU runs fp16 graphs mostly in fp32
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { serializeModel } from "../../lib/graph/serialize.ts";
import type { ModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../../tests/fixtures/tiny_config.ts";
import { type Trainable, trainableParamsFor } from "../../lib/model/decoder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { frozenWeights, type WeightMap } from "../../lib/model/weights.ts";
import { resolveDevice } from "../../lib/runtime/device.ts";
import { type Device, type HostTensor, ModelSession } from "../../lib/runtime/session.ts";
import { TrainingSession } from "../../lib/runtime/training_session.ts";
import { BATCH_INPUTS } from "../../lib/train/chunks.ts";
import { buildAlignmentGraph, FP16_LOSS_SCALING } from "../../lib/train/train_graph.ts";
import { buildScoringGraph, type Precision } from "../../lib/model/scoring_graph.ts";
import { checkReport } from "./_checks.ts";

const { values: args } = parseArgs({
  options: { device: { type: "string", default: "cuda" }, steps: { type: "string", default: "10" } },
});
let device: Device = "cpu";
if (args.device !== "cpu") {
  try {
    device = (await resolveDevice("cuda")).device;
  } catch (e) {
    console.log(
      JSON.stringify({ check: "summary", ok: false, failures: [`no CUDA: ${(e as Error).message}`] }),
    );
    Deno.exit(2);
  }
}
const STEPS = Number(args.steps);
const { emit, failures, finish } = checkReport("fp16_check");

// a fixed batch: P prompts × K = 2 responses (chosen first), right-padded rows, labels on the responses
const P = 3, K = 2, ROWS = P * K, T = 20;
function lcg(seed: number) {
  let s = seed >>> 0;
  return (n: number) => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % n;
}
function makeBatch(vocab: number) {
  const next = lcg(7);
  const ids = new Int32Array(ROWS * T), mask = new Int32Array(ROWS * T), labels = new Int32Array(ROWS * T);
  labels.fill(-100);
  for (let p = 0; p < P; p++) {
    const prompt = Array.from({ length: 4 + p * 2 }, () => 3 + next(vocab - 3));
    for (let k = 0; k < K; k++) {
      const r = p * K + k;
      const response = Array.from({ length: 5 + ((p + k) % 4) * 2 }, () => 3 + next(vocab - 3));
      [...prompt, ...response].forEach((id, t) => {
        ids[r * T + t] = id;
        mask[r * T + t] = 1;
        if (t >= prompt.length) labels[r * T + t] = id;
      });
    }
  }
  const i32 = (data: Int32Array): HostTensor => ({ dtype: "int32", dims: [ROWS, T], data });
  return {
    [BATCH_INPUTS.inputIds]: i32(ids),
    [BATCH_INPUTS.attentionMask]: i32(mask),
    [BATCH_INPUTS.labels]: i32(labels),
  };
}

function paramFeeds(t: Trainable, values: Record<string, Float32Array>): Record<string, HostTensor> {
  return Object.fromEntries(
    t.params.map((p) => [p.name, { dtype: "float32" as const, dims: p.shape, data: values[p.name] }]),
  );
}

async function logps(
  cfg: ModelConfig,
  W: WeightMap,
  precision: Precision,
  batch: Record<string, HostTensor>,
  policy?: { trainable: Trainable; values: Record<string, Float32Array> },
): Promise<Float32Array> {
  const g = buildScoringGraph(cfg, frozenWeights(W), policy?.trainable, { precision });
  const s = await ModelSession.create(serializeModel(g.build()), { device, describe: (n) => g.describe(n) });
  const extra = policy ? paramFeeds(policy.trainable, policy.values) : {};
  const res = await s.run({ ...batch, ...extra }, ["logps"]);
  await s.release();
  return res.logps.data as Float32Array;
}

function stack(t: HostTensor, steps: number): HostTensor {
  const data = new (t.data.constructor as Int32ArrayConstructor | Float32ArrayConstructor)(
    steps * t.data.length,
  );
  for (let i = 0; i < steps; i++) data.set(t.data as Int32Array & Float32Array, i * t.data.length);
  return { dtype: t.dtype, dims: [steps, ...t.dims], data } as HostTensor;
}

async function trainSteps(
  cfg: ModelConfig,
  W: WeightMap,
  trainable: Trainable,
  precision: Precision,
  batch: Record<string, HostTensor>,
  reference: Float32Array,
  steps: number,
  lr: number,
) {
  const built = buildAlignmentGraph({
    cfg,
    frozen: frozenWeights(W),
    trainable,
    loss: "dpo",
    beta: 0.1,
    k: K,
    ranked: false,
    optimizer: { kind: "adamw", weightDecay: 0 },
    maxGradNorm: 1,
    precision,
  });
  const ts = await TrainingSession.create(built, trainable.init, {
    device,
    lossScale: precision === "fp16" ? FP16_LOSS_SCALING.init : undefined,
  });
  const feeds: Record<string, HostTensor> = {};
  for (const [k, v] of Object.entries(batch)) feeds[k] = stack(v, steps);
  feeds[BATCH_INPUTS.reference] = stack({ dtype: "float32", dims: [P, K], data: reference }, steps);
  const t0 = performance.now();
  const r = await ts.run(feeds, new Array(steps).fill(lr));
  const ms = performance.now() - t0;
  await ts.release();
  return { ...r, ms };
}

async function check(family: "llama" | "gpt2") {
  const cfg = tinyConfig(family, { hiddenSize: 64, numHeads: 4, vocabSize: 256 });
  const W = initWeights(cfg, { seed: 1, std: 0.1 });
  const batch = makeBatch(cfg.vocabSize);
  const lora = { r: 8, alpha: 16, targetModules: "all-linear" as const };

  // 1. log-probs, fp32 vs fp16, with active adapters (B ≠ 0)
  const active = trainableParamsFor(cfg, { mode: "lora", lora, seed: 2 });
  const values = { ...active.init };
  for (const p of active.params) {
    if (p.name.includes("lora_B")) values[p.name] = values[p.name].map((_, i) => Math.sin(i) * 0.05);
  }
  const s32 = await logps(cfg, W, "fp32", batch, { trainable: active, values });
  const s16 = await logps(cfg, W, "fp16", batch, { trainable: active, values });
  let maxAbs = 0, maxRel = 0, ok = true;
  s32.forEach((v, i) => {
    const d = Math.abs(s16[i] - v);
    maxAbs = Math.max(maxAbs, d);
    maxRel = Math.max(maxRel, d / Math.abs(v));
    if (!(d <= 0.05 * Math.abs(v))) ok = false;
  });
  emit({
    check: "logps",
    family,
    device,
    fp32: [...s32],
    fp16: [...s16],
    max_abs_diff: maxAbs,
    max_rel_diff: maxRel,
    ok,
  });
  if (!ok) failures.push(`${family}: fp16 log-probs differ from fp32 by more than 0.05·|sum|`);

  // 2. LoRA training, fp16 with loss scaling beside fp32, from B = 0 (policy = reference at step 1)
  const ref16 = await logps(cfg, W, "fp16", batch);
  const ref32 = await logps(cfg, W, "fp32", batch);
  const fresh = () => trainableParamsFor(cfg, { mode: "lora", lora, seed: 3 });
  const r16 = await trainSteps(cfg, W, fresh(), "fp16", batch, ref16, STEPS, 3e-3);
  const r32 = await trainSteps(cfg, W, fresh(), "fp32", batch, ref32, STEPS, 3e-3);
  // B = 0: the fp16 policy is the fp16 reference, so DPO's first loss is ln 2
  if (!(Math.abs(r16.loss[0] - Math.LN2) < 1e-4)) {
    failures.push(`${family} LoRA: first fp16 loss ${r16.loss[0]}, not ln 2 (policy ≠ reference at step 1)`);
  }
  for (let i = 0; i < STEPS; i++) {
    emit({
      check: "train",
      family,
      mode: "lora",
      step: i + 1,
      loss: r16.loss[i],
      skipped: r16.skipped[i],
      loss_scale: r16.lossScale?.[i],
      grad_norm: r16.gradNorm[i],
      loss_fp32: r32.loss[i],
    });
    if (i >= 2 && !Number.isFinite(r16.loss[i])) {
      failures.push(`${family} LoRA: loss ${r16.loss[i]} at step ${i + 1}`);
    }
  }
  if (r16.skipped.every((x) => x > 0)) failures.push(`${family} LoRA: every fp16 step was skipped`);
  emit({ check: "train_time", family, mode: "lora", fp16_ms: r16.ms, fp32_ms: r32.ms, steps: STEPS });

  // 3. a few full fine-tuning steps in fp16 (embedding rows gathered in fp32, the rest cast)
  const full = trainableParamsFor(cfg, { mode: "full", weights: W });
  const rf = await trainSteps(cfg, W, full, "fp16", batch, ref16, 3, 3e-4);
  for (let i = 0; i < 3; i++) {
    emit({
      check: "train",
      family,
      mode: "full",
      step: i + 1,
      loss: rf.loss[i],
      skipped: rf.skipped[i],
      loss_scale: rf.lossScale?.[i],
      grad_norm: rf.gradNorm[i],
      // 0 on CUDA (fp32 parameters cast to fp16 = the fp16 initializers); the CPU drops some of those casts
      ...(i === 0 ? { loss_minus_ln2: rf.loss[0] - Math.LN2 } : {}),
    });
    if (!Number.isFinite(rf.loss[i])) failures.push(`${family} full: loss ${rf.loss[i]} at step ${i + 1}`);
  }
}

for (const family of ["llama", "gpt2"] as const) {
  try {
    await check(family);
  } catch (e) {
    failures.push(`${family}: ${(e as Error).message}`);
    emit({ check: "error", family, error: (e as Error).message.slice(0, 2000) });
  }
}
await finish({ device });
