/**
 * Hugging Face model folders in and out: `config.json` + safetensors weights (+ tokenizer files).
 *
 * Loading parses the config (unsupported `model_type`s fail here, naming the supported ones), reads the
 * weights' headers only (fp32/fp16/bf16, single file or shards: where each tensor is, not its data),
 * re-keys them by canonical name (GPT-2 without `transformer.`), checks them against the config, and
 * drops what the model does not use (a redundant tied `lm_head.weight`, causal-mask buffers). Graphs read
 * the frozen weights from the files themselves (stored_weights.ts); {@link readModelWeights} decodes them
 * to fp32 where JavaScript needs the values (full fine-tuning's initial state, merging adapters).
 *
 * Saving writes what `save_pretrained` writes, so `AutoModelForCausalLM.from_pretrained(folder)` loads it:
 * `config.json`, `generation_config.json` (a source folder's carried along, ids merged), `model.safetensors`
 * (sharded past `maxShardSize`) with the names of the `…ForCausalLM` model (GPT-2: `transformer.h.0…`; no
 * `lm_head.weight` when tied), and the tokenizer files (chat template files included).
 * @module
 */
import { join, resolve } from "node:path";
import { checkTokenIds, type ModelConfig, parseConfig, readConfigJson } from "./config.ts";
import { configToJson } from "./config_json.ts";
import { readStoredTensors, saveWeightsStream, type StoredTensor, weightEntries } from "./weight_files.ts";
import type { TensorReader } from "./safetensors.ts";
import type { OutputDtype } from "./float_codec.ts";
import { storedGraphDtype, type StoredWeights } from "./stored_weights.ts";
import type { WeightMap } from "./weights.ts";
import {
  canonicalizeCheckpoint,
  checkConfigAgainstWeights,
  type CheckpointReport,
  expectedTensors,
  GPT2_PREFIX,
  type TensorSpec,
  validateCheckpoint,
} from "./weights_names.ts";
import { exists, readJsonObject, writeJsonAtomic } from "../files.ts";

/** A loaded model folder. */
export type ModelFolder = {
  dir: string;
  config: ModelConfig;
  /** Where every tensor the config needs is stored (canonical names, HF layout); no data is read. */
  stored: StoredWeights;
  /** The folder when it holds a `tokenizer.json` (load it with lib/data's `loadTokenizer`), else null. */
  tokenizerDir: string | null;
  /** Tensors in the checkpoint that the model does not use. */
  unexpected: CheckpointReport["unexpected"];
};

/** Options of {@link loadModelFolder}. */
export type LoadModelFolderOptions = {
  /**
   * The tensors the folder must hold (default: the causal LM's, `expectedTensors`); a reward model's are
   * `sequenceClassificationTensors` (lib/model/reward_head.ts).
   */
  tensors?: (cfg: ModelConfig) => TensorSpec[];
};

/**
 * Loads a Hugging Face model folder (config, weights, tokenizer location). The config's sizes are checked
 * against the weights' headers before anything is built per layer (see `checkConfigAgainstWeights`), and
 * the token ids of config.json and generation_config.json against the vocabulary.
 */
export async function loadModelFolder(dir: string, opts: LoadModelFolderOptions = {}): Promise<ModelFolder> {
  const { file, json } = await readConfigJson(dir);
  // headers only; a folder without weights still reports its config's errors first, as before
  let raw: Map<string, StoredTensor> | undefined, weightsError: unknown;
  try {
    raw = await weightEntries(dir);
  } catch (e) {
    weightsError = e;
  }
  if (raw) checkConfigAgainstWeights(json, file, raw);
  const config = parseConfig(json, file);
  if (!raw) throw weightsError;
  checkGenerationConfigIds(
    await readGenerationConfig(dir),
    config.vocabSize,
    join(dir, "generation_config.json"),
  );
  const expected = opts.tensors?.(config) ?? expectedTensors(config);
  const entries = canonicalizeCheckpoint(config, raw);
  const report = validateCheckpoint(config, entries, dir, expected);
  const stored: StoredWeights = new Map();
  for (const { name } of expected) {
    const t = entries.get(name)!;
    storedGraphDtype(name, t);
    stored.set(name, t);
  }
  const tokenizerDir = (await exists(join(dir, "tokenizer.json"))) ? dir : null;
  return { dir, config, stored, tokenizerDir, unexpected: report.unexpected };
}

/** The folder's weights (or those `names` lists) decoded to fp32, each file opened once. */
export async function readModelWeights(folder: ModelFolder, names?: Iterable<string>): Promise<WeightMap> {
  const wanted = names ? new Map([...names].map((n) => [n, folder.stored.get(n)!])) : folder.stored;
  for (const [n, t] of wanted) if (!t) throw new Error(`${folder.dir}: no weight "${n}"`);
  const out: WeightMap = new Map();
  for (const [n, t] of await readStoredTensors(wanted)) out.set(n, { shape: [...t.shape], data: t.data });
  return out;
}

/** The dtype the folder's weights are stored in (the most common one; norms are sometimes kept in fp32). */
export function storedDtype(folder: ModelFolder): OutputDtype {
  const bytes = new Map<string, number>();
  for (const t of folder.stored.values()) bytes.set(t.dtype, (bytes.get(t.dtype) ?? 0) + t.end - t.begin);
  const top = [...bytes].sort((a, b) => b[1] - a[1])[0]?.[0];
  return top === "BF16" ? "bfloat16" : top === "F16" ? "float16" : "float32";
}

