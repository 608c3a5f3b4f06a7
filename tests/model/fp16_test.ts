/**
 * The decoder in float16 (mixed precision): the graph's dtypes (fp16 weights, activations and matmuls;
 * norms, rotary tables, attention softmax and log-probs in float32; float32 parameters, outputs and
 * gradients), fp16 initializers at half the bytes, and runs on the CPU: log-probs close to float32's, and
 * LoRA training with dynamic loss scaling. ONNX Runtime's CPU provider runs most fp16 operators in float32
 * behind casts it inserts (lib/runtime/precision.ts), so the CPU checks the wiring and the loss-scaling
 * mechanics; fp16 numerics proper are checked on CUDA by bench/gpu/fp16_check.ts.
 */
import { tensorBytes } from "../../lib/graph/serialize.ts";
import assert from "node:assert/strict";
import { gradients } from "../../lib/graph/autodiff.ts";
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { buildTrainingGraph } from "../../lib/graph/training.ts";
import type { ModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { policyLogProbs, referenceLogProbs, trainableParamsFor } from "../../lib/model/decoder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { f32ToF16Bits } from "../../lib/model/float_codec.ts";
import { type FloatDType, frozenWeights, type WeightMap } from "../../lib/model/weights.ts";
import type { HostTensor } from "../../lib/runtime/session.ts";
import { TrainingSession } from "../../lib/runtime/training_session.ts";
import { floatDtypeProblems, opDtypes } from "./_dtypes.ts";
import { logProbRunner, paddedBatch, tokens } from "./_decoder_helpers.ts";

type Mode = "frozen" | "lora" | "full";

/** Log-probs of a decoder (reference, LoRA policy with dropout, or full) and, for policies, the gradients. */
function logProbGraph(cfg: ModelConfig, W: WeightMap, mode: Mode, dtype: FloatDType) {
  const g = new GraphBuilder(`logps-${mode}-${dtype}`);
  const batch = {
    inputIds: g.input("input_ids", "int32", ["n", "t"]),
    attentionMask: g.input("attention_mask", "int32", ["n", "t"]),
    labels: g.input("labels", "int32", ["n", "t"]),
  };
  const frozen = frozenWeights(W);
  const params: Value[] = [];
  let lp;
  if (mode === "frozen") lp = referenceLogProbs(g, cfg, frozen, batch, { dtype });
  else {
    const t = trainableParamsFor(
      cfg,
      mode === "lora"
        ? { mode, lora: { r: 2, alpha: 4, dropout: 0.1, targetModules: "all-linear" } }
        : { mode, weights: W },
    );
    const byName: Record<string, Value> = {};
    for (const p of t.params) params.push(byName[p.name] = g.input(p.name, "float32", p.shape));
    lp = policyLogProbs(g, cfg, t, byName, frozen, batch, { dtype });
  }
  const outputs: Value[] = [lp.sums, lp.counts, lp.tokenLogps];
  g.output(lp.sums, "sums");
  g.output(lp.counts, "counts");
  g.output(lp.tokenLogps, "token_logps");
  if (params.length) {
    gradients(op.meanAll(lp.sums), params).forEach((d, i) => outputs.push(g.output(d, `grad.${i}`)));
  }
  return { g, outputs, params };
}

const families = [
  ["llama", tinyConfig("llama")],
  ["llama-tied", tinyConfig("llama", { tieWordEmbeddings: true })],
  ["qwen2", tinyConfig("llama", { modelType: "qwen2" })],
  ["gpt2", tinyConfig("gpt2")],
] as const;

Deno.test("fp16 decoder: consistent dtypes; matmuls fp16; norms, rotary, softmax and log-probs float32", () => {
  for (const [name, cfg] of families) {
    const W = initWeights(cfg, { seed: 1 });
    for (const mode of ["frozen", "lora", "full"] as const) {
      const what = `${name} ${mode}`;
      const fp32 = logProbGraph(cfg, W, mode, "float32");
      assert.deepEqual(floatDtypeProblems(fp32.g), [], `${what} float32`);
      const { g, outputs, params } = logProbGraph(cfg, W, mode, "float16");
      assert.deepEqual(floatDtypeProblems(g), [], `${what}: every node's float operands share a dtype`);
      const ops = opDtypes(g);
      for (const must of ["Gemm:float16", "MatMul:float16", "Softmax:float32", "LogSoftmax:float32"]) {
        assert.ok(ops.has(must), `${what}: ${must}`);
      }
      if (cfg.family === "llama") assert.ok(ops.has("ReduceMean:float32") && ops.has("Cos:float32"), what);
      else assert.ok(ops.has("LayerNormalization:float32"), what);
      const fp16Only = ["Gemm", "MatMul"];
      const fp32Only = [
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "LayerNormalization",
        "Cos",
        "Sin",
        "GatherElements",
        "ScatterElements",
        "ScatterND",
      ];
      for (const o of ops) {
        const [kind, dt] = o.split(":");
        if (fp16Only.includes(kind)) assert.equal(dt, "float16", `${what}: ${o} (matmuls in fp16)`);
        if (fp32Only.includes(kind)) assert.equal(dt, "float32", `${what}: ${o} (sensitive: float32)`);
      }
      // the interface: float32 parameters in, float32 log-probs and gradients out
      for (const p of params) assert.equal(p.dtype, "float32");
      for (const v of outputs) assert.ok(v.dtype === "float32", `${what}: output ${v}`);
      // frozen weights: matrices fp16, norm weights float32; every fp16 constant finite (the mask fits)
      for (const [init, { data }] of g.initializers) {
        if (data.dtype === "float16") {
          for (const h of data.data as Uint16Array) {
            assert.notEqual(h & 0x7c00, 0x7c00, `${what}: fp16 initializer ${init} holds inf/NaN`);
          }
        }
        if (!init.startsWith("frozen.")) continue;
        const norm = /(norm|ln_\w+|ln_f)\.(weight|bias)$/.test(init);
        assert.equal(data.dtype, norm ? "float32" : "float16", `${what}: ${init}`);
      }
    }
  }
});

Deno.test("fp16 decoder: frozen weights are fp16 initializers (rounded to nearest even), half the bytes", () => {
  for (const [name, cfg] of families) {
    const W = initWeights(cfg, { seed: 2 });
    const bytes = (dtype: FloatDType) => {
      const { g } = logProbGraph(cfg, W, "frozen", dtype);
      let n = 0;
      for (const { data } of g.initializers.values()) n += tensorBytes(data);
      return { g, n };
    };
    const f32 = bytes("float32"), f16 = bytes("float16");
    assert.ok(f16.n < 0.55 * f32.n, `${name}: ${f16.n} bytes in fp16 vs ${f32.n} in float32`);
    const emb = cfg.family === "llama" ? "model.embed_tokens.weight" : "wte.weight";
    const init = f16.g.initializers.get(`frozen.${emb}.float16`);
    assert.ok(init, `${name}: frozen.${emb}.float16`);
    assert.ok(init.data.data instanceof Uint16Array);
    assert.deepEqual(init.data.data, Uint16Array.from(W.get(emb)!.data, f32ToF16Bits));
  }
});

Deno.test("fp16 decoder on the CPU: log-probs within 1% of float32's; left and right padding agree", async () => {
  const rows = [
    { prompt: tokens(4, 1, 60), response: tokens(5, 2, 60) },
    { prompt: tokens(2, 3, 60), response: tokens(7, 4, 60) },
    { prompt: tokens(6, 5, 60), response: tokens(3, 6, 60) },
  ];
  for (const [name, cfg] of families) {
    const W = initWeights(cfg, { seed: 3, std: 0.1 });
    const r32 = await logProbRunner(cfg, W, { dtype: "float32" });
    const r16 = await logProbRunner(cfg, W, { dtype: "float16" });
    const sums: Record<string, Float32Array | Float64Array> = {};
    for (const side of ["left", "right"] as const) {
      const b = paddedBatch(rows, side);
      const [a, h] = [await r32.logProbs(b, rows.length), await r16.logProbs(b, rows.length)];
      assert.deepEqual([...h.counts], [...a.counts]);
      h.sums.forEach((x, i) => {
        const want = a.sums[i];
        assert.ok(Math.abs(x - want) <= 0.01 * Math.abs(want) + 0.02, `${name} ${side}: ${x} vs ${want}`);
      });
      sums[side] = h.sums;
    }
    sums.left.forEach((x, i) => assert.ok(Math.abs(x - sums.right[i]) < 0.02, `${name}: padding sides`));
    await Promise.all([r32.release(), r16.release()]);
  }
});

Deno.test("fp16 LoRA training on the CPU: overflowing steps are skipped and halve the loss scale; the loss falls", async () => {
  const cfg = tinyConfig("llama", { numLayers: 2, hiddenSize: 32, vocabSize: 48 });
  const W = initWeights(cfg, { seed: 21, std: 0.1 });
  const rows = [
    { prompt: tokens(4, 1, 48), response: tokens(5, 2, 48) },
    { prompt: tokens(2, 3, 48), response: tokens(6, 4, 48) },
  ];
  const batch = paddedBatch(rows, "right");
  const N = rows.length, T = batch.width, STEPS = 14, INTERVAL = 3;
  const stacked = (data: Int32Array): HostTensor => {
    const out = new Int32Array(STEPS * data.length);
    for (let s = 0; s < STEPS; s++) out.set(data, s * data.length);
    return { dtype: "int32", dims: [STEPS, N, T], data: out };
  };
  const trainable = trainableParamsFor(cfg, {
    mode: "lora",
    lora: { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj", "down_proj"] },
    seed: 3,
  });
  const frozen = frozenWeights(W);
  const built = buildTrainingGraph({
    name: "fp16-lora",
    params: trainable.params,
    batch: ["input_ids", "attention_mask", "labels"].map((name) => ({ name, dtype: "int32", shape: [N, T] })),
    forward: (g, params, b) => {
      const inputs = { inputIds: b.input_ids, attentionMask: b.attention_mask, labels: b.labels };
      const policy = policyLogProbs(g, cfg, trainable, params, frozen, inputs, { dtype: "float16" });
      const reference = referenceLogProbs(g, cfg, frozen, inputs, { dtype: "float16" });
      assert.equal(policy.sums.dtype, "float32");
      return {
        loss: op.neg(op.meanAll(policy.sums)),
        metrics: { "logps/policy": op.meanAll(policy.sums), "logps/ref": op.meanAll(reference.sums) },
      };
    },
    optimizer: { kind: "adamw" },
    maxGradNorm: 1,
    lossScaling: { growthInterval: INTERVAL },
  });
  assert.deepEqual(floatDtypeProblems(built.graph), []);
  // 2^20: the scaled gradients overflow fp16 (max 65504) until the scale has come down
  const ts = await TrainingSession.create(built, trainable.init, { intraOpThreads: 1, lossScale: 2 ** 20 });
  const r = await ts.run({
    input_ids: stacked(batch.inputIds),
    attention_mask: stacked(batch.attentionMask),
    labels: stacked(batch.labels),
  }, new Array(STEPS).fill(2e-2));
  const final = ts.state.get("train.loss_scale")![0];
  await ts.release();
  const scale = [...r.lossScale!], skipped = [...r.skipped], loss = [...r.loss];
  assert.equal(scale[0], 2 ** 20);
  assert.ok(skipped[0] === 1, `the first step overflows at 2^20: ${skipped}`);
  assert.ok(skipped.some((s) => s === 0), `some steps go through: ${skipped} at scales ${scale}`);
  assert.ok(scale.some((s, i) => i > 0 && s > scale[i - 1]), `the scale grows again: ${scale}`);
  // the scale follows the rule: halve on a skip, double after INTERVAL good steps in a row
  let good = 0;
  for (let i = 0; i < STEPS; i++) {
    let next = scale[i];
    if (skipped[i]) [next, good] = [scale[i] / 2, 0];
    else if (++good >= INTERVAL) [next, good] = [scale[i] * 2, 0];
    assert.equal(i + 1 < STEPS ? scale[i + 1] : final, next, `loss scale after step ${i + 1}`);
    // a skipped step leaves the parameters as they were: the next step sees the same loss
    if (skipped[i] && i + 1 < STEPS) assert.equal(loss[i + 1], loss[i], `step ${i + 1} was skipped`);
    if (!skipped[i]) assert.ok(Number.isFinite(r.gradNorm[i]), `finite gradient norm at step ${i + 1}`);
  }
  // B = 0 at first: policy = reference, exactly
  assert.equal(r.metrics["logps/policy"][0], r.metrics["logps/ref"][0]);
  assert.ok(loss.every(Number.isFinite), `losses ${loss}`);
  assert.ok(loss[STEPS - 1] < loss[0] - 1, `the loss falls: ${loss}`);
});
