import assert from "node:assert/strict";
import { join } from "node:path";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loadModelFolder, readModelWeights, saveModelFolder } from "../../lib/model/model_folder.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import { readSafetensorsHeader } from "../../lib/model/safetensors.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";
import { decoderRunner, floats, tokens } from "./_decoder_helpers.ts";

for (const cfg of [tinyConfig("llama", { modelType: "qwen2" }), tinyConfig("gpt2")]) {
  Deno.test(`folder: a ${cfg.modelType} folder written by us reloads with identical weights and logits`, async () => {
    const dir = await Deno.makeTempDir();
    const tok = await Deno.makeTempDir();
    await writeTinyTokenizer(tok);
    const W = initWeights(cfg, { seed: 8, std: 0.2, biasStd: 0.1 });
    await saveModelFolder(dir, cfg, W, { tokenizerFrom: tok });
    const names = (await readSafetensorsHeader(join(dir, "model.safetensors"))).entries.map((e) => e.name);
    if (cfg.family === "gpt2") {
      assert.ok(names.includes("transformer.h.0.attn.c_attn.weight"));
      assert.ok(!names.includes("lm_head.weight"), "tied: no lm_head");
    } else {
      assert.ok(names.includes("model.layers.1.self_attn.q_proj.bias"));
      assert.ok(names.includes("lm_head.weight"));
    }
    const json = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assert.equal(json.model_type, cfg.modelType);
    assert.equal(json.torch_dtype, "float32");
    const loaded = await loadModelFolder(dir);
    assert.deepEqual(loaded.config, cfg);
    assert.equal(loaded.tokenizerDir, dir);
    assert.deepEqual([...loaded.stored.keys()].sort(), [...W.keys()].sort());
    const back = await readModelWeights(loaded);
    for (const [k, t] of W) assert.deepEqual(back.get(k)!.data, t.data, k);
    // the graph reading the weights straight from the folder's file computes what the in-memory one does
    const ids = tokens(8, 1, cfg.vocabSize), mask = [1, 1, 1, 1, 0, 1, 1, 1];
    const a = await decoderRunner(cfg, W);
    const b = await decoderRunner(loaded.config, W, { weights: storedWeights(loaded.stored) });
    assert.deepEqual(
      floats((await b.logits(ids, mask, 2)).logits),
      floats((await a.logits(ids, mask, 2)).logits),
    );
    await a.release();
    await b.release();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(tok, { recursive: true });
  });
}

Deno.test("folder: bf16 and sharded saves load back (bf16-rounded)", async () => {
  const cfg = tinyConfig("llama");
  const dir = await Deno.makeTempDir();
  const W = initWeights(cfg, { seed: 1 });
  await saveModelFolder(dir, cfg, W, { dtype: "bfloat16", maxShardSize: 8000 });
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  assert.ok(
    files.includes("model.safetensors.index.json") &&
      files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length > 1,
    String(files),
  );
  const loaded = await loadModelFolder(dir);
  assert.equal(loaded.config.torchDtype, "bfloat16");
  assert.equal(loaded.tokenizerDir, null);
  const w = W.get("model.layers.0.mlp.up_proj.weight")!.data,
    l = (await readModelWeights(loaded, ["model.layers.0.mlp.up_proj.weight"])).get(
      "model.layers.0.mlp.up_proj.weight",
    )!.data;
  assert.ok(w.every((x, i) => Math.abs(x - l[i]) <= Math.abs(x) / 128));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("folder: an unsupported model_type or a mismatched checkpoint fails at load with the reason", async () => {
  const dir = await Deno.makeTempDir();
  const cfg = tinyConfig("llama");
  await saveModelFolder(dir, cfg, initWeights(cfg));
  const json = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ ...json, model_type: "falcon" }));
  await assert.rejects(() => loadModelFolder(dir), /unsupported model_type "falcon"/);
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ ...json, num_hidden_layers: 3 }));
  // the layer count is checked against the weights before the tensor lists are built
  await assert.rejects(() => loadModelFolder(dir), /num_hidden_layers is 3 but the weights hold 2 layers/);
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ ...json, intermediate_size: 48 }));
  await assert.rejects(
    () => loadModelFolder(dir),
    /shape mismatch: model\.layers\.0\.mlp\.gate_proj\.weight/,
  );
  await Deno.remove(dir, { recursive: true });
});
