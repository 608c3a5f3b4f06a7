/**
 * What of a merged LoRA update the save dtype keeps: bf16's 8 significant bits round an update below half a
 * unit in the last place away (the weight is saved as the base's), float32 keeps it all. The meter's counts
 * against values worked out by hand, and through mergeLoraTensor on a tiny model.
 */
import assert from "node:assert/strict";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loraModules, normalizeLoraConfig } from "../../lib/model/lora.ts";
import { LoraUpdateMeter, loraUpdateWarning, mergeLoraTensor } from "../../lib/model/peft.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../lib/model/float_codec.ts";

const near = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

Deno.test("LoraUpdateMeter: touched weights, those rounded back to the base, and the update's size lost", () => {
  // 1.0 in bf16: the next values are 1 + 2^-7 (above) and 1 − 2^-8 (below); half-way points round to even
  const base = new Float32Array([1, 1, 1, 1, 0.5, 2]);
  const merged = new Float32Array([
    1, //               untouched
    1 + 2 ** -10, //    below half a unit: rounds back to 1
    1 + 2 ** -7, //     a whole unit: kept exactly
    1 - 2 ** -8, //     a whole unit below: kept exactly
    0.5 + 2 ** -12, //  below half a unit of 0.5 (2^-9): rounds back
    2 + 2 ** -5, //     a unit of 2 is 2^-6: 2^-5 is kept
  ]);
  const bf16 = new LoraUpdateMeter("bfloat16");
  bf16.add(base, merged);
  const r = bf16.result();
  assert.equal(r.weights_touched, 5);
  near(r.weights_unchanged, 2 / 5, 1e-12, "unchanged");
  // lost: the two rounded-away updates, against all five
  const updates = [2 ** -10, 2 ** -7, 2 ** -8, 2 ** -12, 2 ** -5];
  const lost = Math.sqrt((2 ** -20 + 2 ** -24) / updates.reduce((a, u) => a + u * u, 0));
  near(r.update_lost, lost, 1e-9, "lost");

  const f32 = new LoraUpdateMeter("float32");
  f32.add(base, merged);
  assert.deepEqual(f32.result(), { weights_touched: 5, weights_unchanged: 0, update_lost: 0 });
  // float16 has 11 significant bits: 2^-10 at 1 is one unit, kept; 2^-12 at 0.5 is half a unit, to even: lost
  const f16 = new LoraUpdateMeter("float16");
  f16.add(base, merged);
  near(f16.result().weights_unchanged, 1 / 5, 1e-12, "float16 unchanged");

  assert.deepEqual(new LoraUpdateMeter("bfloat16").result(), {
    weights_touched: 0,
    weights_unchanged: 0,
    update_lost: 0,
  });
});

Deno.test("the warning: above 10% unchanged or lost, with the numbers and what keeps the update", () => {
  const w = loraUpdateWarning(
    { weights_touched: 1200, weights_unchanged: 0.654, update_lost: 0.41 },
    "bfloat16",
  );
  assert.ok(w);
  assert.match(w, /65\.4% of the 1200 weights the adapters change come out unchanged/);
  assert.match(w, /41\.0% of the update's size is lost/);
  assert.match(w, /--save-dtype float32 keeps it; adapter\/ holds the exact update/);
  assert.equal(
    loraUpdateWarning({ weights_touched: 9, weights_unchanged: 0.05, update_lost: 0.02 }, "bfloat16"),
    null,
  );
  assert.ok(loraUpdateWarning({ weights_touched: 9, weights_unchanged: 0.05, update_lost: 0.3 }, "float16"));
});

Deno.test("mergeLoraTensor feeds the meter each adapted tensor once; a bf16 base with a small update", () => {
  const cfg = tinyConfig("llama");
  const lora = normalizeLoraConfig({ r: 4, alpha: 8, targetModules: "all-linear" });
  const weights = initWeights(cfg, { seed: 7, std: 0.05 });
  // a bf16 model's weights: each exactly a bf16 value
  for (const t of weights.values()) t.data.forEach((v, i) => (t.data[i] = bf16BitsToF32(f32ToBf16Bits(v))));
  const tensors: Record<string, Float32Array> = {};
  let seed = 1;
  const rand = () => ((seed = (seed * 48271) % 2147483647) / 2147483647) - 0.5;
  const modules = loraModules(cfg, lora);
  for (const m of modules) {
    tensors[m.names.a] = Float32Array.from({ length: lora.r * m.inFeatures }, () => rand() * 0.2);
    tensors[m.names.b] = Float32Array.from({ length: m.outFeatures * lora.r }, () => rand() * 2e-4);
  }
  const bf16 = new LoraUpdateMeter("bfloat16"), f32 = new LoraUpdateMeter("float32");
  let adapted = 0;
  for (const [name, w] of weights) {
    mergeLoraTensor(cfg, lora, tensors, name, w.data, bf16);
    mergeLoraTensor(cfg, lora, tensors, name, w.data, f32);
    if (modules.some((m) => `${m.path}.weight` === name)) adapted += w.data.length;
  }
  const kept = bf16.result();
  assert.ok(
    kept.weights_touched > 0.99 * adapted && kept.weights_touched <= adapted,
    `${kept.weights_touched}`,
  );
  assert.ok(
    kept.weights_unchanged > 0.3 && kept.weights_unchanged < 1,
    `unchanged ${kept.weights_unchanged}`,
  );
  assert.ok(kept.update_lost > 0.1 && kept.update_lost < 1.5, `lost ${kept.update_lost}`);
  assert.deepEqual(f32.result(), {
    weights_touched: kept.weights_touched,
    weights_unchanged: 0,
    update_lost: 0,
  });
});
