/**
 * InfoNCA: K-way classification of which response the soft label p = softmax(r/α) points to, with
 * logits r_θ. It uses all K scored responses instead of one binarized pair, and reduces to DPO for
 * K = 2, α → 0.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { checkLossInput, checkOptions } from "./validate.ts";
import { implicitRewardRow } from "./implicit_rewards.ts";
import { softLabelRow } from "./soft_labels.ts";
import { logSumExp } from "./stable.ts";

/**
 * InfoNCA loss for reward data, any K ≥ 2. Per prompt
 * `L = −Σ_i p_i · log softmax(r_θ)_i` with `p = softmax(r / α)` and `r_θ = β·(log π − log μ)`;
 * the result is the mean over prompts. α defaults to 1 when omitted. The gradient is analytic:
 * `dL/d log π_i = β·(softmax(r_θ)_i − p_i) / batch`.
 *
 * InfoNCA only sees differences of r_θ within a prompt, so it can lower the chosen response's
 * likelihood (see {@link ncaLoss} for the absolute variant).
 *
 * @throws {TypeError} malformed input or missing rewards.
 * @throws {RangeError} β, α, K or batch out of range, or β·(log π − log μ) overflows (log-probs near ±1e308).
 *
 * @example
 * ```ts
 * const { loss, grad } = infoNcaLoss(
 *   { policy: [[-10, -12, -15]], reference: [[-11, -11, -14]], rewards: [[8, 6, 3]] },
 *   { beta: 0.1, alpha: 1 },
 * );
 * ```
 */
export function infoNcaLoss(x: LossInput, o: LossOptions): LossResult {
  const fn = "infoNcaLoss";
  const { batch, k } = checkLossInput(x, { fn, needsRewards: true, pairwise: false });
  const { beta, alpha } = checkOptions(fn, o);
  const rewards = x.rewards as number[][];
  const scale = beta / batch;
  const z = new Array<number>(k);
  const grad = new Array<number[]>(batch);
  let total = 0;
  for (let b = 0; b < batch; b++) {
    implicitRewardRow(x.policy[b], x.reference[b], beta, b, z);
    const p = softLabelRow(rewards[b], alpha);
    const lse = logSumExp(z);
    const g = new Array<number>(k);
    let rowLoss = 0;
    for (let i = 0; i < k; i++) {
      const logq = z[i] - lse;
      if (p[i] !== 0) rowLoss -= p[i] * logq;
      g[i] = scale * (Math.exp(logq) - p[i]);
    }
    total += rowLoss;
    grad[b] = g;
  }
  return { loss: total / batch, grad };
}
