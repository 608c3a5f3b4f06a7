/**
 * Opening a model folder, the one way every use does it (`sample`, `score`'s reward model aside, `eval`,
 * the server, the trainer's `--reference`, the demo): a training run (its `policy/`), an exported folder
 * (`onnx/model.onnx`, beside its safetensors) or a plain Hugging Face folder (config.json, safetensors,
 * tokenizer).
 *
 * - {@link locateModel}: what a path is, and its config (cheap; no tokenizer, so a Worker may call it).
 * - {@link inspectModel}: that, with everything generation reads about the model as the server reads it:
 *   the tokenizer and chat template (`TextCodec`), every id that ends a response (config.json's and
 *   generation_config.json's `eos_token_id`, the tokenizer's EOS, the template's end of turn) and
 *   generation_config.json's sampling defaults.
 * - {@link openGenerator}: the KV-cache decoder in a session — the exported one, or for a plain folder the
 *   same graph (`buildServingGraph`) built in memory over the folder's own safetensors (hard links in a
 *   temporary graph folder: nothing copied, nothing left behind), so sampling needs no export first and
 *   gives what the export would.
 * - {@link openScorer}: the scoring graph (per-sequence log-probs, scoring_graph.ts) over a folder's weights.
 *
 * Both sessions are disposable: `await using g = await openGenerator(…)` frees the session and removes
 * the temporary graphs when the block ends, however it ends.
 *
 * @example
 * ```ts
 * import { openGenerator } from "./open.ts";
 * import { generate } from "./generate.ts";
 * import { tokenizePrompt } from "../data/tokenize.ts";
 *
 * export async function hello(folder: string): Promise<string> {
 *   await using g = await openGenerator(folder, { device: "cpu", withTokenizer: true });
 *   const ids = tokenizePrompt(g.tokenizer, [{ role: "user", content: "hi" }]);
 *   const { rows } = await generate(g.session, [ids], { maxNewTokens: 16, eosTokenIds: g.eosIds, padTokenId: g.padId });
 *   return g.codec.decode(rows[0].tokens);
 * }
 * ```
 * @module
 */
import { basename, join, resolve } from "node:path";
import { TextCodec } from "../data/codec.ts";
import type { Tokenizer } from "../data/tokenize.ts";
import { exists, isFile } from "../files.ts";
import { foldingPays } from "../runtime/device_memory.ts";
import { GraphFolder } from "../runtime/graph_folder.ts";
import { ModelSession } from "../runtime/session.ts";
import type { Device, HostTensor } from "../runtime/tensor.ts";
import { loadConfig, maxSupportedLength, type ModelConfig } from "./config.ts";
import { buildServingGraph, SERVING_ONNX_FILE } from "./export.ts";
import {
  checkGenerationConfigIds,
  loadModelFolder,
  type ModelFolder,
  readGenerationConfig,
  tokenIdList,
} from "./model_folder.ts";
import { type SamplingDefaults, samplingDefaultsOf } from "./sampling.ts";
import { buildScoringGraph, type Precision } from "./scoring_graph.ts";
import { narrowElements, storedWeights } from "./stored_weights.ts";

/** The folder of a training run that holds its trained model (train/run_folder.ts lays runs out with it). */
export const RUN_POLICY_DIR = "policy";

/** What a model path turned out to be. */
export type ModelKind = "run" | "exported" | "hf";

/** A model path resolved, before any session or tokenizer. */
export type ModelLocation = {
  /** The path as given, absolute. */
  given: string;
  /** The Hugging Face folder the model is (a run's `policy/`), absolute. */
  dir: string;
  /** The name outputs record: the run folder's name for a run, else the model folder's. */
  name: string;
  kind: ModelKind;
  /** The exported decoder, when the folder has one (else the graph is built from the safetensors). */
  onnxPath: string | null;
  config: ModelConfig;
  /** Prompt + new tokens the model supports. */
  contextLength: number;
  /** The folder's weights as {@link locateModel} read them (a plain folder's), so a session need not again. */
  folder?: ModelFolder;
};

/** A model described for generation: its location, tokenizer, stop ids and sampling defaults. */
export type ModelInfo = ModelLocation & {
  tokenizer: Tokenizer;
  /** The tokenizer with the chat template, detokenization and the special ids. */
  codec: TextCodec;
  /** Every id that ends a response, in order, once each. */
  eosIds: number[];
  /** The id left padding uses (masked out). */
  padId: number;
  /** generation_config.json's temperature, top_p, top_k, repetition_penalty (what it sets, valid). */
  generationDefaults: SamplingDefaults;
};

