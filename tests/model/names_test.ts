import assert from "node:assert/strict";
import { loadWeights, saveWeights } from "../../lib/model/weight_files.ts";
import { parseConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { linearModules } from "../../lib/model/lora.ts";
import {
  canonicalizeCheckpoint,
  checkCheckpoint,
  expectedTensors,
  gpt2GlobalNames,
  gpt2LayerNames,
  LLAMA_NAMES,
  llamaLayerNames,
  validateCheckpoint,
} from "../../lib/model/weights_names.ts";

function paramCount(specs: { shape: number[] }[]): number {
  return specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

function shapes(specs: { name: string; shape: number[] }[]): Map<string, { shape: number[] }> {
  return new Map(specs.map((s) => [s.name, { shape: s.shape }]));
}

Deno.test("layer name helpers give the HF names", () => {
  const l = llamaLayerNames(3);
  assert.equal(l.qProj.weight, "model.layers.3.self_attn.q_proj.weight");
  assert.equal(l.oProj.bias, "model.layers.3.self_attn.o_proj.bias");
  assert.equal(l.gateProj.weight, "model.layers.3.mlp.gate_proj.weight");
  assert.equal(l.downProj.weight, "model.layers.3.mlp.down_proj.weight");
  assert.equal(l.inputLayernorm, "model.layers.3.input_layernorm.weight");
  assert.equal(l.postAttentionLayernorm, "model.layers.3.post_attention_layernorm.weight");
  assert.deepEqual(LLAMA_NAMES, {
    embedTokens: "model.embed_tokens.weight",
    norm: "model.norm.weight",
    lmHead: "lm_head.weight",
  });

  const g = gpt2LayerNames(0);
  assert.equal(g.cAttn.weight, "h.0.attn.c_attn.weight");
  assert.equal(g.attnCProj.bias, "h.0.attn.c_proj.bias");
  assert.equal(g.mlpCProj.weight, "h.0.mlp.c_proj.weight");
  assert.equal(gpt2LayerNames(11, "transformer.").ln2.weight, "transformer.h.11.ln_2.weight");
  assert.deepEqual(gpt2GlobalNames("transformer."), {
    wte: "transformer.wte.weight",
    wpe: "transformer.wpe.weight",
    lnF: { weight: "transformer.ln_f.weight", bias: "transformer.ln_f.bias" },
    lmHead: "lm_head.weight",
  });
});

Deno.test("expectedTensors counts for tied and untied models", () => {
  // Llama: embed + 9 per layer + final norm (+ lm_head when untied).
  assert.equal(expectedTensors(tinyConfig("llama")).length, 1 + 2 * 9 + 1 + 1);
  assert.equal(expectedTensors(tinyConfig("llama", { tieWordEmbeddings: true })).length, 1 + 2 * 9 + 1);
  assert.ok(
    !expectedTensors(tinyConfig("llama", { tieWordEmbeddings: true })).some((t) =>
      t.name === "lm_head.weight"
    ),
  );
  // Qwen2 adds q/k/v biases; llama with attention_bias and mlp_bias adds 4 + 3.
  assert.equal(expectedTensors(tinyConfig("llama", { modelType: "qwen2" })).length, 21 + 2 * 3);
  const biased = tinyConfig("llama", {
    attentionBias: { q: true, k: true, v: true, o: true },
    mlpBias: true,
  });
  assert.equal(expectedTensors(biased).length, 21 + 2 * 7);
  // GPT-2: wte, wpe, 12 per block, ln_f weight+bias (+ lm_head when untied).
  assert.equal(expectedTensors(tinyConfig("gpt2")).length, 2 + 2 * 12 + 2);
  assert.equal(expectedTensors(tinyConfig("gpt2", { tieWordEmbeddings: false })).length, 2 + 2 * 12 + 2 + 1);
});

Deno.test("expectedTensors shapes: Linear [out, in] with GQA, Conv1D [in, out]", () => {
  const llama = shapes(expectedTensors(tinyConfig("llama")));
  assert.deepEqual(llama.get("model.embed_tokens.weight")!.shape, [64, 32]);
  assert.deepEqual(llama.get("model.layers.1.self_attn.q_proj.weight")!.shape, [32, 32]);
  assert.deepEqual(llama.get("model.layers.1.self_attn.k_proj.weight")!.shape, [16, 32]); // 2 kv heads * 8
  assert.deepEqual(llama.get("model.layers.1.self_attn.o_proj.weight")!.shape, [32, 32]);
  assert.deepEqual(llama.get("model.layers.0.mlp.gate_proj.weight")!.shape, [64, 32]);
  assert.deepEqual(llama.get("model.layers.0.mlp.down_proj.weight")!.shape, [32, 64]);
  assert.deepEqual(llama.get("lm_head.weight")!.shape, [64, 32]);
  const qwen = shapes(expectedTensors(tinyConfig("llama", { modelType: "qwen2" })));
  assert.deepEqual(qwen.get("model.layers.0.self_attn.v_proj.bias")!.shape, [16]);
  assert.ok(!qwen.has("model.layers.0.self_attn.o_proj.bias"));

  const gpt2 = shapes(expectedTensors(tinyConfig("gpt2")));
  assert.deepEqual(gpt2.get("wpe.weight")!.shape, [64, 32]);
  assert.deepEqual(gpt2.get("h.0.attn.c_attn.weight")!.shape, [32, 96]);
  assert.deepEqual(gpt2.get("h.0.attn.c_attn.bias")!.shape, [96]);
  assert.deepEqual(gpt2.get("h.1.mlp.c_fc.weight")!.shape, [32, 128]);
  assert.deepEqual(gpt2.get("h.1.mlp.c_proj.weight")!.shape, [128, 32]);
  assert.deepEqual(gpt2.get("ln_f.bias")!.shape, [32]);
});

Deno.test("parameter totals match the published model sizes", () => {
  const tinyllama = parseConfig({
    model_type: "llama",
    vocab_size: 32000,
    hidden_size: 2048,
    intermediate_size: 5632,
    num_hidden_layers: 22,
    num_attention_heads: 32,
    num_key_value_heads: 4,
    max_position_embeddings: 2048,
  });
  assert.equal(paramCount(expectedTensors(tinyllama)), 1_100_048_384);
  const qwen = parseConfig({
    model_type: "qwen2",
    vocab_size: 151936,
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    max_position_embeddings: 32768,
    tie_word_embeddings: true,
  });
  assert.equal(paramCount(expectedTensors(qwen)), 494_032_768);
  const gpt2 = parseConfig({
    model_type: "gpt2",
    vocab_size: 50257,
    n_embd: 768,
    n_layer: 12,
    n_head: 12,
    n_positions: 1024,
  });
  assert.equal(paramCount(expectedTensors(gpt2)), 124_439_808);
});

Deno.test("parameter totals of the newer families match their published sizes", () => {
  const sizes = (o: Record<string, unknown>) => ({
    max_position_embeddings: 8192,
    ...o,
  });
  // Gemma-2-2b: 2,614,341,888 (four norms per layer, tied)
  const gemma2 = parseConfig(sizes({
    model_type: "gemma2",
    vocab_size: 256000,
    hidden_size: 2304,
    intermediate_size: 9216,
    num_hidden_layers: 26,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    head_dim: 256,
  }));
  assert.equal(paramCount(expectedTensors(gemma2)), 2_614_341_888);
  // Gemma-3-1b: 999,885,952 (q/k norms too)
  const gemma3 = parseConfig(sizes({
    model_type: "gemma3_text",
    vocab_size: 262144,
    hidden_size: 1152,
    intermediate_size: 6912,
    num_hidden_layers: 26,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    head_dim: 256,
  }));
  assert.equal(paramCount(expectedTensors(gemma3)), 999_885_952);
  // Phi-3-mini: 3,821,079,552 (fused qkv and gate/up, untied)
  const phi3 = parseConfig(sizes({
    model_type: "phi3",
    vocab_size: 32064,
    hidden_size: 3072,
    intermediate_size: 8192,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
  }));
  assert.equal(paramCount(expectedTensors(phi3)), 3_821_079_552);
});

Deno.test("LoRA's linear modules carry each family's PEFT names", () => {
  const leaf = (
    cfg: Parameters<typeof linearModules>[0],
  ) => [...new Set(linearModules(cfg).map((m) => m.path.split(".").at(-1)))];
  assert.deepEqual(leaf(tinyConfig("phi3")), ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]);
  assert.deepEqual(leaf(tinyConfig("gemma")), [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
  ]);
  assert.deepEqual(leaf(tinyConfig("gpt2")), ["c_attn", "c_proj", "c_fc"]);
  const phi = linearModules(tinyConfig("phi3", { hiddenSize: 32, numHeads: 4, numKvHeads: 2 }))[0];
  assert.deepEqual(
    { path: phi.path, in: phi.inFeatures, out: phi.outFeatures, bias: phi.bias },
    { path: "model.layers.0.self_attn.qkv_proj", in: 32, out: (4 + 2 * 2) * 8, bias: false },
  );
  const qwen2 = linearModules(tinyConfig("llama", { modelType: "qwen2" }));
  assert.deepEqual(qwen2.filter((m) => m.bias).map((m) => m.path.split(".").at(-1)).slice(0, 3), [
    "q_proj",
    "k_proj",
    "v_proj",
  ]);
  assert.equal(linearModules(tinyConfig("gpt2"))[0].peftPath, "transformer.h.0.attn.c_attn");
  // norms are never adapted nor decayed: q_norm / k_norm / pre_feedforward_layernorm are 1-D
  assert.ok(
    !linearModules(tinyConfig("gemma", { modelType: "gemma3_text" })).some((m) => /norm/.test(m.path)),
  );
});

Deno.test("validateCheckpoint names missing tensors and shape mismatches", () => {
  const cfg = tinyConfig("llama");
  const good = shapes(expectedTensors(cfg));
  assert.deepEqual(validateCheckpoint(cfg, good), { missing: [], shapeMismatches: [], unexpected: [] });

  const bad = new Map(good);
  bad.delete("model.layers.1.mlp.up_proj.weight");
  bad.delete("lm_head.weight");
  bad.set("model.layers.0.self_attn.k_proj.weight", { shape: [32, 32] });
  bad.set("model.layers.0.self_attn.rotary_emb.inv_freq", { shape: [4] }); // old checkpoints: ignored
  bad.set("score.weight", { shape: [2, 32] });
  assert.throws(() => validateCheckpoint(cfg, bad, "ckpt/model.safetensors"), (e: Error) => {
    assert.match(
      e.message,
      /^ckpt\/model\.safetensors does not match the llama config \(2 missing, 1 shape mismatches\)/,
    );
    assert.match(e.message, /missing: model\.layers\.1\.mlp\.up_proj\.weight/);
    assert.match(e.message, /missing: lm_head\.weight/);
    assert.match(
      e.message,
      /shape mismatch: model\.layers\.0\.self_attn\.k_proj\.weight expected \[16, 32\] got \[32, 32\]/,
    );
    return true;
  });
  assert.deepEqual(checkCheckpoint(cfg, bad).unexpected, ["score.weight"]);
});

Deno.test("GPT-2: transformer. prefix accepted, mask buffers ignored, redundant tied lm_head allowed", () => {
  const cfg = tinyConfig("gpt2");
  const prefixed = new Map<string, { shape: number[] }>();
  for (const s of expectedTensors(cfg)) prefixed.set(`transformer.${s.name}`, { shape: s.shape });
  prefixed.set("transformer.h.0.attn.bias", { shape: [1, 1, 64, 64] });
  prefixed.set("transformer.h.0.attn.masked_bias", { shape: [] });
  prefixed.set("lm_head.weight", { shape: [64, 32] });
  assert.deepEqual(validateCheckpoint(cfg, prefixed), { missing: [], shapeMismatches: [], unexpected: [] });
  assert.ok(canonicalizeCheckpoint(cfg, prefixed).has("h.1.mlp.c_fc.weight"));

  const dup = new Map(prefixed);
  dup.set("wte.weight", { shape: [64, 32] });
  assert.throws(() => canonicalizeCheckpoint(cfg, dup), /"wte\.weight" appears both with and without/);
  // Llama names are never rewritten.
  const llama = tinyConfig("llama");
  const odd = new Map([["transformer.model.norm.weight", { shape: [32] }]]);
  assert.ok(checkCheckpoint(llama, odd).unexpected.includes("transformer.model.norm.weight"));
});

Deno.test("a saved random-init checkpoint validates after loading", async () => {
  const cfg = tinyConfig("llama", { modelType: "qwen2", tieWordEmbeddings: true });
  const tensors = new Map(
    expectedTensors(cfg).map((s) => {
      const n = s.shape.reduce((a, b) => a * b, 1);
      return [s.name, { dtype: "float32" as const, shape: s.shape, data: new Float32Array(n).fill(0.5) }];
    }),
  );
  const dir = await Deno.makeTempDir();
  await saveWeights(dir, tensors, { maxShardSize: 8 * 1024, dtype: "bfloat16" });
  const loaded = await loadWeights(dir);
  assert.equal(loaded.size, tensors.size);
  assert.deepEqual(validateCheckpoint(cfg, loaded).missing, []);
  await Deno.remove(dir, { recursive: true });
});
