import assert from "node:assert/strict";
import { ncaLoss } from "../../lib/losses/mod.ts";
import { assertClose, assertMatrixClose } from "./_helpers.ts";

/** Straightforward NCA: −Σ p_i log(1/(1+e^{−z_i})) − (1/K) Σ log(1/(1+e^{z_i})). */
function naiveNca(pol: number[][], ref: number[][], rw: number[][], beta: number, alpha: number): number {
  let total = 0;
  for (let b = 0; b < pol.length; b++) {
    const z = pol[b].map((v, j) => beta * (v - ref[b][j]));
    const er = rw[b].map((v) => Math.exp(v / alpha));
    const sr = er.reduce((a, c) => a + c, 0);
    const k = z.length;
    for (let i = 0; i < k; i++) {
      total -= (er[i] / sr) * Math.log(1 / (1 + Math.exp(-z[i])));
      total -= Math.log(1 / (1 + Math.exp(z[i]))) / k;
    }
  }
  return total / pol.length;
}

Deno.test("ncaLoss: hand case K = 3 (beta 0.1, alpha 2) value and gradient", () => {
  // z = [0.1, -0.1, -0.1], p = softmax([4, 3, 1.5]); python3: 1.3531594448680246
  // grad_i = 0.1 * (σ(z_i)/3 − p_i σ(−z_i))
  const x = { policy: [[-10, -12, -15]], reference: [[-11, -11, -14]], rewards: [[8, 6, 3]] };
  const { loss, grad } = ncaLoss(x, { beta: 0.1, alpha: 2 });
  assertClose(loss, 1.3531594448680246, 1e-13);
  assertClose(loss, naiveNca(x.policy, x.reference, x.rewards, 0.1, 2), 1e-13);
  assertMatrixClose(grad, [[-0.01526155322309761, 0.0025144555955338628, 0.01286202896469754]], 1e-12);
});

Deno.test("ncaLoss: batch of 2, K = 4 (beta 0.2, alpha 0.5)", () => {
  // python3: 1.3363680379165046
  const x = {
    policy: [[-20, -25, -30, -22], [-5, -7, -6, -9]],
    reference: [[-21, -24, -29, -23], [-6, -6, -6, -6]],
    rewards: [[7, 5, 2, 9], [1, 3, 3, 0]],
  };
  const { loss } = ncaLoss(x, { beta: 0.2, alpha: 0.5 });
  assertClose(loss, 1.3363680379165046, 1e-13);
  assertClose(loss, naiveNca(x.policy, x.reference, x.rewards, 0.2, 0.5), 1e-13);
});

Deno.test("ncaLoss: K = 2, alpha 1 literal, and alpha defaults to 1", () => {
  // z = [0.5, -0.5], p = softmax([2, 1]); python3: 1.332624679045211
  const x = { policy: [[-10, -12]], reference: [[-11, -11]], rewards: [[2, 1]] };
  assertClose(ncaLoss(x, { beta: 0.5, alpha: 1 }).loss, 1.332624679045211, 1e-13);
  assert.deepEqual(ncaLoss(x, { beta: 0.5 }), ncaLoss(x, { beta: 0.5, alpha: 1 }));
});

Deno.test("ncaLoss is NOT shift-invariant: it fits absolute implicit rewards", () => {
  const x = { policy: [[-10, -12, -15]], reference: [[-11, -11, -14]], rewards: [[8, 6, 3]] };
  const shifted = { ...x, policy: [x.policy[0].map((v) => v - 7)] };
  assert.ok(Math.abs(ncaLoss(shifted, { beta: 0.1 }).loss - ncaLoss(x, { beta: 0.1 }).loss) > 1e-3);
  // With a one-hot label the chosen response's gradient is negative (pushes its log-prob up) when r_θ = 0.
  const g =
    ncaLoss({ policy: [[-5, -5]], reference: [[-5, -5]], rewards: [[1, 0]] }, { beta: 1, alpha: 0 }).grad[0];
  // grad_w = σ(0)/2 − σ(0) = −0.25; grad_l = σ(0)/2 = 0.25
  assertMatrixClose([g], [[-0.25, 0.25]], 1e-15);
});
