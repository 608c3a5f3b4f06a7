// InfoNCA with K = 2 and α → 0 is DPO with the better-rewarded response as chosen (paper, Table 1).
import assert from "node:assert/strict";
import { dpoLoss, infoNcaLoss } from "../../lib/losses/mod.ts";
import { assertClose, assertMatrixClose, randomInput, rng } from "./_helpers.ts";

Deno.test("infoNcaLoss with K = 2 and alpha 0 or 1e-6 equals dpoLoss in value and gradient", () => {
  const rand = rng(99);
  for (let t = 0; t < 10; t++) {
    const x = randomInput(rand, 1 + (t % 4), 2);
    // Make the rewards distinct; put the better response in column 0 for DPO, and swap the gradient back.
    const rewards = x.rewards!.map((r) => (r[0] === r[1] ? [r[0] + 1, r[1]] : r));
    const swap = rewards.map((r) => r[1] > r[0]);
    const order = (m: number[][]) => m.map((row, b) => (swap[b] ? [row[1], row[0]] : row.slice()));
    const beta = [0.01, 0.1, 0.5, 2][t % 4];
    const dpo = dpoLoss({ policy: order(x.policy), reference: order(x.reference) }, { beta });
    for (const alpha of [0, 1e-6]) {
      const info = infoNcaLoss({ ...x, rewards }, { beta, alpha });
      assertClose(info.loss, dpo.loss, 1e-13);
      assertMatrixClose(order(info.grad), dpo.grad, 1e-12, 1e-17);
    }
  }
});

Deno.test("infoNcaLoss with a large alpha is not DPO (sanity check of the limit)", () => {
  const x = { policy: [[-10, -12]], reference: [[-11, -11]], rewards: [[2, 1]] };
  const info = infoNcaLoss(x, { beta: 0.5, alpha: 10 });
  const dpo = dpoLoss(x, { beta: 0.5 });
  assert.ok(Math.abs(info.loss - dpo.loss) > 0.1);
});
