/**
 * Hugging Face model folders in and out: `config.json` + safetensors weights (+ tokenizer files).
 *
 * Loading parses the config (unsupported `model_type`s fail here, naming the supported ones), reads the
 * weights (fp32/fp16/bf16, single file or shards) as fp32, re-keys them by canonical name (GPT-2 without
 * `transformer.`), checks them against the config, and drops what the model does not use (a redundant
 * tied `lm_head.weight`, causal-mask buffers).
 *
 * Saving writes what `save_pretrained` writes, so `AutoModelForCausalLM.from_pretrained(folder)` loads it:
 * `config.json`, `generation_config.json`, `model.safetensors` (sharded past `maxShardSize`) with the
 * names of the `…ForCausalLM` model (GPT-2: `transformer.h.0…`; no `lm_head.weight` when tied).
 * @module
 */
import { join } from "node:path";
import { configToJson, loadConfig, type ModelConfig } from "./config.ts";
import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import type { OutputDtype } from "./safetensors.ts";
import type { WeightMap } from "./weights.ts";
import {
  canonicalizeCheckpoint,
  type CheckpointReport,
  expectedTensors,
  GPT2_PREFIX,
  validateCheckpoint,
} from "./weights_names.ts";
import { exists, writeJsonAtomic } from "../files.ts";

/** A loaded model folder. */
export type ModelFolder = {
  dir: string;
  config: ModelConfig;
  /** Every tensor the config needs, canonical names, fp32, HF layout. */
  weights: WeightMap;
  /** The folder when it holds a `tokenizer.json` (load it with lib/data's `loadTokenizer`), else null. */
  tokenizerDir: string | null;
  /** Tensors in the checkpoint that the model does not use. */
  unexpected: CheckpointReport["unexpected"];
};

/** Loads a Hugging Face model folder (config, weights, tokenizer location). */
export async function loadModelFolder(dir: string): Promise<ModelFolder> {
  const config = await loadConfig(dir);
  const raw = canonicalizeCheckpoint(config, await loadCheckpoint(dir));
  const report = validateCheckpoint(config, raw, dir);
  const weights: WeightMap = new Map();
  for (const { name } of expectedTensors(config)) {
    const t = raw.get(name)!;
    weights.set(name, { shape: [...t.shape], data: t.data });
  }
  const tokenizerDir = (await exists(join(dir, "tokenizer.json"))) ? dir : null;
  return { dir, config, weights, tokenizerDir, unexpected: report.unexpected };
}

/** The name a tensor has in a `…ForCausalLM` state dict (GPT-2's base model sits under `transformer.`). */
export function hfStateDictName(cfg: ModelConfig, canonical: string): string {
  return cfg.family === "gpt2" && canonical !== "lm_head.weight" ? GPT2_PREFIX + canonical : canonical;
}

/** Tokenizer files copied by {@link saveModelFolder}'s `tokenizerFrom`, when present. */
export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "chat_template.jinja",
];

/** Options for {@link saveModelFolder}. */
export type SaveModelOptions = {
  /** Weight dtype in the file (default float32); `torch_dtype` in config.json follows it. */
  dtype?: OutputDtype;
  maxShardSize?: number | string;
  /** A folder whose tokenizer files are copied along. */
  tokenizerFrom?: string;
};

/** Writes a model folder that transformers (and {@link loadModelFolder}) loads back unchanged. */
export async function saveModelFolder(
  dir: string,
  cfg: ModelConfig,
  weights: WeightMap,
  opts: SaveModelOptions = {},
): Promise<void> {
  const dtype = opts.dtype ?? "float32";
  validateCheckpoint(cfg, weights, "weights to save");
  const tensors = expectedTensors(cfg).map(({ name }) =>
    [hfStateDictName(cfg, name), weights.get(name)!] as const
  );
  await Deno.mkdir(dir, { recursive: true });
  await saveCheckpoint(dir, tensors, { dtype, maxShardSize: opts.maxShardSize });
  await writeJsonAtomic(join(dir, "config.json"), configToJson({ ...cfg, torchDtype: dtype }));
  const gen: Record<string, unknown> = { _from_model_config: true };
  if (cfg.bosTokenId !== null) gen.bos_token_id = cfg.bosTokenId;
  if (cfg.eosTokenId !== null) gen.eos_token_id = cfg.eosTokenId;
  if (cfg.padTokenId !== null) gen.pad_token_id = cfg.padTokenId;
  await writeJsonAtomic(join(dir, "generation_config.json"), gen);
  if (opts.tokenizerFrom) {
    for (const f of TOKENIZER_FILES) {
      const src = join(opts.tokenizerFrom, f);
      if (await exists(src)) await Deno.copyFile(src, join(dir, f));
    }
  }
}
