/**
 * Per-token and per-sequence log-probabilities of label tokens: what every alignment loss consumes
 * (log π(y|x) = the SUM over response tokens, prompt and padding masked with label −100).
 * @module
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import { chunkedRows } from "../graph/chunked.ts";
import * as op from "../graph/ops.ts";
import { softcap } from "./layers.ts";

/** The label value that is not scored (PyTorch's ignore_index). */
export const IGNORE_LABEL = -100;

/** Log-probs of a batch: per token `[N, T-1]` (0 where masked), per sequence sums and token counts `[N]`. */
export type SequenceLogProbs = { tokenLogps: Value; sums: Value; counts: Value };

/**
 * Log-probs of `labels` `[N, T]` (HF convention: unshifted, −100 = not scored) under `logits` `[N, T, V]`,
 * with HF's shift: logits at t score the label at t + 1.
 *
 * Computed as `LogSoftmax(logits)[label]`. LogSoftmax, not `logit[label] − ReduceLogSumExp(logits)`: ONNX
 * Runtime's CUDA ReduceLogSumExp over a 50k vocabulary took 12 ms for 4096 rows on an H200 (a quarter of a
 * GPT-2 training step) where its LogSoftmax kernel makes one pass; the log-softmax tensor takes the place
 * of the logits for the backward pass, so memory stays the same. The shift moves the (small) labels one
 * column left instead of slicing the (large) logits: the last column gets label −100, and the per-token
 * result is cut to T − 1 columns at the end.
 *
 * fp16 logits are cast to float32 first: the log-softmax, the sums and the counts are float32 (and so is
 * the backward pass down to the logits).
 */
export function sequenceLogProbs(logits: Value, labels: Value): SequenceLogProbs {
  if (logits.rank !== 3 || labels.rank !== 2) {
    throw new RangeError(
      `sequenceLogProbs: logits [N, T, V] and labels [N, T], got [${logits.shape}], [${labels.shape}]`,
    );
  }
  if (logits.dtype === "float16") logits = op.cast(logits, "float32");
  const t = shiftedTargets(labels);
  const logp = op.logSoftmax(logits, 2); // [N, T, V]
  const picked = op.squeeze(op.gatherElements(logp, op.unsqueeze(t.safe, [2]), 2), [2]); // [N, T]
  return summed(picked, t.scored);
}

/**
 * {@link sequenceLogProbs} from the final hidden rows `[N·T, D]` and the LM head weight `[V, D]` (HF
 * layout, in the compute dtype), the head applied in blocks of `chunk` rows (0: all at once). In blocks,
 * a block's logits, log-softmax and their gradients exist only while that block is computed, forward and
 * backward (lib/graph/chunked.ts), so a batch never holds `[N·T, V]` of them; the values are the same.
 * `cap` soft-caps the logits first (Gemma 2's final_logit_softcapping).
 */
export function headLogProbs(
  hidden: Value,
  w: Value,
  labels: Value,
  chunk: number,
  cap: number | null = null,
): SequenceLogProbs {
  if (hidden.rank !== 2 || w.rank !== 2 || labels.rank !== 2) {
    throw new RangeError(
      `headLogProbs: hidden [N·T, D], weight [V, D] and labels [N, T], got [${hidden.shape}], [${w.shape}], [${labels.shape}]`,
    );
  }
  const t = shiftedTargets(labels);
  const rows = op.reshape(t.safe, [-1]);
  const pick = (_g: GraphBuilder, x: Value, [targets]: Value[], [weight]: Value[]) =>
    pickTargets(x, targets, weight, cap);
  const picked = chunk > 0
    ? chunkedRows(hidden, [rows], [w], chunk, pick, "lm_head")
    : pick(hidden.g, hidden, [rows], [w]);
  return summed(op.reshape(picked, op.shapeOf(labels), labels.shape), t.scored);
}

/** log softmax(cap(rows · Wᵀ))[target] per row, in float32 (float64 in float64 graphs). */
function pickTargets(rows: Value, targets: Value, w: Value, cap: number | null): Value {
  let logits = op.gemm(rows, w, null, { transB: true });
  if (logits.dtype === "float16") logits = op.cast(logits, "float32");
  logits = softcap(logits, cap);
  const logp = op.logSoftmax(logits, 1);
  return op.squeeze(op.gatherElements(logp, op.unsqueeze(targets, [1]), 1), [1]);
}

/**
 * Targets for HF's shift (logits at t score the label at t + 1): the labels moved one column left with
 * −100 in the last column (the small labels move, not the large logits), whether each is scored, and
 * the targets with unscored ones set to 0 (a valid index).
 */
function shiftedTargets(labels: Value): { scored: Value; safe: Value } {
  const lab = op.cast(labels, "int64");
  const g = lab.g;
  const next = op.slice(lab, [1], [2 ** 53], [1]); // [N, T-1]
  const pad = op.expand(
    g.constant([IGNORE_LABEL], [1, 1], "int64"),
    op.concat([op.shapeOf(lab, 0, 1), g.ints([1])], 0),
    [lab.shape[0], 1],
  );
  const targets = op.concat([next, pad], 1); // [N, T]
  const scored = op.not(op.equal(targets, IGNORE_LABEL));
  return { scored, safe: op.where(scored, targets, 0) };
}

/** Token log-probs `[N, T]` (masked by `scored`) summed per sequence, with the token counts. */
function summed(picked: Value, scored: Value): SequenceLogProbs {
  const token = op.where(scored, picked, 0);
  return {
    tokenLogps: op.slice(token, [0], [-1], [1]),
    sums: op.reduceSum(token, [1]),
    counts: op.reduceSum(op.cast(scored, picked.dtype), [1]),
  };
}
