/**
 * Export a model for serving: one folder that `@huggingface/transformers` (transformers.js) loads offline,
 * that {@link generate} runs through ONNX Runtime, and that PyTorch `transformers` loads too.
 *
 * ```
 * folder/
 *   config.json              HF config (+ "transformers.js_config": dtype, external data)
 *   generation_config.json   bos / eos / pad ids and sampling defaults
 *   model.safetensors        HF-named weights (or shards + index), for PyTorch
 *   tokenizer.json …         the tokenizer files, copied
 *   (these four are model_folder.ts' `saveModelFolder`: the same folder a training run saves)
 *   onnx/model.onnx          the decoder with KV cache; transformers.js' file for dtype "fp32"
 *   onnx/model.onnx_data     its weights, when they pass `externalDataThreshold` (protobuf stops at 2 GB)
 * ```
 *
 * The ONNX decoder has transformers.js' interface for decoder-only models: inputs `input_ids` and
 * `attention_mask` (int64), `position_ids` (int64; transformers.js computes them from the mask only when
 * the model declares the input, which makes left-padded batches right for GPT-2 too),
 * `past_key_values.{i}.key|value` (float32 `[batch_size, kv_heads, past_sequence_length, head_dim]`, heads
 * and head_dim numeric: transformers.js sizes the empty prefill cache from this metadata) and
 * `num_logits_to_keep` (int64 scalar; transformers.js feeds 1 while generating, so the LM head runs on the
 * last position only); outputs `logits` and `present.{i}.key|value`. Weights are initializers.
 * @module
 */
import { basename, join, resolve } from "node:path";
import { GraphBuilder } from "../graph/builder.ts";
import * as op from "../graph/ops.ts";
import { type Graph } from "../graph/ir.ts";
import { serializeModel } from "../graph/serialize.ts";
import type { ModelConfig } from "./config.ts";
import { buildDecoder, type KvPair } from "./decoder.ts";
import { SERVING_DIMS, SERVING_NAMES } from "./generate.ts";
import { saveModelFolder } from "./model_folder.ts";
import { frozenWeights, type WeightMap } from "./weights.ts";
import { canonicalizeCheckpoint, validateCheckpoint } from "./weights_names.ts";
import { exists } from "../files.ts";

/** The ONNX file transformers.js loads for `dtype: "fp32"` (suffix "" in its DEFAULT_DTYPE_SUFFIX_MAPPING). */
export const SERVING_ONNX_FILE = "onnx/model.onnx";
/** Its external weights, named as transformers.js looks for them (`${file}_data`). */
export const SERVING_ONNX_DATA_FILE = "onnx/model.onnx_data";
/** Above this many bytes of weights the ONNX file keeps them outside (protobuf's limit is 2 GB). */
export const DEFAULT_EXTERNAL_DATA_THRESHOLD = 1.5e9;

/** `generation_config.json` contents: token ids (default: the config's) and optional sampling defaults. */
export type GenerationDefaults = {
  bosTokenId?: number | null;
  eosTokenId?: number | number[] | null;
  padTokenId?: number | null;
  doSample?: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  maxNewTokens?: number;
};

/** Options for {@link exportForServing}. */
export type ExportOptions = {
  cfg: ModelConfig;
  /** Every weight of `cfg`, canonical HF names, fp32, HF layout (what checkpoint.ts / init.ts give). */
  weights: WeightMap;
  /** A folder with the tokenizer files (tokenizer.json, tokenizer_config.json, …); none copied if absent. */
  tokenizerDir?: string;
  generation?: GenerationDefaults;
  /** Total weight bytes above which they go to `onnx/model.onnx_data`. Default 1.5 GB. */
  externalDataThreshold?: number;
};

/** What {@link exportForServing} wrote. */
export type ExportResult = {
  /** The folder, absolute. */
  folder: string;
  /** Absolute path of `onnx/model.onnx`, for `ModelSession.create`. */
  onnxPath: string;
  /** Whether the weights went to `onnx/model.onnx_data`. */
  externalData: boolean;
  /** Files in the folder afterwards (relative; `onnx/…` included). */
  files: string[];
};

/**
 * The serving graph: {@link buildDecoder} with the cache and names transformers.js expects, weights as
 * initializers named by their HF names.
 */
export function buildServingGraph(cfg: ModelConfig, weights: WeightMap): Graph {
  const g = new GraphBuilder("main_graph");
  const { batch, sequence, past, total } = SERVING_DIMS;
  const inputIds = g.input(SERVING_NAMES.inputIds, "int64", [batch, sequence]);
  const attentionMask = g.input(SERVING_NAMES.attentionMask, "int64", [batch, total]);
  const positionIds = g.input(SERVING_NAMES.positionIds, "int64", [batch, sequence]);
  const cache: KvPair[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const shape = [batch, cfg.numKvHeads, past, cfg.headDim];
    cache.push({
      key: g.input(SERVING_NAMES.pastKey(i), "float32", shape),
      value: g.input(SERVING_NAMES.pastValue(i), "float32", shape),
    });
  }
  const logitsToKeep = g.input(SERVING_NAMES.logitsToKeep, "int64", []);
  const out = buildDecoder(g, cfg, { inputIds, attentionMask, positionIds, past: cache, logitsToKeep }, {
    dtype: "float32",
    weights: frozenWeights(weights, { prefix: "" }),
  });
  g.output(op.cast(out.logits, "float32"), SERVING_NAMES.logits);
  out.present.forEach((p, i) => {
    g.output(op.cast(p.key, "float32"), SERVING_NAMES.presentKey(i));
    g.output(op.cast(p.value, "float32"), SERVING_NAMES.presentValue(i));
  });
  return g.build();
}

