// Shared test helpers for tests/losses (not a test file itself).
import assert from "node:assert/strict";
import type { LossFn, LossInput } from "../../lib/losses/mod.ts";
import { mulberry32 } from "../../lib/data/random.ts";

/** Deterministic PRNG (the project's mulberry32) so failures reproduce. */
export const rng = mulberry32;

/** Random `[batch][K]` input: log-probs in [-60, -5], reference near the policy, rewards in [0, 10]. */
export function randomInput(rand: () => number, batch: number, k: number, withRewards = true): LossInput {
  const policy: number[][] = [];
  const reference: number[][] = [];
  const rewards: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const p: number[] = [], r: number[] = [], w: number[] = [];
    for (let j = 0; j < k; j++) {
      const lp = -5 - 55 * rand();
      p.push(lp);
      r.push(lp + 6 * (rand() - 0.5));
      w.push(10 * rand());
    }
    policy.push(p);
    reference.push(r);
    rewards.push(w);
  }
  return withRewards ? { policy, reference, rewards } : { policy, reference };
}

/** |a − b| ≤ rel·max(|a|, |b|) + abs. */
export function assertClose(actual: number, expected: number, rel = 1e-12, abs = 1e-15, what = ""): void {
  const tol = rel * Math.max(Math.abs(actual), Math.abs(expected)) + abs;
  assert.ok(
    Math.abs(actual - expected) <= tol,
    `${what} expected ${expected}, got ${actual} (diff ${Math.abs(actual - expected)}, tol ${tol})`,
  );
}

/** Element-wise assertClose for matrices. */
export function assertMatrixClose(actual: number[][], expected: number[][], rel = 1e-12, abs = 1e-15): void {
  assert.equal(actual.length, expected.length, "row count");
  for (let i = 0; i < expected.length; i++) {
    assert.equal(actual[i].length, expected[i].length, `row ${i} length`);
    for (let j = 0; j < expected[i].length; j++) {
      assertClose(actual[i][j], expected[i][j], rel, abs, `[${i}][${j}]`);
    }
  }
}

/** Central finite-difference gradient of `fn` with respect to policy, step h (actual step used exactly). */
export function numericGrad(fn: (x: LossInput) => number, x: LossInput, h = 1e-5): number[][] {
  return x.policy.map((row, b) =>
    row.map((v, j) => {
      const up = structuredClone(x);
      const down = structuredClone(x);
      up.policy[b][j] = v + h;
      down.policy[b][j] = v - h;
      const step = up.policy[b][j] - down.policy[b][j];
      return (fn(up) - fn(down)) / step;
    })
  );
}

/** Check a loss's analytic gradient against central differences. */
export function checkGradient(loss: LossFn, x: LossInput, beta: number, alpha?: number): void {
  const o = alpha === undefined ? { beta } : { beta, alpha };
  const analytic = loss(x, o).grad;
  const numeric = numericGrad((y) => loss(y, o).loss, x);
  assertMatrixClose(analytic, numeric, 1e-6, 1e-10);
}
