import assert from "node:assert/strict";
import { configToJson } from "../../lib/model/config_json.ts";
import {
  type GemmaModelConfig,
  type Gpt2ModelConfig,
  layerWindow,
  type LlamaModelConfig,
  loadConfig,
  maxSupportedLength,
  parseConfig,
  type Phi3ModelConfig,
  ropeAttentionFactor,
  ropeInverseFrequencies,
  validateModelConfig,
} from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";

// Field sets as published on the Hugging Face Hub.

const TINYLLAMA_1_1B = `{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 5632,
  "max_position_embeddings": 2048,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 22,
  "num_key_value_heads": 4,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.35.0",
  "use_cache": true,
  "vocab_size": 32000
}`;

const QWEN2_5_0_5B = `{
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 21,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}`;

const MISTRAL_7B_V0_1 = `{
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
}`;

const GPT2 = `{
  "activation_function": "gelu_new",
  "architectures": ["GPT2LMHeadModel"],
  "attn_pdrop": 0.1,
  "bos_token_id": 50256,
  "embd_pdrop": 0.1,
  "eos_token_id": 50256,
  "initializer_range": 0.02,
  "layer_norm_epsilon": 1e-05,
  "model_type": "gpt2",
  "n_ctx": 1024,
  "n_embd": 768,
  "n_head": 12,
  "n_layer": 12,
  "n_positions": 1024,
  "resid_pdrop": 0.1,
  "summary_activation": null,
  "summary_first_dropout": 0.1,
  "summary_proj_to_labels": true,
  "summary_type": "cls_index",
  "summary_use_proj": true,
  "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
  "vocab_size": 50257
}`;

const LLAMA_3_2_1B = `{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
}`;

const SMOLLM_135M = `{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 0,
  "hidden_act": "silu",
  "hidden_size": 576,
  "initializer_range": 0.02,
  "intermediate_size": 1536,
  "max_position_embeddings": 2048,
  "model_type": "llama",
  "num_attention_heads": 9,
  "num_hidden_layers": 30,
  "num_key_value_heads": 3,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "float32",
  "transformers_version": "4.39.3",
  "use_cache": true,
  "vocab_size": 49152
}`;

function parse(text: string, file = "config.json") {
  return parseConfig(JSON.parse(text), file);
}

Deno.test("TinyLlama-1.1B config.json", () => {
  const cfg = parse(TINYLLAMA_1_1B) as LlamaModelConfig;
  assert.deepEqual(cfg, {
    family: "llama",
    modelType: "llama",
    vocabSize: 32000,
    hiddenSize: 2048,
    numLayers: 22,
    numHeads: 32,
    numKvHeads: 4,
    headDim: 64,
    intermediateSize: 5632,
    maxPositions: 2048,
    attentionBias: { q: false, k: false, v: false, o: false },
    mlpBias: false,
    tieWordEmbeddings: false,
    activation: "silu",
    bosTokenId: 1,
    eosTokenId: 2,
    padTokenId: null,
    torchDtype: "bfloat16",
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    slidingWindow: null,
    slidingLayers: null,
    qkNorm: false,
  });
  assert.equal(maxSupportedLength(cfg), 2048);
});

Deno.test("Qwen2.5-0.5B config.json: q/k/v biases without o, tied, window unused", () => {
  const cfg = parse(QWEN2_5_0_5B) as LlamaModelConfig;
  assert.equal(cfg.family, "llama");
  assert.equal(cfg.modelType, "qwen2");
  assert.deepEqual(cfg.attentionBias, { q: true, k: true, v: true, o: false });
  assert.equal(cfg.mlpBias, false);
  assert.equal(cfg.tieWordEmbeddings, true);
  assert.equal(cfg.headDim, 64);
  assert.equal(cfg.numKvHeads, 2);
  assert.equal(cfg.rmsNormEps, 1e-6);
  assert.equal(cfg.ropeTheta, 1_000_000);
  assert.equal(cfg.slidingWindow, null); // use_sliding_window: false
  assert.equal(cfg.eosTokenId, 151645);
  assert.equal(maxSupportedLength(cfg), 32768);

  const windowed = parseConfig({
    ...JSON.parse(QWEN2_5_0_5B),
    use_sliding_window: true,
    sliding_window: 4096,
  });
  assert.equal((windowed as LlamaModelConfig).slidingWindow, 4096); // layers 21..23 windowed
  const allFull = parseConfig({
    ...JSON.parse(QWEN2_5_0_5B),
    use_sliding_window: true,
    layer_types: Array(24).fill("full_attention"),
  });
  assert.equal((allFull as LlamaModelConfig).slidingWindow, null);
});

