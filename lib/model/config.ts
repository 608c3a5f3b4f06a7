/**
 * Parse and validate a Hugging Face `config.json` into one normalized, typed config for the architectures
 * the toolkit can build, grouped in four graph families (lib/model/families/):
 * - `llama`: `llama` (also SmolLM, TinyLlama, Llama 2/3), `mistral`, `qwen2`, `qwen3`;
 * - `gemma`: `gemma2`, `gemma3_text`;
 * - `phi3`: `phi3` (Phi-3, Phi-3.5, Phi-4-mini);
 * - `gpt2`: `gpt2`.
 *
 * Every place that needs a model dimension reads it from here, so the quirks of each `model_type` (GPT-2's
 * `n_embd`, Qwen2's hard-wired q/k/v biases, rope scaling variants, transformers v5's `rope_parameters`,
 * which layers slide) are resolved once. Unsupported features fail loudly at load time rather than
 * producing a subtly wrong model. Sizes are bounded ({@link CONFIG_LIMITS}) and `bos_token_id` /
 * `eos_token_id` must lie inside the vocabulary, so that a wrong file fails at once, naming the field.
 *
 * @module
 */
import {
  checkRopeScaling,
  ropeAttentionFactor,
  ropeInverseFrequencies,
  ropeScalingType,
  ropeSupportedLength,
} from "./rope.ts";

export {
  llama3ScaleInverseFrequencies,
  ropeInverseFrequencies,
  ropeScalingType,
  type RopeType,
  SUPPORTED_ROPE_TYPES,
} from "./rope.ts";
export { ropeAttentionFactor };

/** The graph families the toolkit implements (one forward file each, lib/model/families/). */
export type Family = "llama" | "gemma" | "phi3" | "gpt2";

/** `model_type` values the toolkit accepts, with the family each maps to. */
export const SUPPORTED_MODEL_TYPES = {
  llama: "llama",
  mistral: "llama",
  qwen2: "llama",
  qwen3: "llama",
  gemma2: "gemma",
  gemma3_text: "gemma",
  phi3: "phi3",
  gpt2: "gpt2",
} as const satisfies Record<string, Family>;

/** A supported `model_type`. */
export type ModelType = keyof typeof SUPPORTED_MODEL_TYPES;
/** `model_type`s of the Llama family. */
export type LlamaModelType = "llama" | "mistral" | "qwen2" | "qwen3";
/** `model_type`s of the Gemma family. */
export type GemmaModelType = "gemma2" | "gemma3_text";

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

