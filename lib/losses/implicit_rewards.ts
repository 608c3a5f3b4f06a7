/**
 * The implicit reward r_θ(x, y) = β·(log π_θ(y|x) − log μ(y|x)): the quantity every loss here is
 * written in, and what TRL logs as `rewards/*`.
 *
 * @module
 */

import { checkBeta, checkMatrix } from "./validate.ts";

/**
 * Implicit rewards of one row into `out`, without input validation (for the losses). Throws if the
 * result overflows (only possible for log-probs near ±1e308), instead of returning ±Infinity.
 *
 * @throws {RangeError} β·(log π − log μ) is not finite.
 */
export function implicitRewardRow(
  policy: readonly number[],
  reference: readonly number[],
  beta: number,
  row: number,
  out: number[] = new Array<number>(policy.length),
): number[] {
  for (let j = 0; j < policy.length; j++) {
    const z = beta * (policy[j] - reference[j]);
    if (!Number.isFinite(z)) {
      throw new RangeError(
        `implicit reward beta*(policy - reference) overflows at row ${row}, column ${j} ` +
          `(policy ${policy[j]}, reference ${reference[j]}, beta ${beta})`,
      );
    }
    out[j] = z;
  }
  return out;
}

/**
 * r_θ = β·(log π − log μ) for every prompt and response: the policy's implicit reward relative to
 * the frozen reference, as in DPO and NCA.
 *
 * @param policy `[batch][K]` summed response log-probs under the policy.
 * @param reference `[batch][K]` the same under the reference model.
 * @param beta β > 0.
 * @throws {TypeError} ragged or mismatched shapes, non-finite entries. @throws {RangeError} β ≤ 0 or non-finite.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.deepEqual(implicitRewards([[-10, -12]], [[-11, -11]], 0.5), [[0.5, -0.5]]);
 * ```
 */
export function implicitRewards(policy: number[][], reference: number[][], beta: number): number[][] {
  const shape = checkMatrix("implicitRewards", "policy", policy);
  checkMatrix("implicitRewards", "reference", reference, shape);
  checkBeta("implicitRewards", beta);
  return policy.map((p, b) => implicitRewardRow(p, reference[b], beta, b));
}
