/**
 * What the family files share, apart from config.ts so that config.ts can dispatch to the families (through
 * registry.ts) while the families read their configs with the same reader: the config fields every family
 * has, the size limits, the `config.json` field reader, and the readers, checks and `config.json` fields
 * the rotary families (Llama, Gemma, Phi-3) have in common.
 * @module
 */
import { checkRopeScaling, ropeAttentionFactor, ropeInverseFrequencies, ropeScalingType } from "../rope.ts";

/**
 * MLP activation: SiLU (the SwiGLU gate of Llama, Phi-3) or the tanh approximation of GELU (GPT-2's
 * `gelu_new`, Gemma's `gelu_pytorch_tanh`: the same function).
 */
export type Activation = "silu" | "gelu_new";

/** Whether each attention projection has a bias (Qwen2 has them on q/k/v but not o). */
export interface AttentionBias {
  q: boolean;
  k: boolean;
  v: boolean;
  o: boolean;
}

/**
 * Fields every family has. Each family's config narrows `family` and `modelType` to its own literals
 * (config.ts' `Family` and `ModelType` are their unions).
 */
export interface BaseModelConfig {
  family: string;
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** Key/value heads (grouped-query attention); equals `numHeads` without GQA. */
  numKvHeads: number;
  /** Per-head dimension: `head_dim` when given, else hiddenSize / numHeads. */
  headDim: number;
  intermediateSize: number;
  maxPositions: number;
  attentionBias: AttentionBias;
  mlpBias: boolean;
  /** Whether the LM head reuses the token embedding (then `lm_head.weight` is absent from checkpoints). */
  tieWordEmbeddings: boolean;
  activation: Activation;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
  padTokenId: number | null;
  /** The dtype the weights were saved in (`torch_dtype`, or `dtype` in transformers v5), as written. */
  torchDtype: string | null;
}

/** Rotary and sliding-window fields of the rotary families (Llama, Gemma, Phi-3). */
export interface RotaryModelConfig extends BaseModelConfig {
  rmsNormEps: number;
  ropeTheta: number;
  /** The raw rope scaling object from the file (null for none); its type is one of SUPPORTED_ROPE_TYPES. */
  ropeScaling: Record<string, unknown> | null;
  /** The attention window of sliding layers (keys more than this many positions back are not seen), or null. */
  slidingWindow: number | null;
  /** Which layers slide (length numLayers); null: every layer when `slidingWindow` is set. */
  slidingLayers: boolean[] | null;
}

/**
 * The attention window of layer `i` (null: full causal attention). Families without windows (GPT-2) have
 * no `slidingWindow` field.
 */
export function layerWindow(
  cfg: BaseModelConfig & Partial<Pick<RotaryModelConfig, "slidingWindow" | "slidingLayers">>,
  i: number,
): number | null {
  if (cfg.slidingWindow === undefined || cfg.slidingWindow === null) return null;
  return cfg.slidingLayers == null || cfg.slidingLayers[i] ? cfg.slidingWindow : null;
}

/**
 * Upper bounds on the sizes a config may give, far above any real model (the largest have ~130 layers,
 * vocabularies of ~260k, hidden sizes of ~20k) so that a corrupt or hostile `config.json` is refused at
 * once rather than making per-layer name lists and graphs exhaust memory, and so that every tensor's element
 * count and byte size (vocab × hidden, hidden × intermediate, positions × hidden, heads·head_dim × hidden)
 * stays below 2^53.
 */
export const CONFIG_LIMITS = {
  numLayers: 2 ** 16,
  vocabSize: 2 ** 26,
  hiddenSize: 2 ** 20,
  intermediateSize: 2 ** 22,
  numHeads: 2 ** 14,
  numKvHeads: 2 ** 14,
  headDim: 2 ** 14,
  maxPositions: 2 ** 28,
} as const;

/** The keys a family reads its layer count, vocabulary and hidden sizes from, in the order tried. */
export type SizeKeys = {
  layers: readonly string[];
  vocab: readonly string[];
  hidden: readonly string[];
};

/** The size keys of the rotary families. */
export const ROTARY_SIZE_KEYS: SizeKeys = {
  layers: ["num_hidden_layers"],
  vocab: ["vocab_size"],
  hidden: ["hidden_size"],
};

