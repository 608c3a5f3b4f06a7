/**
 * The inspection view, checked against the paper's formulas written out here (not the library's losses):
 * soft labels softmax(r/α), InfoNCA −Σ p_i log softmax(r_θ)_i, NCA −Σ p_i log σ(r_θ,i) − (1/K) Σ log σ(−r_θ,i),
 * DPO −log σ(r_θ,w − r_θ,l), and the candidates each prefers.
 */
import assert from "node:assert/strict";
import { objectivesView } from "../../lib/serve/inspect.ts";

const close = (a: number, b: number, tol = 1e-12) =>
  assert.ok(Math.abs(a - b) <= tol * (1 + Math.abs(b)), `${a} vs ${b}`);
const sig = (x: number) => 1 / (1 + Math.exp(-x));

Deno.test("objectives view of K = 3 scored candidates", () => {
  const policy = [-10, -12, -15], reference = [-11, -11, -14], rewards = [8, 6, 3];
  const beta = 0.5, alpha = 2;
  const v = objectivesView(policy, reference, { beta, alpha, rewards });
  const z = policy.map((p, i) => beta * (p - reference[i]));
  assert.deepEqual(v.implicit_rewards, z);
  const e = rewards.map((r) => Math.exp(r / alpha));
  const p = e.map((x) => x / e.reduce((a, b) => a + b));
  v.soft_labels!.forEach((x, i) => close(x, p[i]));
  const ez = z.map(Math.exp);
  const q = ez.map((x) => x / ez.reduce((a, b) => a + b));
  v.infonca.probabilities.forEach((x, i) => close(x, q[i]));
  close(v.infonca.loss!, -p.reduce((a, pi, i) => a + pi * Math.log(q[i]), 0));
  v.nca.probabilities.forEach((x, i) => close(x, sig(z[i])));
  const nca = -p.reduce((a, pi, i) => a + pi * Math.log(sig(z[i])), 0) -
    z.reduce((a, zi) => a + Math.log(sig(-zi)), 0) / 3;
  close(v.nca.loss!, nca);
  assert.equal(v.reward_preferred, 0);
  assert.equal(v.infonca.preferred, 0); // z = [0.5, -0.5, -0.5]
  assert.equal(v.nca.preferred, 0);
  // DPO on best (0) vs worst (2)
  assert.equal(v.dpo!.chosen, 0);
  assert.equal(v.dpo!.rejected, 2);
  close(v.dpo!.probability, sig(z[0] - z[2]));
  close(v.dpo!.loss, -Math.log(sig(z[0] - z[2])));
});

Deno.test("objectives view without rewards, and for a pair", () => {
  const v = objectivesView([-3, -2], [-3, -3], { beta: 1, alpha: 1 });
  assert.equal(v.soft_labels, null);
  assert.equal(v.infonca.loss, null);
  assert.equal(v.nca.loss, null);
  assert.equal(v.infonca.preferred, 1);
  // without rewards candidate 0 is "chosen", as in TRL's column order
  assert.equal(v.dpo!.chosen, 0);
  assert.equal(v.dpo!.preferred, 1);
  close(v.dpo!.loss, -Math.log(sig(0 - 1)));
  const swapped = objectivesView([-3, -2], [-3, -3], { beta: 1, alpha: 1, rewards: [0, 1] });
  assert.equal(swapped.dpo!.chosen, 1);
  close(swapped.dpo!.loss, -Math.log(sig(1)));
  // policy = reference: every implicit reward is 0, InfoNCA uniform, NCA 1/2
  const same = objectivesView([-4, -9, -1], [-4, -9, -1], { beta: 0.1, alpha: 1, rewards: [1, 2, 3] });
  assert.deepEqual(same.implicit_rewards, [0, 0, 0]);
  same.infonca.probabilities.forEach((x) => close(x, 1 / 3));
  same.nca.probabilities.forEach((x) => close(x, 0.5));
  // one candidate: probabilities only
  const one = objectivesView([-4], [-5], { beta: 1, alpha: 1, rewards: [1] });
  assert.equal(one.infonca.loss, null);
  assert.equal(one.dpo, null);
  close(one.nca.probabilities[0], sig(1));
  assert.throws(() => objectivesView([-1, -2], [-1], { beta: 1, alpha: 1 }), /reference/);
});
