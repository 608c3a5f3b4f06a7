/**
 * Activation checkpointing and the other memory paths a big model takes, on tiny models: the weights read
 * from a bf16 model folder (external data, cast in the graph), each layer's backward pass built as a
 * segment that reads the forward's values (save) or computes them again (recompute), keyed LoRA dropout
 * drawn again in the backward pass, the LM head in blocks of rows. In float64, the gradients equal those of
 * the plain backward pass, for several layers, LoRA (with dropout) and full fine-tuning.
 */
import assert from "node:assert/strict";
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import { gradients, type SegmentMode } from "../../lib/graph/autodiff.ts";
import * as op from "../../lib/graph/ops.ts";
import type { ModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { policyLogProbs, trainableParamsFor } from "../../lib/model/decoder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loadModelFolder, saveModelFolder } from "../../lib/model/model_folder.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import { frozenWeights } from "../../lib/model/weights.ts";
import { type HostTensor, ModelSession } from "../../lib/runtime/session.ts";
import { paddedBatch, tokens } from "./_decoder_helpers.ts";

const llama = tinyConfig("llama", {
  modelType: "qwen2",
  hiddenSize: 16,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 40,
  tieWordEmbeddings: true,
  numLayers: 3,
});
const gpt2 = tinyConfig("gpt2", { hiddenSize: 16, numHeads: 2, vocabSize: 40, numLayers: 3 });
// soft caps, a sliding layer between full ones, the LM head's cap inside the chunked head
const gemma = tinyConfig("gemma", {
  modelType: "gemma3_text",
  hiddenSize: 16,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 40,
  numLayers: 3,
  attnLogitSoftcap: 2,
  finalLogitSoftcap: 3,
  slidingWindow: 3,
  slidingLayers: [false, true, false],
});

type Variant = { segments: SegmentMode; chunk: number; recomputeDropout: boolean };

/** Gradients of Σ c·log π(y|x) w.r.t. every trainable parameter, from a graph built as `v` says. */
async function grads(cfg: ModelConfig, dir: string, mode: "lora" | "full", v: Variant) {
  const folder = await loadModelFolder(dir);
  const W = initWeights(cfg, { seed: 4, std: 0.3, biasStd: 0.2, normStd: 0.2 });
  const trainable = mode === "lora"
    ? trainableParamsFor(cfg, {
      mode,
      lora: { r: 2, alpha: 4, dropout: 0.3, targetModules: "all-linear" },
      seed: 1,
    })
    : trainableParamsFor(cfg, { mode, weights: W });
  // B non-zero, so that A's gradient is too
  for (const p of trainable.params) {
    if (p.name.includes("lora_B")) {
      trainable.init[p.name] = trainable.init[p.name].map((_, i) => Math.sin(i) * 0.2);
    }
  }
  const rows = [
    { prompt: tokens(3, 1, cfg.vocabSize), response: tokens(4, 2, cfg.vocabSize) },
    { prompt: tokens(2, 3, cfg.vocabSize), response: tokens(3, 4, cfg.vocabSize) },
  ];
  const batch = paddedBatch(rows, "right");
  const T = batch.width;
  const g = new GraphBuilder("recompute");
  const params: Record<string, Value> = {};
  for (const p of trainable.params) params[p.name] = g.input(p.name, "float64", p.shape);
  const ids = g.input("ids", "int32", [2, T]), mask = g.input("mask", "int32", [2, T]);
  const labels = g.input("labels", "int32", [2, T]);
  const key = g.input("key", "float32", []);
  const lp = policyLogProbs(
    g,
    cfg,
    trainable,
    params,
    storedWeights(folder.stored),
    { inputIds: ids, attentionMask: mask, labels },
    {
      dtype: "float64",
      dropoutKey: mode === "lora" ? key : undefined,
      chunk: v.chunk,
      recomputeDropout: v.recomputeDropout,
    },
  );
  const loss = op.sumAll(op.mul(lp.sums, g.constant([0.7, -1.3], [2], "float64")));
  const names = trainable.params.map((p) => p.name);
  const ds = gradients(loss, names.map((n) => params[n]), { segments: v.segments });
  g.output(loss, "loss");
  ds.forEach((d, i) => g.output(d, `grad:${names[i]}`));
  const s = await ModelSession.create(g.build(), { intraOpThreads: 1, describe: (n) => g.describe(n) });
  const feeds: Record<string, HostTensor> = {
    ids: { dtype: "int32", dims: [2, T], data: batch.inputIds },
    mask: { dtype: "int32", dims: [2, T], data: batch.attentionMask },
    labels: { dtype: "int32", dims: [2, T], data: batch.labels },
    key: { dtype: "float32", dims: [], data: Float32Array.of(1234.5) },
  };
  for (const p of trainable.params) {
    feeds[p.name] = { dtype: "float64", dims: p.shape, data: Float64Array.from(trainable.init[p.name]) };
  }
  const used = Object.fromEntries(Object.entries(feeds).filter(([k]) => s.inputNames.includes(k)));
  const out = await s.run(used);
  await s.release();
  const result: Record<string, Float64Array> = {};
  for (const [k, t] of Object.entries(out)) result[k] = t.data as Float64Array;
  return { result, loops: g.nodes.filter((n) => n.op === "Loop").length };
}

for (const cfg of [llama, gpt2, gemma]) {
  for (const mode of ["lora", "full"] as const) {
    Deno.test(`recompute (float64, ${cfg.modelType}, ${mode}, 3 layers, bf16 folder): the gradients of every path agree`, async () => {
      const dir = await Deno.makeTempDir();
      await saveModelFolder(dir, cfg, initWeights(cfg, { seed: 4, std: 0.3, biasStd: 0.2, normStd: 0.2 }), {
        dtype: "bfloat16",
      });
      const plain = await grads(cfg, dir, mode, { segments: "inline", chunk: 0, recomputeDropout: false });
      const variants: Variant[] = [
        { segments: "save", chunk: 0, recomputeDropout: true },
        { segments: "recompute", chunk: 0, recomputeDropout: true },
        { segments: "recompute", chunk: 5, recomputeDropout: true },
        { segments: "inline", chunk: 3, recomputeDropout: false },
      ];
      for (const v of variants) {
        const got = await grads(cfg, dir, mode, v);
        const what = JSON.stringify(v);
        if (v.segments !== "inline") {
          assert.ok(got.loops >= cfg.numLayers, `${what}: one Loop per layer at least`);
        }
        for (const [k, want] of Object.entries(plain.result)) {
          const have = got.result[k];
          assert.equal(have.length, want.length, `${what} ${k}`);
          assert.ok(
            want.some((x) => x !== 0) || k === "loss",
            `${k}: all zeros, the comparison means nothing`,
          );
          for (let i = 0; i < want.length; i++) {
            assert.ok(
              Math.abs(have[i] - want[i]) <= 1e-12 * Math.max(1, Math.abs(want[i])),
              `${what} ${k}[${i}]: ${have[i]} vs ${want[i]}`,
            );
          }
        }
      }
      await Deno.remove(dir, { recursive: true });
    });
  }
}

Deno.test("fp16 attention: the backward pass reads the fp16 probabilities, never the float32 ones", () => {
  const cfg = tinyConfig("llama", { numLayers: 1, numHeads: 4, numKvHeads: 2 });
  const W = initWeights(cfg, { seed: 2 });
  const trainable = trainableParamsFor(cfg, {
    mode: "lora",
    lora: { r: 2, alpha: 4, targetModules: "all-linear" },
  });
  const g = new GraphBuilder("fp16");
  const params: Record<string, Value> = {};
  for (const p of trainable.params) params[p.name] = g.input(p.name, "float32", p.shape);
  const ids = g.input("ids", "int32", ["n", "t"]);
  const lp = policyLogProbs(g, cfg, trainable, params, frozenWeights(W), {
    inputIds: ids,
    attentionMask: ids,
    labels: ids,
  }, { dtype: "float16" });
  const before = g.nodes.length;
  gradients(op.cast(op.sumAll(lp.sums), "float32"), Object.values(params));
  const softmaxOut = g.nodes.filter((n) => n.op === "Softmax").map((n) => n.outputs[0]);
  assert.equal(softmaxOut.length, 1);
  assert.equal(softmaxOut[0].dtype, "float32");
  const readers = g.nodes.slice(before).filter((n) => n.inputs.includes(softmaxOut[0]));
  assert.deepEqual(readers.map((n) => n.op), [], "no backward node reads the float32 probabilities");
});