Deno.test("Mistral-7B-v0.1 config.json: a sliding window on every layer, applied (not a length cap)", () => {
  const cfg = parse(MISTRAL_7B_V0_1) as LlamaModelConfig;
  assert.equal(cfg.modelType, "mistral");
  assert.equal(cfg.numKvHeads, 8);
  assert.equal(cfg.headDim, 128);
  assert.equal(cfg.intermediateSize, 14336);
  assert.equal(cfg.slidingWindow, 4096);
  assert.equal(cfg.slidingLayers, null);
  assert.equal(layerWindow(cfg, 31), 4096);
  assert.equal(maxSupportedLength(cfg), 32768);
  assert.deepEqual(cfg.attentionBias, { q: false, k: false, v: false, o: false });
  // Mistral-Nemo style: explicit head_dim differing from hidden / heads; v0.2+ has no window.
  const nemo = parseConfig({
    ...JSON.parse(MISTRAL_7B_V0_1),
    hidden_size: 5120,
    head_dim: 128,
    sliding_window: null,
  });
  assert.equal(nemo.headDim, 128);
  assert.equal((nemo as LlamaModelConfig).slidingWindow, null);
  // head_dim: null means "derive it".
  assert.equal(parseConfig({ ...JSON.parse(MISTRAL_7B_V0_1), head_dim: null }).headDim, 128);
});

Deno.test("gpt2 config.json", () => {
  const cfg = parse(GPT2) as Gpt2ModelConfig;
  assert.deepEqual(cfg, {
    family: "gpt2",
    modelType: "gpt2",
    vocabSize: 50257,
    hiddenSize: 768,
    numLayers: 12,
    numHeads: 12,
    numKvHeads: 12,
    headDim: 64,
    intermediateSize: 3072,
    maxPositions: 1024,
    attentionBias: { q: true, k: true, v: true, o: true },
    mlpBias: true,
    tieWordEmbeddings: true,
    activation: "gelu_new",
    bosTokenId: 50256,
    eosTokenId: 50256,
    padTokenId: null,
    torchDtype: null,
    layerNormEps: 1e-5,
  });
  assert.equal(parseConfig({ ...JSON.parse(GPT2), n_inner: 1000 }).intermediateSize, 1000);
  assert.equal(
    parseConfig({ ...JSON.parse(GPT2), activation_function: "gelu_pytorch_tanh" }).activation,
    "gelu_new",
  );
  assert.throws(
    () => parseConfig({ ...JSON.parse(GPT2), activation_function: "relu" }),
    /config\.json: activation_function "relu" is not supported/,
  );
  assert.throws(
    () => parseConfig({ ...JSON.parse(GPT2), scale_attn_by_inverse_layer_idx: true }),
    /scale_attn_by_inverse_layer_idx=true is not supported/,
  );
});

Deno.test("SmolLM-135M (llama alias): tied, 9 heads / 3 kv heads, eos list support", () => {
  const cfg = parse(SMOLLM_135M);
  assert.equal(cfg.modelType, "llama");
  assert.equal(cfg.headDim, 64);
  assert.equal(cfg.numKvHeads, 3);
  assert.equal(cfg.tieWordEmbeddings, true);
  assert.equal(cfg.bosTokenId, 0);
  const multiEos = parseConfig({ ...JSON.parse(SMOLLM_135M), eos_token_id: [0, 2], pad_token_id: 2 });
  assert.deepEqual(multiEos.eosTokenId, [0, 2]);
  assert.equal(multiEos.padTokenId, 2);
});

