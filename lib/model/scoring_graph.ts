/**
 * The scoring graph: per-sequence log-probs of given token ids under a model — the reference model's
 * before training, the policy's for evaluation and `/v1/logprobs`, a judge of samples for `eval`'s KL.
 * It lives with the model (not the trainer) because every use opens it the same way
 * (lib/model/open.ts' `openScorer`); the training graph's scoring mode computes the same outputs from a
 * training session's own parameters.
 *
 * Precision `fp16` builds the decoder in float16 (mixed precision, see decoder.ts); the scoring graphs of an
 * fp16 run must be fp16 too, so that the reference log-probs are the policy's at step 0. Log-probs stay
 * float32.
 * @module
 */
import { GraphBuilder, type Value } from "../graph/builder.ts";
import type { ModelConfig } from "./config.ts";
import { policyLogProbs, referenceLogProbs, type Trainable } from "./decoder.ts";
import type { FloatDType, WeightSource } from "./weights.ts";

/** The `--precision` of a run. */
export type Precision = "fp32" | "fp16";

/** The decoder's compute dtype for a precision. */
export function computeDtype(precision: Precision = "fp32"): FloatDType {
  return precision === "fp16" ? "float16" : "float32";
}

/** The scoring graph's inputs, each `int32 [rows, width]` (a training batch uses the same names). */
export const SCORING_INPUTS = {
  inputIds: "input_ids",
  attentionMask: "attention_mask",
  labels: "labels",
} as const;

/** The scoring graph's outputs: `logps` and `counts` `[rows]`, `token_logps` `[rows, width − 1]`. */
export const SCORING_OUTPUTS = ["logps", "counts", "token_logps"] as const;

/**
 * A graph that scores sequences: inputs {@link SCORING_INPUTS} (and the trainable parameters by name when
 * `trainable` is given: the current policy); outputs `logps` (per-sequence sums) and `counts` `[rows]`,
 * and `token_logps` `[rows, width − 1]`, all float32. Without `trainable` it is the reference model: the
 * frozen weights with no adapters. `precision` must be the training graph's. `chunk`: rows per block of the
 * LM head and log-softmax (0 or absent: all at once).
 */
export function buildScoringGraph(
  cfg: ModelConfig,
  frozen: WeightSource,
  trainable?: Trainable,
  opts: { precision?: Precision; chunk?: number } = {},
): GraphBuilder {
  const g = new GraphBuilder(trainable ? "policy-logps" : "reference-logps");
  const dtype = computeDtype(opts.precision);
  const batch = {
    inputIds: g.input(SCORING_INPUTS.inputIds, "int32", ["rows", "width"]),
    attentionMask: g.input(SCORING_INPUTS.attentionMask, "int32", ["rows", "width"]),
    labels: g.input(SCORING_INPUTS.labels, "int32", ["rows", "width"]),
  };
  let lp;
  if (trainable) {
    const params: Record<string, Value> = {};
    for (const p of trainable.params) params[p.name] = g.input(p.name, "float32", p.shape);
    lp = policyLogProbs(g, cfg, trainable, params, frozen, batch, { train: false, dtype, chunk: opts.chunk });
  } else lp = referenceLogProbs(g, cfg, frozen, batch, { dtype, chunk: opts.chunk });
  g.output(lp.sums, "logps");
  g.output(lp.counts, "counts");
  g.output(lp.tokenLogps, "token_logps");
  return g;
}
