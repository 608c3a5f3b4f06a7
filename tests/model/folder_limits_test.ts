/**
 * A model folder's config against its weights (issue 20, items 3 and 9): `loadModelFolder` compares the
 * layers the weights hold and the embedding's shape with config.json before building anything per layer,
 * so a config claiming 10^9 layers fails in milliseconds with a message naming the file and the field
 * (in-process, and through `deno task sample` in a subprocess) instead of running V8 out of memory; token
 * ids of config.json and generation_config.json past the vocabulary are refused.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { configToJson } from "../../lib/model/config_json.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loadModelFolder, saveModelFolder } from "../../lib/model/model_folder.ts";
import { checkConfigAgainstWeights, layerIndexOf } from "../../lib/model/weights_names.ts";

/** A tiny saved folder of `family` (2 layers, vocab 64, hidden 32) in a fresh temp dir. */
async function tinyFolder(family: "llama" | "gpt2" | "gemma"): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `folder_limits_${family}_` });
  const cfg = tinyConfig(family);
  await saveModelFolder(dir, cfg, initWeights(cfg, { seed: 1 }));
  return dir;
}

async function editConfig(dir: string, edit: Record<string, unknown>, drop: string[] = []): Promise<void> {
  const file = join(dir, "config.json");
  const json = { ...JSON.parse(await Deno.readTextFile(file)), ...edit };
  for (const k of drop) delete json[k];
  await Deno.writeTextFile(file, JSON.stringify(json));
}

/** Expects `loadModelFolder(dir)` to reject within a second with exactly `message`. */
async function refused(dir: string, message: string): Promise<void> {
  const t0 = performance.now();
  await assert.rejects(loadModelFolder(dir), (e: Error) => {
    assert.equal(e.message, message);
    return true;
  });
  const took = performance.now() - t0;
  assert.ok(took < 1000, `took ${took.toFixed(0)} ms`);
}