// ---------------------------------------------------------------------------------------------------------
// The field reader
// ---------------------------------------------------------------------------------------------------------

/** A `config.json` object. */
export type Json = Record<string, unknown>;

/** Reads typed fields of a `config.json` object; every error names the file, the field and the model type. */
export class FieldReader {
  constructor(readonly json: Json, readonly file: string, readonly modelType: string) {}

  fail(msg: string): never {
    throw new Error(`${this.file}: ${msg} (model_type "${this.modelType}")`);
  }

  /** The first present, non-null key among `names`, or undefined. */
  raw(names: readonly string[]): { key: string; value: unknown } | undefined {
    for (const key of names) {
      const value = this.json[key];
      if (value !== undefined && value !== null) return { key, value };
    }
    return undefined;
  }

  /**
   * An integer field (the first of `names` present): `min` or more, and at most `max` (a bound that keeps
   * allocations sized by it sane; see {@link CONFIG_LIMITS}). Strings ("2"), fractions (1.5) and numbers
   * past 2^53 are refused, naming the field.
   */
  positiveInt(names: readonly string[], fallback?: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
    const found = this.raw(names);
    if (!found) {
      if (fallback !== undefined) return fallback;
      return this.fail(`missing required field "${names[0]}"`);
    }
    const { key, value } = found;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
      const kind = min === 1 ? "a positive integer" : `an integer >= ${min}`;
      return this.fail(`field "${key}" must be ${kind}, got ${JSON.stringify(value)}`);
    }
    if (value > max) {
      return this.fail(
        `field "${key}" is ${value}, more than the ${max} this toolkit accepts (a bound far above any real ` +
          `model, so that a wrong config cannot exhaust memory)`,
      );
    }
    return value;
  }

  positiveNumber(names: readonly string[], fallback: number): number {
    const found = this.raw(names);
    if (!found) return fallback;
    const { key, value } = found;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      return this.fail(`field "${key}" must be a positive number, got ${JSON.stringify(value)}`);
    }
    return value;
  }

  bool(name: string, fallback: boolean): boolean {
    const value = this.json[name];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "boolean") {
      return this.fail(`field "${name}" must be true or false, got ${JSON.stringify(value)}`);
    }
    return value;
  }

  tokenId(name: string): number | null {
    const value = this.json[name];
    if (value === undefined || value === null) return null;
    if (typeof value !== "number" || !Number.isSafeInteger(value)) {
      return this.fail(`field "${name}" must be an integer token id, got ${JSON.stringify(value)}`);
    }
    return value;
  }

  tokenIds(name: string): number | number[] | null {
    const value = this.json[name];
    if (Array.isArray(value)) {
      if (!value.every((v) => typeof v === "number" && Number.isSafeInteger(v))) {
        return this.fail(
          `field "${name}" must be an integer or a list of integers, got ${JSON.stringify(value)}`,
        );
      }
      return [...value] as number[];
    }
    return this.tokenId(name);
  }

  string(names: readonly string[]): string | null {
    const found = this.raw(names);
    if (!found) return null;
    if (typeof found.value !== "string") {
      return this.fail(`field "${found.key}" must be a string, got ${JSON.stringify(found.value)}`);
    }
    return found.value;
  }

  /** A positive number, or null when absent or null (softcaps). */
  optionalPositive(name: string): number | null {
    return this.raw([name]) ? this.positiveNumber([name], 1) : null;
  }
}

/** The object field `key` of `json` (a copy), or null when absent or null. */
export function asObject(r: FieldReader, json: Json, key: string): Json | null {
  const v = json[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) return r.fail(`field "${key}" must be an object or null`);
  return { ...(v as Json) };
}

/** Token ids and dtype, which every family reads the same way. */
export function readCommon(r: FieldReader) {
  return {
    bosTokenId: r.tokenId("bos_token_id"),
    eosTokenId: r.tokenIds("eos_token_id"),
    padTokenId: r.tokenId("pad_token_id"),
    torchDtype: r.string(["torch_dtype", "dtype"]),
  };
}

