/**
 * Export a model for serving: one folder that `@huggingface/transformers` (transformers.js) loads offline,
 * that {@link generate} runs through ONNX Runtime, and that PyTorch `transformers` loads too.
 *
 * ```
 * folder/
 *   config.json              HF config (+ "transformers.js_config": dtype, external data)
 *   generation_config.json   the source's (sampling defaults, …), every stop id (+ the chat end-of-turn)
 *   model.safetensors        HF-named weights (or shards + index), for PyTorch, in the chosen dtype
 *   tokenizer.json …         the tokenizer files, copied
 *   (these four are model_folder.ts' `saveModelFolder`: the same folder a training run saves)
 *   onnx/model.onnx          the decoder with KV cache, graph only; transformers.js' file for dtype "fp32"
 *   onnx/model.onnx_data     a hard link of model.safetensors (`model.onnx_data_<k>` of shard k + 1)
 * ```
 *
 * The decoder's weights are ONNX external data pointing into the safetensors files themselves (a tensor's
 * bytes are one contiguous range after the header), so they are written once, at their stored dtype (bf16
 * stays bf16 and is cast in the graph), and nothing limits the model's size. ONNX Runtime reads external
 * data only from files inside the model file's folder, links included (it resolves them), hence the hard
 * links, named as transformers.js looks for them; where no link can be made the file is copied.
 *
 * The ONNX decoder has transformers.js' interface for decoder-only models: inputs `input_ids` and
 * `attention_mask` (int64), `position_ids` (int64; transformers.js computes them from the mask only when
 * the model declares the input, which makes left-padded batches right for GPT-2 too),
 * `past_key_values.{i}.key|value` (float32 `[batch_size, kv_heads, past_sequence_length, head_dim]`, heads
 * and head_dim numeric: transformers.js sizes the empty prefill cache from this metadata) and
 * `num_logits_to_keep` (int64 scalar; transformers.js feeds 1 while generating, so the LM head runs on the
 * last position only); outputs `logits` and `present.{i}.key|value`.
 * @module
 */
import { basename, join, resolve } from "node:path";
import { GraphBuilder } from "../graph/builder.ts";
import * as op from "../graph/ops.ts";
import { type Graph } from "../graph/ir.ts";
import { serializeModel } from "../graph/serialize.ts";
import type { ModelConfig } from "./config.ts";
import { buildDecoder } from "./decoder.ts";
import type { KvPair } from "./types.ts";
import { SERVING_DIMS, SERVING_NAMES } from "./generate.ts";
import { loadModelFolder, readGenerationConfig, saveModelFolder } from "./model_folder.ts";
import type { TensorReader } from "./safetensors.ts";
import type { OutputDtype } from "./float_codec.ts";
import { storedWeights } from "./stored_weights.ts";
import type { WeightMap, WeightSource } from "./weights.ts";
import { canonicalizeCheckpoint, validateCheckpoint } from "./weights_names.ts";
import { exists, linkOrCopy, writeFileAtomic, writeJsonAtomic } from "../files.ts";

/** The ONNX file transformers.js loads for `dtype: "fp32"` (suffix "" in its DEFAULT_DTYPE_SUFFIX_MAPPING). */
export const SERVING_ONNX_FILE = "onnx/model.onnx";
/** Its external weights, named as transformers.js looks for them (`${file}_data`, then `_data_1`, …). */
export const SERVING_ONNX_DATA_FILE = "onnx/model.onnx_data";

/** `generation_config.json` contents: token ids (default: the config's) and optional sampling defaults. */
export type GenerationDefaults = {
  bosTokenId?: number | null;
  eosTokenId?: number | number[] | null;
  padTokenId?: number | null;
  doSample?: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  maxNewTokens?: number;
};

/** Options for {@link exportForServing}. */
export type ExportOptions = {
  cfg: ModelConfig;
  /**
   * Every weight of `cfg` (canonical HF names, fp32, HF layout): a map, or a reader called once per tensor
   * as it is written, so a model of any size is exported with one tensor in memory.
   */
  weights: WeightMap | TensorReader;
  /** The weights' dtype in the folder (model.safetensors and the decoder). Default float32. */
  dtype?: OutputDtype;
  /**
   * A folder with the tokenizer files (tokenizer.json, tokenizer_config.json, chat_template.jinja, …); none
   * copied if absent. Its chat template's end-of-turn token and its EOS join generation_config.json's
   * `eos_token_id`.
   */
  tokenizerDir?: string;
  /**
   * The model folder the weights came from: its `generation_config.json` (sampling defaults, every stop id)
   * is carried into the export, ids merged. Default: `tokenizerDir` (a model folder holds its tokenizer).
   */
  sourceDir?: string;
  /** generation_config.json values that win over the source's. */
  generation?: GenerationDefaults;
  /** Largest safetensors shard (default "5GB", as transformers). */
  maxShardSize?: number | string;
  /** Told when a weight file has to be copied into onnx/ because no hard link can be made. */
  log?: (line: string) => void;
};

/** What {@link exportForServing} wrote. */
export type ExportResult = {
  /** The folder, absolute. */
  folder: string;
  /** Absolute path of `onnx/model.onnx`, for `ModelSession.create`. */
  onnxPath: string;
  /** The decoder's weight files in onnx/ (links to the safetensors files), in shard order. */
  dataFiles: string[];
  /** Files in the folder afterwards (relative; `onnx/…` included). */
  files: string[];
};

/**
 * The serving graph: {@link buildDecoder} with the cache and names transformers.js expects, the weights
 * from `weights` (initializers named by their HF names: `storedWeights(stored, { prefix: "" })`).
 */
