/**
 * Sizes and token ids a config may give (issue 20, items 3 and 9): absurd sizes are refused at once,
 * naming the field and the bound, instead of making per-layer arrays exhaust memory; bad numbers (1e9,
 * 1.5, "2", -1, 2^53) name the field; `bos_token_id` / `eos_token_id` past the vocabulary are refused,
 * while real configs (old Llama's `pad_token_id: -1` included) still load.
 */
import assert from "node:assert/strict";
import { CONFIG_LIMITS, loadConfig, parseConfig, validateModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { configToJson } from "../../lib/model/config_json.ts";

const LLAMA = configToJson(tinyConfig("llama"));
// without layer_types, as older Gemma 2 configs are: its sliding flags are made per layer
const { layer_types: _types, ...GEMMA } = configToJson(tinyConfig("gemma"));
const GPT2 = configToJson(tinyConfig("gpt2"));

/** Runs `f`, expecting it to throw within `ms` with a message matching `re`. */
function failsFast(f: () => unknown, re: RegExp, ms = 1000): void {
  const t0 = performance.now();
  assert.throws(f, re);
  const took = performance.now() - t0;
  assert.ok(took < ms, `took ${took.toFixed(0)} ms`);
}

Deno.test("config limits: 1e9 layers is refused at once, naming the file, the field and the bound", () => {
  for (
    const [name, base, key] of [
      ["llama", LLAMA, "num_hidden_layers"],
      ["gemma", GEMMA, "num_hidden_layers"],
      [
        "gpt2",
        GPT2,
        "n_layer",
      ],
    ] as const
  ) {
    failsFast(
      () => parseConfig({ ...base, [key]: 1e9 }, "m/config.json"),
      new RegExp(`m/config\\.json: field "${key}" is 1000000000, more than the 65536 this toolkit accepts`),
    );
    assert.equal(parseConfig({ ...base, [key]: CONFIG_LIMITS.numLayers }).numLayers, 65536, name);
  }
});

Deno.test("config limits: numbers that are not a positive safe integer name the field", () => {
  const cases: [unknown, RegExp][] = [
    [1.5, /field "num_hidden_layers" must be a positive integer, got 1\.5/],
    ["2", /field "num_hidden_layers" must be a positive integer, got "2"/],
    [-1, /field "num_hidden_layers" must be a positive integer, got -1/],
    [0, /field "num_hidden_layers" must be a positive integer, got 0/],
    [2 ** 53, /field "num_hidden_layers" must be a positive integer, got 9007199254740992/],
    [1e300, /field "num_hidden_layers" must be a positive integer, got 1e\+300/],
    [true, /field "num_hidden_layers" must be a positive integer, got true/],
  ];
  for (const [v, re] of cases) failsFast(() => parseConfig({ ...LLAMA, num_hidden_layers: v }, "c.json"), re);
});

Deno.test("config limits: vocabulary, hidden, intermediate, heads, head_dim and positions are bounded", () => {
  const cases: [Record<string, unknown>, string, number][] = [
    [{ ...LLAMA, vocab_size: 2 ** 26 + 1 }, "vocab_size", 2 ** 26],
    [{ ...LLAMA, hidden_size: 2 ** 21, num_attention_heads: 4 }, "hidden_size", 2 ** 20],
    [{ ...LLAMA, intermediate_size: 2 ** 23 }, "intermediate_size", 2 ** 22],
    [{ ...LLAMA, num_attention_heads: 2 ** 15 }, "num_attention_heads", 2 ** 14],
    [{ ...LLAMA, head_dim: 2 ** 15 }, "head_dim", 2 ** 14],
    [{ ...LLAMA, max_position_embeddings: 2 ** 29 }, "max_position_embeddings", 2 ** 28],
    [{ ...GPT2, n_embd: 2 ** 21 }, "n_embd", 2 ** 20],
    [{ ...GPT2, n_positions: 1e12 }, "n_positions", 2 ** 28],
  ];
  for (const [json, key, max] of cases) {
    failsFast(() => parseConfig(json, "c.json"), new RegExp(`field "${key}" is \\d+, more than the ${max} `));
  }
  // every tensor's element count and byte size stays a safe integer at the bounds
  const L = CONFIG_LIMITS;
  for (
    const n of [L.vocabSize * L.hiddenSize, L.hiddenSize * L.intermediateSize, L.maxPositions * L.hiddenSize]
  ) {
    assert.ok(Number.isSafeInteger(n * 4));
  }
  assert.ok(Number.isSafeInteger(L.numHeads * L.headDim * L.hiddenSize * 4));
  // a hand-edited config is held to the same bounds
  assert.throws(
    () => validateModelConfig({ ...tinyConfig("llama"), numLayers: 1e9 }, "edited"),
    /edited: numLayers is 1000000000, more than the 65536 this toolkit accepts/,
  );
});

Deno.test("config limits: a config used without weights (loadConfig) fails fast too", async () => {
  const dir = await Deno.makeTempDir({ prefix: "config_limits_" });
  try {
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...GEMMA, num_hidden_layers: 1e9 }));
    const t0 = performance.now();
    await assert.rejects(
      loadConfig(dir),
      new RegExp(`${dir}/config\\.json: field "num_hidden_layers" is 1000000000, more than the 65536`),
    );
    assert.ok(performance.now() - t0 < 1000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// decapoda-research/llama-7b-hf's config.json (the first Llama conversion): pad_token_id -1
const OLD_LLAMA = {
  architectures: ["LLaMAForCausalLM"],
  bos_token_id: 0,
  eos_token_id: 1,
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 11008,
  initializer_range: 0.02,
  max_sequence_length: 2048,
  max_position_embeddings: 2048,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  pad_token_id: -1,
  rms_norm_eps: 1e-06,
  torch_dtype: "float16",
  transformers_version: "4.27.0.dev0",
  use_cache: true,
  vocab_size: 32000,
};

Deno.test("token ids: eos/bos past the vocabulary are refused, naming file, field, value and vocab_size", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ ...LLAMA, eos_token_id: 64 }, /eos_token_id 64 is outside the vocabulary \(vocab_size 64\)/],
    [{ ...LLAMA, eos_token_id: [2, 1000] }, /eos_token_id 1000 is outside the vocabulary \(vocab_size 64\)/],
    [{ ...LLAMA, bos_token_id: 99 }, /bos_token_id 99 is outside the vocabulary \(vocab_size 64\)/],
    [{ ...GPT2, eos_token_id: 50256 }, /eos_token_id 50256 is outside the vocabulary \(vocab_size 64\)/],
  ];
  for (const [json, re] of cases) {
    assert.throws(() => parseConfig(json, "m/config.json"), (e: Error) => {
      assert.match(e.message, /^m\/config\.json: /);
      assert.match(e.message, re);
      return true;
    });
  }
  assert.throws(() => tinyConfig("llama", { eosTokenId: 64 }), /eos_token_id 64 is outside the vocabulary/);
  assert.throws(() => configToJson({ ...tinyConfig("llama"), eosTokenId: 64 }), /eos_token_id 64/);

  // real configs: the last id, old Llama's pad -1, a pad past the vocabulary (left as it is)
  assert.deepEqual(parseConfig({ ...LLAMA, eos_token_id: [63, 2] }).eosTokenId, [63, 2]);
  const old = parseConfig(OLD_LLAMA);
  assert.equal(old.padTokenId, -1);
  assert.equal(old.eosTokenId, 1);
  assert.equal(parseConfig({ ...LLAMA, pad_token_id: 64 }).padTokenId, 64);
});
