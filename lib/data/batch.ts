/**
 * Batches of P prompts × K responses as padded token matrices: the layout every loss consumes
 * (row p·K + k holds prompt p followed by its response k).
 *
 * @module
 */

import type { TokenizedExample } from "./tokenize.ts";

/** The label value that marks a position as not scored (PyTorch/HF convention). */
export const IGNORE_INDEX = -100;

/**
 * P·K sequences of one width T, row-major `[P*K, T]`. `labels` follow the Hugging Face convention:
 * unshifted (label at position t is the token at t; the model shifts), the response tokens
 * (EOS included) labelled, prompt and padding −100.
 */
export type SequenceBatch = {
  prompts: number;
  k: number;
  width: number;
  inputIds: Int32Array;
  attentionMask: Int32Array;
  labels: Int32Array;
  /** Reward data only: `[P*K]`, row p·K + k. */
  rewards?: Float32Array;
  /** Real (non-padding) tokens in the batch. */
  tokens: number;
};

/** Options for {@link makeBatch}. */
export type BatchOptions = {
  padId: number;
  /** `right` for training (default); `left` puts every sequence's end at the last column (generation). */
  padSide?: "right" | "left";
  /** Round the width up to a multiple of this (e.g. 8, for tensor-core friendly shapes). */
  padToMultipleOf?: number;
  /** At least this width: batches stacked into one training chunk share the chunk's widest. */
  minWidth?: number;
};

/**
 * Pad tokenized examples into one {@link SequenceBatch}. All examples must have the same K; the
 * width is the longest prompt + response in the batch (rounded up with `padToMultipleOf`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * // as tokenizeExamples makes them: 2 prompts × K = 2 responses, each ending with EOS (1)
 * const tokenized = [
 *   { promptIds: [5, 6, 7], responseIds: [[8, 1], [9, 9, 1]], rewards: [1, 0] },
 *   { promptIds: [5], responseIds: [[8, 8, 8, 1], [1]], rewards: [0.2, 0.7] },
 * ];
 * const batch = makeBatch(tokenized, { padId: 0, padToMultipleOf: 8 });
 * assert.equal(batch.width, 8); // the longest prompt + response (6), rounded up to a multiple of 8
 * assert.equal(batch.inputIds.length, batch.prompts * batch.k * batch.width); // [P·K, T]
 * ```
 */
export function makeBatch(examples: TokenizedExample[], opts: BatchOptions): SequenceBatch {
  if (examples.length === 0) throw new RangeError("cannot make a batch of no examples");
  const k = examples[0].responseIds.length;
  if (k === 0) throw new RangeError("example 0 has no responses");
  const withRewards = examples[0].rewards !== undefined;
  examples.forEach((ex, p) => {
    if (ex.responseIds.length !== k) {
      throw new RangeError(
        `every example in a batch needs the same K: example 0 has ${k}, example ${p} has ${ex.responseIds.length}`,
      );
    }
    if ((ex.rewards !== undefined) !== withRewards) {
      throw new RangeError(`example ${p} ${withRewards ? "lacks" : "has"} rewards, example 0 does not`);
    }
    if (ex.rewards !== undefined && ex.rewards.length !== k) {
      throw new RangeError(`example ${p} has ${ex.rewards.length} rewards for ${k} responses`);
    }
  });
  const left = (opts.padSide ?? "right") === "left";
  if (opts.padSide !== undefined && opts.padSide !== "left" && opts.padSide !== "right") {
    throw new RangeError(`padSide must be "left" or "right", got ${opts.padSide}`);
  }
  let longest = 0;
  for (const ex of examples) {
    for (const r of ex.responseIds) longest = Math.max(longest, ex.promptIds.length + r.length);
  }
  const multiple = opts.padToMultipleOf ?? 1;
  if (!Number.isInteger(multiple) || multiple < 1) {
    throw new RangeError(`padToMultipleOf must be a positive integer, got ${multiple}`);
  }
  const width = Math.ceil(Math.max(longest, opts.minWidth ?? 0) / multiple) * multiple;

  const rows = examples.length * k;
  const inputIds = new Int32Array(rows * width).fill(opts.padId);
  const attentionMask = new Int32Array(rows * width);
  const labels = new Int32Array(rows * width).fill(IGNORE_INDEX);
  const rewards = withRewards ? new Float32Array(rows) : undefined;
  let tokens = 0;
  examples.forEach((ex, p) => {
    ex.responseIds.forEach((response, j) => {
      const row = p * k + j;
      const length = ex.promptIds.length + response.length;
      let at = row * width + (left ? width - length : 0);
      for (const id of ex.promptIds) {
        inputIds[at] = id;
        attentionMask[at++] = 1;
      }
      for (const id of response) {
        inputIds[at] = id;
        labels[at] = id;
        attentionMask[at++] = 1;
      }
      tokens += length;
      if (rewards) rewards[row] = ex.rewards![j];
    });
  });
  return { prompts: examples.length, k, width, inputIds, attentionMask, labels, rewards, tokens };
}