/**
 * Resolves `model` (a run folder, an exported folder or a Hugging Face folder) and reads its config; a
 * plain folder is checked whole (the weights against the config). Throws naming the path, as `flag`, and
 * what was expected there.
 */
export async function locateModel(model: string, flag = "--model"): Promise<ModelLocation> {
  const given = resolve(model);
  let dir = given, kind: ModelKind;
  const policy = join(given, RUN_POLICY_DIR);
  if (await isFile(join(policy, "config.json"))) {
    dir = policy;
    kind = "run";
  } else if (await isFile(join(given, "config.json"))) {
    kind = (await isFile(join(given, SERVING_ONNX_FILE))) ? "exported" : "hf";
  } else {
    const what = (await isFile(given))
      ? "a file"
      : (await exists(given))
      ? "a folder without config.json"
      : "no such folder";
    throw new Error(
      `${flag} ${model}: ${what}; expected a Hugging Face model folder (config.json, safetensors, tokenizer), ` +
        `an exported folder (${SERVING_ONNX_FILE}) or a training run folder (${RUN_POLICY_DIR}/)`,
    );
  }
  const onnx = join(dir, SERVING_ONNX_FILE);
  const onnxPath = (await isFile(onnx)) ? onnx : null;
  const folder = onnxPath ? undefined : await loadModelFolder(dir);
  const config = folder?.config ?? await loadConfig(dir);
  return {
    given,
    dir,
    name: modelName(given),
    kind,
    onnxPath,
    config,
    contextLength: maxSupportedLength(config),
    folder,
  };
}

/**
 * {@link locateModel}, then the tokenizer, stop ids and sampling defaults. `log` gets notices (a model
 * without a chat template, a generation_config.json value that is ignored); default stderr.
 */
export async function inspectModel(
  model: string | ModelLocation,
  opts: { log?: (line: string) => void } = {},
): Promise<ModelInfo> {
  const loc = typeof model === "string" ? await locateModel(model) : model;
  const log = opts.log ?? ((line: string) => console.error(line));
  const { dir, config } = loc;
  const gen = await readGenerationConfig(dir);
  const generationEos = [...new Set([...tokenIdList(config.eosTokenId), ...tokenIdList(gen?.eos_token_id)])];
  checkGenerationConfigIds(gen, config.vocabSize, join(dir, "generation_config.json"));
  const codec = await TextCodec.load(dir, generationEos, { log, vocabSize: config.vocabSize });
  return {
    ...loc,
    tokenizer: codec.tokenizer,
    codec,
    eosIds: codec.special.eos,
    padId: codec.special.pad,
    generationDefaults: samplingDefaultsOf(gen, (line) => log(`note: ${line}`)),
  };
}

/**
 * The name a model goes by in outputs: its folder's, or `org/name` for a snapshot in the Hugging Face cache
 * (`…/models--org--name/snapshots/<revision>`), whose folder name is only a revision hash.
 */
export function modelName(dir: string): string {
  const m = /(?:^|[\\/])models--([^\\/]+)[\\/]snapshots[\\/][^\\/]+[\\/]?$/.exec(dir);
  return m ? m[1].replaceAll("--", "/") : basename(dir);
}

/** An open generation session over a model folder; `await using` (or `close()`) frees it. */
export type Generator = {
  /** The KV-cache decoder, ready for generate.ts' `generate`. */
  session: ModelSession;
  /** Whether bf16/fp16 weights were cast to fp32 once at load (see {@link OpenGeneratorOptions}). */
  foldedWeights: boolean;
  /** Frees the session and removes the temporary graph folder (a plain HF folder's). */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
};

/** Options for {@link openGenerator}. */
export type OpenGeneratorOptions = {
  device?: Device;
  /** Which CUDA device (default 0; a rank of several uses its local rank's). */
  deviceId?: number;
  /** CPU threads inside an operator (default: all cores). */
  threads?: number;
  /**
   * Cast bf16/fp16 weights to fp32 once when the session loads (2.4–3.3× the CPU decode speed, BENCHMARKS.md)
   * instead of at every token. `auto` (default): when that fp32 copy takes at most an eighth of the device's
   * free memory.
   */
  foldWeights?: boolean | "auto";
  /**
   * Where the temporary graph folder of a plain HF folder may go, tried before the system's temporary
   * folder and the model folder: the first on the weight files' filesystem wins (hard links need it).
   */
  graphParents?: string[];
  /** Notices (a model without a chat template, weights copied rather than linked). Default: stderr. */
  log?: (line: string) => void;
};

/**
 * Opens a generation session for a model path, or for a model {@link locateModel} or {@link inspectModel}
 * described (what it described comes back with the session): the exported decoder when there is one, else
 * the same decoder built over the folder's safetensors.
 */
