import assert from "node:assert/strict";
import { implicitRewards } from "../../lib/losses/mod.ts";
import { assertMatrixClose } from "./_helpers.ts";

Deno.test("implicitRewards is beta * (policy - reference)", () => {
  // 0.5 * (-10 - -11) = 0.5; 0.5 * (-12 - -11) = -0.5; 0.5 * (-3 - -7) = 2.
  assertMatrixClose(implicitRewards([[-10, -12, -3]], [[-11, -11, -7]], 0.5), [[0.5, -0.5, 2]]);
  assertMatrixClose(implicitRewards([[-1, -2], [-3, -4]], [[-1, -1], [-5, -5]], 0.1), [[0, -0.1], [
    0.2,
    0.1,
  ]]);
});

Deno.test("implicitRewards validates shapes, values and beta", () => {
  assert.throws(() => implicitRewards([[-1, -2]], [[-1]], 0.1), TypeError);
  assert.throws(() => implicitRewards([[-1, -2]], [[-1, -2], [0, 0]], 0.1), TypeError);
  assert.throws(() => implicitRewards([[-1, Infinity]], [[-1, -2]], 0.1), /policy\[0\]\[1\]/);
  assert.throws(() => implicitRewards([[-1, -2]], [[-1, -2]], 0), RangeError);
  assert.throws(() => implicitRewards([[1e308, -2]], [[-1e308, -2]], 1), RangeError);
});
