/**
 * Float64 finite-difference checks of Σ_n c_n · log π(y_n|x_n) (padded batch, prompt masked) with respect
 * to an attention weight, a norm weight and the embedding, with and without LoRA (and its A and B).
 */
import assert from "node:assert/strict";
import type { Value } from "../../lib/graph/builder.ts";
import { gradients } from "../../lib/graph/autodiff.ts";
import * as op from "../../lib/graph/ops.ts";
import type { ModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { buildDecoder } from "../../lib/model/decoder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { initLoraTensors, type LoraConfig, loraRuntime } from "../../lib/model/lora.ts";
import { sequenceLogProbs } from "../../lib/model/logprobs.ts";
import { frozenWeights, overlayWeights } from "../../lib/model/weights.ts";
import type { HostTensor } from "../../lib/runtime/session.ts";
import { rng } from "../graph/_gradcheck.ts";
import { compile, floats, paddedBatch, tokens } from "./_decoder_helpers.ts";

type Case = { name: string; cfg: ModelConfig; params: string[]; lora?: LoraConfig };

const llama = tinyConfig("llama", {
  modelType: "qwen2",
  hiddenSize: 16,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 24,
  tieWordEmbeddings: true,
  numLayers: 2,
});
const gpt2 = tinyConfig("gpt2", { hiddenSize: 16, numHeads: 2, vocabSize: 24, numLayers: 2 });

const gemma = tinyConfig("gemma", {
  modelType: "gemma3_text",
  hiddenSize: 16,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 24,
  attnLogitSoftcap: 1.5,
  finalLogitSoftcap: 2,
  slidingWindow: 2,
  slidingLayers: [true, false],
});
const phi3 = tinyConfig("phi3", { hiddenSize: 16, numHeads: 2, numKvHeads: 1, vocabSize: 24, rotaryDim: 4 });

const CASES: Case[] = [
  {
    name: "gemma3_text (q/k norms, soft caps, window)",
    cfg: gemma,
    params: [
      "model.layers.0.self_attn.q_norm.weight",
      "model.layers.1.post_feedforward_layernorm.weight",
      "model.embed_tokens.weight",
      "model.layers.0.mlp.gate_proj.weight",
    ],
  },
  {
    name: "phi3 + LoRA on qkv_proj, gate_up_proj",
    cfg: phi3,
    lora: { r: 2, alpha: 4, targetModules: ["qkv_proj", "gate_up_proj"] },
    params: [
      "model.layers.0.self_attn.qkv_proj.weight",
      "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight",
      "base_model.model.model.layers.1.mlp.gate_up_proj.lora_B.weight",
    ],
  },
  {
    name: "qwen2 (GQA, bias, tied)",
    cfg: llama,
    params: [
      "model.layers.0.self_attn.k_proj.weight",
      "model.layers.1.input_layernorm.weight",
      "model.embed_tokens.weight",
      "model.layers.0.self_attn.q_proj.bias",
    ],
  },
  {
    name: "qwen2 + LoRA on q,v,down",
    cfg: llama,
    lora: { r: 2, alpha: 4, targetModules: ["q_proj", "v_proj", "down_proj"] },
    params: [
      "model.layers.1.self_attn.q_proj.weight",
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
      "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
      "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight",
    ],
  },
  {
    name: "gpt2",
    cfg: gpt2,
    params: ["h.0.attn.c_attn.weight", "h.1.ln_1.weight", "wte.weight", "wpe.weight"],
  },
  {
    name: "gpt2 + LoRA on c_attn, c_proj",
    cfg: gpt2,
    lora: { r: 2, alpha: 2, targetModules: ["c_attn", "c_proj"] },
    params: [
      "h.0.ln_2.bias",
      "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
      "base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight",
    ],
  },
];

for (const c of CASES) {
  Deno.test(`gradcheck (float64): ${c.name}`, async () => {
    const W = initWeights(c.cfg, { seed: 5, std: 0.3, biasStd: 0.2, normStd: 0.2 });
    if (c.lora) {
      // B non-zero so that A's gradient is too
      for (const [k, t] of initLoraTensors(c.cfg, c.lora, 1)) {
        const r = rng(k.length);
        W.set(k, k.includes("lora_B") ? { ...t, data: t.data.map(() => (r() * 2 - 1) * 0.3) } : t);
      }
    }
    const rows = [
      { prompt: tokens(3, 1, c.cfg.vocabSize), response: tokens(3, 2, c.cfg.vocabSize) },
      { prompt: tokens(2, 3, c.cfg.vocabSize), response: tokens(2, 4, c.cfg.vocabSize) },
    ];
    const batch = paddedBatch(rows, "right");
    const T = batch.width;
    const graph = await compile((g) => {
      const inputs: Record<string, Value> = {};
      for (const p of c.params) inputs[p] = g.input(p, "float64", W.get(p)!.shape);
      const src = overlayWeights(inputs, frozenWeights(W));
      const lora = c.lora
        ? loraRuntime(
          c.cfg,
          c.lora,
          Object.fromEntries(
            [...W.keys()].filter((k) => k.includes("lora_")).map((k) => [k, src.get(g, k, "float64")]),
          ),
        )
        : null;
      const ids = g.input("ids", "int32", [2, T]), mask = g.input("mask", "int32", [2, T]);
      const labels = g.input("labels", "int32", [2, T]);
      const { logits } = buildDecoder(g, c.cfg, { inputIds: ids, attentionMask: mask }, {
        dtype: "float64",
        weights: src,
        lora,
      });
      const { sums } = sequenceLogProbs(logits, labels);
      const loss = op.sumAll(op.mul(sums, g.constant([0.7, -1.3], [2], "float64")));
      const grads = gradients(loss, c.params.map((p) => inputs[p]));
      return { loss, ...Object.fromEntries(c.params.map((p, i) => [`grad:${p}`, grads[i]])) };
    });
    const values = Object.fromEntries(c.params.map((p) => [p, Float64Array.from(W.get(p)!.data)]));
    const feeds = (): Record<string, HostTensor> => ({
      ids: { dtype: "int32", dims: [2, T], data: batch.inputIds },
      mask: { dtype: "int32", dims: [2, T], data: batch.attentionMask },
      labels: { dtype: "int32", dims: [2, T], data: batch.labels },
      ...Object.fromEntries(
        c.params.map((p) => [p, { dtype: "float64", dims: W.get(p)!.shape, data: values[p] } as HostTensor]),
      ),
    });
    const out = await graph.run(feeds());
    const lossAt = async () => floats((await graph.run(feeds(), ["loss"])).loss)[0];
    const r = rng(9);
    const h = 1e-5;
    for (const p of c.params) {
      const analytic = floats(out[`grad:${p}`]);
      assert.ok(analytic.some((x) => x !== 0), `${p}: the gradient is all zeros`);
      // the largest entries (surely on the path) and a few random ones
      const byMag = [...analytic.keys()].sort((a, b) => Math.abs(analytic[b]) - Math.abs(analytic[a]));
      const picks = [
        ...byMag.slice(0, 3),
        ...Array.from({ length: 3 }, () => Math.floor(r() * analytic.length)),
      ];
      for (const e of picks) {
        const x = values[p][e];
        values[p][e] = x + h;
        const up = await lossAt();
        values[p][e] = x - h;
        const down = await lossAt();
        values[p][e] = x;
        const numeric = (up - down) / (2 * h);
        assert.ok(
          Math.abs(numeric - analytic[e]) <= 1e-7 + 1e-5 * Math.abs(numeric),
          `d loss / d ${p}[${e}]: analytic ${analytic[e]} vs numeric ${numeric}`,
        );
      }
    }
    await graph.release();
  });
}
