import assert from "node:assert/strict";
import {
  argmax,
  candidates,
  mulberry32,
  nucleus,
  sampleToken,
  tokenLogprob,
  topKIndices,
  topLogprobs,
} from "../../lib/model/sampling.ts";
import { logSoftmax, softmax } from "../../lib/losses/stable.ts";

const close = (a: number, b: number, tol = 1e-12) =>
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} != ${b}`);

Deno.test("logSoftmax is normalized, shift-invariant and stable for huge logits", () => {
  const x = [1, 2, 3, -4];
  const ls = logSoftmax(x);
  close(ls.reduce((s, v) => s + Math.exp(v), 0), 1);
  const shifted = logSoftmax(x.map((v) => v + 1000));
  ls.forEach((v, i) => close(shifted[i], v, 1e-9));
  const naive = x.map((v) => v - Math.log(x.reduce((s, w) => s + Math.exp(w), 0)));
  ls.forEach((v, i) => close(v, naive[i]));
  assert.ok(logSoftmax([-Infinity, 0])[0] === -Infinity);
});

Deno.test("tokenLogprob equals log softmax at the token", () => {
  const logits = Float32Array.from([0.5, -1.25, 3, 2]);
  const ls = logSoftmax(logits);
  for (let t = 0; t < logits.length; t++) close(tokenLogprob(logits, t), ls[t]);
});

Deno.test("softmax with temperature sharpens and flattens", () => {
  const p1 = softmax([0, 1]), pCold = softmax([0, 1], 0.1), pHot = softmax([0, 1], 10);
  assert.ok(pCold[1] > p1[1] && p1[1] > pHot[1] && pHot[1] > 0.5);
  close(pCold[0] + pCold[1], 1);
  assert.throws(() => softmax([0, 1], 0), RangeError);
});

Deno.test("argmax takes the first maximum and copes with -Infinity", () => {
  assert.equal(argmax([1, 3, 3, 2]), 1);
  assert.equal(argmax([-Infinity, -Infinity]), 0);
  assert.equal(argmax([NaN, 2, 1]), 1);
  assert.throws(() => argmax([]), RangeError);
});

Deno.test("topKIndices matches a full sort, ties by lower index", () => {
  const rng = mulberry32(3);
  const values = Array.from({ length: 1000 }, () => Math.floor(rng() * 50));
  const sorted = values.map((_, i) => i).sort((a, b) => values[b] - values[a] || a - b);
  for (const k of [0, 1, 5, 37, 1000, 2000]) {
    assert.deepEqual(topKIndices(values, k), sorted.slice(0, k));
  }
});

Deno.test("top-p keeps the smallest set whose mass reaches p", () => {
  const probs = [0.05, 0.4, 0.3, 0.2, 0.05];
  assert.deepEqual(nucleus(probs, 0.4), [1]);
  assert.deepEqual(nucleus(probs, 0.41), [1, 2]);
  assert.deepEqual(nucleus(probs, 0.7), [1, 2]);
  assert.deepEqual(nucleus(probs, 0.71), [1, 2, 3]);
  assert.deepEqual(nucleus(probs, 0.01), [1]);
  assert.equal(nucleus(probs, 1).length, 5);
  assert.throws(() => nucleus(probs, 0), RangeError);
  // wider than the first 64-token look: a flat distribution over 1000 tokens
  const flat = new Float64Array(1000).fill(1 / 1000);
  assert.equal(nucleus(flat, 0.5).length, 500);
  // unnormalized input with its total
  assert.deepEqual(nucleus([2, 8], 0.5, 10), [1]);
});

Deno.test("candidates: temperature, then top-k, then top-p on what is left", () => {
  const logits = [0.1, 0.2, 0.3, 0.4].map(Math.log);
  assert.deepEqual(candidates(logits, { topK: 2 }).tokens, [3, 2]);
  // after top-k 2, the renormalized masses are 4/7, 3/7: p = 0.5 keeps only token 3
  assert.deepEqual(candidates(logits, { topK: 2, topP: 0.5 }).tokens, [3]);
  assert.deepEqual(candidates(logits, { topP: 0.65 }).tokens, [3, 2]);
  assert.deepEqual(candidates(logits, {}).tokens, [0, 1, 2, 3]);
});

Deno.test("temperature 0 is argmax, whatever the filters and the rng", () => {
  const rng = mulberry32(1);
  const logits = [0.1, 2.5, 2.4, -3];
  for (let i = 0; i < 20; i++) assert.equal(sampleToken(logits, { temperature: 0, topP: 0.1 }, rng), 1);
  assert.throws(() => sampleToken([NaN, NaN], { temperature: 1 }, rng), RangeError);
  assert.throws(() => sampleToken([], { temperature: 1 }, rng), RangeError);
});

Deno.test("seeded sampling is deterministic and follows the distribution", () => {
  const logits = [Math.log(0.1), Math.log(0.6), Math.log(0.3)];
  const draw = (seed: number) => {
    const rng = mulberry32(seed);
    return Array.from({ length: 20000 }, () => sampleToken(logits, { temperature: 1 }, rng));
  };
  const a = draw(42), b = draw(42), c = draw(43);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const freq = [0, 0, 0];
  for (const t of a) freq[t]++;
  [0.1, 0.6, 0.3].forEach((p, i) => assert.ok(Math.abs(freq[i] / a.length - p) < 0.015, `${freq}`));
});

Deno.test("top-k and top-p never draw filtered tokens", () => {
  const rng = mulberry32(9);
  const logits = [0, 1, 2, 3, 4, 5];
  for (let i = 0; i < 500; i++) {
    assert.ok(sampleToken(logits, { temperature: 1.5, topK: 2 }, rng) >= 4);
    assert.equal(sampleToken(logits, { temperature: 1, topP: 0.5 }, rng) >= 4, true);
  }
});

Deno.test("topLogprobs lists the most likely alternatives in order", () => {
  const ls = logSoftmax([1, 4, 2, 3]);
  assert.deepEqual(topLogprobs(ls, 2), [{ token: 1, logprob: ls[1] }, { token: 3, logprob: ls[3] }]);
});

Deno.test("unfiltered sampling draws exactly the token the general path draws, for the same rng", () => {
  // the general path, as sampleToken computed it before its two-pass shortcut
  const general = (logits: Float32Array, temperature: number, rng: () => number) => {
    const { tokens, probs } = candidates(logits, { temperature });
    let total = 0;
    for (const q of probs) total += q;
    let u = rng() * total;
    for (let i = 0; i < tokens.length; i++) {
      u -= probs[i];
      if (u < 0) return tokens[i];
    }
    return tokens[tokens.length - 1];
  };
  const r = mulberry32(3);
  const logits = Float32Array.from({ length: 5000 }, () => (r() - 0.5) * 12);
  for (const temperature of [0.3, 1, 1.7]) {
    const a = mulberry32(11), b = mulberry32(11);
    for (let n = 0; n < 300; n++) {
      assert.equal(
        sampleToken(logits, { temperature }, a),
        general(logits, temperature, b),
        `draw ${n}, T ${temperature}`,
      );
    }
  }
});
