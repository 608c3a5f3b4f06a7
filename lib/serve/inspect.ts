/**
 * The inspection view of K candidate responses to one prompt, from their summed log-probs under the policy
 * π_θ and the reference μ: the implicit rewards r_θ = β·(log π − log μ), and how each objective of the paper
 * sees the set — soft labels p = softmax(r/α) from the explicit rewards; InfoNCA's model distribution
 * softmax(r_θ) (relative: which candidate is best); NCA's σ(r_θ) (absolute: is each candidate "data" rather
 * than "noise"); DPO's σ(r_θ,w − r_θ,l) for a pair — with each loss's value computed by the exact
 * references in lib/losses, so the numbers are the ones the trainer minimizes.
 * @module
 */
import { dpoLoss } from "../losses/dpo.ts";
import { infoNcaLoss } from "../losses/infonca.ts";
import { ncaLoss } from "../losses/nca.ts";
import { softLabelRow } from "../losses/soft_labels.ts";
import { sigmoid, softmax } from "../losses/stable.ts";

/** InfoNCA's or NCA's view of the candidates. */
export type ObjectiveView = {
  /** InfoNCA: softmax(r_θ) over the candidates; NCA: σ(r_θ,i) for each on its own. */
  probabilities: number[];
  /** The loss for this prompt (needs rewards and K ≥ 2), else null. */
  loss: number | null;
  /** The candidate the model ranks first under this objective. */
  preferred: number;
};

/** DPO's view of one pair. */
export type DpoView = {
  chosen: number;
  rejected: number;
  /** σ(r_θ,chosen − r_θ,rejected): the model's probability that the chosen one wins. */
  probability: number;
  loss: number;
  preferred: number;
};

/** How the objectives see the candidate set. */
export type ObjectivesView = {
  /** softmax(rewards / α), when rewards were given. */
  soft_labels: number[] | null;
  /** The candidate the rewards rank first, when given. */
  reward_preferred: number | null;
  implicit_rewards: number[];
  infonca: ObjectiveView;
  nca: ObjectiveView;
  /**
   * DPO on a pair: with K = 2 the two candidates (chosen = the higher reward, or candidate 0 without
   * rewards); with K > 2 and rewards, the best against the worst; otherwise null.
   */
  dpo: DpoView | null;
};

function argmax(xs: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
}

function argmin(xs: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] < xs[best]) best = i;
  return best;
}

/** The view of one prompt's candidates (see the module documentation). */
export function objectivesView(
  policy: readonly number[],
  reference: readonly number[],
  o: { beta: number; alpha: number; rewards?: readonly number[] },
): ObjectivesView {
  const k = policy.length;
  if (reference.length !== k) throw new RangeError(`${k} policy and ${reference.length} reference log-probs`);
  if (o.rewards && o.rewards.length !== k) {
    throw new RangeError(`${o.rewards.length} rewards for ${k} candidates`);
  }
  const z = policy.map((p, i) => o.beta * (p - reference[i]));
  const input = {
    policy: [[...policy]],
    reference: [[...reference]],
    ...(o.rewards ? { rewards: [[...o.rewards]] } : {}),
  };
  const withLoss = o.rewards !== undefined && k >= 2;
  const infoProbs = softmax(z);
  const ncaProbs = z.map(sigmoid);

  let dpo: DpoView | null = null;
  let pair: [number, number] | null = null;
  if (k === 2) pair = o.rewards && o.rewards[1] > o.rewards[0] ? [1, 0] : [0, 1];
  else if (k > 2 && o.rewards) {
    const w = argmax(o.rewards), l = argmin(o.rewards);
    if (w !== l) pair = [w, l];
  }
  if (pair) {
    const [w, l] = pair;
    dpo = {
      chosen: w,
      rejected: l,
      probability: sigmoid(z[w] - z[l]),
      loss: dpoLoss({ policy: [[policy[w], policy[l]]], reference: [[reference[w], reference[l]]] }, {
        beta: o.beta,
      }).loss,
      preferred: z[w] >= z[l] ? w : l,
    };
  }

  return {
    soft_labels: o.rewards ? softLabelRow(o.rewards, o.alpha) : null,
    reward_preferred: o.rewards ? argmax(o.rewards) : null,
    implicit_rewards: z,
    infonca: {
      probabilities: infoProbs,
      loss: withLoss ? infoNcaLoss(input, { beta: o.beta, alpha: o.alpha }).loss : null,
      preferred: argmax(infoProbs),
    },
    nca: {
      probabilities: ncaProbs,
      loss: withLoss ? ncaLoss(input, { beta: o.beta, alpha: o.alpha }).loss : null,
      preferred: argmax(ncaProbs),
    },
    dpo,
  };
}
