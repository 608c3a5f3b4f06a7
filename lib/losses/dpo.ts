/**
 * DPO: the Bradley–Terry logistic loss on the implicit reward margin of a preference pair. The
 * baseline the paper compares against; equal to InfoNCA with K = 2 and α → 0.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { meanPromptLoss } from "./reward_loss.ts";
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
 * import assert from "node:assert/strict";
 * const { loss } = dpoLoss({ policy: [[-10, -12]], reference: [[-11, -11]] }, { beta: 0.5 });
 * // loss = −log σ(0.5 − (−0.5)) = softplus(−1) ≈ 0.3133
 * assert.ok(Math.abs(loss - Math.log1p(Math.exp(-1))) < 1e-12);
 * ```
 */
export function dpoLoss(x: LossInput, o: LossOptions): LossResult {
  return meanPromptLoss("dpoLoss", x, o, "pairs", ([w, l]) => {
    const margin = w - l;
    const s = sigmoid(-margin);
    return { loss: softplus(-margin), dz: [-s, s] };
  });
}
