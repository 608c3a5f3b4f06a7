import { ncaLoss, ncaPairLoss } from "../../lib/losses/mod.ts";
import { assertClose, assertMatrixClose, randomInput, rng } from "./_helpers.ts";

const logSig = (z: number) => Math.log(1 / (1 + Math.exp(-z)));

Deno.test("ncaPairLoss equals the NOTES formula −log σ(w) − ½ log σ(−w) − ½ log σ(−l)", () => {
  // z = [0.5, −0.5]; python3: 1.1981539683602134
  const { loss, grad } = ncaPairLoss({ policy: [[-10, -12]], reference: [[-11, -11]] }, { beta: 0.5 });
  assertClose(loss, -logSig(0.5) - 0.5 * logSig(-0.5) - 0.5 * logSig(0.5), 1e-14);
  assertClose(loss, 1.1981539683602134, 1e-14);
  const sig = (z: number) => 1 / (1 + Math.exp(-z));
  assertMatrixClose(grad, [[0.5 * (sig(0.5) / 2 - sig(-0.5)), 0.5 * sig(-0.5) / 2]], 1e-14);
});

Deno.test("ncaPairLoss: batch of 3, beta 0.3 (literal values)", () => {
  // python3: 1.3395081644172813
  const x = {
    policy: [[-30.5, -41.25], [-12.0, -10.0], [-8, -9]],
    reference: [[-31, -40], [-11.5, -10.5], [-8.5, -8]],
  };
  const { loss, grad } = ncaPairLoss(x, { beta: 0.3 });
  assertClose(loss, 1.3395081644172813, 1e-14);
  assertMatrixClose(grad, [
    [-0.019385523198437563, 0.020366670002296514],
    [-0.03061447680156244, 0.026871492267187477],
    [-0.019385523198437563, 0.02127787415941705],
  ], 1e-13);
});

Deno.test("ncaPairLoss equals NCA with K = 2 and the one-hot label on column 0", () => {
  const rand = rng(11);
  for (let t = 0; t < 5; t++) {
    const x = randomInput(rand, 4, 2, false);
    const beta = 0.05 + rand();
    const pair = ncaPairLoss(x, { beta });
    const nca = ncaLoss({ ...x, rewards: x.policy.map(() => [1, 0]) }, { beta, alpha: 0 });
    assertClose(pair.loss, nca.loss, 1e-14);
    assertMatrixClose(pair.grad, nca.grad, 1e-13);
  }
});
