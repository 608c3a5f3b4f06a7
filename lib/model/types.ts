/**
 * The types the decoder and the model families share, so that neither imports the other: what a family's
 * forward pass receives from the decoder and what it gives back.
 * @module
 */
import type { Value } from "../graph/builder.ts";

/** A cached (or returned) key/value pair of one layer, each `[batch, numKvHeads, len, headDim]`. */
export type KvPair = { key: Value; value: Value };

/** What a family's forward pass receives from the decoder: prepared ids, positions and bias. */
export type FamilyInputs = {
  /** `[B, T]` int64. */
  ids: Value;
  /** `[B, T]` int64. */
  positions: Value;
  /** `[B, 1, 1, T, S]` additive attention bias. */
  bias: Value;
  past?: KvPair[];
};

/**
 * What a family's forward pass gives back: the final normalized hidden rows `[B·T, D]`, the name of the
 * LM head's weight (the embedding when tied), and each layer's keys and values. The decoder applies the
 * head: whole for logits, or in blocks of rows for log-probs (see logprobs.ts).
 */
export type FamilyOutputs = { hidden: Value; head: string; present: KvPair[] };
