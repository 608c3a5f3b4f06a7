/**
 * Which examples go into which batch: grouped by length so sequences padded together are of
 * similar length (less padding, less wasted compute), deterministic for a seed.
 *
 * @module
 */

import { mulberry32, shuffleInPlace } from "./random.ts";

/** Options for {@link batchIndices}. */
export type SamplerOptions = {
  /** Seed for every random choice (default 0). */
  seed?: number;
  /** Shuffle examples and batch order (default true). */
  shuffle?: boolean;
  /** Put examples of similar length together (default true). */
  groupByLength?: boolean;
  /**
   * Examples sorted together, as a multiple of the batch size (default 50, as Hugging Face's
   * LengthGroupedSampler): large enough to find similar lengths, small enough to stay random.
   */
  megabatchMultiplier?: number;
  /** Drop the last batch when it is smaller than `batchSize` (default false). */
  dropLast?: boolean;
};

/**
 * Split example indices `0..lengths.length-1` into batches of `batchSize` (the last may be
 * smaller). With `groupByLength`, the (shuffled) order is cut into windows of
 * `batchSize × megabatchMultiplier`, each window sorted by length (longest first) and cut into
 * batches; with `shuffle`, the batch order is then shuffled too. Every index appears exactly once
 * (unless `dropLast` drops a partial batch), and the same seed gives the same batches.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { makeBatch } from "./batch.ts";
 * import { sequenceLengths } from "./tokenize.ts";
 * const lengths = [1, 9, 2, 8, 3, 7];
 * const tokenized = lengths.map((n) => ({ promptIds: [5], responseIds: [Array(n).fill(6), [1]] }));
 * for (let epoch = 0; epoch < 2; epoch++) {
 *   const batches = batchIndices(sequenceLengths(tokenized), 2, { seed: epoch }); // another order each epoch
 *   assert.deepEqual(batches.flat().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5]); // each example once
 *   for (const b of batches) makeBatch(b.map((i) => tokenized[i]), { padId: 0 });
 * }
 * ```
 */
export function batchIndices(
  lengths: ArrayLike<number>,
  batchSize: number,
  opts: SamplerOptions = {},
): number[][] {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  }
  const shuffle = opts.shuffle ?? true;
  const group = opts.groupByLength ?? true;
  const rng = mulberry32(opts.seed ?? 0);
  const order = Array.from({ length: lengths.length }, (_, i) => i);
  if (shuffle) shuffleInPlace(order, rng);
  if (group) {
    const window = batchSize * (opts.megabatchMultiplier ?? 50);
    for (let start = 0; start < order.length; start += window) {
      const part = order.slice(start, start + window).sort((a, b) => lengths[b] - lengths[a] || a - b);
      order.splice(start, part.length, ...part);
    }
  }
  const batches: number[][] = [];
  for (let start = 0; start < order.length; start += batchSize) {
    batches.push(order.slice(start, start + batchSize));
  }
  if (opts.dropLast && batches.length > 0 && batches[batches.length - 1].length < batchSize) batches.pop();
  if (shuffle && group) shuffleInPlace(batches, rng);
  return batches;
}
