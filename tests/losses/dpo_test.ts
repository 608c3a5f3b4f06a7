import { dpoLoss } from "../../lib/losses/mod.ts";
import { assertClose, assertMatrixClose } from "./_helpers.ts";

Deno.test("dpoLoss: single pair, beta 0.5", () => {
  // z = 0.5 * ([-10, -12] − [-11, -11]) = [0.5, −0.5]; margin 1
  // loss = −log σ(1) = log(1 + e^{−1}); python3: 0.3132616875182228
  // grad_w = −0.5 σ(−1), grad_l = +0.5 σ(−1)
  const { loss, grad } = dpoLoss({ policy: [[-10, -12]], reference: [[-11, -11]] }, { beta: 0.5 });
  assertClose(loss, Math.log(1 + Math.exp(-1)), 1e-15);
  assertClose(loss, 0.3132616875182228, 1e-15);
  const s = 0.5 / (1 + Math.exp(1));
  assertMatrixClose(grad, [[-s, s]], 1e-15);
});

Deno.test("dpoLoss: batch of 3, beta 0.3", () => {
  // python3: 0.604105315046325; grads listed per row (include the 1/3 factor)
  const x = {
    policy: [[-30.5, -41.25], [-12.0, -10.0], [-8, -9]],
    reference: [[-31, -40], [-11.5, -10.5], [-8.5, -8]],
  };
  const { loss, grad } = dpoLoss(x, { beta: 0.3 });
  assertClose(loss, 0.604105315046325, 1e-14);
  let naive = 0;
  for (let b = 0; b < 3; b++) {
    const m = 0.3 * (x.policy[b][0] - x.reference[b][0]) - 0.3 * (x.policy[b][1] - x.reference[b][1]);
    naive += -Math.log(1 / (1 + Math.exp(-m))) / 3;
  }
  assertClose(loss, naive, 1e-14);
  assertMatrixClose(grad, [
    [-0.03716838117046337, 0.03716838117046337],
    [-0.0574442516811659, 0.0574442516811659],
    [-0.0389360766050778, 0.0389360766050778],
  ], 1e-13);
});
