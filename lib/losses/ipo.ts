/**
 * IPO: squared-error regression of the log-ratio margin onto 1/(2β), a DPO variant that does not
 * drive the margin to infinity on deterministic preferences. Included as a pairwise baseline.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { checkLossInput, checkOptions } from "./validate.ts";

/**
 * IPO loss as Hugging Face TRL defines it (K = 2, column 0 = chosen y_w, column 1 = rejected y_l):
 * `h = (log π_w − log π_l) − (log μ_w − log μ_l)`, per prompt `L = (h − 1/(2β))²`, mean over prompts.
 * Gradient: `dL/d log π_w = 2·(h − 1/(2β)) / batch`, and its negative for `log π_l`.
 *
 * Note: TRL feeds IPO *length-averaged* log-probs (the mean over response tokens, not the sum used
 * by the other losses). This function uses whatever log-probs it is given: the caller decides, and
 * should pass length-averaged values to match TRL. Rewards, if given, are validated but unused; α is
 * ignored.
 *
 * @throws {TypeError} malformed input or K ≠ 2.
 * @throws {RangeError} β or batch out of range, or (h − 1/(2β))² overflows (β near 0 or log-probs near ±1e154).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const { loss } = ipoLoss({ policy: [[-1.0, -1.2]], reference: [[-1.1, -1.1]] }, { beta: 0.5 });
 * // h = 0.2 − 0 = 0.2, loss = (0.2 − 1)² = 0.64
 * assert.ok(Math.abs(loss - 0.64) < 1e-12);
 * ```
 */
export function ipoLoss(x: LossInput, o: LossOptions): LossResult {
  const fn = "ipoLoss";
  const { batch } = checkLossInput(x, { fn, needsRewards: false, pairwise: true });
  const { beta } = checkOptions(fn, o);
  const target = 1 / (2 * beta);
  const scale = 2 / batch;
  const grad = new Array<number[]>(batch);
  let total = 0;
  for (let b = 0; b < batch; b++) {
    const p = x.policy[b];
    const r = x.reference[b];
    const h = (p[0] - p[1]) - (r[0] - r[1]);
    const d = h - target;
    if (!Number.isFinite(d * d)) {
      throw new RangeError(`ipoLoss: squared margin overflows at row ${b} (h = ${h}, 1/(2beta) = ${target})`);
    }
    total += d * d;
    grad[b] = [scale * d, -scale * d];
  }
  return { loss: total / batch, grad };
}