Deno.test("unsupported model_type lists the supported ones; missing fields name field and file", async () => {
  assert.throws(
    () => parseConfig({ ...JSON.parse(TINYLLAMA_1_1B), model_type: "gemma" }, "models/g/config.json"),
    (e: Error) => {
      assert.equal(
        e.message,
        'models/g/config.json: unsupported model_type "gemma" (supported: "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt2")',
      );
      return true;
    },
  );
  assert.throws(
    () => parseConfig({ hidden_size: 8 }, "x/config.json"),
    /x\/config\.json: missing required field "model_type"/,
  );
  const noHidden = JSON.parse(TINYLLAMA_1_1B);
  delete noHidden.hidden_size;
  assert.throws(
    () => parseConfig(noHidden, "tl/config.json"),
    /tl\/config\.json: missing required field "hidden_size" \(model_type "llama"\)/,
  );
  const noLayers = JSON.parse(GPT2);
  delete noLayers.n_layer;
  assert.throws(
    () => parseConfig(noLayers, "g/config.json"),
    /g\/config\.json: missing required field "n_layer"/,
  );
  const noPositions = JSON.parse(GPT2);
  delete noPositions.n_positions;
  assert.equal(parseConfig(noPositions).maxPositions, 1024); // legacy n_ctx
  delete noPositions.n_ctx;
  assert.throws(() => parseConfig(noPositions), /missing required field "n_positions"/);

  assert.throws(
    () => parseConfig({ ...JSON.parse(TINYLLAMA_1_1B), num_key_value_heads: 5 }),
    /num_attention_heads 32 is not a multiple of num_key_value_heads 5/,
  );
  assert.throws(
    () => parseConfig({ ...JSON.parse(TINYLLAMA_1_1B), vocab_size: "32000" }),
    /field "vocab_size" must be a positive integer, got "32000"/,
  );
  assert.throws(
    () => parseConfig({ ...JSON.parse(TINYLLAMA_1_1B), hidden_act: "gelu" }),
    /hidden_act "gelu" is not supported/,
  );
  assert.throws(
    () => parseConfig({ ...JSON.parse(TINYLLAMA_1_1B), hidden_size: 2050 }),
    /hidden_size 2050 is not divisible by num_attention_heads 32/,
  );

  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/config.json`, QWEN2_5_0_5B);
  assert.equal((await loadConfig(dir)).modelType, "qwen2");
  assert.equal((await loadConfig(`${dir}/config.json`)).hiddenSize, 896);
  await Deno.writeTextFile(`${dir}/config.json`, "{ nope");
  await assert.rejects(loadConfig(dir), new RegExp(`${dir}/config\\.json: not valid JSON`));
  await assert.rejects(loadConfig(`${dir}/missing`), /missing\/config\.json: not found/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("rope scaling: unsupported types rejected, llama3 and v5 rope_parameters accepted", () => {
  const base = JSON.parse(TINYLLAMA_1_1B);
  for (const type of ["yarn", "dynamic"]) {
    assert.throws(
      () => parseConfig({ ...base, rope_scaling: { rope_type: type, factor: 2 } }, "r/config.json"),
      new RegExp(
        `r/config\\.json: rope_scaling type "${type}" is not supported \\(supported: null, "default", "linear", "llama3", "longrope"\\)`,
      ),
    );
  }
  assert.throws(
    () => parseConfig({ ...base, rope_scaling: { type: "dynamic", factor: 2 } }),
    /type "dynamic"/,
  );
  assert.equal(
    (parseConfig({ ...base, rope_scaling: { rope_type: "default" } }) as LlamaModelConfig).ropeTheta,
    10000,
  );
  assert.throws(
    () => parseConfig({ ...base, rope_scaling: { rope_type: "llama3", factor: 8 } }),
    /rope_scaling\.original_max_position_embeddings must be a positive number for rope type "llama3"/,
  );
  const cfg = parse(LLAMA_3_2_1B) as LlamaModelConfig;
  assert.equal(cfg.ropeTheta, 500000);
  assert.equal(cfg.ropeScaling!.rope_type, "llama3");
  assert.equal(cfg.tieWordEmbeddings, true);

  // transformers v5 moves theta and scaling into rope_parameters (and torch_dtype to dtype).
  const { rope_scaling, rope_theta: _t, torch_dtype: _d, ...rest } = JSON.parse(LLAMA_3_2_1B);
  const v5 = parseConfig({
    ...rest,
    dtype: "bfloat16",
    rope_parameters: { ...rope_scaling, rope_theta: 500000.0 },
  });
  assert.deepEqual(v5, cfg);
  const v5Default = parseConfig({
    ...base,
    rope_theta: undefined,
    rope_parameters: { rope_type: "default", rope_theta: 1e6 },
  });
  assert.equal((v5Default as LlamaModelConfig).ropeTheta, 1e6);
  assert.equal((v5Default as LlamaModelConfig).ropeScaling, null);
});

Deno.test("ropeInverseFrequencies: plain rope and llama3 scaling against a hand computation", () => {
  const plain = ropeInverseFrequencies({ headDim: 8, ropeTheta: 10000, ropeScaling: null });
  assert.equal(plain.length, 4);
  assert.equal(plain[0], 1);
  for (const [i, want] of [[1, 0.1], [2, 0.01], [3, 0.001]]) {
    assert.ok(Math.abs(plain[i] - want) < 1e-15 * want);
  }

  const linear = ropeInverseFrequencies({
    headDim: 8,
    ropeTheta: 10000,
    ropeScaling: { type: "linear", factor: 4 },
  });
  assert.deepEqual([...linear], [...plain].map((f) => f / 4));

  // Llama 3.2 1B: head_dim 64, theta 5e5, factor 32, low 1, high 4, original context 8192. Wavelength
  // 2*pi/f is below 2048 for i <= 14 (kept), above 8192 for i >= 18 (divided by 32), and in between the
  // result interpolates with smooth = (8192 / wavelen - 1) / 3. Values computed by hand (Python floats).
  const cfg = parse(LLAMA_3_2_1B) as LlamaModelConfig;
  const inv = ropeInverseFrequencies(cfg);
  assert.equal(inv.length, 32);
  const expected: [number, number][] = [
    [0, 1.0],
    [14, 0.0032114459947525913],
    [15, 0.001290547928209264], // smooth 0.5928...
    [16, 0.00042955679655936815], // smooth 0.2812...
    [17, 9.70828780262767e-05], // smooth 0.0745...
    [18, 1.9461638184831125e-05], // 0.000622772421914596 / 32
    [31, 9.418306725434909e-08],
  ];
  for (const [i, want] of expected) {
    assert.ok(Math.abs(inv[i] - want) <= 1e-12 * want, `inv[${i}] = ${inv[i]}, want ${want}`);
  }
  // Monotone decreasing even across the interpolated band.
  for (let i = 1; i < inv.length; i++) assert.ok(inv[i] < inv[i - 1]);
});

Deno.test("configToJson round-trips through parseConfig for every family", () => {
  for (const text of [TINYLLAMA_1_1B, QWEN2_5_0_5B, MISTRAL_7B_V0_1, GPT2, LLAMA_3_2_1B, SMOLLM_135M]) {
    const cfg = parse(text);
    const json = configToJson(cfg);
    assert.deepEqual(parseConfig(JSON.parse(JSON.stringify(json))), cfg, cfg.modelType);
    assert.equal(json.model_type, cfg.modelType);
  }
  const gpt2 = configToJson(parse(GPT2));
  assert.deepEqual(gpt2.architectures, ["GPT2LMHeadModel"]);
  assert.equal(gpt2.n_embd, 768);
  assert.equal(gpt2.n_ctx, 1024);
  const qwen = configToJson(parse(QWEN2_5_0_5B));
  assert.deepEqual(qwen.architectures, ["Qwen2ForCausalLM"]);
  assert.equal(qwen.use_sliding_window, false);
  assert.equal("head_dim" in qwen, false);
  const llama = configToJson(parse(LLAMA_3_2_1B));
  assert.equal(llama.head_dim, 64);
  assert.deepEqual(llama.rope_scaling, JSON.parse(LLAMA_3_2_1B).rope_scaling);
  const windowed = parseConfig({
    ...JSON.parse(QWEN2_5_0_5B),
    use_sliding_window: true,
    sliding_window: 4096,
  });
  assert.deepEqual(parseConfig(configToJson(windowed)), windowed);
});

Deno.test("tinyConfig: small valid configs, dependent sizes follow overrides, invalid overrides rejected", () => {
  const llama = tinyConfig("llama");
  assert.equal(llama.hiddenSize, 32);
  assert.equal(llama.numLayers, 2);
  assert.equal(llama.numHeads, 4);
  assert.equal(llama.numKvHeads, 2);
  assert.equal(llama.headDim, 8);
  assert.equal(llama.vocabSize, 64);
  assert.deepEqual(parseConfig(configToJson(llama)), llama);

  const gpt2 = tinyConfig("gpt2");
  assert.equal(gpt2.numKvHeads, 4);
  assert.equal(gpt2.intermediateSize, 128);
  assert.equal(gpt2.tieWordEmbeddings, true);
  assert.deepEqual(parseConfig(configToJson(gpt2)), gpt2);

  const qwen = tinyConfig("llama", { modelType: "qwen2", tieWordEmbeddings: true });
  assert.deepEqual(qwen.attentionBias, { q: true, k: true, v: true, o: false });
  assert.deepEqual(parseConfig(configToJson(qwen)), qwen);

  const wide = tinyConfig("llama", { hiddenSize: 64, numHeads: 8 });
  assert.equal(wide.headDim, 8);
  assert.equal(wide.numKvHeads, 4);
  assert.equal(wide.intermediateSize, 128);

  assert.throws(() => tinyConfig("llama", { numKvHeads: 3 }), /not a multiple of num_key_value_heads 3/);
  assert.throws(() => tinyConfig("gpt2", { numKvHeads: 2 }), /GPT-2 has no grouped-query attention/);
  assert.throws(
    () =>
      tinyConfig("llama", { modelType: "mistral", attentionBias: { q: true, k: true, v: true, o: true } }),
    /attentionBias .* is not expressible/,
  );
  assert.throws(() => validateModelConfig({ ...llama, headDim: 7 }), /head_dim 7 must be even/);
});

// The newer families, field sets as published on the Hub (Phi-4-mini's 48 longrope factors shortened to a
// pattern of the same length).

const QWEN3_0_6B = {
  architectures: ["Qwen3ForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: "silu",
  hidden_size: 1024,
  initializer_range: 0.02,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: "qwen3",
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-06,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.51.0",
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const GEMMA_2_2B = {
  architectures: ["Gemma2ForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  attn_logit_softcapping: 50.0,
  bos_token_id: 2,
  cache_implementation: "hybrid",
  eos_token_id: [1, 107],
  final_logit_softcapping: 30.0,
  head_dim: 256,
  hidden_act: "gelu_pytorch_tanh",
  hidden_activation: "gelu_pytorch_tanh",
  hidden_size: 2304,
  initializer_range: 0.02,
  intermediate_size: 9216,
  max_position_embeddings: 8192,
  model_type: "gemma2",
  num_attention_heads: 8,
  num_hidden_layers: 26,
  num_key_value_heads: 4,
  pad_token_id: 0,
  query_pre_attn_scalar: 256,
  rms_norm_eps: 1e-06,
  rope_theta: 10000.0,
  sliding_window: 4096,
  torch_dtype: "float32",
  transformers_version: "4.42.4",
  use_cache: true,
  vocab_size: 256000,
};

const GEMMA_3_1B = {
  architectures: ["Gemma3ForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  attn_logit_softcapping: null,
  bos_token_id: 2,
  cache_implementation: "hybrid",
  eos_token_id: [1, 106],
  final_logit_softcapping: null,
  head_dim: 256,
  hidden_activation: "gelu_pytorch_tanh",
  hidden_size: 1152,
  initializer_range: 0.02,
  intermediate_size: 6912,
  max_position_embeddings: 32768,
  model_type: "gemma3_text",
  num_attention_heads: 4,
  num_hidden_layers: 26,
  num_key_value_heads: 1,
  pad_token_id: 0,
  query_pre_attn_scalar: 256,
  rms_norm_eps: 1e-06,
  rope_local_base_freq: 10000,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: 512,
  sliding_window_pattern: 6,
  torch_dtype: "bfloat16",
  transformers_version: "4.50.0.dev0",
  use_cache: true,
  vocab_size: 262144,
};

const PHI_3_MINI_4K = {
  architectures: ["Phi3ForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 1,
  embd_pdrop: 0.0,
  eos_token_id: 32000,
  hidden_act: "silu",
  hidden_size: 3072,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 4096,
  model_type: "phi3",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  original_max_position_embeddings: 4096,
  pad_token_id: 32000,
  resid_pdrop: 0.0,
  rms_norm_eps: 1e-05,
  rope_scaling: null,
  rope_theta: 10000.0,
  sliding_window: 2047,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  transformers_version: "4.40.2",
  use_cache: true,
  vocab_size: 32064,
};

const PHI_4_MINI = {
  architectures: ["Phi3ForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 199999,
  embd_pdrop: 0.0,
  eos_token_id: 199999,
  full_attn_mod: 1,
  hidden_act: "silu",
  hidden_size: 3072,
  initializer_range: 0.02,
  intermediate_size: 8192,
  interpolate_factor: 1,
  lm_head_bias: false,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "phi3",
  num_attention_heads: 24,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  original_max_position_embeddings: 4096,
  pad_token_id: 199999,
  partial_rotary_factor: 0.75,
  resid_pdrop: 0.0,
  rms_norm_eps: 1e-05,
  rope_scaling: {
    long_factor: Array.from({ length: 48 }, (_, i) => 1 + i),
    short_factor: Array.from({ length: 48 }, (_, i) => 1 + i / 47),
    type: "longrope",
  },
  rope_theta: 10000.0,
  sliding_window: 262144,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.45.0",
  use_cache: true,
  vocab_size: 200064,
};

Deno.test("Qwen3-0.6B config.json: llama family with q/k norms, head_dim 128 ≠ hidden/heads, tied", () => {
  const cfg = parseConfig(QWEN3_0_6B) as LlamaModelConfig;
  assert.equal(cfg.family, "llama");
  assert.equal(cfg.qkNorm, true);
  assert.equal(cfg.headDim, 128);
  assert.deepEqual(cfg.attentionBias, { q: false, k: false, v: false, o: false });
  assert.equal(cfg.slidingWindow, null);
  assert.equal(cfg.tieWordEmbeddings, true);
  const windowed = parseConfig({
    ...QWEN3_0_6B,
    use_sliding_window: true,
    sliding_window: 4096,
    max_window_layers: 20,
  });
  assert.equal(layerWindow(windowed, 19), null);
  assert.equal(layerWindow(windowed, 20), 4096);
  assert.deepEqual(parseConfig(configToJson(windowed)), windowed);
});

Deno.test("Gemma-2-2b config.json: soft caps, every other layer sliding from the first, tied", () => {
  const cfg = parseConfig(GEMMA_2_2B) as GemmaModelConfig;
  assert.equal(cfg.family, "gemma");
  assert.equal(cfg.attnLogitSoftcap, 50);
  assert.equal(cfg.finalLogitSoftcap, 30);
  assert.equal(cfg.queryPreAttnScalar, 256);
  assert.equal(cfg.headDim, 256);
  assert.equal(cfg.tieWordEmbeddings, true);
  assert.equal(cfg.activation, "gelu_new");
  assert.deepEqual([0, 1, 2, 25].map((i) => layerWindow(cfg, i)), [4096, null, 4096, null]);
  assert.equal(cfg.ropeLocalTheta, cfg.ropeTheta);
  assert.deepEqual(cfg.eosTokenId, [1, 107]);
  // transformers ≥ 4.53 writes layer_types, which win over the rule
  const types = Array.from({ length: 26 }, (_, i) => (i < 2 ? "full_attention" : "sliding_attention"));
  assert.deepEqual(
    (parseConfig({ ...GEMMA_2_2B, layer_types: types }) as GemmaModelConfig).slidingLayers,
    types.map((t) => t !== "full_attention"),
  );
  assert.throws(
    () => parseConfig({ ...GEMMA_2_2B, layer_types: ["full_attention"] }),
    /layer_types has 1 entries for 26 layers/,
  );
  assert.throws(
    () => parseConfig({ ...GEMMA_2_2B, hidden_activation: "relu" }),
    /hidden_activation "relu" is not supported/,
  );
});

Deno.test("Gemma-3-1b config.json: five sliding layers of six with the local rope base, no caps, q/k norms", () => {
  const cfg = parseConfig(GEMMA_3_1B) as GemmaModelConfig;
  assert.equal(cfg.modelType, "gemma3_text");
  assert.equal(cfg.qkNorm, true);
  assert.equal(cfg.attnLogitSoftcap, null);
  assert.equal(cfg.finalLogitSoftcap, null);
  assert.equal(cfg.ropeTheta, 1e6);
  assert.equal(cfg.ropeLocalTheta, 10000);
  assert.deepEqual([0, 4, 5, 11, 25].map((i) => layerWindow(cfg, i)), [512, 512, null, null, 512]);
  // transformers v5: rope_parameters keyed by layer type
  const v5 = parseConfig({
    ...GEMMA_3_1B,
    rope_theta: undefined,
    rope_local_base_freq: undefined,
    rope_parameters: {
      full_attention: { rope_type: "linear", factor: 8, rope_theta: 1e6 },
      sliding_attention: { rope_type: "default", rope_theta: 10000 },
    },
  }) as GemmaModelConfig;
  assert.equal(v5.ropeTheta, 1e6);
  assert.equal(v5.ropeLocalTheta, 10000);
  assert.deepEqual(v5.ropeScaling, { rope_type: "linear", factor: 8 });
  assert.throws(
    () => parseConfig({ ...GEMMA_3_1B, model_type: "gemma3" }),
    /"gemma3" is the multimodal model: extract its text model \(model_type "gemma3_text"\)/,
  );
});

Deno.test("Phi-3-mini-4k and Phi-4-mini config.json: windows, partial rotary, longrope's attention factor", () => {
  const mini = parseConfig(PHI_3_MINI_4K) as Phi3ModelConfig;
  assert.equal(mini.family, "phi3");
  assert.equal(mini.rotaryDim, 96);
  assert.equal(layerWindow(mini, 0), 2047);
  assert.equal(ropeAttentionFactor(mini), 1);
  const phi4 = parseConfig(PHI_4_MINI) as Phi3ModelConfig;
  assert.equal(phi4.headDim, 128);
  assert.equal(phi4.rotaryDim, 96);
  assert.equal(phi4.tieWordEmbeddings, true);
  assert.equal(phi4.ropeScaling!.original_max_position_embeddings, 4096);
  // √(1 + ln(131072 / 4096) / ln 4096), by hand: √(1 + 3.4657359 / 8.3177662) = 1.1902380714
  assert.ok(Math.abs(ropeAttentionFactor(phi4) - 1.1902380714238083) < 1e-12);
  const inv = ropeInverseFrequencies(phi4);
  assert.equal(inv.length, 48);
  assert.ok(Math.abs(inv[47] - 1 / 10000 ** (94 / 96) / 2) < 1e-18); // short_factor[47] = 2
  assert.equal(maxSupportedLength(phi4), 4096); // past it transformers switches to the long factors
  assert.throws(
    () => parseConfig({ ...PHI_4_MINI, rope_scaling: { ...PHI_4_MINI.rope_scaling, short_factor: [1, 2] } }),
    /rope_scaling.short_factor has 2 entries, the rotary dimension 96 needs 48/,
  );
  assert.throws(
    () => parseConfig({ ...PHI_3_MINI_4K, partial_rotary_factor: 0.1 }),
    /an even number is needed/,
  );
});

Deno.test("configToJson round-trips the new families (transformers' field names)", () => {
  for (const json of [QWEN3_0_6B, GEMMA_2_2B, GEMMA_3_1B, PHI_3_MINI_4K, PHI_4_MINI]) {
    const cfg = parseConfig(json);
    const out = configToJson(cfg);
    assert.deepEqual(parseConfig(JSON.parse(JSON.stringify(out))), cfg, cfg.modelType);
    assert.deepEqual(out.architectures, json.architectures);
  }
  const phi4 = configToJson(parseConfig(PHI_4_MINI));
  assert.equal(phi4.partial_rotary_factor, 0.75);
  assert.equal(phi4.original_max_position_embeddings, 4096);
  assert.deepEqual(Object.keys(phi4.rope_scaling as object).sort(), ["long_factor", "short_factor", "type"]);
  const gemma3 = configToJson(parseConfig(GEMMA_3_1B));
  assert.equal((gemma3.layer_types as string[])[5], "full_attention");
  assert.equal(gemma3.rope_local_base_freq, 10000);
  for (const family of ["gemma", "phi3"] as const) {
    const tiny = tinyConfig(family);
    assert.deepEqual(parseConfig(configToJson(tiny)), tiny, family);
  }
  const qwen3 = tinyConfig("llama", { modelType: "qwen3" });
  assert.deepEqual(parseConfig(configToJson(qwen3)), qwen3);
});
