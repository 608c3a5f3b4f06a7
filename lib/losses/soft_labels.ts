/**
 * Soft labels p = softmax(r / α) turn K scored responses into a target distribution: the explicit
 * reward information that InfoNCA and NCA use and DPO throws away.
 *
 * @module
 */

import { checkAlpha, checkMatrix } from "./validate.ts";

/**
 * One row of soft labels, without validation (for the losses, which validate once per batch).
 * Computed as e^{(r_i − max r)/α} / Σ_j e^{(r_j − max r)/α}: the best response gets e^0 = 1, so the
 * sum is ≥ 1 and nothing overflows for any α > 0; α = 0 gives the one-hot label on the best response,
 * with ties sharing the mass equally.
 */
export function softLabelRow(rewards: readonly number[], alpha: number): number[] {
  const k = rewards.length;
  let m = -Infinity;
  for (let i = 0; i < k; i++) if (rewards[i] > m) m = rewards[i];
  const p = new Array<number>(k);
  if (alpha === 0) {
    let ties = 0;
    for (let i = 0; i < k; i++) if (rewards[i] === m) ties++;
    for (let i = 0; i < k; i++) p[i] = rewards[i] === m ? 1 / ties : 0;
    return p;
  }
  let s = 0;
  for (let i = 0; i < k; i++) {
    // (r_i − m) ≤ 0, so the exponent is ≤ 0; the division may reach −Infinity (e^−∞ = 0), never NaN.
    const e = Math.exp((rewards[i] - m) / alpha);
    p[i] = e;
    s += e;
  }
  for (let i = 0; i < k; i++) p[i] /= s;
  return p;
}

/**
 * Soft labels softmax(r / α) for every prompt of a batch: the target distribution of InfoNCA and NCA.
 * Stable for any reward scale and any α ≥ 0: α = 1e-4 with rewards 1..10 gives an (almost) one-hot
 * label, not NaN; α = 0 is exactly one-hot on the best response, with ties shared equally.
 *
 * @param rewards `[batch][K]` finite rewards (K ≥ 1; an empty batch gives `[]`).
 * @param alpha reward temperature, finite and ≥ 0.
 * @throws {TypeError} ragged rows or non-finite rewards. @throws {RangeError} α < 0 or non-finite, K = 0.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.deepEqual(softLabels([[1, 2, 2]], 0), [[0, 0.5, 0.5]]); // α = 0: the best, ties shared
 * assert.deepEqual(softLabels([[0, Math.log(3)]], 1), [[0.25, 0.75]]);
 * ```
 */
export function softLabels(rewards: number[][], alpha: number): number[][] {
  const { batch, k } = checkMatrix("softLabels", "rewards", rewards);
  checkAlpha("softLabels", alpha);
  if (batch > 0 && k === 0) throw new RangeError("softLabels: rows must have at least one reward, got K = 0");
  return rewards.map((row) => softLabelRow(row, alpha));
}
