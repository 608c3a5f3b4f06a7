/**
 * Tiny random reward model folders as transformers' `save_pretrained` writes a `…ForSequenceClassification`:
 * config.json with `architectures` and `id2label`, model.safetensors with the base model's names
 * (`model.…`, GPT-2's `transformer.…`) and `score.weight`, and the test tokenizer (Zephyr-style template).
 */
import { join } from "node:path";
import type { Family, ModelConfig, ModelType } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { configToJson } from "../../lib/model/config_json.ts";
import { initWeights } from "../../lib/model/init.ts";
import { saveWeights } from "../../lib/model/weight_files.ts";
import type { WeightMap } from "../../lib/model/weights.ts";
import { GPT2_PREFIX } from "../../lib/model/weights_names.ts";
import { mulberry32 } from "../../lib/data/random.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";

/** The tiny configs: the test tokenizer's 128 tokens, pad 0, EOS 1. */
export function rewardConfig(family: Family, modelType?: ModelType): ModelConfig {
  const common = { vocabSize: 128, maxPositions: 128, eosTokenId: 1, padTokenId: 0, bosTokenId: null };
  if (family === "gpt2") return tinyConfig("gpt2", { ...common, bosTokenId: 1 });
  return tinyConfig(family, { ...common, ...(modelType ? { modelType } : {}) } as Partial<ModelConfig>);
}

const ARCH: Record<string, string> = {
  llama: "LlamaForSequenceClassification",
  qwen2: "Qwen2ForSequenceClassification",
  qwen3: "Qwen3ForSequenceClassification",
  mistral: "MistralForSequenceClassification",
  gemma2: "Gemma2ForSequenceClassification",
  phi3: "Phi3ForSequenceClassification",
  gpt2: "GPT2ForSequenceClassification",
};

/** Options of {@link writeRewardFolder}. */
export type RewardFolderOptions = {
  seed?: number;
  /** Labels of the head (config and `score.weight`); default 1. */
  numLabels?: number;
  /** Leave `score.weight` out (a broken or causal-LM checkpoint). */
  omitScore?: boolean;
  /** `architectures` in config.json (default the family's `…ForSequenceClassification`). */
  architectures?: string[];
};

/**
 * Writes a reward model folder for `cfg` into `dir`; returns its weights by canonical name (GPT-2 without
 * `transformer.`), `score.weight` included, for a reference computation.
 */
export async function writeRewardFolder(
  dir: string,
  cfg: ModelConfig,
  o: RewardFolderOptions = {},
): Promise<WeightMap> {
  const numLabels = o.numLabels ?? 1;
  const weights = initWeights(cfg, { seed: o.seed ?? 3, std: 0.3, normStd: 0.1, biasStd: 0.1 });
  weights.delete("lm_head.weight");
  const rand = mulberry32((o.seed ?? 3) + 100);
  const score = Float32Array.from({ length: numLabels * cfg.hiddenSize }, () => 2 * rand() - 1);
  if (!o.omitScore) weights.set("score.weight", { shape: [numLabels, cfg.hiddenSize], data: score });
  const named = new Map(
    [...weights].map(([n, t]) => [cfg.family === "gpt2" && n !== "score.weight" ? GPT2_PREFIX + n : n, t]),
  );
  await Deno.mkdir(dir, { recursive: true });
  await saveWeights(dir, named);
  const json = configToJson(cfg);
  json.architectures = o.architectures ?? [ARCH[cfg.modelType]];
  json.id2label = Object.fromEntries(Array.from({ length: numLabels }, (_, i) => [String(i), `LABEL_${i}`]));
  json.label2id = Object.fromEntries(Array.from({ length: numLabels }, (_, i) => [`LABEL_${i}`, i]));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(json, null, 2));
  await writeTinyTokenizer(dir, { chatTemplate: true });
  return weights;
}
