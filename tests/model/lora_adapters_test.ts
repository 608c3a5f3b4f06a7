import assert from "node:assert/strict";
import type { GraphBuilder } from "../../lib/graph/builder.ts";
import type { ModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import {
  initLoraTensors,
  type LoraConfig,
  loraModules,
  loraRuntime,
  loraScaling,
} from "../../lib/model/lora.ts";
import { mergeLora } from "../../lib/model/peft.ts";
import { frozenWeights, type WeightMap } from "../../lib/model/weights.ts";
import { rng } from "../graph/_gradcheck.ts";
import { assertClose, decoderRunner, floats, tokens } from "./_decoder_helpers.ts";

const CASES: [string, ModelConfig, LoraConfig][] = [
  ["llama", tinyConfig("llama"), {
    r: 4,
    alpha: 8,
    dropout: 0.1,
    targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
  }],
  ["phi3 (fused qkv_proj, gate_up_proj)", tinyConfig("phi3", { rotaryDim: 4 }), {
    r: 2,
    alpha: 4,
    dropout: 0.1,
    targetModules: ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
  }],
  ["gemma2", tinyConfig("gemma", { attnLogitSoftcap: 5, finalLogitSoftcap: 8 }), {
    r: 2,
    alpha: 4,
    dropout: 0.1,
    targetModules: "all-linear",
  }],
  ["gpt2 (Conv1D, fan_in_fan_out)", tinyConfig("gpt2"), {
    r: 2,
    alpha: 16,
    dropout: 0.1,
    targetModules: ["c_attn", "c_proj", "c_fc"],
  }],
];

/** A runner whose LoRA tensors are initializers (as a saved adapter would be served). */
function loraFrom(cfg: ModelConfig, lora: LoraConfig, tensors: WeightMap, train = false) {
  const src = frozenWeights(tensors, { prefix: "adapter." });
  return (g: GraphBuilder) =>
    loraRuntime(
      cfg,
      lora,
      Object.fromEntries([...tensors.keys()].map((k) => [k, src.get(g, k, "float32")])),
      { train },
    );
}

function nonZeroB(tensors: WeightMap, seed: number): WeightMap {
  const r = rng(seed);
  const out: WeightMap = new Map();
  for (const [k, t] of tensors) {
    out.set(k, k.includes("lora_B") ? { ...t, data: t.data.map(() => (r() * 2 - 1) * 0.2) } : t);
  }
  return out;
}

for (const [name, cfg, lora] of CASES) {
  const W = initWeights(cfg, { seed: 4, std: 0.2, biasStd: 0.1 });
  const ids = tokens(12, 9, cfg.vocabSize), mask = [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1];

  Deno.test(`lora: ${name}: with B = 0 the model is exactly the base model (dropout on too)`, async () => {
    const tensors = initLoraTensors(cfg, lora, 3);
    const base = await decoderRunner(cfg, W);
    const adapted = await decoderRunner(cfg, W, { lora: loraFrom(cfg, lora, tensors, true) });
    const a = floats((await base.logits(ids, mask, 2)).logits);
    const b = floats((await adapted.logits(ids, mask, 2)).logits);
    assert.deepEqual(b, a);
    await base.release();
    await adapted.release();
  });

  Deno.test(`lora: ${name}: merged weights give the logits of the unmerged adapters`, async () => {
    const tensors = nonZeroB(initLoraTensors(cfg, lora, 3), 5);
    const adapted = await decoderRunner(cfg, W, { lora: loraFrom(cfg, lora, tensors) });
    const merged = await decoderRunner(cfg, mergeLora(cfg, W, lora, tensors));
    const base = await decoderRunner(cfg, W);
    const a = floats((await adapted.logits(ids, mask, 2)).logits);
    const m = floats((await merged.logits(ids, mask, 2)).logits);
    const b = floats((await base.logits(ids, mask, 2)).logits);
    assertClose(m, a, 1e-5, "merged vs unmerged");
    assert.ok(a.some((x, i) => Math.abs(x - b[i]) > 1e-3), "the adapters change the model");
    // dropout is active in training mode only
    const dropped = await decoderRunner(cfg, W, { lora: loraFrom(cfg, lora, tensors, true) });
    const d = floats((await dropped.logits(ids, mask, 2)).logits);
    assert.ok(d.some((x, i) => Math.abs(x - a[i]) > 1e-6), "dropout changes the LoRA path in training");
    for (const r of [adapted, merged, base, dropped]) await r.release();
  });
}

Deno.test("lora: target modules match PEFT's rule (name or .name suffix); all-linear; unknown targets fail", () => {
  const g = tinyConfig("gpt2", { numLayers: 1 });
  assert.deepEqual(
    loraModules(g, { r: 2, alpha: 2, targetModules: ["c_proj"] }).map((m) => m.peftPath),
    ["transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj"],
  );
  assert.deepEqual(
    loraModules(g, { r: 2, alpha: 2, targetModules: ["attn.c_proj"] }).map((m) => m.names.a),
    ["base_model.model.transformer.h.0.attn.c_proj.lora_A.weight"],
  );
  const l = tinyConfig("llama", { numLayers: 2 });
  assert.equal(loraModules(l, { r: 2, alpha: 2, targetModules: "all-linear" }).length, 14);
  const q = loraModules(l, { r: 4, alpha: 2, targetModules: ["q_proj"] });
  assert.deepEqual(q[1], {
    path: "model.layers.1.self_attn.q_proj",
    peftPath: "model.layers.1.self_attn.q_proj",
    inFeatures: 32,
    outFeatures: 32,
    layout: "linear",
    bias: false,
    names: {
      a: "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight",
      b: "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
    },
  });
  assert.throws(() => loraModules(l, { r: 2, alpha: 2, targetModules: ["c_attn"] }), /c_attn.*not found/);
  assert.equal(loraScaling({ r: 16, alpha: 16, targetModules: ["q_proj"] }), 1);
  assert.equal(loraScaling({ r: 16, alpha: 16, targetModules: ["q_proj"], useRslora: true }), 4);
});

Deno.test("lora: A is kaiming-uniform (bound 1/√in) and seeded, B is zero", () => {
  const cfg = tinyConfig("llama");
  const lora = { r: 4, alpha: 8, targetModules: ["k_proj", "down_proj"] };
  const t1 = initLoraTensors(cfg, lora, 7),
    t2 = initLoraTensors(cfg, lora, 7),
    t3 = initLoraTensors(cfg, lora, 8);
  const a = t1.get("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight")!;
  assert.deepEqual(a.shape, [4, 64]);
  assert.ok(a.data.every((x) => Math.abs(x) <= 1 / 8));
  assert.ok(Math.max(...a.data.map(Math.abs)) > 0.1);
  const b = t1.get("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight")!;
  assert.deepEqual(b.shape, [16, 4]);
  assert.ok(b.data.every((x) => x === 0));
  assert.deepEqual(t1, t2);
  assert.notDeepEqual(t1, t3);
});