/** Fails unless the activation field (the first of `keys`, else `fallback`) is one of `allowed`. */
export function requireActivation(
  r: FieldReader,
  keys: string[],
  allowed: string[],
  fallback: string,
): void {
  const act = r.string(keys) ?? fallback;
  if (!allowed.includes(act)) {
    r.fail(`${keys[0]} "${act}" is not supported (supported: ${allowed.map((a) => `"${a}"`).join(", ")})`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The rotary families: sizes, rope and sliding windows
// ---------------------------------------------------------------------------------------------------------

/** Sizes every rotary family reads the same way. */
export function readSizes(r: FieldReader) {
  const L = CONFIG_LIMITS, K = ROTARY_SIZE_KEYS;
  const hiddenSize = r.positiveInt(K.hidden, undefined, 1, L.hiddenSize);
  const numHeads = r.positiveInt(["num_attention_heads"], undefined, 1, L.numHeads);
  if (r.raw(["head_dim"]) === undefined && hiddenSize % numHeads !== 0) {
    r.fail(
      `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} and no head_dim is given`,
    );
  }
  return {
    vocabSize: r.positiveInt(K.vocab, undefined, 1, L.vocabSize),
    hiddenSize,
    numLayers: r.positiveInt(K.layers, undefined, 1, L.numLayers),
    numHeads,
    numKvHeads: r.positiveInt(["num_key_value_heads"], numHeads, 1, L.numKvHeads),
    headDim: r.positiveInt(["head_dim"], hiddenSize / numHeads, 1, L.headDim),
    intermediateSize: r.positiveInt(["intermediate_size"], undefined, 1, L.intermediateSize),
    maxPositions: r.positiveInt(["max_position_embeddings"], undefined, 1, L.maxPositions),
    rmsNormEps: r.positiveNumber(["rms_norm_eps"], 1e-6),
  };
}

/**
 * Rope scaling and theta from either transformers v4 (`rope_scaling` + `rope_theta`) or v5
 * (`rope_parameters`, which carries `rope_theta` inside; Gemma 3's is keyed by layer type, whose
 * `full_attention` entry is read here). `rotaryDim` checks longrope's lists.
 */
export function readRope(
  r: FieldReader,
  rotaryDim: number,
  defaultTheta = 10000,
): { ropeTheta: number; ropeScaling: Record<string, unknown> | null } {
  let params = asObject(r, r.json, "rope_parameters");
  if (params && typeof params.full_attention === "object") params = asObject(r, params, "full_attention");
  let scaling = asObject(r, r.json, "rope_scaling");
  let scalingKey = "rope_scaling";
  let ropeTheta = r.positiveNumber(["rope_theta"], defaultTheta);
  if (params) {
    if (params.rope_theta !== undefined) {
      ropeTheta = new FieldReader(params, r.file, r.modelType).positiveNumber(["rope_theta"], ropeTheta);
    }
    if (!scaling) {
      const { rope_theta: _drop, ...rest } = params;
      scaling = ropeScalingType(rest) === "default" ? null : rest;
      scalingKey = "rope_parameters";
    }
  }
  if (
    scaling && ropeScalingType(scaling) === "longrope" && scaling.original_max_position_embeddings == null
  ) {
    // Phi-3 keeps the pretraining length at the top level
    const original = r.positiveInt(["original_max_position_embeddings"]);
    scaling = { ...scaling, original_max_position_embeddings: original };
  }
  if (scaling) checkRopeScaling(scaling, scalingKey, (m) => r.fail(m), rotaryDim);
  return { ropeTheta, ropeScaling: scaling };
}

/**
 * Which layers slide: `layer_types` when the file lists them (transformers ≥ 4.53 writes it), else the
 * family's rule (`slides(i)`). Returns the window and the per-layer flags, the window null when no
 * layer slides.
 */
export function readWindows(
  r: FieldReader,
  numLayers: number,
  window: number | null,
  slides: (i: number) => boolean,
): { slidingWindow: number | null; slidingLayers: boolean[] | null } {
  if (window === null) return { slidingWindow: null, slidingLayers: null };
  const types = r.json.layer_types;
  let layers: boolean[];
  if (Array.isArray(types)) {
    if (types.length !== numLayers) {
      r.fail(`layer_types has ${types.length} entries for ${numLayers} layers`);
    }
    layers = types.map((t, i) => {
      if (t !== "sliding_attention" && t !== "full_attention") {
        r.fail(
          `layer_types[${i}] "${t}" is not supported (supported: "full_attention", "sliding_attention")`,
        );
      }
      return t === "sliding_attention";
    });
  } else layers = Array.from({ length: numLayers }, (_, i) => slides(i));
  if (!layers.some(Boolean)) return { slidingWindow: null, slidingLayers: null };
  return { slidingWindow: window, slidingLayers: layers.every(Boolean) ? null : layers };
}

/**
 * The checks every rotary config must pass (`validateModelConfig`): an even head dimension, an even
 * `rotaryDim` within it, positive eps and theta, the family's `activation`, sane windows and rope scaling.
 */
export function validateRotary(
  cfg: RotaryModelConfig,
  rotaryDim: number,
  activation: Activation,
  fail: (msg: string) => never,
): void {
  if (cfg.headDim % 2 !== 0) fail(`head_dim ${cfg.headDim} must be even for rotary embeddings`);
  if (rotaryDim % 2 !== 0 || rotaryDim > cfg.headDim) {
    fail(`rotary dimension ${rotaryDim} must be even and ≤ head_dim`);
  }
  if (!(cfg.rmsNormEps > 0)) fail(`rms_norm_eps must be positive`);
  if (!(cfg.ropeTheta > 0)) fail(`rope_theta must be positive`);
  if (cfg.activation !== activation) fail(`activation must be "${activation}"`);
  if (cfg.slidingWindow !== null && !(Number.isSafeInteger(cfg.slidingWindow) && cfg.slidingWindow > 0)) {
    fail(`sliding_window must be a positive integer or null`);
  }
  if (cfg.slidingLayers !== null && cfg.slidingLayers.length !== cfg.numLayers) {
    fail(`slidingLayers must have one entry per layer`);
  }
  if (cfg.ropeScaling) checkRopeScaling(cfg.ropeScaling, "rope_scaling", fail, rotaryDim);
}

/** Inverse frequencies and cos/sin scale of a layer's rotary tables. */
export type LayerRope = { invFreq: Float64Array; scale: number };

/**
 * The rope of a rotary config rotating the first `rotaryDim` dimensions of each head; `localTheta`: a
 * sliding layer's own base, unscaled (Gemma 3).
 */
export function rotaryRope(
  cfg: RotaryModelConfig,
  rotaryDim: number,
  localTheta: number | null = null,
): LayerRope {
  const settings = {
    headDim: cfg.headDim,
    rotaryDim,
    ropeTheta: localTheta ?? cfg.ropeTheta,
    ropeScaling: localTheta !== null ? null : cfg.ropeScaling,
    maxPositions: cfg.maxPositions,
  };
  return { invFreq: ropeInverseFrequencies(settings), scale: ropeAttentionFactor(settings) };
}

// ---------------------------------------------------------------------------------------------------------
// config.json of the rotary families
// ---------------------------------------------------------------------------------------------------------

/**
 * The `config.json` fields the rotary families write alike, in transformers' order, with `tail` (token ids
 * and dtype) after them; the family adds its own fields after these. `head_dim` is left out when
 * `omitDefaultHeadDim` and it is hiddenSize / numHeads (Qwen2's config has no such field).
 */
export function rotaryJson(
  cfg: RotaryModelConfig,
  architecture: string,
  tail: Record<string, unknown>,
  omitDefaultHeadDim = false,
): Record<string, unknown> {
  const defaultHeadDim = cfg.hiddenSize / cfg.numHeads === cfg.headDim;
  return {
    architectures: [architecture],
    model_type: cfg.modelType,
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    ...(!omitDefaultHeadDim || !defaultHeadDim ? { head_dim: cfg.headDim } : {}),
    max_position_embeddings: cfg.maxPositions,
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: cfg.ropeScaling === null ? null : { ...cfg.ropeScaling },
    tie_word_embeddings: cfg.tieWordEmbeddings,
    ...tail,
  };
}

/** `layer_types` as transformers ≥ 4.53 writes it (older versions ignore it and use their own rule). */
export function layerTypes(cfg: RotaryModelConfig): string[] {
  return Array.from(
    { length: cfg.numLayers },
    (_, i) =>
      cfg.slidingWindow !== null && (cfg.slidingLayers === null || cfg.slidingLayers[i])
        ? "sliding_attention"
        : "full_attention",
  );
}
