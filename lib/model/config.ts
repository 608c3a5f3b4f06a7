/**
 * Parse and validate a Hugging Face `config.json` into one normalized, typed config for the architectures
 * the toolkit can build: the Llama family (`llama` — which also covers SmolLM, TinyLlama, Llama 2/3 —
 * `mistral`, `qwen2`) and GPT-2 (`gpt2`).
 *
 * Every place that needs a model dimension reads it from here, so the quirks of each `model_type` (GPT-2's
 * `n_embd`, Qwen2's hard-wired q/k/v biases, rope scaling variants, transformers v5's `rope_parameters`)
 * are resolved once. Unsupported features fail loudly at load time rather than producing a subtly wrong model.
 *
 * @module
 */

/** The two graph families the toolkit implements. */
export type Family = "llama" | "gpt2";

/** `model_type` values the toolkit accepts, with the family each maps to. */
export const SUPPORTED_MODEL_TYPES = {
  llama: "llama",
  mistral: "llama",
  qwen2: "llama",
  gpt2: "gpt2",
} as const satisfies Record<string, Family>;

/** A supported `model_type`. */
export type ModelType = keyof typeof SUPPORTED_MODEL_TYPES;
/** `model_type`s of the Llama family. */
export type LlamaModelType = "llama" | "mistral" | "qwen2";

/** MLP activation: SiLU (SwiGLU gate in Llama) or the tanh approximation of GELU (GPT-2's `gelu_new`). */
export type Activation = "silu" | "gelu_new";

/** Whether each attention projection has a bias (Qwen2 has them on q/k/v but not o). */
export interface AttentionBias {
  q: boolean;
  k: boolean;
  v: boolean;
  o: boolean;
}

/** Rope scaling types that `ropeInverseFrequencies` implements (all are pure inverse-frequency rescalings). */
export const SUPPORTED_ROPE_TYPES = ["default", "linear", "llama3"] as const;
/** A supported rope scaling type. */
export type RopeType = typeof SUPPORTED_ROPE_TYPES[number];

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

/** A Llama-family config (llama, mistral, qwen2). */
export interface LlamaModelConfig extends BaseModelConfig {
  family: "llama";
  modelType: LlamaModelType;
  rmsNormEps: number;
  ropeTheta: number;
  /** The raw rope scaling object from the file (null for none); its type is one of SUPPORTED_ROPE_TYPES. */
  ropeScaling: Record<string, unknown> | null;
  /**
   * Sliding attention window when some layer uses one, else null. The toolkit computes full causal
   * attention, which matches the model only for sequences up to this length (see `maxSupportedLength`).
   */
  slidingWindow: number | null;
}

/** A GPT-2 config. */
export interface Gpt2ModelConfig extends BaseModelConfig {
  family: "gpt2";
  modelType: "gpt2";
  layerNormEps: number;
}

/** A normalized config; narrow on `family`. */
export type ModelConfig = LlamaModelConfig | Gpt2ModelConfig;

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

  positiveInt(names: readonly string[], fallback?: number, min = 1): number {
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
}

// ---------------------------------------------------------------------------------------------------------
// Rope scaling
// ---------------------------------------------------------------------------------------------------------

/** The type of a rope scaling object (`rope_type`, or the legacy `type`); null means none. */
export function ropeScalingType(scaling: Record<string, unknown> | null): string {
  if (scaling === null) return "default";
  const t = scaling.rope_type ?? scaling.type ?? "default";
  return typeof t === "string" ? t : String(t);
}

function checkRopeScaling(r: FieldReader, key: string, scaling: Record<string, unknown>): void {
  const type = ropeScalingType(scaling);
  if (!(SUPPORTED_ROPE_TYPES as readonly string[]).includes(type)) {
    r.fail(
      `${key} type "${type}" is not supported (supported: null, ${
        SUPPORTED_ROPE_TYPES.map((t) => `"${t}"`).join(", ")
      })`,
    );
  }
  const num = (k: string) => {
    const v = scaling[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      r.fail(`${key}.${k} must be a positive number for rope type "${type}", got ${JSON.stringify(v)}`);
    }
    return v as number;
  };
  if (type === "linear") num("factor");
  if (type === "llama3") {
    num("factor");
    num("original_max_position_embeddings");
    const low = num("low_freq_factor");
    const high = num("high_freq_factor");
    if (high <= low) r.fail(`${key}.high_freq_factor (${high}) must exceed low_freq_factor (${low})`);
  }
}

/**
 * Rope scaling and theta from either transformers v4 (`rope_scaling` + `rope_theta`) or v5
 * (`rope_parameters`, which carries `rope_theta` inside).
 */