Deno.test("model folder: 1e9 layers in config.json fails fast, naming the file, the field and the weights' layers", async () => {
  const dir = await tinyFolder("llama");
  try {
    await editConfig(dir, { num_hidden_layers: 1e9 });
    await refused(
      dir,
      `${dir}/config.json: num_hidden_layers is 1000000000 but the weights hold 2 layers (model.layers.0 … model.layers.1)`,
    );
    await editConfig(dir, { num_hidden_layers: 1000000000 });
    await refused(
      dir,
      `${dir}/config.json: num_hidden_layers is 1000000000 but the weights hold 2 layers (model.layers.0 … model.layers.1)`,
    );
    // in bounds, but more than the weights hold
    await editConfig(dir, { num_hidden_layers: 3 });
    await refused(
      dir,
      `${dir}/config.json: num_hidden_layers is 3 but the weights hold 2 layers (model.layers.0 … model.layers.1)`,
    );
    // fewer: the first layers, as transformers loads them, the others reported unused
    await editConfig(dir, { num_hidden_layers: 1 });
    const first = await loadModelFolder(dir);
    assert.equal(first.config.numLayers, 1);
    assert.ok(
      first.unexpected.some((u) => u.startsWith("model.layers.1.")),
      JSON.stringify(first.unexpected),
    );
    // not a positive integer: the parser's message, naming the field
    for (
      const [v, shown] of [[1.5, "1.5"], ["2", '"2"'], [-1, "-1"], [2 ** 53, "9007199254740992"]] as const
    ) {
      await editConfig(dir, { num_hidden_layers: v });
      await assert.rejects(
        loadModelFolder(dir),
        new RegExp(
          `${dir}/config\\.json: field "num_hidden_layers" must be a positive integer, got ${shown}`,
        ),
      );
    }
    await editConfig(dir, { num_hidden_layers: 2 });
    assert.equal((await loadModelFolder(dir)).config.numLayers, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("model folder: GPT-2's transformer.h.N layers and Gemma's per-layer windows are checked before parsing", async () => {
  const gpt2 = await tinyFolder("gpt2");
  const gemma = await tinyFolder("gemma");
  try {
    await editConfig(gpt2, { n_layer: 1e9 });
    await refused(
      gpt2,
      `${gpt2}/config.json: n_layer is 1000000000 but the weights hold 2 layers (transformer.h.0 … transformer.h.1)`,
    );
    // without layer_types, Gemma's sliding flags would be made one per layer while parsing
    await editConfig(gemma, { num_hidden_layers: 1e9 }, ["layer_types"]);
    await refused(
      gemma,
      `${gemma}/config.json: num_hidden_layers is 1000000000 but the weights hold 2 layers (model.layers.0 … model.layers.1)`,
    );
  } finally {
    await Deno.remove(gpt2, { recursive: true });
    await Deno.remove(gemma, { recursive: true });
  }
});

Deno.test("model folder: the embedding's shape against vocab_size × hidden_size", async () => {
  const dir = await tinyFolder("llama");
  try {
    await editConfig(dir, { vocab_size: 1e6 });
    await refused(
      dir,
      `${dir}/config.json: vocab_size × hidden_size is 1000000 × 32 but the weights' model.embed_tokens.weight ` +
        `(in model.safetensors) is [64, 32]`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("model folder: config errors still come first when the weights are missing too", async () => {
  const dir = await Deno.makeTempDir({ prefix: "folder_limits_empty_" });
  try {
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ model_type: "bert" }));
    await assert.rejects(loadModelFolder(dir), /config\.json: unsupported model_type "bert"/);
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(configToJson(tinyConfig("llama"))));
    await assert.rejects(
      loadModelFolder(dir),
      /no model\.safetensors or model\.safetensors\.index\.json found/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkConfigAgainstWeights: layer names of each family; no layers at all", () => {
  assert.equal(layerIndexOf("llama", "model.layers.12.mlp.up_proj.weight"), 12);
  assert.equal(layerIndexOf("phi3", "model.layers.0.self_attn.qkv_proj.weight"), 0);
  assert.equal(layerIndexOf("llama", "model.embed_tokens.weight"), null);
  assert.equal(layerIndexOf("gpt2", "h.3.attn.c_attn.weight"), 3);
  assert.equal(layerIndexOf("gpt2", "transformer.h.3.attn.bias"), 3);
  assert.equal(layerIndexOf("gpt2", "model.layers.3.x"), null);
  const one = new Map([["model.layers.0.input_layernorm.weight", { shape: [4] }]]);
  const json = { model_type: "qwen2", num_hidden_layers: 4 };
  assert.throws(
    () => checkConfigAgainstWeights(json, "q/config.json", one),
    /^Error: q\/config\.json: num_hidden_layers is 4 but the weights hold 1 layer \(model\.layers\.0\)$/,
  );
  assert.throws(
    () => checkConfigAgainstWeights(json, "q/config.json", new Map()),
    /num_hidden_layers is 4 but the weights hold no layers \(no tensor named model\.layers\.N\.…\)/,
  );
  // unsupported or malformed configs are left to the parser
  checkConfigAgainstWeights({ model_type: "bert", num_hidden_layers: 4 }, "b/config.json", new Map());
  checkConfigAgainstWeights({ model_type: "llama", num_hidden_layers: "4" }, "b/config.json", new Map());
});

Deno.test("model folder: eos/bos ids past the vocabulary, in config.json or generation_config.json", async () => {
  const dir = await tinyFolder("llama");
  try {
    await editConfig(dir, { eos_token_id: [2, 64] });
    await assert.rejects(
      loadModelFolder(dir),
      new RegExp(`${dir}/config\\.json: eos_token_id 64 is outside the vocabulary \\(vocab_size 64\\)`),
    );
    await editConfig(dir, { eos_token_id: 2, pad_token_id: -1 });
    const gen = join(dir, "generation_config.json");
    await Deno.writeTextFile(gen, JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 128009] }));
    await assert.rejects(loadModelFolder(dir), (e: Error) => {
      assert.equal(
        e.message,
        `${gen}: eos_token_id 128009 is outside the vocabulary (vocab_size 64 in config.json)`,
      );
      return true;
    });
    await Deno.writeTextFile(gen, JSON.stringify({ bos_token_id: 64, eos_token_id: 2 }));
    await assert.rejects(
      loadModelFolder(dir),
      /generation_config\.json: bos_token_id 64 is outside the vocabulary/,
    );
    await Deno.writeTextFile(
      gen,
      JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 63], pad_token_id: -1 }),
    );
    assert.equal((await loadModelFolder(dir)).config.padTokenId, -1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "deno task sample with 1e9 layers in config.json exits non-zero at once, naming config.json and the field",
  async fn() {
    const dir = await tinyFolder("llama");
    try {
      await editConfig(dir, { num_hidden_layers: 1e9 });
      await Deno.writeTextFile(join(dir, "prompts.jsonl"), '{"prompt": "hi"}\n');
      const main = new URL("../../sample/main.ts", import.meta.url).pathname;
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          // a heap this small is exhausted in a second or two if anything is built per layer
          "--v8-flags=--max-old-space-size=256",
          main,
          "--model",
          dir,
          "--prompts",
          join(dir, "prompts.jsonl"),
          "--out",
          join(dir, "samples.jsonl"),
          "--device",
          "cpu",
          "--quiet",
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      const out = await child.output();
      clearTimeout(timer);
      const err = new TextDecoder().decode(out.stderr);
      assert.notEqual(out.code, 0);
      assert.ok(out.code < 128, `exit ${out.code} (killed or crashed): ${err.slice(0, 500)}`);
      assert.ok(
        err.includes(
          `${dir}/config.json: num_hidden_layers is 1000000000 but the weights hold 2 layers (model.layers.0 … model.layers.1)`,
        ),
        err,
      );
      assert.ok(!(await Deno.stat(join(dir, "samples.jsonl")).then(() => true, () => false)));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
