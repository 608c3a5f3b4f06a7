/**
 * The types the decoder and the model families share, so that neither imports the other: what a family's
 * forward pass receives from the decoder and what it gives back, how a family lists its tensors, and the
 * {@link FamilyModule} each family file exports (registry.ts lists them).
 * @module
 */
import type { Value } from "../graph/builder.ts";
import type { Ctx } from "./layers.ts";
import type { BaseModelConfig, FieldReader, LayerRope, SizeKeys } from "./families/common.ts";

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

/**
 * Everything the rest of lib/model needs from a family, exported by its file (families/*.ts) and looked up
 * through registry.ts: reading and checking its configs, writing them back, its tensors, its forward pass,
 * and how its checkpoints and PEFT adapters name and lay out its modules.
 */
export type FamilyModule<C extends BaseModelConfig> = {
  /** The `model_type`s of the family, in the order error messages list them. */
  modelTypes: readonly C["modelType"][];
  /** Multimodal `model_type`s whose text model is one of `modelTypes` (a hint when they are given). */
  textParts?: Readonly<Record<string, C["modelType"]>>;
  /** Reads a `config.json` of one of `modelTypes`; sizes are bounded by CONFIG_LIMITS. */
  parse(r: FieldReader, modelType: C["modelType"]): C;
  /** The keys the sizes are read from (compared with the weights before the config is parsed). */
  sizeKeys: SizeKeys;
  /** The family's invariants past the shared ones (`validateModelConfig` calls it after those). */
  validate(cfg: C, fail: (msg: string) => never): void;
  /** The `config.json` object of a config; `tail` (token ids, dtype) goes where transformers writes it. */
  toJson(cfg: C, tail: Record<string, unknown>): Record<string, unknown>;
  /** Rotated dimensions of each head, or null for a family without rotary embeddings. */
  rotaryDim(cfg: C): number | null;
  /** The rope of layer `i`, or null for a family without rotary embeddings. */
  layerRope: ((cfg: C, i: number) => LayerRope) | null;
  /** Every parameter tensor of a checkpoint, in module order, HF names and shapes. */
  tensors(cfg: C): TensorSpec[];
  /** Embeddings and layers: the final normalized rows, the head's weight, the KV cache. */
  forward(ctx: Ctx, cfg: C, inputs: FamilyInputs): FamilyOutputs;
  /** The token embedding's canonical name (its shape is checked against the config before parsing). */
  embedding: string;
  /** What canonical tensor names of decoder layer N start with: `${layers}.N.`. */
  layers: string;
  /**
   * The prefix `…ForCausalLM` checkpoints may put before canonical names, and PEFT before module paths
   * (GPT-2's `transformer.`; "" for the others, whose canonical names carry their `model.`).
   */
  prefix: string;
  /** Linear weights are `[out, in]` (`linear`) or GPT-2's Conv1D `[in, out]` (PEFT's fan_in_fan_out). */
  layout: "linear" | "conv1d";
};
