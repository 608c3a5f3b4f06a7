/**
 * Step-keyed LoRA dropout on CUDA against the CPU, in one short run:
 * 1. the masks of `keyedDropout` (float64 Range/Sin/Floor) for a few keys, modules and shapes, computed
 *    on both devices: the count of elements kept on one and dropped on the other (0 expected: the hash
 *    runs in float64, so only a u within ~1e-10 of p could flip), and the kept fraction (≈ 1 − p);
 * 2. 6 LoRA training steps of a tiny GPT-2 with dropout 0.1 on both devices from the same start: losses
 *    side by side (TF32 on CUDA: agreement to ~1e-3 relative; a different mask would show much more).
 * One JSON line per result (also `$OUT/dropout_check.jsonl` when OUT is set); exit status 1 when a check
 * fails, 2 when CUDA cannot start.
 *
 * ```
 * deno run -A bench/gpu/dropout_check.ts                # CUDA against the CPU
 * deno run -A bench/gpu/dropout_check.ts --device cpu   # a dry run: the CPU against itself
 * ```
 * @module
 */
import { GraphBuilder } from "../../lib/graph/builder.ts";
import { serializeModel } from "../../lib/graph/serialize.ts";
import { keyedDropout } from "../../lib/model/layers.ts";
import { resolveDevice } from "../../lib/runtime/device.ts";
import { type Device, ModelSession } from "../../lib/runtime/session.ts";
import { gpt2Config, prepareCase, syntheticChunk, timeRun } from "../_common.ts";
import { initWeights } from "../../lib/model/init.ts";
import { checkReport } from "./_checks.ts";

let cuda: Device = "cpu";
try {
  if (!Deno.args.includes("cpu")) cuda = (await resolveDevice("cuda")).device;
} catch (e) {
  console.log(
    JSON.stringify({ check: "summary", ok: false, failures: [`no CUDA: ${(e as Error).message}`] }),
  );
  Deno.exit(2);
}
const { emit, failures, finish } = checkReport("dropout_check");

// 1. masks
const P = 0.1;
async function masks(device: Device, rows: number, width: number, keys: number[], seed: number) {
  const g = new GraphBuilder("mask");
  const x = g.input("x", "float32", ["rows", width]);
  const key = g.input("key", "float32", []);
  g.output(keyedDropout(x, P, key, seed), "y");
  const s = await ModelSession.create(serializeModel(g.build()), { device });
  const ones = new Float32Array(rows * width).fill(1);
  const res: Float32Array[] = [];
  for (const k of keys) {
    const r = await s.run({
      x: { dtype: "float32", dims: [rows, width], data: ones },
      key: { dtype: "float32", dims: [], data: Float32Array.of(k) },
    }, ["y"]);
    res.push(r.y.data as Float32Array);
  }
  await s.release();
  return res;
}
for (const [rows, width, seed] of [[4096, 768, 12345], [4096, 3072, 777], [37, 64, 99_991]]) {
  const keys = [0.5, 1.5, 4242.5, 99_999.5];
  const [a, b] = [await masks("cpu", rows, width, keys, seed), await masks(cuda, rows, width, keys, seed)];
  let differ = 0, kept = 0;
  for (let i = 0; i < keys.length; i++) {
    for (let j = 0; j < a[i].length; j++) {
      if ((a[i][j] === 0) !== (b[i][j] === 0)) differ++;
      if (b[i][j] !== 0) kept++;
    }
  }
  const n = keys.length * rows * width;
  const keptFraction = kept / n;
  const ok = differ <= n * 1e-6 && Math.abs(keptFraction - (1 - P)) < 0.01;
  if (!ok) failures.push(`masks ${rows}×${width}: ${differ} differ, kept ${keptFraction}`);
  emit({
    check: "mask",
    rows,
    width,
    seed,
    keys: keys.length,
    elements: n,
    differ,
    kept_fraction: keptFraction,
    ok,
  });
}

// 2. training steps with dropout on both devices
const cfg = gpt2Config({ layers: 2, hidden: 64, heads: 4, vocab: 256, positions: 64 });
const weights = initWeights(cfg, { seed: 3 });
const STEPS = 6;
const feeds = syntheticChunk({
  steps: STEPS,
  rows: 4,
  width: 32,
  vocab: 256,
  loss: "sft",
  k: 1,
  seed: 5,
  dropoutKey: true,
});
const losses: Record<string, number[]> = {};
for (const device of ["cpu", cuda] as Device[]) {
  const c = await prepareCase({
    cfg,
    weights,
    mode: "lora",
    loss: "sft",
    k: 1,
    loraR: 8,
    loraDropout: P,
    device,
  });
  try {
    const r = await c.session.run(feeds, new Array(STEPS).fill(3e-3));
    losses[device === "cpu" && losses.cpu ? "cpu2" : device] = Array.from(r.loss);
    await timeRun(c.session, feeds, 1); // the session runs again without complaint
  } finally {
    await c.session.release();
  }
}
const other = losses[cuda === "cpu" ? "cpu2" : cuda];
const rel = losses.cpu.map((l, i) => Math.abs(l - other[i]) / Math.abs(l));
const trainOk = Math.max(...rel) < 2e-3;
if (!trainOk) failures.push(`training with dropout: CPU ${losses.cpu} vs ${cuda} ${other}`);
emit({
  check: "train",
  steps: STEPS,
  dropout: P,
  cpu: losses.cpu,
  [cuda === "cpu" ? "cpu_again" : cuda]: other,
  max_rel_diff: Math.max(...rel),
  ok: trainOk,
});

await finish();
