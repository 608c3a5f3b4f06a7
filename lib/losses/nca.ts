/**
 * NCA: K independent binary classifications (data vs. noise) of each response. Unlike InfoNCA it
 * fits absolute values of r_θ, which keeps the chosen response's likelihood from falling.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { meanPromptLoss } from "./reward_loss.ts";
import { logSigmoid, sigmoid } from "./stable.ts";

/**
 * NCA loss for reward data, any K ≥ 2. Per prompt
 * `L = −Σ_i p_i · log σ(r_θ,i) − (1/K) Σ_i log σ(−r_θ,i)` with `p = softmax(r / α)` and
 * `r_θ = β·(log π − log μ)`; the result is the mean over prompts. α defaults to 1 when omitted.
 * The gradient is analytic: `dL/d log π_i = β·(σ(r_θ,i)/K − p_i·σ(−r_θ,i)) / batch`.
 *
 * @throws {TypeError} malformed input or missing rewards.
 * @throws {RangeError} β, α, K or batch out of range, or β·(log π − log μ) overflows (log-probs near ±1e308).
 *
 * @example
 * ```ts
 * const { loss, grad } = ncaLoss(
 *   { policy: [[-10, -12, -15, -9]], reference: [[-11, -11, -14, -9]], rewards: [[8, 6, 3, 5]] },
 *   { beta: 0.01, alpha: 1e-4 },
 * );
 * ```
 */
export function ncaLoss(x: LossInput, o: LossOptions): LossResult {
  return meanPromptLoss("ncaLoss", x, o, "rewards", (z, labels) => {
    const p = labels!;
    const invK = 1 / z.length;
    const dz = new Array<number>(z.length);
    let loss = 0;
    for (let i = 0; i < z.length; i++) {
      if (p[i] !== 0) loss -= p[i] * logSigmoid(z[i]);
      loss -= invK * logSigmoid(-z[i]);
      dz[i] = invK * sigmoid(z[i]) - p[i] * sigmoid(-z[i]);
    }
    return { loss, dz };
  });
}
