import assert from "node:assert/strict";
import { infoNcaLoss } from "../../lib/losses/mod.ts";
import { assertClose, assertMatrixClose } from "./_helpers.ts";

/** Straightforward InfoNCA for moderate values: −Σ p_i log(e^{z_i} / Σ e^{z_j}), p = e^{r/α}/Σ. */
function naiveInfoNca(pol: number[][], ref: number[][], rw: number[][], beta: number, alpha: number): number {
  let total = 0;
  for (let b = 0; b < pol.length; b++) {
    const z = pol[b].map((v, j) => beta * (v - ref[b][j]));
    const ez = z.map(Math.exp);
    const sz = ez.reduce((a, c) => a + c, 0);
    const er = rw[b].map((v) => Math.exp(v / alpha));
    const sr = er.reduce((a, c) => a + c, 0);
    for (let i = 0; i < z.length; i++) total -= (er[i] / sr) * Math.log(ez[i] / sz);
  }
  return total / pol.length;
}

Deno.test("infoNcaLoss: hand case K = 3 (beta 0.1, alpha 2) value and gradient", () => {
  // z = 0.1 * ([-10, -12, -15] - [-11, -11, -14]) = [0.1, -0.1, -0.1]
  // p = softmax([8, 6, 3] / 2) = softmax([4, 3, 1.5]); q = softmax(z)
  // loss = −Σ p_i log q_i; python3 (plain math module): 1.031882486648395
  // grad = 0.1 * (q − p): [-0.03105196330305146, 0.005670759181798046, 0.02538120412125344]
  const x = { policy: [[-10, -12, -15]], reference: [[-11, -11, -14]], rewards: [[8, 6, 3]] };
  const { loss, grad } = infoNcaLoss(x, { beta: 0.1, alpha: 2 });
  assertClose(loss, 1.031882486648395, 1e-13);
  assertClose(loss, naiveInfoNca(x.policy, x.reference, x.rewards, 0.1, 2), 1e-13);
  const e = [Math.exp(0.1), Math.exp(-0.1), Math.exp(-0.1)];
  const es = e[0] + e[1] + e[2];
  const pr = [Math.exp(4), Math.exp(3), Math.exp(1.5)];
  const ps = pr[0] + pr[1] + pr[2];
  assertMatrixClose(grad, [e.map((v, i) => 0.1 * (v / es - pr[i] / ps))], 1e-12);
  assertMatrixClose(grad, [[-0.03105196330305146, 0.005670759181798046, 0.02538120412125344]], 1e-12);
});

Deno.test("infoNcaLoss: batch of 2, K = 4 (beta 0.2, alpha 0.5) is the mean over prompts", () => {
  // python3: 1.2910235261471392
  const x = {
    policy: [[-20, -25, -30, -22], [-5, -7, -6, -9]],
    reference: [[-21, -24, -29, -23], [-6, -6, -6, -6]],
    rewards: [[7, 5, 2, 9], [1, 3, 3, 0]],
  };
  const { loss, grad } = infoNcaLoss(x, { beta: 0.2, alpha: 0.5 });
  assertClose(loss, 1.2910235261471392, 1e-13);
  const one = (b: number) =>
    infoNcaLoss({ policy: [x.policy[b]], reference: [x.reference[b]], rewards: [x.rewards[b]] }, {
      beta: 0.2,
      alpha: 0.5,
    });
  assertClose(loss, (one(0).loss + one(1).loss) / 2, 1e-14);
  // Each row's gradient carries the 1/batch factor; per-row gradients sum to 0 (softmax − p).
  assertMatrixClose(grad, [one(0).grad[0].map((g) => g / 2), one(1).grad[0].map((g) => g / 2)], 1e-14);
  for (const row of grad) assertClose(row.reduce((a, c) => a + c, 0), 0, 0, 1e-16);
});

Deno.test("infoNcaLoss: alpha defaults to 1", () => {
  const x = { policy: [[-10, -12]], reference: [[-11, -11]], rewards: [[2, 1]] };
  // z = [0.5, -0.5], p = softmax([2, 1]); python3: 0.5822031088882177
  assertClose(infoNcaLoss(x, { beta: 0.5 }).loss, 0.5822031088882177, 1e-13);
  assert.deepEqual(infoNcaLoss(x, { beta: 0.5 }), infoNcaLoss(x, { beta: 0.5, alpha: 1 }));
});

Deno.test("infoNcaLoss is invariant to shifting the policy log-probs of a prompt", () => {
  // softmax only sees differences of r_θ within a prompt: InfoNCA fits relative values.
  const x = { policy: [[-10, -12, -15]], reference: [[-11, -11, -14]], rewards: [[8, 6, 3]] };
  const shifted = { ...x, policy: [x.policy[0].map((v) => v - 7)] };
  assertClose(infoNcaLoss(shifted, { beta: 0.1 }).loss, infoNcaLoss(x, { beta: 0.1 }).loss, 1e-13);
});
