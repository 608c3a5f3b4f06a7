/**
 * The alignment losses as graph fragments, for the training graph: the same formulas as the TypeScript
 * references in lib/losses (which tests compare them with), over per-sequence log-prob sums computed in
 * the graph. Responses come sorted by reward, best first (column 0 = chosen; {@link rankByReward} order),
 * and reward losses take the soft labels softmax(r/α) computed exactly in TypeScript ({@link softLabels}).
 * @module
 */
import type { Value } from "../graph/builder.ts";
import * as op from "../graph/ops.ts";
import type { LossName } from "../losses/types.ts";

/** The losses a training graph can optimize: the alignment losses and supervised fine-tuning. */
export type TrainLossName = LossName | "sft";

/** Inputs of a graph loss, all [prompts, K] float32 (SFT: K = 1). */
export type GraphLossInput = {
  /** Summed response log-probs under the policy (a function of the trainable parameters). */
  policy: Value;
  /** The same under the reference model (fed: precomputed once). */
  reference?: Value;
  /** Soft labels softmax(r/α) for reward losses. */
  labels?: Value;
  /** Response token counts (SFT averages over tokens). */
  tokens?: Value;
};

/** A loss and the TRL-named metrics of the batch, as scalar values. */
export type GraphLossOutput = { loss: Value; metrics: Record<string, Value> };

/**
 * softplus(z) = log(1 + e^z), finite for any z: ONNX Runtime's float64 Softplus overflows past z ≈ 709, so
 * large arguments take the identity (softplus(z) − z < 1e-13 for z > 30).
 */
export function stableSoftplus(z: Value): Value {
  return op.where(op.greater(z, 30), z, op.softplus(op.min(z, 30)));
}

/** log σ(z) = −softplus(−z), stable for any z. */
function logSigmoid(z: Value): Value {
  return op.neg(stableSoftplus(op.neg(z)));
}

/** Loss settings: β, the number of responses K, and whether they come ranked by rewards (A0.. metrics). */
export type GraphLossOptions = { beta: number; k: number; ranked?: boolean };

/** Builds the loss `name` over K responses. */
export function graphLoss(name: TrainLossName, x: GraphLossInput, o: GraphLossOptions): GraphLossOutput {
  const { beta, k } = o;
  if (name === "sft") {
    if (!x.tokens) throw new TypeError("the sft loss needs token counts");
    const loss = op.neg(op.div(op.sumAll(x.policy), op.sumAll(x.tokens)));
    return { loss, metrics: { "logps/chosen": op.meanAll(x.policy) } };
  }
  if (!x.reference) throw new TypeError(`the ${name} loss needs reference log-probs`);
  if (beta <= 0) throw new RangeError(`beta must be > 0, got ${beta}`);
  if (k < 2) throw new RangeError(`the ${name} loss needs K ≥ 2 responses, got ${k}`);
  const r = op.mul(op.sub(x.policy, x.reference), beta); // implicit rewards [P, K]
  const col = (v: Value, i: number) => op.squeeze(op.slice(v, [i], [i + 1], [1]), [1]);
  let perPrompt: Value;
  switch (name) {
    case "infonca": {
      if (!x.labels) throw new TypeError("the infonca loss needs soft labels");
      perPrompt = op.neg(op.reduceSum(op.mul(x.labels, op.logSoftmax(r, 1)), [1]));
      break;
    }
    case "nca": {
      if (!x.labels) throw new TypeError("the nca loss needs soft labels");
      const pos = op.reduceSum(op.mul(x.labels, logSigmoid(r)), [1]);
      const neg = op.reduceSum(logSigmoid(op.neg(r)), [1]);
      perPrompt = op.neg(op.add(pos, op.mul(neg, 1 / k)));
      break;
    }
    case "dpo":
      pairOnly(name, k);
      perPrompt = stableSoftplus(op.neg(op.sub(col(r, 0), col(r, 1))));
      break;
    case "nca_pair": {
      pairOnly(name, k);
      const w = col(r, 0), l = col(r, 1);
      perPrompt = op.add(
        stableSoftplus(op.neg(w)),
        op.mul(op.add(stableSoftplus(w), stableSoftplus(l)), 0.5),
      );
      break;
    }
    case "ipo": {
      pairOnly(name, k);
      const h = op.sub(
        op.sub(col(x.policy, 0), col(x.policy, 1)),
        op.sub(col(x.reference, 0), col(x.reference, 1)),
      );
      const d = op.sub(h, 1 / (2 * beta));
      perPrompt = op.mul(d, d);
      break;
    }
  }
  return { loss: op.meanAll(perPrompt), metrics: rewardMetrics(r, x.policy, k, o.ranked ?? false) };
}

function pairOnly(name: string, k: number) {
  if (k !== 2) throw new RangeError(`the ${name} loss takes pairs (K = 2), got K = ${k}`);
}

/**
 * TRL's metrics over responses sorted best first: chosen = column 0, rejected = mean of the others,
 * accuracy = chosen strictly above every other; A0.. per rank for ranked (reward) data, as the reference
 * repository logs.
 */
function rewardMetrics(r: Value, logps: Value, k: number, ranked: boolean): Record<string, Value> {
  const chosenR = op.slice(r, [0], [1], [1]), restR = op.slice(r, [1], [k], [1]);
  const chosenL = op.slice(logps, [0], [1], [1]), restL = op.slice(logps, [1], [k], [1]);
  const rejectedR = op.reduceMean(restR, [1], true), rejectedL = op.reduceMean(restL, [1], true);
  const wins = op.cast(op.greater(chosenR, op.reduceMax(restR, [1], true)), r.dtype);
  const m: Record<string, Value> = {
    "rewards/chosen": op.meanAll(chosenR),
    "rewards/rejected": op.meanAll(rejectedR),
    "rewards/margins": op.meanAll(op.sub(chosenR, rejectedR)),
    "rewards/accuracies": op.meanAll(wins),
    "logps/chosen": op.meanAll(chosenL),
    "logps/rejected": op.meanAll(rejectedL),
  };
  if (ranked) {
    const rm = op.reduceMean(r, [0]), lm = op.reduceMean(logps, [0]);
    for (let i = 0; i < k; i++) {
      m[`rewards/A${i}`] = op.squeeze(op.slice(rm, [i], [i + 1], [0]), [0]);
      m[`logps/A${i}`] = op.squeeze(op.slice(lm, [i], [i + 1], [0]), [0]);
    }
  }
  return m;
}
