/**
 * NCA: K independent binary classifications (data vs. noise) of each response. Unlike InfoNCA it
 * fits absolute values of r_θ, which keeps the chosen response's likelihood from falling.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { checkLossInput, checkOptions } from "./validate.ts";
import { implicitRewardRow } from "./implicit_rewards.ts";
import { softLabelRow } from "./soft_labels.ts";
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
  const fn = "ncaLoss";
  const { batch, k } = checkLossInput(x, { fn, needsRewards: true, pairwise: false });
  const { beta, alpha } = checkOptions(fn, o);
  const rewards = x.rewards as number[][];
  const scale = beta / batch;
  const invK = 1 / k;
  const z = new Array<number>(k);
  const grad = new Array<number[]>(batch);
  let total = 0;
  for (let b = 0; b < batch; b++) {
    implicitRewardRow(x.policy[b], x.reference[b], beta, b, z);
    const p = softLabelRow(rewards[b], alpha);
    const g = new Array<number>(k);
    let rowLoss = 0;
    for (let i = 0; i < k; i++) {
      if (p[i] !== 0) rowLoss -= p[i] * logSigmoid(z[i]);
      rowLoss -= invK * logSigmoid(-z[i]);
      g[i] = scale * (invK * sigmoid(z[i]) - p[i] * sigmoid(-z[i]));
    }
    total += rowLoss;
    grad[b] = g;
  }
  return { loss: total / batch, grad };
}
