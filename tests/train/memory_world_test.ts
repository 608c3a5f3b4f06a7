/**
 * The memory plan of one rank of several: the world size and `--zero` reach the estimate the trainer logs,
 * and the 7B full fine-tuning case on 8 ranks of docs/distributed.md (ZeRO-1 fits 80 GB, DDP does not); full
 * fine-tuning's graphs read no weight file, so no frozen copy is counted on a GPU.
 */
import assert from "node:assert/strict";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import type { StoredTensor } from "../../lib/model/weight_files.ts";
import { planRun, rankStateBytes } from "../../lib/train/memory.ts";
import { planMemory } from "../../lib/train/run_plan.ts";
import type { TrainConfig } from "../../lib/train/option_specs.ts";
import type { RunInputs } from "../../lib/train/run_inputs.ts";
import type { LoraConfig } from "../../lib/model/lora.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loadModelFolder, readModelWeights, saveModelFolder } from "../../lib/model/model_folder.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import { trainableParamsFor } from "../../lib/model/decoder.ts";
import { buildGradientGraph } from "../../lib/graph/distributed.ts";
import { alignmentTrainingSpec, buildAlignmentGraph } from "../../lib/train/train_graph.ts";

const GiB = 2 ** 30;
/** Mistral-7B's sizes. */
const mistral7b = tinyConfig("llama", {
  hiddenSize: 4096,
  intermediateSize: 14336,
  numHeads: 32,
  numKvHeads: 8,
  vocabSize: 32000,
  numLayers: 32,
});
const P7 = 7.24e9; // as bench/distributed.ts

Deno.test("memory: planRun passes the world to the estimate (a rank's trainable state)", () => {
  const stored = new Map<string, StoredTensor>([[
    "model.embed_tokens.weight",
    { file: "/m.safetensors", dtype: "F32", shape: [10, 4], begin: 0, end: 160 },
  ]]);
  const inputs = { cfg: tinyConfig("llama"), stored, rows: 2, width: 8, trainableParams: 1000, lora: null };
  const one = planRun({ ...inputs, computeBytes: 4 });
  const zero = planRun({ ...inputs, computeBytes: 4, world: { size: 4, zero: 1 } });
  assert.equal(one.estimate.trainable, 1000 * 40);
  assert.equal(zero.estimate.trainable, rankStateBytes(1000, { size: 4, zero: 1 }).total);
  assert.equal(zero.without.trainable, zero.estimate.trainable);
});

Deno.test("memory: the table of docs/distributed.md, 7B full fine-tuning on 8 ranks", () => {
  const g = (b: number) => (b / GiB).toFixed(1);
  const cuda = { size: 8, device: "cuda" } as const;
  const ddp = rankStateBytes(P7, { ...cuda, zero: 0 }), z1 = rankStateBytes(P7, { ...cuda, zero: 1 });
  const parts = (r: typeof ddp) => [r.params, r.gradient, r.staging, r.moments, r.update, r.total].map(g);
  // NCCL stages host arrays through 256 MiB of device memory at most (the collectives go in pieces)
  assert.deepEqual(parts(ddp), ["27.0", "27.0", "0.3", "53.9", "80.9", "189.0"]);
  assert.deepEqual(parts(z1), ["27.0", "27.0", "0.3", "6.7", "10.1", "71.0"]);
  assert.equal(z1.staging, 256 * 2 ** 20);
  assert.equal(rankStateBytes(1000, { ...cuda, zero: 1 }).staging, 4000, "a small gradient: its own size");
  // on the CPU the collectives' host arrays (gradient and gathered parameters) are in the same memory
  const cpu = rankStateBytes(P7, { size: 8, zero: 1 });
  assert.equal(cpu.staging, P7 * 8);
  assert.equal(g(cpu.total), "124.7");
});