function readRope(r: FieldReader): { ropeTheta: number; ropeScaling: Record<string, unknown> | null } {
  const asObject = (key: string): Record<string, unknown> | null => {
    const v = r.json[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== "object" || Array.isArray(v)) return r.fail(`field "${key}" must be an object or null`);
    return { ...(v as Json) };
  };
  const params = asObject("rope_parameters");
  let scaling = asObject("rope_scaling");
  let scalingKey = "rope_scaling";
  let ropeTheta = r.positiveNumber(["rope_theta"], 10000);
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
  if (scaling) checkRopeScaling(r, scalingKey, scaling);
  return { ropeTheta, ropeScaling: scaling };
}

/**
 * Llama 3 frequency remapping (transformers' `_compute_llama3_parameters`): wavelengths shorter than
 * `original / high_freq_factor` keep their frequency, those longer than `original / low_freq_factor` are
 * slowed by `factor`, and the band between is interpolated smoothly.
 */
export function llama3ScaleInverseFrequencies(
  invFreq: Float64Array,
  params: {
    factor: number;
    low_freq_factor: number;
    high_freq_factor: number;
    original_max_position_embeddings: number;
  },
): Float64Array {
  const { factor, low_freq_factor: low, high_freq_factor: high } = params;
  const oldContext = params.original_max_position_embeddings;
  const lowFreqWavelen = oldContext / low;
  const highFreqWavelen = oldContext / high;
  const out = new Float64Array(invFreq.length);
  for (let i = 0; i < invFreq.length; i++) {
    const f = invFreq[i];
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) out[i] = f;
    else if (wavelen > lowFreqWavelen) out[i] = f / factor;
    else {
      const smooth = (oldContext / wavelen - low) / (high - low);
      out[i] = (1 - smooth) * (f / factor) + smooth * f;
    }
  }
  return out;
}

/**
 * Rotary inverse frequencies `1 / theta^(2i/headDim)` for i < headDim/2, with the config's rope scaling
 * applied. Computed in float64 (transformers uses fp32), so the graph builder decides the final precision.
 */
export function ropeInverseFrequencies(
  cfg: Pick<LlamaModelConfig, "headDim" | "ropeTheta" | "ropeScaling">,
): Float64Array {
  const dim = cfg.headDim;
  if (dim % 2 !== 0) throw new Error(`rotary embeddings need an even head dimension, got ${dim}`);
  const inv = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) inv[i] = 1 / cfg.ropeTheta ** ((2 * i) / dim);
  const type = ropeScalingType(cfg.ropeScaling);
  const s = cfg.ropeScaling ?? {};
  switch (type) {
    case "default":
      return inv;
    case "linear":
      return inv.map((f) => f / (s.factor as number));
    case "llama3":
      return llama3ScaleInverseFrequencies(inv, s as Parameters<typeof llama3ScaleInverseFrequencies>[1]);
    default:
      throw new Error(
        `rope scaling type "${type}" is not supported (supported: ${SUPPORTED_ROPE_TYPES.join(", ")})`,
      );
  }
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

function parseLlama(r: FieldReader, modelType: LlamaModelType): LlamaModelConfig {
  const hiddenSize = r.positiveInt(["hidden_size"]);
  const numHeads = r.positiveInt(["num_attention_heads"]);
  if (r.raw(["head_dim"]) === undefined && hiddenSize % numHeads !== 0) {
    r.fail(
      `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} and no head_dim is given`,
    );
  }
  const numLayers = r.positiveInt(["num_hidden_layers"]);
  const act = r.string(["hidden_act"]) ?? "silu";
  if (act !== "silu" && act !== "swish") r.fail(`hidden_act "${act}" is not supported (supported: "silu")`);
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
  } else {
    attentionBias = { q: false, k: false, v: false, o: false };
  }
  let slidingWindow: number | null = null;
  if (modelType === "mistral") {
    slidingWindow = r.raw(["sliding_window"]) ? r.positiveInt(["sliding_window"]) : null;
  } else if (modelType === "qwen2" && r.bool("use_sliding_window", false) && r.raw(["sliding_window"])) {
    const window = r.positiveInt(["sliding_window"]);
    const layerTypes = r.json.layer_types;
    const anySliding = Array.isArray(layerTypes)
      ? layerTypes.includes("sliding_attention")
      : r.positiveInt(["max_window_layers"], 28, 0) < numLayers;
    slidingWindow = anySliding ? window : null;
  }
  const cfg: LlamaModelConfig = {
    family: "llama",
    modelType,
    vocabSize: r.positiveInt(["vocab_size"]),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: r.positiveInt(["num_key_value_heads"], numHeads),
    headDim: r.positiveInt(["head_dim"], hiddenSize / numHeads),
    intermediateSize: r.positiveInt(["intermediate_size"]),
    maxPositions: r.positiveInt(["max_position_embeddings"]),
    attentionBias,
    mlpBias,
    tieWordEmbeddings: r.bool("tie_word_embeddings", false),
    activation: "silu",
    ...readCommon(r),
    rmsNormEps: r.positiveNumber(["rms_norm_eps"], 1e-6),
    ...readRope(r),
    slidingWindow,
  };
  return cfg;
}

