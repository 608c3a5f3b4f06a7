/**
 * The types the decoder and the model families share, so that neither imports the other: what a family's
 * forward pass receives from the decoder and what it gives back, and how a family lists its tensors.
 * @module
 */
import type { Value } from "../graph/builder.ts";

/** A cached (or returned) key/value pair of one layer, each `[batch, numKvHeads, len, headDim]`. */
export type KvPair = { key: Value; value: Value };

/** A tensor's name and shape (HF layout). */
export interface TensorSpec {
  name: string;
  shape: number[];
}

/** What a family's forward pass receives from the decoder: prepared ids, positions and bias. */
export type FamilyInputs = {
  /** `[B, T]` int64. */
  ids: Value;
  /** `[B, T]` int64. */
  positions: Value;
  /**
   * The `[B, 1, 1, T, S]` additive attention bias for a layer's window (null: full causal attention);
   * built once per window and shared by the layers that use it.
   */
  bias: (window: number | null) => Value;
  past?: KvPair[];
};

/**
 * What a family's forward pass gives back: the final normalized hidden rows `[B·T, D]`, the name of the
 * LM head's weight (the embedding when tied), each layer's keys and values, and the soft cap of the
 * logits (Gemma 2), if any. The decoder applies the head: whole for logits, or in blocks of rows for
 * log-probs (see logprobs.ts).
 */
export type FamilyOutputs = { hidden: Value; head: string; present: KvPair[]; logitSoftcap?: number | null };