export async function openGenerator<T extends ModelLocation>(
  model: T,
  opts?: OpenGeneratorOptions,
): Promise<T & Generator>;
export async function openGenerator(
  model: string,
  opts: OpenGeneratorOptions & { withTokenizer: true },
): Promise<ModelInfo & Generator>;
export async function openGenerator(
  model: string,
  opts?: OpenGeneratorOptions,
): Promise<ModelLocation & Generator>;
export async function openGenerator(
  model: string | ModelLocation,
  opts: OpenGeneratorOptions & { withTokenizer?: boolean } = {},
): Promise<ModelLocation & Generator> {
  const log = opts.log ?? ((line: string) => console.error(line));
  let loc = typeof model === "string" ? await locateModel(model) : model;
  if (opts.withTokenizer && !("codec" in loc)) loc = await inspectModel(loc, { log });
  const device = opts.device ?? "cpu";
  // the folder's weights, when it has safetensors (an exported folder has them beside onnx/)
  const folder = loc.folder ?? await loadModelFolder(loc.dir).catch((e) => {
    if (loc.onnxPath) return undefined; // an ONNX-only folder: nothing to fold, nothing to build
    throw e;
  });
  const fold = opts.foldWeights === undefined || opts.foldWeights === "auto"
    ? folder !== undefined && await foldingPays(narrowElements(folder.stored), device)
    : opts.foldWeights;
  const settings = { device, deviceId: opts.deviceId, intraOpThreads: opts.threads, foldWeights: fold };
  let session: ModelSession, graphs: GraphFolder | undefined;
  if (loc.onnxPath) session = await ModelSession.create(loc.onnxPath, settings);
  else {
    graphs = await GraphFolder.temporary({
      weightFile: folder!.stored.values().next().value?.file,
      parents: opts.graphParents,
      log,
    });
    try {
      const graph = buildServingGraph(loc.config, storedWeights(folder!.stored, { prefix: "" }));
      session = await ModelSession.create(graph, { ...settings, graphFolder: graphs, graphName: "model" });
    } catch (e) {
      await graphs.remove();
      throw e;
    }
  }
  let closed: Promise<void> | undefined;
  const close = () =>
    closed ??= (async () => {
      await session.release();
      await graphs?.remove();
    })();
  return { ...loc, session, foldedWeights: fold, close, [Symbol.asyncDispose]: close };
}

/** A scoring session over a model folder's weights; `await using` (or `close()`) frees it. */
export type ScoringModel = {
  folder: ModelFolder;
  session: ModelSession;
  /** The scoring graph's run (feeds {@link SCORING_INPUTS}, outputs `logps`, `counts`, `token_logps`). */
  run(feeds: Record<string, HostTensor>, outputs: readonly string[]): Promise<Record<string, HostTensor>>;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
};

/** Options for {@link openScorer}. */
export type OpenScorerOptions = {
  device?: Device;
  /** Which CUDA device (default 0; a rank of several uses its local rank's). */
  deviceId?: number;
  threads?: number;
  /** The training run's precision: a reference must be scored as the policy computes (default fp32). */
  precision?: Precision;
  /** Rows per block of the LM head (see scoring_graph.ts); 0 or absent: all at once. */
  chunk?: number;
  /** Where the graph file and weight links go (default: a temporary folder, removed at close). */
  graphs?: GraphFolder;
  /** The graph file's name in `graphs` (default the graph's). */
  graphName?: string;
  /** ONNX Runtime's CPU arena (default on); a server scoring now and then turns it off. */
  memoryArena?: boolean;
};

/** Opens the scoring graph of a model folder (a path, or a folder already loaded). */
export async function openScorer(
  model: string | ModelFolder,
  o: OpenScorerOptions = {},
): Promise<ScoringModel> {
  const folder = typeof model === "string" ? await loadModelFolder(model) : model;
  const g = buildScoringGraph(folder.config, storedWeights(folder.stored), undefined, {
    precision: o.precision,
    chunk: o.chunk,
  });
  const session = await ModelSession.create(g.build(), {
    device: o.device ?? "cpu",
    deviceId: o.deviceId,
    intraOpThreads: o.threads,
    graphFolder: o.graphs,
    graphName: o.graphName,
    memoryArena: o.memoryArena,
    describe: (n) => g.describe(n),
  });
  let closed: Promise<void> | undefined;
  const close = () => closed ??= session.release().then(() => {});
  return {
    folder,
    session,
    run: (feeds, outputs) => session.run(feeds, outputs),
    close,
    [Symbol.asyncDispose]: close,
  };
}