function parseGpt2(r: FieldReader): Gpt2ModelConfig {
  const hiddenSize = r.positiveInt(["n_embd", "hidden_size"]);
  const numHeads = r.positiveInt(["n_head", "num_attention_heads"]);
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
    vocabSize: r.positiveInt(["vocab_size"]),
    hiddenSize,
    numLayers: r.positiveInt(["n_layer", "num_hidden_layers"]),
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: r.positiveInt(["n_inner"], 4 * hiddenSize),
    maxPositions: r.positiveInt(["n_positions", "n_ctx", "max_position_embeddings"]),
    attentionBias: { q: true, k: true, v: true, o: true },
    mlpBias: true,
    tieWordEmbeddings: r.bool("tie_word_embeddings", true),
    activation: "gelu_new",
    ...readCommon(r),
    layerNormEps: r.positiveNumber(["layer_norm_epsilon"], 1e-5),
  };
}

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
    throw new Error(`${file}: unsupported model_type "${modelType}" (supported: ${supportedList()})`);
  }
  const r = new FieldReader(json as Json, file, modelType);
  const cfg = modelType === "gpt2" ? parseGpt2(r) : parseLlama(r, modelType as LlamaModelType);
  validateModelConfig(cfg, file);
  return cfg;
}

/** Read `config.json` from a model folder (or a path to the file itself) and parse it. */
export async function loadConfig(path: string): Promise<ModelConfig> {
  const file = path.endsWith(".json") ? path : `${path.replace(/\/+$/, "")}/config.json`;
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${file}: not found`);
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  return parseConfig(json, file);
}

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
  }
  if (SUPPORTED_MODEL_TYPES[cfg.modelType] !== cfg.family) {
    fail(`model_type does not belong to family "${cfg.family}"`);
  }
  if (cfg.numHeads % cfg.numKvHeads !== 0) {
    fail(`num_attention_heads ${cfg.numHeads} is not a multiple of num_key_value_heads ${cfg.numKvHeads}`);
  }
  if (cfg.family === "llama") {
    if (cfg.headDim % 2 !== 0) fail(`head_dim ${cfg.headDim} must be even for rotary embeddings`);
    if (!(cfg.rmsNormEps > 0)) fail(`rms_norm_eps must be positive`);
    if (!(cfg.ropeTheta > 0)) fail(`rope_theta must be positive`);
    if (cfg.activation !== "silu") fail(`activation must be "silu"`);
    if (cfg.slidingWindow !== null && !(Number.isSafeInteger(cfg.slidingWindow) && cfg.slidingWindow > 0)) {
      fail(`sliding_window must be a positive integer or null`);
    }
    const r = new FieldReader({ rope_scaling: cfg.ropeScaling }, file, cfg.modelType);
    if (cfg.ropeScaling) checkRopeScaling(r, "rope_scaling", cfg.ropeScaling);
  } else {
    if (cfg.numKvHeads !== cfg.numHeads) {
      fail(`GPT-2 has no grouped-query attention (numKvHeads must equal numHeads)`);
    }
    if (cfg.headDim * cfg.numHeads !== cfg.hiddenSize) fail(`GPT-2 headDim must be hiddenSize / numHeads`);
    if (!(cfg.layerNormEps > 0)) fail(`layer_norm_epsilon must be positive`);
    if (cfg.activation !== "gelu_new") fail(`activation must be "gelu_new"`);
  }
  const b = cfg.attentionBias;
  const expectedBias: Record<ModelType, (b: AttentionBias) => boolean> = {
    llama: (b) => b.q === b.k && b.k === b.v && b.v === b.o,
    mistral: (b) => !b.q && !b.k && !b.v && !b.o,
    qwen2: (b) => b.q && b.k && b.v && !b.o,
    gpt2: (b) => b.q && b.k && b.v && b.o,
  };
  if (!expectedBias[cfg.modelType](b)) {
    fail(`attentionBias ${JSON.stringify(b)} is not expressible for this model type`);
  }
  if (cfg.modelType !== "llama" && cfg.mlpBias !== (cfg.family === "gpt2")) {
    fail(`mlpBias ${cfg.mlpBias} is not expressible for this model type`);
  }
}

/**
 * The longest sequence the toolkit models exactly: `maxPositions`, capped by a sliding window since full
 * causal attention equals windowed attention only while the sequence fits in the window.
 */
export function maxSupportedLength(cfg: ModelConfig): number {
  return cfg.family === "llama" && cfg.slidingWindow !== null
    ? Math.min(cfg.maxPositions, cfg.slidingWindow)
    : cfg.maxPositions;
}

// ---------------------------------------------------------------------------------------------------------
// Export and test configs
// ---------------------------------------------------------------------------------------------------------

const ARCHITECTURES: Record<ModelType, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  gpt2: "GPT2LMHeadModel",
};

/**
 * A `config.json` object that `transformers` (and `parseConfig`) loads back into the same model, for
 * exporting trained weights. Only fields the architecture needs are written; the rest take HF defaults.
 */
export function configToJson(cfg: ModelConfig): Record<string, unknown> {
  validateModelConfig(cfg);
  const tokens = {
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
    pad_token_id: cfg.padTokenId,
  };
  const dtype = cfg.torchDtype === null ? {} : { torch_dtype: cfg.torchDtype };
  if (cfg.family === "gpt2") {
    return {
      architectures: [ARCHITECTURES.gpt2],
      model_type: "gpt2",
      activation_function: "gelu_new",
      vocab_size: cfg.vocabSize,
      n_embd: cfg.hiddenSize,
      n_layer: cfg.numLayers,
      n_head: cfg.numHeads,
      n_inner: cfg.intermediateSize,
      n_positions: cfg.maxPositions,
      n_ctx: cfg.maxPositions,
      layer_norm_epsilon: cfg.layerNormEps,
      tie_word_embeddings: cfg.tieWordEmbeddings,
      ...tokens,
      ...dtype,
    };
  }
  const defaultHeadDim = cfg.hiddenSize / cfg.numHeads === cfg.headDim;
  const out: Record<string, unknown> = {
    architectures: [ARCHITECTURES[cfg.modelType]],
    model_type: cfg.modelType,
    hidden_act: "silu",
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    ...(cfg.modelType !== "qwen2" || !defaultHeadDim ? { head_dim: cfg.headDim } : {}),
    max_position_embeddings: cfg.maxPositions,
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: cfg.ropeScaling === null ? null : { ...cfg.ropeScaling },
    tie_word_embeddings: cfg.tieWordEmbeddings,
    ...tokens,
    ...dtype,
  };
  if (cfg.modelType === "llama") {
    out.attention_bias = cfg.attentionBias.q;
    out.mlp_bias = cfg.mlpBias;
  } else if (cfg.modelType === "mistral") {
    out.sliding_window = cfg.slidingWindow;
  } else {
    out.use_sliding_window = cfg.slidingWindow !== null;
    out.sliding_window = cfg.slidingWindow;
    // With a window, mark every layer as windowed: for sequences within the window (all the toolkit
    // supports) that is the same model whichever layers the original windowed.
    out.max_window_layers = cfg.slidingWindow !== null ? 0 : cfg.numLayers;
  }
  return out;
}

type Overrides<T> = { [K in keyof T]?: T[K] };

function tinyLlama(o: Overrides<LlamaModelConfig>): LlamaModelConfig {
  const modelType = o.modelType ?? "llama";
  const hiddenSize = o.hiddenSize ?? 32;
  const numHeads = o.numHeads ?? 4;
  const bias = modelType === "qwen2";
  return {
    modelType,
    vocabSize: 64,
    hiddenSize,
    numLayers: 2,
    numHeads,
    numKvHeads: numHeads % 2 === 0 ? numHeads / 2 : numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: 2 * hiddenSize,
    maxPositions: 64,
    attentionBias: { q: bias, k: bias, v: bias, o: false },
    mlpBias: false,
    tieWordEmbeddings: false,
    activation: "silu",
    bosTokenId: 1,
    eosTokenId: 2,
    padTokenId: null,
    torchDtype: "float32",
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    slidingWindow: null,
    ...o,
    family: "llama",
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
 * A small config for random-init tests (hidden 32, 2 layers, 4 heads, 2 kv heads for Llama, vocab 64,
 * 64 positions). Dependent sizes (head dim, intermediate size) follow overridden ones unless overridden
 * themselves; `modelType: "qwen2"` gets Qwen2's biases. The result is validated.
 */
export function tinyConfig(family: "llama", overrides?: Overrides<LlamaModelConfig>): LlamaModelConfig;
export function tinyConfig(family: "gpt2", overrides?: Overrides<Gpt2ModelConfig>): Gpt2ModelConfig;
export function tinyConfig(
  family: Family,
  overrides?: Overrides<LlamaModelConfig> | Overrides<Gpt2ModelConfig>,
): ModelConfig;
export function tinyConfig(
  family: Family,
  overrides: Overrides<LlamaModelConfig> | Overrides<Gpt2ModelConfig> = {},
): ModelConfig {
  const cfg = family === "llama"
    ? tinyLlama(overrides as Overrides<LlamaModelConfig>)
    : tinyGpt2(overrides as Overrides<Gpt2ModelConfig>);
  validateModelConfig(cfg, `tinyConfig("${family}")`);
  return cfg;
}
