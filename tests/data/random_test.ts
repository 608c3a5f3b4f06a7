import assert from "node:assert/strict";
import { mulberry32, randomInt, sampleIndices, shuffleInPlace } from "../../lib/data/random.ts";

Deno.test("mulberry32 is deterministic per seed and in [0, 1)", () => {
  const a = mulberry32(42);
  const b = mulberry32(42);
  const c = mulberry32(43);
  const xs = Array.from({ length: 1000 }, () => a());
  assert.deepEqual(xs.slice(0, 5), Array.from({ length: 5 }, () => b()));
  assert.notEqual(xs[0], c());
  assert.equal(xs[0], 0.6011037519201636);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
});

Deno.test("randomInt, shuffleInPlace and sampleIndices", () => {
  const rng = mulberry32(1);
  for (let i = 0; i < 100; i++) {
    const x = randomInt(rng, 3);
    assert.ok(Number.isInteger(x) && x >= 0 && x < 3);
  }
  const s = shuffleInPlace([0, 1, 2, 3, 4, 5, 6, 7], mulberry32(7));
  assert.deepEqual([...s].sort(), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(s, shuffleInPlace([0, 1, 2, 3, 4, 5, 6, 7], mulberry32(7)));
  const idx = sampleIndices(10, 4, mulberry32(3));
  assert.equal(new Set(idx).size, 4);
  assert.deepEqual(idx, [...idx].sort((x, y) => x - y));
  assert.deepEqual(sampleIndices(3, 3, mulberry32(0)), [0, 1, 2]);
  assert.throws(() => sampleIndices(2, 3, mulberry32(0)), RangeError);
});