export function buildServingGraph(cfg: ModelConfig, weights: WeightSource): Graph {
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
    weights,
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
  if (gen.repetitionPenalty !== undefined) out.repetition_penalty = gen.repetitionPenalty;
  if (gen.maxNewTokens !== undefined) out.max_new_tokens = gen.maxNewTokens;
  return out;
}

/**
 * The ids a tokenizer folder says end a response: its chat template's end-of-turn token (Llama 3's
 * `<|eot_id|>`, which training appends and scores) and its EOS.
 */
async function tokenizerStopIds(dir: string): Promise<number[]> {
  // lazily: transformers.js loads sharp through FFI when imported
  const { loadTokenizer, endOfTurnToken } = await import("../data/tokenize.ts");
  const tokenizer = await loadTokenizer(dir, { log: () => {} });
  const ids = [endOfTurnToken(tokenizer)?.id, tokenizer.eos_token_id];
  return ids.filter((id): id is number => typeof id === "number");
}

/** Adds fields to a JSON object file. */
async function updateJson(path: string, fields: Record<string, unknown>): Promise<void> {
  if (Object.keys(fields).length === 0) return;
  const json = { ...JSON.parse(await Deno.readTextFile(path)), ...fields };
  await writeJsonAtomic(path, json);
}

/**
 * Writes a serving folder for `cfg` and its weights (see the module documentation for the layout).
 * Files of an earlier export into the same folder are replaced; stale `onnx/model.onnx_data*` are removed.
 *
 * @example
 * ```ts
 * import { join } from "node:path";
 * import { ModelSession } from "../runtime/session.ts";
 * import { parseConfig } from "./config.ts";
 * import { initWeights } from "./init.ts";
 * const cfg = parseConfig({
 *   model_type: "llama", vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4,
 *   num_key_value_heads: 2, intermediate_size: 64, max_position_embeddings: 64,
 * });
 * const dir = await Deno.makeTempDir();
 * // random weights here; a trained policy's, and `tokenizerDir` to copy its tokenizer, in a real export
 * const { onnxPath } = await exportForServing(join(dir, "tiny"), { cfg, weights: initWeights(cfg) });
 * const session = await ModelSession.create(onnxPath);
 * // or in transformers.js:
 * // await AutoModelForCausalLM.from_pretrained(join(dir, "tiny"), { dtype: "fp32", local_files_only: true })
 * await session.release();
 * await Deno.remove(dir, { recursive: true });
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
  let weights = opts.weights;
  if (typeof weights !== "function") {
    weights = canonicalizeCheckpoint(cfg, weights);
    validateCheckpoint(cfg, weights, "export weights");
  }
  if (opts.tokenizerDir && !(await exists(join(opts.tokenizerDir, "tokenizer.json")))) {
    throw new Error(`${opts.tokenizerDir}: no tokenizer.json to export`);
  }
  const folder = resolve(folderOut);

  // The Hugging Face part: config, generation config (the source's, carried), model.safetensors, tokenizer
  // files.
  const sourceDir = opts.sourceDir ?? opts.tokenizerDir;
  await saveModelFolder(folder, cfg, weights, {
    dtype: opts.dtype,
    tokenizerFrom: opts.tokenizerDir,
    maxShardSize: opts.maxShardSize,
    generationConfig: sourceDir ? await readGenerationConfig(sourceDir) : null,
    extraEosTokenIds: opts.tokenizerDir ? await tokenizerStopIds(opts.tokenizerDir) : [],
  });

  // The ONNX decoder, reading its weights from the safetensors files through links in onnx/.
  const onnxDir = join(folder, "onnx");
  await Deno.mkdir(onnxDir, { recursive: true });
  for await (const e of Deno.readDir(onnxDir)) {
    if (e.name.startsWith(basename(SERVING_ONNX_DATA_FILE))) await Deno.remove(join(onnxDir, e.name));
  }
  const saved = await loadModelFolder(folder);
  const shards = [...new Set([...saved.stored.values()].map((t) => t.file))].sort();
  const locations = new Map<string, string>();
  for (const [k, file] of shards.entries()) {
    const name = `${basename(SERVING_ONNX_DATA_FILE)}${k === 0 ? "" : `_${k}`}`;
    const to = join(onnxDir, name);
    if (await linkOrCopy(file, to) === "copied") opts.log?.(`${file} cannot be hard-linked to ${to}: copied`);
    locations.set(file, name);
  }
  const model = serializeModel(buildServingGraph(cfg, storedWeights(saved.stored, { prefix: "" })), {
    locate: (file) => locations.get(file)!,
  });
  await writeFileAtomic(join(folder, SERVING_ONNX_FILE), async (f) => {
    let off = 0;
    while (off < model.model.length) off += await f.write(model.model.subarray(off));
  });

  // What transformers.js reads beyond the HF config: the dtype to pick and where the weights are.
  const tfjs = { dtype: "fp32", use_external_data_format: { [basename(SERVING_ONNX_FILE)]: shards.length } };
  await updateJson(join(folder, "config.json"), { "transformers.js_config": tfjs });
  await updateJson(join(folder, "generation_config.json"), samplingDefaults(gen));

  const files: string[] = [];
  for (const sub of ["", "onnx"]) {
    for await (const e of Deno.readDir(join(folder, sub))) {
      if (e.isFile) files.push(sub ? `${sub}/${e.name}` : e.name);
    }
  }
  return {
    folder,
    onnxPath: join(folder, SERVING_ONNX_FILE),
    dataFiles: [...locations.values()].map((n) => `onnx/${n}`),
    files: files.sort(),
  };
}
