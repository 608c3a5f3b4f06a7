import assert from "node:assert/strict";
import { join } from "node:path";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initLoraTensors, type LoraConfig } from "../../lib/model/lora.ts";
import { adapterConfigJson, loadAdapter, parseAdapterConfig, saveAdapter } from "../../lib/model/peft.ts";
import { readSafetensorsHeader, writeSafetensors } from "../../lib/model/safetensors.ts";
import { rng } from "../graph/_gradcheck.ts";

const llama = tinyConfig("llama", { numLayers: 2 });
const gpt2 = tinyConfig("gpt2", { numLayers: 1 });

function randomized(cfg: typeof llama | typeof gpt2, lora: LoraConfig) {
  const r = rng(2);
  const t = initLoraTensors(cfg, lora, 1);
  for (const v of t.values()) v.data.forEach((_, i) => (v.data[i] = r() - 0.5));
  return t;
}

Deno.test("peft: save then load round-trips an adapter with PEFT's tensor names and adapter_config.json", async () => {
  const dir = await Deno.makeTempDir();
  const lora: LoraConfig = { r: 4, alpha: 16, dropout: 0.05, targetModules: ["q_proj", "v_proj"] };
  const tensors = randomized(llama, lora);
  await saveAdapter(dir, llama, lora, tensors, { baseModelNameOrPath: "HuggingFaceH4/mistral-7b-sft-beta" });
  const header = await readSafetensorsHeader(join(dir, "adapter_model.safetensors"));
  assert.deepEqual(
    header.entries.map((e) => `${e.name} ${e.dtype} [${e.shape}]`).sort(),
    [
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight F32 [4,32]",
      "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight F32 [32,4]",
      "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight F32 [4,32]",
      "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight F32 [16,4]",
      "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight F32 [4,32]",
      "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight F32 [32,4]",
      "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight F32 [4,32]",
      "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight F32 [16,4]",
    ],
  );
  assert.equal(header.metadata.format, "pt");
  const json = JSON.parse(await Deno.readTextFile(join(dir, "adapter_config.json")));
  assert.equal(json.peft_type, "LORA");
  assert.equal(json.task_type, "CAUSAL_LM");
  assert.equal(json.r, 4);
  assert.equal(json.lora_alpha, 16);
  assert.equal(json.lora_dropout, 0.05);
  assert.deepEqual(json.target_modules, ["q_proj", "v_proj"]);
  assert.equal(json.bias, "none");
  assert.equal(json.fan_in_fan_out, false);
  assert.equal(json.base_model_name_or_path, "HuggingFaceH4/mistral-7b-sft-beta");
  assert.equal(json.use_rslora, false);
  const loaded = await loadAdapter(dir, llama);
  assert.deepEqual(loaded.lora, {
    r: 4,
    alpha: 16,
    dropout: 0.05,
    targetModules: ["q_proj", "v_proj"],
    useRslora: false,
  });
  assert.equal(loaded.baseModelNameOrPath, "HuggingFaceH4/mistral-7b-sft-beta");
  assert.deepEqual([...loaded.tensors.keys()].sort(), [...tensors.keys()].sort());
  for (const [k, t] of tensors) assert.deepEqual(loaded.tensors.get(k)!.data, t.data, k);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("peft: GPT-2 adapters are saved under transformer.* with fan_in_fan_out", async () => {
  const dir = await Deno.makeTempDir();
  const lora: LoraConfig = { r: 2, alpha: 4, targetModules: ["c_attn", "c_proj"] };
  await saveAdapter(dir, gpt2, lora, randomized(gpt2, lora));
  const json = JSON.parse(await Deno.readTextFile(join(dir, "adapter_config.json")));
  assert.equal(json.fan_in_fan_out, true);
  const names = (await readSafetensorsHeader(join(dir, "adapter_model.safetensors"))).entries.map((e) =>
    e.name
  ).sort();
  assert.deepEqual(names, [
    "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
    "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
    "base_model.model.transformer.h.0.attn.c_proj.lora_A.weight",
    "base_model.model.transformer.h.0.attn.c_proj.lora_B.weight",
    "base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight",
    "base_model.model.transformer.h.0.mlp.c_proj.lora_B.weight",
  ]);
  const loaded = await loadAdapter(dir, gpt2);
  assert.deepEqual(loaded.tensors.get(names[1])!.shape, [96, 2]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("peft: all-linear saves the resolved module names; regex targets resolve against the model", () => {
  const json = adapterConfigJson(llama, { r: 2, alpha: 2, targetModules: "all-linear" });
  assert.deepEqual(json.target_modules, [
    "down_proj",
    "gate_proj",
    "k_proj",
    "o_proj",
    "q_proj",
    "up_proj",
    "v_proj",
  ]);
  const parsed = parseAdapterConfig({
    peft_type: "LORA",
    r: 8,
    lora_alpha: 16,
    target_modules: ".*layers\\.1\\.self_attn\\.(q|k)_proj",
  }, llama);
  assert.deepEqual(parsed.lora.targetModules, [
    "model.layers.1.self_attn.q_proj",
    "model.layers.1.self_attn.k_proj",
  ]);
});

Deno.test("peft: unsupported adapter features are rejected with the field named", () => {
  const base = { peft_type: "LORA", r: 8, lora_alpha: 16, target_modules: ["q_proj"] };
  assert.throws(() => parseAdapterConfig({ ...base, use_dora: true }), /use_dora/);
  assert.throws(() => parseAdapterConfig({ ...base, bias: "all" }), /bias/);
  assert.throws(() => parseAdapterConfig({ ...base, peft_type: "IA3" }), /IA3/);
  assert.throws(() => parseAdapterConfig({ ...base, rank_pattern: { q_proj: 4 } }), /rank_pattern/);
  assert.throws(() => parseAdapterConfig({ ...base, fan_in_fan_out: false }, gpt2), /fan_in_fan_out/);
});

Deno.test("peft: loading checks tensors against the model and accepts adapter-named keys", async () => {
  const dir = await Deno.makeTempDir();
  const lora: LoraConfig = { r: 2, alpha: 2, targetModules: ["o_proj"] };
  const t = randomized(llama, lora);
  await Deno.writeTextFile(join(dir, "adapter_config.json"), JSON.stringify(adapterConfigJson(llama, lora)));
  // PEFT files carry no adapter name; some tools write `.default.`: both load
  await writeSafetensors(
    join(dir, "adapter_model.safetensors"),
    [...t].map(([k, v]) => [k.replace(".weight", ".default.weight"), v] as const),
  );
  const loaded = await loadAdapter(dir, llama);
  assert.deepEqual(
    loaded.tensors.get("base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight")!.shape,
    [32, 2],
  );
  await assert.rejects(() => loadAdapter(dir, tinyConfig("llama", { numLayers: 3 })), /layers\.2.*missing/);
  await assert.rejects(
    () => loadAdapter(dir, tinyConfig("llama", { numLayers: 2, hiddenSize: 16 })),
    /shape/,
  );
  await Deno.remove(dir, { recursive: true });
});
