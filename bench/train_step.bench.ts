/**
 * Training-step throughput on the CPU for `deno bench`: one Loop chunk of 4 optimizer steps of a small
 * Llama-style model (4 layers, hidden 128, vocab 512), 4 prompts × K = 4 responses × 64 tokens, NCA loss,
 * LoRA r = 8 and full fine-tuning. Tokens per second = 4 steps · 16 sequences · 64 tokens / time per chunk.
 * (bench/train_throughput.ts measures GPT-2-124M-shaped models, on CUDA too.)
 */
import { tinyConfig } from "../tests/fixtures/tiny_config.ts";
import { initWeights } from "../lib/model/init.ts";
import { trainableParamsFor } from "../lib/model/decoder.ts";
import { frozenWeights } from "../lib/model/weights.ts";
import { TrainingSession } from "../lib/runtime/training_session.ts";
import type { HostTensor } from "../lib/runtime/session.ts";
import { buildAlignmentGraph } from "../lib/train/train_graph.ts";
import { BATCH_INPUTS } from "../lib/train/chunks.ts";
import { mulberry32 } from "../lib/data/random.ts";

const STEPS = 4, PROMPTS = 4, K = 4, T = 64;
const cfg = tinyConfig("llama", {
  vocabSize: 512,
  hiddenSize: 128,
  numLayers: 4,
  numHeads: 4,
  intermediateSize: 256,
});
const weights = initWeights(cfg, { seed: 0 });

function chunk(): Record<string, HostTensor> {
  const r = mulberry32(1), rows = PROMPTS * K, n = STEPS * rows * T;
  const ids = Int32Array.from({ length: n }, () => Math.floor(r() * cfg.vocabSize));
  const labels = ids.map((v, i) => (i % T < T / 2 ? -100 : v));
  const dims = [STEPS, rows, T];
  const soft = new Float32Array(STEPS * PROMPTS * K).fill(1 / K);
  return {
    [BATCH_INPUTS.inputIds]: { dtype: "int32", dims, data: ids },
    [BATCH_INPUTS.attentionMask]: { dtype: "int32", dims, data: new Int32Array(n).fill(1) },
    [BATCH_INPUTS.labels]: { dtype: "int32", dims, data: labels },
    [BATCH_INPUTS.reference]: {
      dtype: "float32",
      dims: [STEPS, PROMPTS, K],
      data: new Float32Array(STEPS * PROMPTS * K).fill(-200),
    },
    [BATCH_INPUTS.softLabels]: { dtype: "float32", dims: [STEPS, PROMPTS, K], data: soft },
  };
}

async function session(mode: "lora" | "full"): Promise<TrainingSession> {
  const trainable = trainableParamsFor(
    cfg,
    mode === "lora" ? { mode, lora: { r: 8, alpha: 16, targetModules: "all-linear" } } : { mode, weights },
  );
  const built = buildAlignmentGraph({
    cfg,
    frozen: frozenWeights(weights),
    trainable,
    loss: "nca",
    beta: 0.1,
    k: K,
    ranked: true,
    optimizer: { kind: "adamw" },
    maxGradNorm: 1,
  });
  return await TrainingSession.create(built, trainable.init);
}

const feeds = chunk();
const lrs = new Array(STEPS).fill(1e-4);
const lora = await session("lora");
const full = await session("full");

Deno.bench(`NCA training chunk, LoRA r=8: ${STEPS} steps × ${PROMPTS * K} × ${T} tokens`, async () => {
  await lora.run(feeds, lrs);
});
Deno.bench(
  `NCA training chunk, full fine-tuning: ${STEPS} steps × ${PROMPTS * K} × ${T} tokens`,
  async () => {
    await full.run(feeds, lrs);
  },
);