/** planMemory's inputs for a 7B full fine-tuning run: bf16 weights, 1 prompt × K = 2 of `width` tokens. */
function run7b(zero: number, width: number) {
  const stored = new Map<string, StoredTensor>([[
    "model.layers.all",
    { file: "/m.safetensors", dtype: "BF16", shape: [P7], begin: 0, end: 2 * P7 },
  ]]);
  const example = { promptIds: new Array(width / 2).fill(1), responseIds: [new Array(width / 2).fill(1)] };
  const p = { model: { config: mistral7b, stored }, train: [example], k: 2 } as unknown as RunInputs;
  const cfg = {
    full: true,
    batchSize: 1,
    precision: "fp32",
    gradientCheckpointing: true,
    zero,
    maxLength: width,
    gradAccum: 1,
  } as TrainConfig;
  return { cfg, p };
}

Deno.test("planMemory: the logged plan is a rank's; 7B full fine-tuning on 8 ranks: ZeRO-1 ≈ 75 GiB (an H100's 78 GiB), DDP ≈ 193", async () => {
  const lines: string[] = [];
  const lora = {} as LoraConfig;
  const z = run7b(1, 1024);
  const plan = await planMemory(z.cfg, z.p, "cuda", lora, (l) => lines.push(l), 141e9, 8);
  assert.equal(plan.estimate.trainable, rankStateBytes(P7, { size: 8, zero: 1, device: "cuda" }).total);
  assert.match(
    lines[0],
    /^memory estimate: 74\.9\d GiB \(weights 0\.00 GiB, trainable state 71\.0\d GiB.* per rank of 8 \(ZeRO-1: AdamW's moments sharded\); cuda has 131\.3 GiB free/,
  );
  // full fine-tuning holds no frozen copy of the weights on the GPU: it fits the 78 GiB an H100 80GB leaves
  // free, not 74.5
  await planMemory(z.cfg, z.p, "cuda", lora, () => {}, 78 * 2 ** 30, 8);
  await assert.rejects(
    planMemory(z.cfg, z.p, "cuda", lora, () => {}, 80e9, 8),
    /this run needs about 75\.0 GiB but the cuda has 74\.5 GiB free/,
  );
  const d = run7b(0, 1024);
  await assert.rejects(
    planMemory(d.cfg, d.p, "cuda", lora, () => {}, 141e9, 8),
    /this run needs about 193\.0 GiB but the cuda has 131\.3 GiB free.* Or shard AdamW's moments across the 8 ranks with --zero 1\.$/,
  );
  // one process: its own state, no "per rank"
  const one: string[] = [];
  await planMemory(z.cfg, z.p, "cuda", lora, (l) => one.push(l), 1e15);
  assert.doesNotMatch(one[0], /per rank/);
  assert.match(one[0], /trainable state 269\.\d\d GiB/);
});

Deno.test("memory: full fine-tuning's graphs (one process and a rank's) read no weight file; LoRA's read them all", async () => {
  const dir = await Deno.makeTempDir({ prefix: "memory_world_test_" });
  try {
    const cfg = tinyConfig("llama", { vocabSize: 128 });
    await saveModelFolder(dir, cfg, initWeights(cfg, { seed: 1, std: 0.08 }));
    const m = await loadModelFolder(dir);
    const external = async (full: boolean) => {
      const trainable = trainableParamsFor(
        m.config,
        full
          ? { mode: "full", weights: await readModelWeights(m) }
          : { mode: "lora", lora: { r: 2, alpha: 4, targetModules: "all-linear", dropout: 0 }, seed: 0 },
      );
      const spec = {
        cfg: m.config,
        frozen: storedWeights(m.stored),
        trainable,
        loss: "nca" as const,
        beta: 0.1,
        k: 2,
        ranked: false,
        optimizer: { kind: "adamw" as const },
        scoring: true,
      };
      const count = (g: { initializers: { external?: unknown }[] }) =>
        g.initializers.filter((i) => i.external).length;
      return [
        count(buildAlignmentGraph(spec).graph.build()),
        count(buildGradientGraph(alignmentTrainingSpec(spec)).graph.build()),
      ];
    };
    assert.deepEqual(await external(true), [0, 0]);
    assert.deepEqual(await external(false), [m.stored.size, m.stored.size]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