/** generation_config.json's sampling defaults, in its own field names. */
function samplingDefaults(gen: GenerationDefaults): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (gen.doSample !== undefined) out.do_sample = gen.doSample;
  if (gen.temperature !== undefined) out.temperature = gen.temperature;
  if (gen.topP !== undefined) out.top_p = gen.topP;
  if (gen.topK !== undefined) out.top_k = gen.topK;
  if (gen.maxNewTokens !== undefined) out.max_new_tokens = gen.maxNewTokens;
  return out;
}

/** Adds fields to a JSON object file. */
async function updateJson(path: string, fields: Record<string, unknown>): Promise<void> {
  if (Object.keys(fields).length === 0) return;
  const json = { ...JSON.parse(await Deno.readTextFile(path)), ...fields };
  await Deno.writeTextFile(path, JSON.stringify(json, null, 2) + "\n");
}

/**
 * Writes a serving folder for `cfg` and its weights (see the module documentation for the layout).
 * Files of an earlier export into the same folder are replaced; a stale `onnx/model.onnx_data` is removed.
 *
 * @example
 * ```ts
 * const cfg = tinyConfig("llama");
 * const { onnxPath } = await exportForServing("runs/tiny", { cfg, weights: initWeights(cfg), tokenizerDir });
 * const session = await ModelSession.create(onnxPath);
 * // or: await AutoModelForCausalLM.from_pretrained(resolve("runs/tiny"), { dtype: "fp32", local_files_only: true })
 * ```
 */
export async function exportForServing(folderOut: string, opts: ExportOptions): Promise<ExportResult> {
  const gen = opts.generation ?? {};
  const pick = <T>(v: T | undefined, fallback: T) => (v === undefined ? fallback : v);
  // The generation token ids go into config.json too, so every loader agrees on them.
  const cfg: ModelConfig = {
    ...opts.cfg,
    bosTokenId: pick(gen.bosTokenId, opts.cfg.bosTokenId),
    eosTokenId: pick(gen.eosTokenId, opts.cfg.eosTokenId),
    padTokenId: pick(gen.padTokenId, opts.cfg.padTokenId),
  };
  const weights = canonicalizeCheckpoint(cfg, opts.weights);
  validateCheckpoint(cfg, weights, "export weights");
  if (opts.tokenizerDir && !(await exists(join(opts.tokenizerDir, "tokenizer.json")))) {
    throw new Error(`${opts.tokenizerDir}: no tokenizer.json to export`);
  }
  const folder = resolve(folderOut);

  // The Hugging Face part: config, generation config, model.safetensors, tokenizer files.
  await saveModelFolder(folder, cfg, weights, { tokenizerFrom: opts.tokenizerDir });

  // The ONNX decoder, weights external when large.
  await Deno.mkdir(join(folder, "onnx"), { recursive: true });
  let bytes = 0;
  for (const t of weights.values()) bytes += t.data.byteLength;
  const external = bytes > (opts.externalDataThreshold ?? DEFAULT_EXTERNAL_DATA_THRESHOLD);
  const model = serializeModel(buildServingGraph(cfg, weights), {
    externalDataThreshold: external ? 1024 : Infinity,
    externalDataPath: basename(SERVING_ONNX_DATA_FILE),
  });
  const dataPath = join(folder, SERVING_ONNX_DATA_FILE);
  if (model.externalData) await Deno.writeFile(dataPath, model.externalData.data);
  else if (await exists(dataPath)) await Deno.remove(dataPath);
  await Deno.writeFile(join(folder, SERVING_ONNX_FILE), model.model);

  // What transformers.js reads beyond the HF config: the dtype to pick and where the weights are.
  const tfjs: Record<string, unknown> = { dtype: "fp32" };
  if (model.externalData) tfjs.use_external_data_format = { [basename(SERVING_ONNX_FILE)]: 1 };
  await updateJson(join(folder, "config.json"), { "transformers.js_config": tfjs });
  await updateJson(join(folder, "generation_config.json"), samplingDefaults(gen));

  const files: string[] = [];
  for (const sub of ["", "onnx"]) {
    for await (const e of Deno.readDir(join(folder, sub))) {
      if (e.isFile) files.push(sub ? `${sub}/${e.name}` : e.name);
    }
  }
  return { folder, onnxPath: join(folder, SERVING_ONNX_FILE), externalData: external, files: files.sort() };
}
