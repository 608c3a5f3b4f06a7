import assert from "node:assert/strict";
import { logSigmoid, logSoftmax, logSumExp, sigmoid, softmax, softplus } from "../../lib/losses/mod.ts";
import { assertClose } from "./_helpers.ts";

Deno.test("softplus matches log(1 + e^x) where the naive form is accurate", () => {
  for (const x of [-20, -3, -0.5, 0, 0.5, 3, 20]) assertClose(softplus(x), Math.log(1 + Math.exp(x)), 1e-14);
  assert.equal(softplus(0), Math.LN2);
});

Deno.test("softplus, logSigmoid and sigmoid stay finite and exact at the extremes", () => {
  assert.equal(softplus(1e4), 1e4); // naive: log(Infinity) = Infinity
  assert.equal(softplus(1000), 1000);
  assertClose(softplus(-800), 0, 0, 1e-300); // e^-800 underflows to 0, still finite
  assertClose(softplus(-30), Math.exp(-30), 1e-12); // log1p keeps the tiny value
  assert.equal(logSigmoid(-1e4), -1e4);
  assert.equal(logSigmoid(1e4), -0);
  assert.equal(sigmoid(1e4), 1);
  assert.equal(sigmoid(-1e4), 0);
  assertClose(sigmoid(-30), Math.exp(-30) / (1 + Math.exp(-30)), 1e-14);
  for (const z of [-5, -1, 0, 1, 5]) {
    assertClose(sigmoid(z), 1 / (1 + Math.exp(-z)), 1e-15);
    assertClose(sigmoid(z) + sigmoid(-z), 1, 1e-15);
    assertClose(logSigmoid(z), Math.log(1 / (1 + Math.exp(-z))), 1e-14);
  }
});

Deno.test("logSumExp, softmax and logSoftmax are shift-invariant and overflow-free", () => {
  assertClose(logSumExp([1, 2, 3]), Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)), 1e-15);
  assertClose(logSumExp([1000, 1000]), 1000 + Math.LN2, 1e-15);
  assertClose(logSumExp([-1000, -1000]), -1000 + Math.LN2, 1e-15);
  assert.equal(logSumExp([]), -Infinity);
  const p = softmax([1e4, 1e4 - Math.log(3)]);
  assertClose(p[0], 0.75, 1e-12);
  assertClose(p[1], 0.25, 1e-12);
  const ls = logSoftmax([0, Math.log(3)]);
  assertClose(ls[0], Math.log(0.25), 1e-15);
  assertClose(ls[1], Math.log(0.75), 1e-15);
});
