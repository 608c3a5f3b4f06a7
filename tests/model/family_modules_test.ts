/**
 * The contract of a family file (lib/model/families/*.ts) that the shared code relies on: every model type a
 * family lists parses to it and back, the layer prefix and checkpoint prefix it declares fit the tensors it
 * lists, and `linear` leaves adapted modules to the context's hook (how LoRA reaches it without layers.ts
 * importing lora.ts).
 */
import assert from "node:assert/strict";
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import { parseConfig, SUPPORTED_MODEL_TYPES } from "../../lib/model/config.ts";
import { configToJson } from "../../lib/model/config_json.ts";
import { FAMILIES, type Family, familyModule } from "../../lib/model/families/registry.ts";
import { type Ctx, linear } from "../../lib/model/layers.ts";
import { linearModules } from "../../lib/model/lora.ts";
import { frozenWeights } from "../../lib/model/weights.ts";
import { canonicalTensorName, expectedTensors, layerIndexOf } from "../../lib/model/weights_names.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";

Deno.test("each family's model types map to it and parse back from its config.json", () => {
  const types = Object.entries(FAMILIES).flatMap(([f, m]) => m.modelTypes.map((t) => [t, f]));
  assert.deepEqual(Object.entries(SUPPORTED_MODEL_TYPES), types);
  for (const [modelType, family] of types) {
    const cfg = tinyConfig(family as Family, { modelType } as never);
    const back = parseConfig(configToJson(cfg));
    assert.equal(back.family, family, modelType);
    assert.equal(back.modelType, modelType);
  }
});

Deno.test("each family's layer and checkpoint prefixes fit the tensors it lists", () => {
  for (const family of Object.keys(FAMILIES) as Family[]) {
    const cfg = tinyConfig(family);
    const fam = familyModule(family);
    const names = expectedTensors(cfg).map((t) => t.name);
    assert.ok(names.includes(fam.embedding), `${family}: ${fam.embedding} is one of its tensors`);
    for (const name of names) {
      const i = layerIndexOf(family, name);
      assert.equal(i !== null, name.startsWith(`${fam.layers}.`), name);
      if (i !== null) assert.ok(name.startsWith(`${fam.layers}.${i}.`), name);
      assert.equal(layerIndexOf(family, fam.prefix + name), i, `${family}: prefixed ${name}`);
      assert.equal(canonicalTensorName(cfg, fam.prefix + name), name);
    }
    const modules = linearModules(cfg);
    assert.ok(modules.length > 0);
    for (const m of modules) {
      assert.equal(m.peftPath, fam.prefix + m.path);
      assert.equal(m.layout, fam.layout);
    }
  }
});

Deno.test("linear: the context's hook gets each module's path, input and output, and its value is used", () => {
  const g = new GraphBuilder("hook");
  const x = g.input("x", "float32", ["rows", 3]);
  const weights = frozenWeights(new Map([["m.weight", { shape: [2, 3], data: new Float32Array(6) }]]));
  const seen: { path: string; x: Value; y: Value }[] = [];
  const replaced = g.input("replaced", "float32", ["rows", 2]);
  const ctx: Ctx = {
    g,
    dtype: "float32",
    weights,
    adapt: (c, path, xin, y) => {
      assert.equal(c, ctx);
      seen.push({ path, x: xin, y });
      return replaced;
    },
  };
  const out = linear(ctx, "m", x, { layout: "linear", bias: false });
  assert.equal(out, replaced);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].path, "m");
  assert.equal(seen[0].x, x);
  assert.deepEqual(seen[0].y.shape, ["rows", 2]);
  // without a hook the product itself comes back
  const plain = linear({ g, dtype: "float32", weights }, "m", x, { layout: "linear", bias: false });
  assert.notEqual(plain, replaced);
  assert.deepEqual(plain.shape, ["rows", 2]);
});
