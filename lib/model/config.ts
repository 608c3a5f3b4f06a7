/**
 * Parse and validate a Hugging Face `config.json` into one normalized, typed config for the architectures
 * the toolkit can build, grouped in four graph families (lib/model/families/, one file each):
 * - `llama`: `llama` (also SmolLM, TinyLlama, Llama 2/3), `mistral`, `qwen2`, `qwen3`;
 * - `gemma`: `gemma2`, `gemma3_text`;
 * - `phi3`: `phi3` (Phi-3, Phi-3.5, Phi-4-mini);
 * - `gpt2`: `gpt2`.
 *
 * Every place that needs a model dimension reads it from here, so the quirks of each `model_type` (GPT-2's
 * `n_embd`, Qwen2's hard-wired q/k/v biases, rope scaling variants, transformers v5's `rope_parameters`,
 * which layers slide) are resolved once, by the family's file. This module holds what is shared: the
 * dispatch on `model_type` (through families/registry.ts), the checks every family passes, and the
 * re-exports of the config types. Unsupported features fail loudly at load time rather than producing a
 * subtly wrong model. Sizes are bounded ({@link CONFIG_LIMITS}) and `bos_token_id` / `eos_token_id` must
 * lie inside the vocabulary, so that a wrong file fails at once, naming the field.
 *
 * The field reader and the shared config types live in families/common.ts, not here: the families read
 * their configs with them, and this module imports the families (to dispatch), so they would import in a
 * circle.
 * @module
 */
import { ropeAttentionFactor, ropeSupportedLength } from "./rope.ts";
import {
  CONFIG_LIMITS,
  FieldReader,
  type Json,
  type LayerRope,
  type RotaryModelConfig,
} from "./families/common.ts";
import {
  FAMILIES,
  type Family,
  familyModule,
  familyOf,
  type ModelConfig,
  type ModelType,
} from "./families/registry.ts";
import type { GemmaModelConfig } from "./families/gemma.ts";
import type { LlamaModelConfig } from "./families/llama.ts";
import type { Phi3ModelConfig } from "./families/phi3.ts";

export {
  llama3ScaleInverseFrequencies,
  ropeInverseFrequencies,
  ropeScalingType,
  type RopeType,
  SUPPORTED_ROPE_TYPES,
} from "./rope.ts";
export { ropeAttentionFactor };
export {
  type Activation,
  type AttentionBias,
  type BaseModelConfig,
  CONFIG_LIMITS,
  type LayerRope,
  layerWindow,
  type RotaryModelConfig,
} from "./families/common.ts";
export type { Family, ModelConfig, ModelType } from "./families/registry.ts";
export type { LlamaModelConfig, LlamaModelType } from "./families/llama.ts";
export type { GemmaModelConfig, GemmaModelType } from "./families/gemma.ts";
export type { Phi3ModelConfig } from "./families/phi3.ts";
export type { Gpt2ModelConfig } from "./families/gpt2.ts";

/** `model_type` values the toolkit accepts, with the family each maps to (from the families' files). */
export const SUPPORTED_MODEL_TYPES = Object.fromEntries(
  (Object.keys(FAMILIES) as Family[]).flatMap((f) => FAMILIES[f].modelTypes.map((t) => [t, f])),
) as Readonly<Record<ModelType, Family>>;

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
  const keys = familyModule(family).sizeKeys;
  return { family, layers: r.raw(keys.layers), vocab: r.raw(keys.vocab), hidden: r.raw(keys.hidden) };
}

function supportedList(): string {
  return Object.keys(SUPPORTED_MODEL_TYPES).map((t) => `"${t}"`).join(", ");
}

/** Multimodal wrappers whose text model the toolkit reads, with the `model_type` to use instead. */
const TEXT_PART: Record<string, string> = Object.assign(
  {},
  ...Object.values(FAMILIES).map((f: { textParts?: Record<string, string> }) => f.textParts ?? {}),
);

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
  const parse = familyModule(family).parse as (r: FieldReader, modelType: ModelType) => ModelConfig;
  const cfg = parse(r, modelType as ModelType);
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
  familyOf(cfg).validate(cfg, fail);
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
  const rotaryDim = familyOf(cfg).rotaryDim(cfg);
  if (rotaryDim === null) return cfg.maxPositions;
  return Math.min(cfg.maxPositions, ropeSupportedLength({ ...(cfg as RotaryModelConfig), rotaryDim }));
}

/** The rope settings of a rotary family's layer `i` (Gemma 3's sliding layers use their own base, unscaled). */
export function layerRope(
  cfg: LlamaModelConfig | GemmaModelConfig | Phi3ModelConfig,
  i: number,
): LayerRope {
  const rope = familyOf(cfg).layerRope;
  if (!rope) throw new Error(`model family "${cfg.family}" has no rotary embeddings`);
  return rope(cfg, i);
}
