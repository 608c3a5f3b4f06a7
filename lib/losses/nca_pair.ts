/**
 * NCA for preference pairs (TRL `loss_type="nca_pair"`): NCA with the one-hot label on the chosen
 * response. It pushes r_θ,w up in absolute terms, so the chosen likelihood does not collapse as it
 * can under DPO.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { checkLossInput, checkOptions } from "./validate.ts";
import { implicitRewardRow } from "./implicit_rewards.ts";
import { sigmoid, softplus } from "./stable.ts";

/**
 * Pairwise NCA loss (K = 2, column 0 = chosen y_w, column 1 = rejected y_l). Per prompt
 * `L = −log σ(r_θ,w) − ½ log σ(−r_θ,w) − ½ log σ(−r_θ,l)` with `r_θ = β·(log π − log μ)`; the result
 * is the mean over prompts. Rewards, if given, are validated but not used; α is ignored.
 * Gradient: `dL/d log π_w = β·(σ(r_θ,w)/2 − σ(−r_θ,w)) / batch`, `dL/d log π_l = β·σ(r_θ,l)/2 / batch`.
 *
 * @throws {TypeError} malformed input or K ≠ 2.
 * @throws {RangeError} β or batch out of range, or β·(log π − log μ) overflows (log-probs near ±1e308).
 *
 * @example
 * ```ts
 * const { loss } = ncaPairLoss({ policy: [[-10, -12]], reference: [[-11, -11]] }, { beta: 0.5 });
 * ```
 */
export function ncaPairLoss(x: LossInput, o: LossOptions): LossResult {
  const fn = "ncaPairLoss";
  const { batch } = checkLossInput(x, { fn, needsRewards: false, pairwise: true });
  const { beta } = checkOptions(fn, o);
  const scale = beta / batch;
  const z = [0, 0];
  const grad = new Array<number[]>(batch);
  let total = 0;
  for (let b = 0; b < batch; b++) {
    implicitRewardRow(x.policy[b], x.reference[b], beta, b, z);
    const w = z[0];
    const l = z[1];
    // −log σ(w) = softplus(−w); −log σ(−w) = softplus(w).
    total += softplus(-w) + 0.5 * softplus(w) + 0.5 * softplus(l);
    grad[b] = [scale * (0.5 * sigmoid(w) - sigmoid(-w)), scale * 0.5 * sigmoid(l)];
  }
  return { loss: total / batch, grad };
}
