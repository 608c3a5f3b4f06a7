/**
 * NCA for preference pairs (TRL `loss_type="nca_pair"`): NCA with the one-hot label on the chosen
 * response. It pushes r_θ,w up in absolute terms, so the chosen likelihood does not collapse as it
 * can under DPO.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { meanPromptLoss } from "./reward_loss.ts";
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
  return meanPromptLoss("ncaPairLoss", x, o, "pairs", ([w, l]) => ({
    // −log σ(w) = softplus(−w); −log σ(−w) = softplus(w).
    loss: softplus(-w) + 0.5 * softplus(w) + 0.5 * softplus(l),
    dz: [0.5 * sigmoid(w) - sigmoid(-w), 0.5 * sigmoid(l)],
  }));
}
