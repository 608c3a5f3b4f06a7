/**
 * Training metrics under the names users know from TRL (`rewards/chosen`, `rewards/margins`, …) and
 * the reference NCA repository (`rewards/A0..`, `logps/A0..`), so logs are comparable with theirs —
 * e.g. the paper's observation that NCA keeps `rewards/chosen` ≥ 0 while DPO/InfoNCA drive it down.
 *
 * @module
 */

import type { LossInput, LossOptions } from "./types.ts";
import { checkLossInput, checkOptions } from "./validate.ts";
import { implicitRewardRow } from "./implicit_rewards.ts";

/**
 * Indices of one row sorted by reward, best first; ties keep the column order (stable sort), so the
 * earlier column wins a tie.
 */
export function rankByReward(rewards: readonly number[]): number[] {
  const idx = rewards.map((_, i) => i);
  return idx.sort((a, b) => rewards[b] - rewards[a] || a - b);
}

/**
 * Batch metrics with TRL's names; every value is a mean over the prompts of the batch.
 *
 * - `rewards/chosen`, `logps/chosen`: implicit reward β·(log π − log μ) and policy log-prob (a
 *   per-sequence sum, as given) of the chosen response.
 * - `rewards/rejected`, `logps/rejected`: the same for the rejected response; with K > 2, the mean
 *   over the K − 1 non-chosen responses of each prompt.
 * - `rewards/margins`: chosen minus rejected implicit reward.
 * - `rewards/accuracies`: fraction of prompts whose chosen implicit reward is strictly greater than
 *   every other response's.
 *
 * Convention: **with rewards**, "chosen" is the best-reward response of each prompt (ties: the
 * earlier column) and "rejected" is the mean over the other K − 1; `rewards/A0..rewards/A{K−1}` and
 * `logps/A0..logps/A{K−1}` are added for the responses sorted by reward descending (A0 = best), as the
 * reference NCA code logs them. **Without rewards** (preference data) K must be 2: column 0 is chosen
 * and column 1 rejected. α is not used; β must be valid.
 *
 * @throws {TypeError} malformed input, or K ≠ 2 without rewards.
 * @throws {RangeError} β, K or batch out of range, or β·(log π − log μ) overflows (log-probs near ±1e308).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.deepEqual(batchMetrics({ policy: [[-10, -12]], reference: [[-11, -11]] }, { beta: 0.5 }), {
 *   "rewards/chosen": 0.5, "rewards/rejected": -0.5, "rewards/margins": 1, "rewards/accuracies": 1,
 *   "logps/chosen": -10, "logps/rejected": -12,
 * });
 * ```
 */
export function batchMetrics(x: LossInput, o: LossOptions): Record<string, number> {
  const fn = "batchMetrics";
  const { batch, k } = checkLossInput(x, { fn, needsRewards: false, pairwise: false });
  const { beta } = checkOptions(fn, o);
  const rewards = x.rewards;
  if (rewards === undefined && k !== 2) {
    throw new TypeError(
      `${fn}: without rewards the data is a preference pair and K must be 2 (column 0 = chosen), got K = ${k}; ` +
        `pass rewards to rank K responses`,
    );
  }
  const z = new Array<number>(k);
  const rankedReward = new Array<number>(k).fill(0);
  const rankedLogp = new Array<number>(k).fill(0);
  let chosenR = 0, rejectedR = 0, chosenL = 0, rejectedL = 0, correct = 0;
  const identity = [0, 1];
  for (let b = 0; b < batch; b++) {
    const lp = x.policy[b];
    implicitRewardRow(lp, x.reference[b], beta, b, z);
    const order = rewards === undefined ? identity : rankByReward(rewards[b]);
    const c = order[0];
    let otherR = 0, otherL = 0, wins = true;
    for (let r = 0; r < k; r++) {
      const j = order[r];
      rankedReward[r] += z[j];
      rankedLogp[r] += lp[j];
      if (r > 0) {
        otherR += z[j];
        otherL += lp[j];
        if (!(z[c] > z[j])) wins = false;
      }
    }
    chosenR += z[c];
    chosenL += lp[c];
    rejectedR += otherR / (k - 1);
    rejectedL += otherL / (k - 1);
    if (wins) correct++;
  }
  const out: Record<string, number> = {
    "rewards/chosen": chosenR / batch,
    "rewards/rejected": rejectedR / batch,
    "rewards/margins": (chosenR - rejectedR) / batch,
    "rewards/accuracies": correct / batch,
    "logps/chosen": chosenL / batch,
    "logps/rejected": rejectedL / batch,
  };
  if (rewards !== undefined) {
    for (let r = 0; r < k; r++) out[`rewards/A${r}`] = rankedReward[r] / batch;
    for (let r = 0; r < k; r++) out[`logps/A${r}`] = rankedLogp[r] / batch;
  }
  return out;
}
