/**
 * DPO: the Bradley–Terry logistic loss on the implicit reward margin of a preference pair. The
 * baseline the paper compares against; equal to InfoNCA with K = 2 and α → 0.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { checkLossInput, checkOptions } from "./validate.ts";
import { implicitRewardRow } from "./implicit_rewards.ts";
import { sigmoid, softplus } from "./stable.ts";

/**
 * DPO loss for preference pairs (K = 2, column 0 = chosen y_w, column 1 = rejected y_l). Per prompt
 * `L = −log σ(r_θ,w − r_θ,l)` with `r_θ = β·(log π − log μ)`; the result is the mean over prompts.
 * Rewards, if given, are validated but not used (order the columns chosen-first); α is ignored.
 * Gradient: `dL/d log π_w = −β·σ(r_θ,l − r_θ,w) / batch`, and its negative for `log π_l`.
 *
 * @throws {TypeError} malformed input or K ≠ 2.
 * @throws {RangeError} β or batch out of range, or β·(log π − log μ) overflows (log-probs near ±1e308).
 *
 * @example
 * ```ts
 * const { loss } = dpoLoss({ policy: [[-10, -12]], reference: [[-11, -11]] }, { beta: 0.5 });
 * // loss = −log σ(0.5 − (−0.5)) = softplus(−1) ≈ 0.3133
 * ```
 */
export function dpoLoss(x: LossInput, o: LossOptions): LossResult {
  const fn = "dpoLoss";
  const { batch } = checkLossInput(x, { fn, needsRewards: false, pairwise: true });
  const { beta } = checkOptions(fn, o);
  const scale = beta / batch;
  const z = [0, 0];
  const grad = new Array<number[]>(batch);
  let total = 0;
  for (let b = 0; b < batch; b++) {
    implicitRewardRow(x.policy[b], x.reference[b], beta, b, z);
    const margin = z[0] - z[1];
    total += softplus(-margin);
    const s = scale * sigmoid(-margin);
    grad[b] = [-s, s];
  }
  return { loss: total / batch, grad };
}