/** Fields every family has. */
export interface BaseModelConfig {
  family: Family;
  modelType: ModelType;
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

/** A Llama-family config (llama, mistral, qwen2, qwen3). */
export interface LlamaModelConfig extends RotaryModelConfig {
  family: "llama";
  modelType: LlamaModelType;
  /** RMSNorm of each head's queries and keys before rotary (Qwen3's q_norm/k_norm). */
  qkNorm: boolean;
}

/** A Gemma 2 / Gemma 3 text config. */
export interface GemmaModelConfig extends RotaryModelConfig {
  family: "gemma";
  modelType: GemmaModelType;
  /** Rope base of the sliding layers (Gemma 3's `rope_local_base_freq`, unscaled); Gemma 2: `ropeTheta`. */
  ropeLocalTheta: number;
  /** Attention scores are scaled by `queryPreAttnScalar^-½` (not headDim^-½). */
  queryPreAttnScalar: number;
  /** `cap·tanh(x / cap)` on the attention scores (Gemma 2: 50), or null. */
  attnLogitSoftcap: number | null;
  /** `cap·tanh(x / cap)` on the logits (Gemma 2: 30), or null. */
  finalLogitSoftcap: number | null;
  /** Gemma 3's q_norm/k_norm. */
  qkNorm: boolean;
}

/** A Phi-3 config (Phi-3, Phi-3.5, Phi-4-mini): fused qkv and gate/up projections, partial rotary. */
export interface Phi3ModelConfig extends RotaryModelConfig {
  family: "phi3";
  modelType: "phi3";
  /** Rotated dimensions of each head: headDim × partial_rotary_factor. */
  rotaryDim: number;
}

/** A GPT-2 config. */
export interface Gpt2ModelConfig extends BaseModelConfig {
  family: "gpt2";
  modelType: "gpt2";
  layerNormEps: number;
}

/** A normalized config; narrow on `family`. */
export type ModelConfig = LlamaModelConfig | GemmaModelConfig | Phi3ModelConfig | Gpt2ModelConfig;

/** The attention window of layer `i` (null: full causal attention). */
export function layerWindow(cfg: ModelConfig, i: number): number | null {
  if (cfg.family === "gpt2" || cfg.slidingWindow === null) return null;
  return cfg.slidingLayers === null || cfg.slidingLayers[i] ? cfg.slidingWindow : null;
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

/** The keys each size is read from, in the order tried (GPT-2's own names first), shared with the parser. */
const SIZE_KEYS = {
  gpt2: {
    layers: ["n_layer", "num_hidden_layers"],
    vocab: ["vocab_size"],
    hidden: ["n_embd", "hidden_size"],
  },
  other: { layers: ["num_hidden_layers"], vocab: ["vocab_size"], hidden: ["hidden_size"] },
} as const;

/** A field as written in the file: the key found and its raw value. */
export type RawField = { key: string; value: unknown };

/**
 * The family and the size fields of a raw `config.json` object, exactly as written and unchecked, read the
 * way the parser reads them, for comparing them with the weights before the config is parsed (which
 * builds per-layer arrays). Null when `json` is not an object of a supported `model_type`.
 */
export function rawConfigSizes(
  json: unknown,
): { family: Family; layers?: RawField; vocab?: RawField; hidden?: RawField } | null {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return null;
  const modelType = (json as Json).model_type;
  if (typeof modelType !== "string" || !Object.hasOwn(SUPPORTED_MODEL_TYPES, modelType)) return null;
  const family = SUPPORTED_MODEL_TYPES[modelType as ModelType];
  const r = new FieldReader(json as Json, "", modelType);
  const keys = family === "gpt2" ? SIZE_KEYS.gpt2 : SIZE_KEYS.other;
  return { family, layers: r.raw(keys.layers), vocab: r.raw(keys.vocab), hidden: r.raw(keys.hidden) };
}

// ---------------------------------------------------------------------------------------------------------
// Field readers
// ---------------------------------------------------------------------------------------------------------

type Json = Record<string, unknown>;

class FieldReader {
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

// ---------------------------------------------------------------------------------------------------------
// Rope and sliding windows
// ---------------------------------------------------------------------------------------------------------

function asObject(r: FieldReader, json: Json, key: string): Json | null {
  const v = json[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) return r.fail(`field "${key}" must be an object or null`);
  return { ...(v as Json) };
}

/**
 * Rope scaling and theta from either transformers v4 (`rope_scaling` + `rope_theta`) or v5
 * (`rope_parameters`, which carries `rope_theta` inside; Gemma 3's is keyed by layer type, whose
 * `full_attention` entry is read here). `rotaryDim` checks longrope's lists.
 */
function readRope(
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

/** Gemma 3's local rope base: `rope_local_base_freq`, or v5's `rope_parameters.sliding_attention`. */
function readLocalTheta(r: FieldReader, fallback: number): number {
  const params = asObject(r, r.json, "rope_parameters");
  const local = params && typeof params.sliding_attention === "object"
    ? asObject(r, params, "sliding_attention")
    : null;
  if (local?.rope_theta !== undefined) {
    return new FieldReader(local, r.file, r.modelType).positiveNumber(["rope_theta"], fallback);
  }
  return r.positiveNumber(["rope_local_base_freq"], fallback);
}

/**
 * Which layers slide: `layer_types` when the file lists them (transformers ≥ 4.53 writes it), else the
 * family's rule (`slides(i)`). Returns the window and the per-layer flags, the window null when no
 * layer slides.
 */
function readWindows(
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

// ---------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------

function supportedList(): string {
  return Object.keys(SUPPORTED_MODEL_TYPES).map((t) => `"${t}"`).join(", ");
}

function readCommon(r: FieldReader) {
  return {
    bosTokenId: r.tokenId("bos_token_id"),
    eosTokenId: r.tokenIds("eos_token_id"),
    padTokenId: r.tokenId("pad_token_id"),
    torchDtype: r.string(["torch_dtype", "dtype"]),
  };
}

/** Sizes every rotary family reads the same way. */
function readSizes(r: FieldReader) {
  const L = CONFIG_LIMITS, K = SIZE_KEYS.other;
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

function requireActivation(r: FieldReader, keys: string[], allowed: string[], fallback: string): void {
  const act = r.string(keys) ?? fallback;
  if (!allowed.includes(act)) {
    r.fail(`${keys[0]} "${act}" is not supported (supported: ${allowed.map((a) => `"${a}"`).join(", ")})`);
  }
}

function parseLlama(r: FieldReader, modelType: LlamaModelType): LlamaModelConfig {
  const sizes = readSizes(r);
  requireActivation(r, ["hidden_act"], ["silu", "swish"], "silu");
  if (r.raw(["partial_rotary_factor"]) && r.json.partial_rotary_factor !== 1) {
    r.fail(`partial_rotary_factor ${JSON.stringify(r.json.partial_rotary_factor)} is not supported (only 1)`);
  }
  let attentionBias: AttentionBias;
  let mlpBias = false;
  if (modelType === "llama") {
    const b = r.bool("attention_bias", false);
    attentionBias = { q: b, k: b, v: b, o: b };
    mlpBias = r.bool("mlp_bias", false);
  } else if (modelType === "qwen2") {
    attentionBias = { q: true, k: true, v: true, o: false };
  } else if (modelType === "qwen3") {
    const b = r.bool("attention_bias", false);
    attentionBias = { q: b, k: b, v: b, o: b };
  } else {
    attentionBias = { q: false, k: false, v: false, o: false };
  }
  const window = r.raw(["sliding_window"]) ? r.positiveInt(["sliding_window"]) : null;
  let windows;
  if (modelType === "mistral") windows = readWindows(r, sizes.numLayers, window, () => true);
  else if (modelType === "qwen2" || modelType === "qwen3") {
    // transformers' Qwen2/Qwen3: layers from max_window_layers on slide, when use_sliding_window is set
    const on = r.bool("use_sliding_window", false);
    const from = r.positiveInt(["max_window_layers"], 28, 0);
    windows = readWindows(r, sizes.numLayers, on ? window : null, (i) => i >= from);
  } else windows = readWindows(r, sizes.numLayers, null, () => false);
  return {
    family: "llama",
    modelType,
    ...sizes,
    attentionBias,
    mlpBias,
    tieWordEmbeddings: r.bool("tie_word_embeddings", false),
    activation: "silu",
    ...readCommon(r),
    ...readRope(r, sizes.headDim),
    ...windows,
    qkNorm: modelType === "qwen3",
  };
}

function parseGemma(r: FieldReader, modelType: GemmaModelType): GemmaModelConfig {
  const sizes = readSizes(r);
  requireActivation(
    r,
    ["hidden_activation", "hidden_act"],
    ["gelu_pytorch_tanh", "gelu_new", "gelu_fast"],
    "gelu_pytorch_tanh",
  );
  const b = r.bool("attention_bias", false);
  const gemma3 = modelType === "gemma3_text";
  const rope = readRope(r, sizes.headDim, gemma3 ? 1e6 : 10000);
  // Gemma 2: every other layer slides, starting with the first; Gemma 3: five of every six
  const pattern = gemma3 ? r.positiveInt(["sliding_window_pattern"], 6) : 2;
  const window = r.raw(["sliding_window"]) ? r.positiveInt(["sliding_window"]) : 4096;
  return {
    family: "gemma",
    modelType,
    ...sizes,
    attentionBias: { q: b, k: b, v: b, o: b },
    mlpBias: false,
    tieWordEmbeddings: r.bool("tie_word_embeddings", true),
    activation: "gelu_new",
    ...readCommon(r),
    ...rope,
    ...readWindows(r, sizes.numLayers, window, (i) => (i + 1) % pattern !== 0),
    ropeLocalTheta: gemma3 ? readLocalTheta(r, 10000) : rope.ropeTheta,
    queryPreAttnScalar: r.positiveNumber(["query_pre_attn_scalar"], 256),
    attnLogitSoftcap: r.optionalPositive("attn_logit_softcapping"),
    finalLogitSoftcap: r.optionalPositive("final_logit_softcapping"),
    qkNorm: gemma3,
  };
}

function parsePhi3(r: FieldReader): Phi3ModelConfig {
  const sizes = readSizes(r);
  requireActivation(r, ["hidden_act"], ["silu", "swish"], "silu");
  const factor = r.positiveNumber(["partial_rotary_factor"], 1);
  if (factor > 1) r.fail(`partial_rotary_factor must be at most 1, got ${factor}`);
  const rotaryDim = Math.floor(sizes.headDim * factor);
  if (rotaryDim % 2 !== 0 || rotaryDim === 0) {
    r.fail(`partial_rotary_factor ${factor} gives ${rotaryDim} rotary dimensions; an even number is needed`);
  }
  const b = r.bool("attention_bias", false);
  const window = r.raw(["sliding_window"]) ? r.positiveInt(["sliding_window"]) : null;
  return {
    family: "phi3",
    modelType: "phi3",
    ...sizes,
    attentionBias: { q: b, k: b, v: b, o: b },
    mlpBias: false,
    tieWordEmbeddings: r.bool("tie_word_embeddings", false),
    activation: "silu",
    ...readCommon(r),
    ...readRope(r, rotaryDim),
    ...readWindows(r, sizes.numLayers, window, () => true),
    rotaryDim,
  };
}

function parseGpt2(r: FieldReader): Gpt2ModelConfig {
  const L = CONFIG_LIMITS, K = SIZE_KEYS.gpt2;
  const hiddenSize = r.positiveInt(K.hidden, undefined, 1, L.hiddenSize);
  const numHeads = r.positiveInt(["n_head", "num_attention_heads"], undefined, 1, L.numHeads);
  const act = r.string(["activation_function"]) ?? "gelu_new";
  if (act !== "gelu_new" && act !== "gelu_pytorch_tanh" && act !== "gelu_fast") {
    r.fail(`activation_function "${act}" is not supported (supported: "gelu_new", "gelu_pytorch_tanh")`);
  }
  if (!r.bool("scale_attn_weights", true)) r.fail(`scale_attn_weights=false is not supported`);
  if (r.bool("scale_attn_by_inverse_layer_idx", false)) {
    r.fail(`scale_attn_by_inverse_layer_idx=true is not supported`);
  }
  if (r.bool("add_cross_attention", false)) r.fail(`add_cross_attention=true is not supported`);
  if (hiddenSize % numHeads !== 0) r.fail(`n_embd ${hiddenSize} is not divisible by n_head ${numHeads}`);
  return {
    family: "gpt2",
    modelType: "gpt2",
    vocabSize: r.positiveInt(K.vocab, undefined, 1, L.vocabSize),
    hiddenSize,
    numLayers: r.positiveInt(K.layers, undefined, 1, L.numLayers),
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: r.positiveInt(["n_inner"], 4 * hiddenSize, 1, L.intermediateSize),
    maxPositions: r.positiveInt(
      ["n_positions", "n_ctx", "max_position_embeddings"],
      undefined,
      1,
      L.maxPositions,
    ),
    attentionBias: { q: true, k: true, v: true, o: true },
    mlpBias: true,
    tieWordEmbeddings: r.bool("tie_word_embeddings", true),
    activation: "gelu_new",
    ...readCommon(r),
    layerNormEps: r.positiveNumber(["layer_norm_epsilon"], 1e-5),
  };
}

/** Multimodal wrappers whose text model the toolkit reads, with the `model_type` to use instead. */
const TEXT_PART: Record<string, string> = { gemma3: "gemma3_text" };

/**
 * Parse a `config.json` object. `file` is only used in error messages, which name the file, the field and
 * the model type.
 */
export function parseConfig(json: unknown, file = "config.json"): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`${file}: config must be a JSON object`);
  }
  const modelType = (json as Json).model_type;
  if (typeof modelType !== "string") {
    throw new Error(`${file}: missing required field "model_type" (supported: ${supportedList()})`);
  }
  if (!Object.hasOwn(SUPPORTED_MODEL_TYPES, modelType)) {
    const hint = TEXT_PART[modelType]
      ? `; "${modelType}" is the multimodal model: extract its text model (model_type "${
        TEXT_PART[modelType]
      }")`
      : "";
    throw new Error(`${file}: unsupported model_type "${modelType}" (supported: ${supportedList()})${hint}`);
  }
  const r = new FieldReader(json as Json, file, modelType);
  const family = SUPPORTED_MODEL_TYPES[modelType as ModelType];
  const cfg = family === "gpt2"
    ? parseGpt2(r)
    : family === "gemma"
    ? parseGemma(r, modelType as GemmaModelType)
    : family === "phi3"
    ? parsePhi3(r)
    : parseLlama(r, modelType as LlamaModelType);
  validateModelConfig(cfg, file);
  return cfg;
}

/** The `config.json` of a model folder (or a path to the file itself), read but not parsed, with its path. */
export async function readConfigJson(path: string): Promise<{ file: string; json: unknown }> {
  const file = path.endsWith(".json") ? path : `${path.replace(/\/+$/, "")}/config.json`;
  try {
    return { file, json: JSON.parse(await Deno.readTextFile(file)) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${file}: not found`);
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
}

/** Read `config.json` from a model folder (or a path to the file itself) and parse it. */
export async function loadConfig(path: string): Promise<ModelConfig> {
  const { file, json } = await readConfigJson(path);
  return parseConfig(json, file);
}

const EXPECTED_BIAS: Record<ModelType, (b: AttentionBias) => boolean> = {
  llama: (b) => b.q === b.k && b.k === b.v && b.v === b.o,
  mistral: (b) => !b.q && !b.k && !b.v && !b.o,
  qwen2: (b) => b.q && b.k && b.v && !b.o,
  qwen3: (b) => b.q === b.k && b.k === b.v && b.v === b.o,
  gemma2: (b) => b.q === b.k && b.k === b.v && b.v === b.o,
  gemma3_text: (b) => b.q === b.k && b.k === b.v && b.v === b.o,
  phi3: (b) => b.q === b.k && b.k === b.v && b.v === b.o,
  gpt2: (b) => b.q && b.k && b.v && b.o,
};

/**
 * Check the invariants every consumer relies on (positive sizes, heads divisible by kv heads, family
 * constraints). `parseConfig` calls it; call it again after editing a config by hand.
 */
export function validateModelConfig(cfg: ModelConfig, file = "<config>"): void {
  const fail = (msg: string): never => {
    throw new Error(`${file}: ${msg} (model_type "${cfg.modelType}")`);
  };
  const sizes = [
    "vocabSize",
    "hiddenSize",
    "numLayers",
    "numHeads",
    "numKvHeads",
    "headDim",
    "intermediateSize",
    "maxPositions",
  ] as const;
  for (const k of sizes) {
    if (!Number.isSafeInteger(cfg[k]) || cfg[k] <= 0) fail(`${k} must be a positive integer, got ${cfg[k]}`);
    if (cfg[k] > CONFIG_LIMITS[k]) {
      fail(`${k} is ${cfg[k]}, more than the ${CONFIG_LIMITS[k]} this toolkit accepts`);
    }
  }
  // an id past the vocabulary would index past the embedding (BOS prepended) or never match (EOS);
  // pad_token_id is left alone: old Llama configs say -1 for "none"
  for (const [field, ids] of [["bos_token_id", cfg.bosTokenId], ["eos_token_id", cfg.eosTokenId]] as const) {
    checkTokenIds(
      ids,
      cfg.vocabSize,
      (id) => fail(`${field} ${id} is outside the vocabulary (vocab_size ${cfg.vocabSize})`),
    );
  }
  if (SUPPORTED_MODEL_TYPES[cfg.modelType] !== cfg.family) {
    fail(`model_type does not belong to family "${cfg.family}"`);
  }
  if (cfg.numHeads % cfg.numKvHeads !== 0) {
    fail(`num_attention_heads ${cfg.numHeads} is not a multiple of num_key_value_heads ${cfg.numKvHeads}`);
  }
  if (cfg.family === "gpt2") {
    if (cfg.numKvHeads !== cfg.numHeads) {
      fail(`GPT-2 has no grouped-query attention (numKvHeads must equal numHeads)`);
    }
    if (cfg.headDim * cfg.numHeads !== cfg.hiddenSize) fail(`GPT-2 headDim must be hiddenSize / numHeads`);
    if (!(cfg.layerNormEps > 0)) fail(`layer_norm_epsilon must be positive`);
    if (cfg.activation !== "gelu_new") fail(`activation must be "gelu_new"`);
  } else {
    const rotary = cfg.family === "phi3" ? cfg.rotaryDim : cfg.headDim;
    if (cfg.headDim % 2 !== 0) fail(`head_dim ${cfg.headDim} must be even for rotary embeddings`);
    if (rotary % 2 !== 0 || rotary > cfg.headDim) {
      fail(`rotary dimension ${rotary} must be even and ≤ head_dim`);
    }
    if (!(cfg.rmsNormEps > 0)) fail(`rms_norm_eps must be positive`);
    if (!(cfg.ropeTheta > 0)) fail(`rope_theta must be positive`);
    const act = cfg.family === "gemma" ? "gelu_new" : "silu";
    if (cfg.activation !== act) fail(`activation must be "${act}"`);
    if (cfg.slidingWindow !== null && !(Number.isSafeInteger(cfg.slidingWindow) && cfg.slidingWindow > 0)) {
      fail(`sliding_window must be a positive integer or null`);
    }
    if (cfg.slidingLayers !== null && cfg.slidingLayers.length !== cfg.numLayers) {
      fail(`slidingLayers must have one entry per layer`);
    }
    if (cfg.ropeScaling) checkRopeScaling(cfg.ropeScaling, "rope_scaling", fail, rotary);
  }
  if (!EXPECTED_BIAS[cfg.modelType](cfg.attentionBias)) {
    fail(`attentionBias ${JSON.stringify(cfg.attentionBias)} is not expressible for this model type`);
  }
  const mlpBias = cfg.family === "gpt2" ? true : cfg.modelType === "llama" ? cfg.mlpBias : false;
  if (cfg.mlpBias !== mlpBias) fail(`mlpBias ${cfg.mlpBias} is not expressible for this model type`);
}

/**
 * Calls `fail` with the first id of `ids` (a token id field: a number, a list, or null) that is not below
 * `vocabSize`. Negative ids are let through (configs use -1 for "none").
 */
export function checkTokenIds(ids: unknown, vocabSize: number, fail: (id: number) => void): void {
  const list = Array.isArray(ids) ? ids : [ids];
  for (const id of list) if (typeof id === "number" && id >= vocabSize) return fail(id);
}

/**
 * The longest sequence the toolkit models exactly: `maxPositions`, capped by longrope's original length
 * (past it transformers switches to the long factors for the whole sequence).
 */
export function maxSupportedLength(cfg: ModelConfig): number {
  if (cfg.family === "gpt2") return cfg.maxPositions;
  const rotaryDim = cfg.family === "phi3" ? cfg.rotaryDim : cfg.headDim;
  return Math.min(cfg.maxPositions, ropeSupportedLength({ ...cfg, rotaryDim }));
}

/** The rope settings of a rotary family's layer `i` (Gemma 3's sliding layers use their own base, unscaled). */
export function layerRope(
  cfg: LlamaModelConfig | GemmaModelConfig | Phi3ModelConfig,
  i: number,
): { invFreq: Float64Array; scale: number } {
  const local = cfg.family === "gemma" && cfg.modelType === "gemma3_text" && layerWindow(cfg, i) !== null;
  const settings = {
    headDim: cfg.headDim,
    rotaryDim: cfg.family === "phi3" ? cfg.rotaryDim : cfg.headDim,
    ropeTheta: local ? (cfg as GemmaModelConfig).ropeLocalTheta : cfg.ropeTheta,
    ropeScaling: local ? null : cfg.ropeScaling,
    maxPositions: cfg.maxPositions,
  };
  return { invFreq: ropeInverseFrequencies(settings), scale: ropeAttentionFactor(settings) };
}

// ---------------------------------------------------------------------------------------------------------
// Test configs
// ---------------------------------------------------------------------------------------------------------

type Overrides<T> = { [K in keyof T]?: T[K] };

/** Sizes shared by the tiny rotary configs: hidden 32, 2 layers, 4 heads (2 kv heads), vocab 64. */
function tinySizes(o: Overrides<RotaryModelConfig>) {
  const hiddenSize = o.hiddenSize ?? 32;
  const numHeads = o.numHeads ?? 4;
  return {
    vocabSize: 64,
    hiddenSize,
    numLayers: 2,
    numHeads,
    numKvHeads: numHeads % 2 === 0 ? numHeads / 2 : numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: 2 * hiddenSize,
    maxPositions: 64,
    mlpBias: false,
    bosTokenId: 1,
    eosTokenId: 2,
    padTokenId: null,
    torchDtype: "float32",
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    slidingWindow: null,
    slidingLayers: null,
  };
}

function tinyLlama(o: Overrides<LlamaModelConfig>): LlamaModelConfig {
  const modelType = o.modelType ?? "llama";
  const bias = modelType === "qwen2";
  return {
    modelType,
    ...tinySizes(o),
    attentionBias: { q: bias, k: bias, v: bias, o: false },
    tieWordEmbeddings: false,
    activation: "silu",
    qkNorm: modelType === "qwen3",
    ...o,
    family: "llama",
  };
}

function tinyGemma(o: Overrides<GemmaModelConfig>): GemmaModelConfig {
  const modelType = o.modelType ?? "gemma2";
  const sizes = tinySizes(o);
  return {
    modelType,
    ...sizes,
    attentionBias: { q: false, k: false, v: false, o: false },
    tieWordEmbeddings: true,
    activation: "gelu_new",
    ropeLocalTheta: sizes.ropeTheta,
    queryPreAttnScalar: o.headDim ?? sizes.headDim,
    attnLogitSoftcap: null,
    finalLogitSoftcap: null,
    qkNorm: modelType === "gemma3_text",
    ...o,
    family: "gemma",
  };
}

function tinyPhi3(o: Overrides<Phi3ModelConfig>): Phi3ModelConfig {
  const sizes = tinySizes(o);
  return {
    modelType: "phi3",
    ...sizes,
    attentionBias: { q: false, k: false, v: false, o: false },
    tieWordEmbeddings: false,
    activation: "silu",
    rotaryDim: o.headDim ?? sizes.headDim,
    ...o,
    family: "phi3",
  };
}

function tinyGpt2(o: Overrides<Gpt2ModelConfig>): Gpt2ModelConfig {
  const hiddenSize = o.hiddenSize ?? 32;
  const numHeads = o.numHeads ?? 4;
  const vocabSize = o.vocabSize ?? 64;
  return {
    modelType: "gpt2",
    vocabSize,
    hiddenSize,
    numLayers: 2,
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: 4 * hiddenSize,
    maxPositions: 64,
    attentionBias: { q: true, k: true, v: true, o: true },
    mlpBias: true,
    tieWordEmbeddings: true,
    activation: "gelu_new",
    bosTokenId: vocabSize - 1,
    eosTokenId: vocabSize - 1,
    padTokenId: null,
    torchDtype: "float32",
    layerNormEps: 1e-5,
    ...o,
    family: "gpt2",
  };
}

/**
 * A small config for random-init tests (hidden 32, 2 layers, 4 heads, 2 kv heads for the rotary
 * families, vocab 64, 64 positions). Dependent sizes (head dim, intermediate size) follow overridden ones
 * unless overridden themselves; `modelType: "qwen2"` gets Qwen2's biases, `"qwen3"`/`"gemma3_text"`
 * their q/k norms. The result is validated.
 */
export function tinyConfig(family: "llama", overrides?: Overrides<LlamaModelConfig>): LlamaModelConfig;
export function tinyConfig(family: "gemma", overrides?: Overrides<GemmaModelConfig>): GemmaModelConfig;
export function tinyConfig(family: "phi3", overrides?: Overrides<Phi3ModelConfig>): Phi3ModelConfig;
export function tinyConfig(family: "gpt2", overrides?: Overrides<Gpt2ModelConfig>): Gpt2ModelConfig;
export function tinyConfig(family: Family, overrides?: Overrides<ModelConfig>): ModelConfig;
export function tinyConfig(family: Family, overrides: Overrides<ModelConfig> = {}): ModelConfig {
  const make = {
    llama: tinyLlama,
    gemma: tinyGemma,
    phi3: tinyPhi3,
    gpt2: tinyGpt2,
  }[family] as (o: Overrides<ModelConfig>) => ModelConfig;
  const cfg = make(overrides);
  validateModelConfig(cfg, `tinyConfig("${family}")`);
  return cfg;
}
