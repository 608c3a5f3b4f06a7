import assert from "node:assert/strict";
import { GraphBuilder } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { serializeModel } from "../../lib/graph/serialize.ts";
import { dropoutRowIds, keyedDropout, keyedKeep } from "../../lib/model/layers.ts";
import { f32, ModelSession } from "../../lib/runtime/session.ts";
import { dropoutKey } from "../../lib/train/chunks.ts";

async function masks(keys: number[], p: number, seed = 7): Promise<Float32Array[]> {
  const g = new GraphBuilder("keyed");
  const x = g.input("x", "float32", ["rows", 128]);
  const key = g.input("key", "float32", []);
  g.output(keyedDropout(x, p, key, seed), "y");
  const s = await ModelSession.create(serializeModel(g.build()));
  const ones = f32(new Float32Array(64 * 128).fill(1), [64, 128]);
  const out: Float32Array[] = [];
  for (const k of keys) out.push((await s.run({ x: ones, key: f32([k], []) })).y.data as Float32Array);
  await s.release();
  return out;
}

Deno.test("keyed dropout: drops about p of the elements and scales the rest by 1/(1 − p)", async () => {
  const [m] = await masks([dropoutKey(3, 0, 0)], 0.25);
  const kept = m.filter((v) => v !== 0);
  assert.ok(kept.every((v) => Math.abs(v - 1 / 0.75) < 1e-6), "kept values scaled");
  const dropped = 1 - kept.length / m.length;
  assert.ok(Math.abs(dropped - 0.25) < 0.02, `dropped fraction ${dropped}`);
});

Deno.test("keyed dropout: the same key gives the same mask, other keys (steps) other masks", async () => {
  const k0 = dropoutKey(3, 10, 0), k1 = dropoutKey(3, 11, 0), k2 = dropoutKey(3, 10, 1);
  const [a, b, c, d] = await masks([k0, k0, k1, k2], 0.1);
  assert.deepEqual(a, b);
  const differ = (x: Float32Array, y: Float32Array) => x.filter((v, i) => (v === 0) !== (y[i] === 0)).length;
  assert.ok(differ(a, c) > 500, "another step draws another mask");
  assert.ok(differ(a, d) > 500, "another micro-batch draws another mask");
  // masks of neighbouring elements are not correlated: about p² of adjacent pairs are both dropped
  let both = 0;
  for (let i = 0; i + 1 < a.length; i++) if (a[i] === 0 && a[i + 1] === 0) both++;
  assert.ok(both / a.length < 0.03, `adjacent pairs both dropped: ${both / a.length}`);
});

Deno.test("keyed dropout: dropoutKey is deterministic and spreads steps apart", () => {
  assert.equal(dropoutKey(1, 5, 0), dropoutKey(1, 5, 0));
  const keys = new Set(Array.from({ length: 1000 }, (_, s) => dropoutKey(1, s, 0)));
  assert.ok(keys.size > 990);
});

Deno.test("keyed dropout: with row ids a token's mask is the same however wide its batch is padded", async () => {
  const F = 24, B = 2;
  const maskAt = async (T: number) => {
    const g = new GraphBuilder("rows");
    const x = g.input("x", "float32", ["rows", F]);
    const ids = g.input("ids", "int64", [B, "T"]);
    const key = g.input("key", "float32", []);
    g.output(op.cast(keyedKeep(x, 0.3, key, 11, false, dropoutRowIds(ids)), "float32"), "keep");
    const s = await ModelSession.create(serializeModel(g.build()));
    const out = await s.run({
      x: f32(new Float32Array(B * T * F), [B * T, F]),
      ids: { dtype: "int64", dims: [B, T], data: new BigInt64Array(B * T) },
      key: f32([dropoutKey(5, 3, 0)], []),
    });
    await s.release();
    return out.keep.data as Float32Array;
  };
  const narrow = await maskAt(5), wide = await maskAt(9);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < 5; t++) {
      assert.deepEqual(
        narrow.subarray((b * 5 + t) * F, (b * 5 + t + 1) * F),
        wide.subarray((b * 9 + t) * F, (b * 9 + t + 1) * F),
        `row ${b}, token ${t}`,
      );
    }
  }
  const kept = narrow.reduce((a, v) => a + v, 0) / narrow.length;
  assert.ok(Math.abs(kept - 0.7) < 0.1, `kept ${kept}`);
});
