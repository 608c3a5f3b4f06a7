/**
 * InfoNCA: K-way classification of which response the soft label p = softmax(r/α) points to, with
 * logits r_θ. It uses all K scored responses instead of one binarized pair, and reduces to DPO for
 * K = 2, α → 0.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { meanPromptLoss } from "./reward_loss.ts";
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
  return meanPromptLoss("infoNcaLoss", x, o, "rewards", (z, labels) => {
    const p = labels!;
    const lse = logSumExp(z);
    const dz = new Array<number>(z.length);
    let loss = 0;
    for (let i = 0; i < z.length; i++) {
      const logq = z[i] - lse;
      if (p[i] !== 0) loss -= p[i] * logq;
      dz[i] = Math.exp(logq) - p[i];
    }
    return { loss, dz };
  });
}
