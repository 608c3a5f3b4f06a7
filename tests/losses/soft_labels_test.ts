import assert from "node:assert/strict";
import { softLabels } from "../../lib/losses/mod.ts";
import { assertClose, rng } from "./_helpers.ts";

Deno.test("softLabels equals softmax(r/alpha) computed naively on moderate values", () => {
  const r = [[8, 6, 3, 0], [0, 1, 2, 3]];
  for (const alpha of [0.5, 1, 2, 10]) {
    const got = softLabels(r, alpha);
    r.forEach((row, b) => {
      const e = row.map((v) => Math.exp(v / alpha));
      const s = e.reduce((a, c) => a + c, 0);
      row.forEach((_, i) => assertClose(got[b][i], e[i] / s, 1e-14));
    });
  }
  // Literal: softmax([0, ln 3]) = [1/4, 3/4].
  const lit = softLabels([[0, Math.log(3)]], 1)[0];
  assertClose(lit[0], 0.25, 1e-15);
  assertClose(lit[1], 0.75, 1e-15);
});

Deno.test("softLabels rows sum to 1 for random rewards and temperatures", () => {
  const rand = rng(7);
  for (let t = 0; t < 50; t++) {
    const k = 2 + Math.floor(rand() * 7);
    const row = Array.from({ length: k }, () => (rand() - 0.5) * 2e6);
    const alpha = [0, 1e-4, 1e-2, 1, 1e3, 1e7][t % 6];
    const p = softLabels([row], alpha)[0];
    const s = p.reduce((a, c) => a + c, 0);
    assertClose(s, 1, 1e-14);
    for (const v of p) assert.ok(v >= 0 && v <= 1 && Number.isFinite(v));
  }
});

Deno.test("softLabels at alpha 0 is one-hot on the best response, ties shared equally", () => {
  assert.deepEqual(softLabels([[1, 5, 3]], 0), [[0, 1, 0]]);
  assert.deepEqual(softLabels([[1, 2, 2]], 0), [[0, 0.5, 0.5]]);
  assert.deepEqual(softLabels([[4, 4, 4, 4]], 0), [[0.25, 0.25, 0.25, 0.25]]);
  const three = softLabels([[7, 1, 7, 7]], 0)[0];
  assert.deepEqual(three, [1 / 3, 0, 1 / 3, 1 / 3]);
});

Deno.test("softLabels at alpha 1e-4 with rewards 1..10 does not overflow", () => {
  const row = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const p = softLabels([row], 1e-4)[0];
  assert.ok(p.every(Number.isFinite));
  assert.equal(p[9], 1);
  for (let i = 0; i < 9; i++) assert.equal(p[i], 0);
  // Close rewards at small alpha still give a soft split: gap 1e-4 / alpha 1e-4 = 1.
  const q = softLabels([[5, 5 - 1e-4]], 1e-4)[0];
  assertClose(q[0], 1 / (1 + Math.exp(-1)), 1e-9);
  // Ties at tiny alpha are shared, like alpha 0.
  assert.deepEqual(softLabels([[3, 3, 1]], 1e-4), [[0.5, 0.5, 0]]);
  // Huge rewards and a large alpha: still finite.
  const h = softLabels([[1e6, -1e6]], 1e-4)[0];
  assert.deepEqual(h, [1, 0]);
});

Deno.test("softLabels validates its input", () => {
  assert.throws(() => softLabels([[1, 2]], -1), RangeError);
  assert.throws(() => softLabels([[1, 2]], NaN), RangeError);
  assert.throws(
    () => softLabels([[1, NaN]], 1),
    (e: Error) => e instanceof TypeError && /rewards\[0\]\[1\]/.test(e.message),
  );
  assert.throws(
    () => softLabels([[1, 2], [1]], 1),
    (e: Error) => e instanceof TypeError && /row 1/.test(e.message),
  );
  assert.deepEqual(softLabels([], 1), []);
});
