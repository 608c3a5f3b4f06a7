/**
 * Losses of "Noise Contrastive Alignment of Language Models with Explicit Rewards" (InfoNCA, NCA)
 * and the pairwise baselines (DPO, NCA-pair, IPO), each with its exact analytic gradient with
 * respect to the policy log-probs, plus soft labels, implicit rewards and TRL-named metrics.
 * Inputs are `[batch][K]` matrices of summed response log-probs; all functions are pure and validate
 * their inputs.
 *
 * @example
 * ```ts
 * import { batchMetrics, lossByName } from "./mod.ts";
 * const x = { policy: [[-10, -12, -15, -9]], reference: [[-11, -11, -14, -9]], rewards: [[8, 6, 3, 5]] };
 * const { loss, grad } = lossByName.nca(x, { beta: 0.01, alpha: 1 });
 * const metrics = batchMetrics(x, { beta: 0.01 });
 * ```
 *
 * @module
 */

export type { LossFn, LossInput, LossName, LossOptions, LossResult } from "./types.ts";
export { infoNcaLoss } from "./infonca.ts";
export { ncaLoss } from "./nca.ts";
export { dpoLoss } from "./dpo.ts";
export { ncaPairLoss } from "./nca_pair.ts";
export { ipoLoss } from "./ipo.ts";
export { softLabels } from "./soft_labels.ts";
export { implicitRewards } from "./implicit_rewards.ts";
export { batchMetrics } from "./metrics.ts";
export { isLossName, lossByName, lossNames, needsRewards } from "./registry.ts";
export { logSigmoid, logSoftmax, logSumExp, sigmoid, softmax, softplus } from "./stable.ts";