/** The name a tensor has in a `…ForCausalLM` state dict (GPT-2's base model sits under `transformer.`). */
export function hfStateDictName(cfg: ModelConfig, canonical: string): string {
  return cfg.family === "gpt2" && canonical !== "lm_head.weight" ? GPT2_PREFIX + canonical : canonical;
}

/**
 * Tokenizer files copied by {@link saveModelFolder}'s `tokenizerFrom`, when present (the chat template files
 * as they are: where the source had its template, the copy has it).
 */
export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "chat_template.jinja",
  "chat_template.json",
];

/** Options for {@link saveModelFolder}. */
export type SaveModelOptions = {
  /** Weight dtype in the file (default float32); `torch_dtype` in config.json follows it. */
  dtype?: OutputDtype;
  maxShardSize?: number | string;
  /** A folder whose tokenizer files are copied along. */
  tokenizerFrom?: string;
  /**
   * A source folder's `generation_config.json` (see {@link readGenerationConfig}): carried whole, with the
   * ids merged ({@link generationConfigJson}).
   */
  generationConfig?: Record<string, unknown> | null;
  /** More ids that end generation (a chat template's end-of-turn token), added to `eos_token_id`. */
  extraEosTokenIds?: readonly number[];
};

/** A folder's `generation_config.json`, or null when it has none. */
export async function readGenerationConfig(dir: string): Promise<Record<string, unknown> | null> {
  return await readJsonObject(join(dir, "generation_config.json"));
}

/**
 * Refuses a `generation_config.json` (`gen`, read from `file`) whose `bos_token_id` or `eos_token_id` lies
 * past the model's vocabulary: generation would never stop on it, or BOS would index past the embedding.
 * {@link loadModelFolder} calls it; call it where a generation config is read without loading the folder.
 */
export function checkGenerationConfigIds(
  gen: Record<string, unknown> | null,
  vocabSize: number,
  file: string,
): void {
  for (const field of ["bos_token_id", "eos_token_id"]) {
    checkTokenIds(gen?.[field], vocabSize, (id) => {
      throw new Error(
        `${file}: ${field} ${id} is outside the vocabulary (vocab_size ${vocabSize} in config.json)`,
      );
    });
  }
}

/** A token id field (a number or a list of them) as a list. */
export function tokenIdList(v: unknown): number[] {
  if (typeof v === "number" && Number.isInteger(v)) return [v];
  return Array.isArray(v) ? v.filter((x): x is number => typeof x === "number" && Number.isInteger(x)) : [];
}

/**
 * The `generation_config.json` written for `cfg`: the source's (every field: sampling defaults, …) when
 * there is one, else `{_from_model_config: true}`; `bos_token_id` and `pad_token_id` the config's where it
 * has them (else the source's); `eos_token_id` every id that ends generation, in order and once each: the
 * config's, the source's (Llama 3's `[128001, 128009]`), then `extraEos`. One id is written as a number.
 */
export function generationConfigJson(
  cfg: ModelConfig,
  source?: Record<string, unknown> | null,
  extraEos: readonly number[] = [],
): Record<string, unknown> {
  const gen: Record<string, unknown> = source ? { ...source } : { _from_model_config: true };
  if (cfg.bosTokenId !== null) gen.bos_token_id = cfg.bosTokenId;
  if (cfg.padTokenId !== null) gen.pad_token_id = cfg.padTokenId;
  const eos = [
    ...new Set([...tokenIdList(cfg.eosTokenId), ...tokenIdList(source?.eos_token_id), ...extraEos]),
  ];
  if (eos.length) gen.eos_token_id = eos.length === 1 ? eos[0] : eos;
  return gen;
}

/**
 * Writes a model folder that transformers (and {@link loadModelFolder}) loads back unchanged. The weights
 * are a map, or a reader called once per tensor (canonical name) as it is written, so a model of any size
 * is saved with one tensor in memory.
 */
export async function saveModelFolder(
  dir: string,
  cfg: ModelConfig,
  weights: WeightMap | TensorReader,
  opts: SaveModelOptions = {},
): Promise<void> {
  const dtype = opts.dtype ?? "float32";
  let read: TensorReader;
  if (typeof weights === "function") read = weights;
  else {
    validateCheckpoint(cfg, weights, "weights to save");
    read = (name) => weights.get(name)!.data;
  }
  const canonical = new Map(expectedTensors(cfg).map((t) => [hfStateDictName(cfg, t.name), t]));
  await Deno.mkdir(dir, { recursive: true });
  await saveWeightsStream(
    dir,
    [...canonical].map(([name, t]) => ({ name, shape: t.shape })),
    async (name) => {
      const t = canonical.get(name)!;
      const data = await read(t.name);
      if (data.length !== t.shape.reduce((a, b) => a * b, 1)) {
        throw new Error(`weight "${t.name}": ${data.length} values for shape [${t.shape}]`);
      }
      return data;
    },
    { dtype, maxShardSize: opts.maxShardSize },
  );
  await writeJsonAtomic(join(dir, "config.json"), configToJson({ ...cfg, torchDtype: dtype }));
  await writeJsonAtomic(
    join(dir, "generation_config.json"),
    generationConfigJson(cfg, opts.generationConfig, opts.extraEosTokenIds),
  );
  if (opts.tokenizerFrom && resolve(opts.tokenizerFrom) !== resolve(dir)) {
    for (const f of TOKENIZER_FILES) {
      const src = join(opts.tokenizerFrom, f);
      if (await exists(src)) await Deno.copyFile(src, join(dir, f));
      // an earlier save's file the source does not have (its chat_template.jinja) would be read instead
      else await Deno.remove(join(dir, f)).catch(() => {});
    }
  }
}
