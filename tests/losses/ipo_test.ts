import { ipoLoss } from "../../lib/losses/mod.ts";
import { assertClose, assertMatrixClose } from "./_helpers.ts";

Deno.test("ipoLoss: TRL's (h − 1/(2β))² on a single pair", () => {
  // h = (−10 − −12) − (−11 − −11) = 2; 1/(2·0.5) = 1; loss = (2 − 1)² = 1; grad_w = 2·1 = 2, grad_l = −2
  const { loss, grad } = ipoLoss({ policy: [[-10, -12]], reference: [[-11, -11]] }, { beta: 0.5 });
  assertClose(loss, 1, 1e-15);
  assertMatrixClose(grad, [[2, -2]], 1e-15);
  // Length-averaged inputs as TRL passes them: h = 0.2, loss = (0.2 − 1)² = 0.64.
  assertClose(
    ipoLoss({ policy: [[-1.0, -1.2]], reference: [[-1.1, -1.1]] }, { beta: 0.5 }).loss,
    0.64,
    1e-14,
  );
});

Deno.test("ipoLoss: batch of 3, beta 0.3 (literal values)", () => {
  // τ = 1/0.6 = 5/3. h = [1.75, −1, 1.5]; python3 loss: 2.381944444444445
  const x = {
    policy: [[-30.5, -41.25], [-12.0, -10.0], [-8, -9]],
    reference: [[-31, -40], [-11.5, -10.5], [-8.5, -8]],
  };
  const { loss, grad } = ipoLoss(x, { beta: 0.3 });
  assertClose(loss, 2.381944444444445, 1e-14);
  const tau = 1 / 0.6;
  assertClose(loss, ((1.75 - tau) ** 2 + (-1 - tau) ** 2 + (1.5 - tau) ** 2) / 3, 1e-14);
  assertMatrixClose(grad, [
    [0.055555555555555504, -0.055555555555555504],
    [-1.777777777777778, 1.777777777777778],
    [-0.11111111111111116, 0.11111111111111116],
  ], 1e-12);
});

Deno.test("ipoLoss is zero at the target margin 1/(2β)", () => {
  // β = 0.25 → τ = 2: h = (−3 − −5) − 0 = 2.
  const { loss, grad } = ipoLoss({ policy: [[-3, -5]], reference: [[-4, -4]] }, { beta: 0.25 });
  assertClose(loss, 0, 0, 1e-30);
  assertMatrixClose(grad, [[0, 0]], 0, 1e-15);
});
