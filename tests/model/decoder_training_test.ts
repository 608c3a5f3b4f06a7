/**
 * A tiny Llama trained a few steps with buildTrainingGraph + TrainingSession on a fixed batch: the summed
 * log-prob of the labels rises (LoRA and full fine-tuning), while the reference model (same initializers,
 * adapters off) built into the same graph stays put. The trained adapters, merged, reproduce the policy.
 */
import assert from "node:assert/strict";
import * as op from "../../lib/graph/ops.ts";
import { buildTrainingGraph, type TrainingSpec } from "../../lib/graph/training.ts";
import { TrainingSession } from "../../lib/runtime/training_session.ts";
import type { HostTensor } from "../../lib/runtime/session.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import {
  policyLogProbs,
  referenceLogProbs,
  trainableParamsFor,
  type TrainableSpec,
} from "../../lib/model/decoder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loraRuntime } from "../../lib/model/lora.ts";
import { mergeLora } from "../../lib/model/peft.ts";
import { frozenWeights, type WeightMap } from "../../lib/model/weights.ts";
import { assertClose, logProbRunner, paddedBatch, tokens } from "./_decoder_helpers.ts";

const cfg = tinyConfig("llama", { numLayers: 2, hiddenSize: 32, vocabSize: 48 });
const W = initWeights(cfg, { seed: 21, std: 0.1 });
const rows = [
  { prompt: tokens(4, 1, 48), response: tokens(5, 2, 48) },
  { prompt: tokens(2, 3, 48), response: tokens(6, 4, 48) },
  { prompt: tokens(6, 5, 48), response: tokens(3, 6, 48) },
];
const batch = paddedBatch(rows, "right");
const N = rows.length, T = batch.width, STEPS = 8;

const mean = (x: ArrayLike<number>) => Array.from(x).reduce((p, q) => p + q, 0) / x.length;

function stacked(data: Int32Array): HostTensor {
  const out = new Int32Array(STEPS * data.length);
  for (let s = 0; s < STEPS; s++) out.set(data, s * data.length);
  return { dtype: "int32", dims: [STEPS, N, T], data: out };
}

async function train(spec: TrainableSpec, lr: number) {
  const trainable = trainableParamsFor(cfg, spec);
  const frozen = frozenWeights(W);
  const training: TrainingSpec = {
    name: `train_${spec.mode}`,
    params: trainable.params,
    batch: ["input_ids", "attention_mask", "labels"].map((name) => ({ name, dtype: "int32", shape: [N, T] })),
    forward: (g, params, b) => {
      const inputs = { inputIds: b.input_ids, attentionMask: b.attention_mask, labels: b.labels };
      const policy = policyLogProbs(g, cfg, trainable, params, frozen, inputs);
      const reference = referenceLogProbs(g, cfg, frozen, inputs);
      return {
        loss: op.neg(op.meanAll(policy.sums)),
        metrics: { "logps/policy": op.meanAll(policy.sums), "logps/ref": op.meanAll(reference.sums) },
      };
    },
    optimizer: { kind: "adamw", weightDecay: 0.01 },
    maxGradNorm: 1,
  };
  const ts = await TrainingSession.create(buildTrainingGraph(training), trainable.init, {
    intraOpThreads: 1,
  });
  const r = await ts.run({
    input_ids: stacked(batch.inputIds),
    attention_mask: stacked(batch.attentionMask),
    labels: stacked(batch.labels),
  }, new Array(STEPS).fill(lr));
  const state = ts.snapshot();
  await ts.release();
  return { trainable, r, state };
}

Deno.test("training: LoRA (dropout on) raises the labels' log-prob; reference stays; merged adapters reproduce it", async () => {
  const lora = { r: 4, alpha: 8, dropout: 0.05, targetModules: ["q_proj", "v_proj", "up_proj", "down_proj"] };
  const { trainable, r, state } = await train({ mode: "lora", lora, seed: 3 }, 2e-2);
  const policy = [...r.metrics["logps/policy"]], ref = [...r.metrics["logps/ref"]];
  assert.ok(
    Math.abs(policy[0] - ref[0]) < 1e-4,
    `B = 0: policy ${policy[0]} = reference ${ref[0]} at step 1`,
  );
  assert.ok(policy.at(-1)! > policy[0] + 1, `log-prob ${policy[0]} → ${policy.at(-1)}`);
  assertClose(ref, new Array(STEPS).fill(ref[0]), 1e-6, "reference log-probs");
  assert.equal(trainable.params.length, 2 * 4 * cfg.numLayers);
  // the trained adapters merged into the base weights give the adapted model (dropout off)
  const tensors: WeightMap = new Map(
    trainable.params.map((p) => [p.name, { shape: p.shape, data: state[p.name] }]),
  );
  const adapted = await logProbRunner(cfg, W, {
    lora: (g) => {
      const src = frozenWeights(tensors, { prefix: "lora." });
      return loraRuntime(
        cfg,
        lora,
        Object.fromEntries(trainable.params.map((p) => [p.name, src.get(g, p.name, "float32")])),
      );
    },
  });
  const merged = await logProbRunner(cfg, mergeLora(cfg, W, lora, tensors));
  const a = await adapted.logProbs(batch, N), m = await merged.logProbs(batch, N);
  assertClose(m.sums, a.sums, 1e-4, "merged vs adapted");
  assert.ok(mean(a.sums) > policy[0] + 1);
  await adapted.release();
  await merged.release();
});

Deno.test("training: full fine-tuning raises the labels' log-prob; norms and biases are not decayed", async () => {
  const { trainable, r, state } = await train({ mode: "full", weights: W }, 3e-3);
  const policy = [...r.metrics["logps/policy"]], ref = [...r.metrics["logps/ref"]];
  assert.ok(Math.abs(policy[0] - ref[0]) < 1e-4);
  assert.ok(policy.at(-1)! > policy[0] + 1, `log-prob ${policy[0]} → ${policy.at(-1)}`);
  assertClose(ref, new Array(STEPS).fill(ref[0]), 1e-6, "reference log-probs");
  const decay = Object.fromEntries(trainable.params.map((p) => [p.name, p.decay]));
  assert.equal(decay["model.norm.weight"], false);
  assert.equal(decay["model.layers.0.input_layernorm.weight"], false);
  assert.equal(decay["model.layers.0.self_attn.q_proj.weight"], true);
  assert.equal(decay["model.embed_tokens.weight"], true);
  // the trained weights, as a model, score what training last saw (one more step's improvement aside)
  const trained: WeightMap = new Map([...W].map(([k, t]) => [k, { shape: t.shape, data: state[k] }]));
  const run = await logProbRunner(cfg, trained);
  const after = await run.logProbs(batch, N);
  assert.ok(mean(after.sums) > policy.at(-1)!);
  await run.release();
});
