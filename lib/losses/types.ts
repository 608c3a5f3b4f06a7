/**
 * Shared types of the loss functions: one place so that trainers, metrics and tests agree on the
 * shapes. Every matrix is `[batch][K]`: one row per prompt, one column per response.
 *
 * @module
 */

/**
 * Inputs to every loss: per-sequence log-likelihoods (sums over the response tokens, EOS included)
 * under the trained policy π_θ and the frozen reference μ, and, for reward data, one scalar reward per
 * response. All three matrices share the shape `[batch][K]`.
 */
export type LossInput = {
  /** log π_θ(y_k | x_b): summed response log-probabilities under the policy. */
  policy: number[][];
  /** log μ(y_k | x_b): the same under the frozen reference (SFT) model. */
  reference: number[][];
  /** r(x_b, y_k): explicit rewards (e.g. UltraFeedback `overall_score`); required by InfoNCA and NCA. */
  rewards?: number[][];
};

/** Hyperparameters shared by the losses. */
export type LossOptions = {
  /** β > 0: scale of the implicit reward r_θ = β·(log π_θ − log μ). */
  beta: number;
  /**
   * α ≥ 0: reward temperature of the soft label p = softmax(r / α); defaults to 1. α = 0 is the
   * one-hot label on the best response (ties shared). Ignored by the pairwise losses.
   */
  alpha?: number;
};

/** What every loss returns: the batch-mean loss and its exact analytic gradient. */
export type LossResult = {
  /** Mean over prompts of the per-prompt loss. */
  loss: number;
  /** dLoss/d policy, shape `[batch][K]`; includes the 1/batch factor of the mean. */
  grad: number[][];
};

/** Names of the implemented losses, as used in configs and on the command line. */
export type LossName = "infonca" | "nca" | "dpo" | "nca_pair" | "ipo";

/** Signature shared by all losses, so a trainer can swap them by name. */
export type LossFn = (x: LossInput, o: LossOptions) => LossResult;
