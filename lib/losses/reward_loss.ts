/**
 * The frame shared by the losses written in implicit rewards z = β·(log π − log μ) (InfoNCA, NCA, DPO,
 * NCA-pair): validate the input, compute each prompt's z (and its soft labels when the loss uses rewards),
 * average the per-prompt losses, and turn each prompt's dL/dz into the gradient with respect to log π.
 *
 * @module
 */

import type { LossInput, LossOptions, LossResult } from "./types.ts";
import { checkLossInput, checkOptions } from "./validate.ts";
import { implicitRewardRow } from "./implicit_rewards.ts";
import { softLabelRow } from "./soft_labels.ts";

/**
 * One prompt's loss and its derivative in each z_i. `labels` is softmax(r / α) for reward losses, and
 * null for pairwise ones (column 0 chosen, column 1 rejected). `z` is reused between prompts: read it,
 * do not keep it.
 */
export type PromptLoss = (z: readonly number[], labels: readonly number[] | null) => {
  loss: number;
  dz: number[];
};

/**
 * The mean over prompts of `prompt`'s loss, with the gradient `dL/d log π = β · dz / batch` (z is linear in
 * log π with slope β). `data`: "rewards" needs rewards and any K ≥ 2; "pairs" needs K = 2 and uses no
 * rewards.
 *
 * @throws {TypeError} malformed input. @throws {RangeError} options out of range, or z overflows.
 */
export function meanPromptLoss(
  fn: string,
  x: LossInput,
  o: LossOptions,
  data: "rewards" | "pairs",
  prompt: PromptLoss,
): LossResult {
  const rewardsUsed = data === "rewards";
  const { batch, k } = checkLossInput(x, { fn, needsRewards: rewardsUsed, pairwise: !rewardsUsed });
  const { beta, alpha } = checkOptions(fn, o);
  const scale = beta / batch;
  const z = new Array<number>(k);
  const grad = new Array<number[]>(batch);
  let total = 0;
  for (let b = 0; b < batch; b++) {
    implicitRewardRow(x.policy[b], x.reference[b], beta, b, z);
    const { loss, dz } = prompt(z, rewardsUsed ? softLabelRow((x.rewards as number[][])[b], alpha) : null);
    total += loss;
    for (let i = 0; i < k; i++) dz[i] *= scale;
    grad[b] = dz;
  }
  return { loss: total / batch, grad };
}
