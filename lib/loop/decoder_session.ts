/**
 * A generation session for any model folder a user points at: a training run (its `policy/`), an exported
 * folder (`onnx/model.onnx`, what `deno task serve` loads), or a plain Hugging Face folder (config.json,
 * safetensors, tokenizer). For the last, the KV-cache decoder is the one export.ts writes
 * (`buildServingGraph`), built in memory and written to a temporary graph folder whose external data are
 * hard links to the folder's own safetensors files: nothing is copied, and the folder is removed at
 * release. So sampling from a model does not need an export first, and gives what its export would.
 *
 * Everything about the model that generation needs comes with it, read as the server reads it: the
 * tokenizer and chat template (lib/serve/codec.ts' `TextCodec`), every id that ends a response
 * (config.json's and generation_config.json's `eos_token_id`, the tokenizer's EOS, the template's end of
 * turn) and generation_config.json's sampling defaults.
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import { createHash } from "node:crypto";
import { loadConfig, maxSupportedLength, type ModelConfig } from "../model/config.ts";
import { buildServingGraph, SERVING_ONNX_FILE } from "../model/export.ts";
import {
  checkGenerationConfigIds,
  loadModelFolder,
  type ModelFolder,
  readGenerationConfig,
  tokenIdList,
} from "../model/model_folder.ts";
import { narrowElements, storedWeights } from "../model/stored_weights.ts";
import { foldingPays } from "../runtime/device_memory.ts";
import { GraphFolder } from "../runtime/graph_folder.ts";
import { type Device, ModelSession } from "../runtime/session.ts";
import { TextCodec } from "../serve/codec.ts";
import { type SamplingDefaults, samplingDefaultsOf } from "../serve/request_checks.ts";
import { runPaths } from "../train/run_folder.ts";
import { exists, isFile } from "../files.ts";
import type { Tokenizer } from "../data/tokenize.ts";

/** What a `--model` path turned out to be. */
export type DecoderKind = "run" | "exported" | "hf";

/** A model folder described, before any session is made (cheap: configs and the tokenizer). */
export type DecoderInfo = {
  /** The path as given. */
  given: string;
  /** The Hugging Face folder the model is (a run's `policy/`), absolute. */
  dir: string;
  /** The name outputs record: the run folder's name for a run, else the model folder's. */
  name: string;
  kind: DecoderKind;
  /** The exported decoder, when the folder has one (else the graph is built from the safetensors). */
  onnxPath: string | null;
  config: ModelConfig;
  tokenizer: Tokenizer;
  /** The tokenizer with the server's helpers (decode, special ids). */
  codec: TextCodec;
  /** Every id that ends a response, in order, once each. */
  eosIds: number[];
  /** The id left padding uses (masked out). */
  padId: number;
  /** generation_config.json's temperature, top_p, top_k, repetition_penalty (what it sets, valid). */
  generationDefaults: SamplingDefaults;
  /** Prompt + new tokens the model supports. */
  contextLength: number;
};

/** An open generation session over a model folder. */
export type Decoder = DecoderInfo & {
  /** The KV-cache decoder, ready for lib/model/generate.ts' `generate`. */
  session: ModelSession;
  /** Whether bf16/fp16 weights were cast to fp32 once at load (see {@link OpenDecoderOptions}). */
  foldedWeights: boolean;
  /** Frees the session and removes the temporary graph folder (a plain HF folder's). */
  release(): Promise<void>;
};

/** Options for {@link openDecoder}. */
export type OpenDecoderOptions = {
  device?: Device;
  /** CPU threads inside an operator (default: all cores). */
  threads?: number;
  /**
   * Cast bf16/fp16 weights to fp32 once when the session loads (2.4–3.3× the CPU decode speed, BENCHMARKS.md)
   * instead of at every token. `auto` (default): when that fp32 copy takes at most an eighth of the device's
   * free memory, as the server decides.
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
 * Reads what `model` is: a run folder (its `policy/`), an exported folder or a Hugging Face folder; its
 * config, tokenizer, stop ids and sampling defaults. Throws naming the path and what was expected.
 */
export async function inspectDecoder(
  model: string,
  opts: { log?: (line: string) => void } = {},
): Promise<DecoderInfo> {
  const given = resolve(model);
  let dir = given, kind: DecoderKind;
  const policy = runPaths(given).policy;
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
      `--model ${model}: ${what}; expected a Hugging Face model folder (config.json, safetensors, tokenizer), ` +
        `an exported folder (${SERVING_ONNX_FILE}) or a training run folder (policy/)`,
    );
  }
  const onnx = join(dir, SERVING_ONNX_FILE);
  const onnxPath = (await isFile(onnx)) ? onnx : null;
  // a plain folder is checked whole now (weights against the config), not when the session is built
  const config = onnxPath ? await loadConfig(dir) : (await loadModelFolder(dir)).config;
  const log = opts.log ?? ((line: string) => console.error(line));
  const gen = await readGenerationConfig(dir);
  const generationEos = [...new Set([...tokenIdList(config.eosTokenId), ...tokenIdList(gen?.eos_token_id)])];
  checkGenerationConfigIds(gen, config.vocabSize, join(dir, "generation_config.json"));
  const codec = await TextCodec.load(dir, generationEos, { log, vocabSize: config.vocabSize });
  return {
    given,
    dir,
    name: modelName(given),
    kind,
    onnxPath,
    config,
    tokenizer: codec.tokenizer,
    codec,
    eosIds: codec.special.eos,
    padId: codec.special.pad,
    generationDefaults: samplingDefaultsOf(gen, (line) => log(`note: ${line}`)),
    contextLength: maxSupportedLength(config),
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

/**
 * Opens a generation session for a model folder (or one {@link inspectDecoder} described): the exported
 * decoder when there is one, else the same decoder built over the folder's safetensors.
 *
 * @example
 * ```ts
 * const d = await openDecoder("runs/nca-20260101-120000", { device: "cpu" });
 * try {
 *   const ids = tokenizePrompt(d.tokenizer, [{ role: "user", content: "hi" }]);
 *   const { rows } = await generate(d.session, [ids], { maxNewTokens: 64, eosTokenIds: d.eosIds, padTokenId: d.padId });
 *   d.codec.decode(rows[0].tokens);
 * } finally {
 *   await d.release();
 * }
 * ```
 */
export async function openDecoder(
  model: string | DecoderInfo,
  opts: OpenDecoderOptions = {},
): Promise<Decoder> {
  const log = opts.log ?? ((line: string) => console.error(line));
  const info = typeof model === "string" ? await inspectDecoder(model, { log }) : model;
  const device = opts.device ?? "cpu";
  // the folder's weights, when it has safetensors (an exported folder has them beside onnx/)
  const folder = await loadModelFolder(info.dir).catch((e) => {
    if (info.onnxPath) return undefined; // an ONNX-only folder: nothing to fold, nothing to build
    throw e;
  });
  const fold = opts.foldWeights === undefined || opts.foldWeights === "auto"
    ? folder !== undefined && await foldingPays(narrowElements(folder.stored), device)
    : opts.foldWeights;
  const settings = { device, intraOpThreads: opts.threads, foldWeights: fold };
  if (info.onnxPath) {
    const session = await ModelSession.create(info.onnxPath, settings);
    return { ...info, session, foldedWeights: fold, release: async () => void await session.release() };
  }
  const graphs = await GraphFolder.open(await graphFolderPath(folder!, opts.graphParents ?? []), log);
  let session: ModelSession;
  try {
    const graph = buildServingGraph(info.config, storedWeights(folder!.stored, { prefix: "" }));
    session = await ModelSession.create(graph, { ...settings, graphFolder: graphs, graphName: "model" });
  } catch (e) {
    await graphs.remove();
    throw e;
  }
  return {
    ...info,
    session,
    foldedWeights: fold,
    async release() {
      await session.release();
      await graphs.remove();
    },
  };
}

/**
 * A fresh path for the temporary graph folder: under the first of `parents`, the system's temporary
 * folder and the model folder that is on the weight files' filesystem (a hard link cannot cross
 * filesystems, and a copy of big weights would be slow); the system's temporary folder when none is.
 */
async function graphFolderPath(folder: ModelFolder, parents: string[]): Promise<string> {
  const weightFile = folder.stored.values().next().value?.file;
  const weightDev = weightFile ? (await Deno.stat(await Deno.realPath(weightFile))).dev : undefined;
  const name = `${GRAPHS_PREFIX}${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const probe = await Deno.makeTempDir({ prefix: "nca-probe-" });
  await Deno.remove(probe);
  const system = dirname(probe);
  for (const parent of [...parents, system, folder.dir]) {
    try {
      const st = await Deno.stat(parent);
      if (!st.isDirectory || (weightDev !== undefined && st.dev !== weightDev)) continue;
      await removeStaleGraphFolders(parent);
      const path = join(parent, name);
      await Deno.mkdir(path); // writable?
      await Deno.remove(path);
      return path;
    } catch {
      // not writable, or gone: the next one
    }
  }
  return join(system, name);
}

/** Temporary graph folders are named `<prefix><pid>-<random>`, so a later run can tell dead ones. */
const GRAPHS_PREFIX = ".nca-graphs-";

/**
 * Removes the graph folders in `parent` whose process is gone (a run killed with SIGKILL leaves its folder of
 * hard links behind). A folder whose process cannot be looked up is kept; nothing here stops a run.
 */
async function removeStaleGraphFolders(parent: string): Promise<void> {
  try {
    for await (const e of Deno.readDir(parent)) {
      const pid = e.isDirectory && e.name.startsWith(GRAPHS_PREFIX)
        ? Number(e.name.slice(GRAPHS_PREFIX.length).split("-")[0])
        : NaN;
      if (!Number.isSafeInteger(pid) || pid === Deno.pid || await processAlive(pid) !== false) continue;
      await Deno.remove(join(parent, e.name), { recursive: true }).catch(() => {});
    }
  } catch {
    // an unreadable folder: nothing to clean
  }
}

/**
 * Whether process `pid` runs: /proc where Deno may read it (it asks for --allow-all there), else `ps -p`;
 * undefined when neither can tell.
 */
async function processAlive(pid: number): Promise<boolean | undefined> {
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
  }
  try {
    const r = await new Deno.Command("ps", { args: ["-p", String(pid)], stdout: "null", stderr: "null" })
      .output();
    return r.code === 0;
  } catch {
    return undefined;
  }
}

/**
 * A short fingerprint of a model folder, to tell "the same model" when a sampling run resumes or shards
 * are merged, without reading gigabytes: the config, generation config, tokenizer and chat template files
 * whole, and each weight file's name, size and sixteen 64 KiB samples of its bytes (a retrained or merged
 * model changes every layer, so the samples see it).
 */
export async function modelFingerprint(dir: string): Promise<string> {
  const hash = createHash("sha256");
  const small = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
  ];
  for (const f of small) {
    const bytes = await Deno.readFile(join(dir, f)).catch(() => undefined);
    if (bytes) hash.update(`${f}\0${bytes.length}\0`).update(bytes);
  }
  const weights: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".safetensors")) weights.push(e.name);
  if (weights.length === 0 && await isFile(join(dir, SERVING_ONNX_FILE))) weights.push(SERVING_ONNX_FILE);
  const SAMPLES = 16, CHUNK = 64 * 1024;
  for (const w of weights.sort()) {
    using f = await Deno.open(join(dir, w));
    const size = (await f.stat()).size;
    hash.update(`${w}\0${size}\0`);
    const buf = new Uint8Array(CHUNK);
    for (let s = 0; s < SAMPLES; s++) {
      const at = Math.floor(((size - Math.min(size, CHUNK)) * s) / (SAMPLES - 1));
      await f.seek(at, Deno.SeekMode.Start);
      let n = 0;
      while (n < Math.min(CHUNK, size)) {
        const r = await f.read(buf.subarray(n));
        if (r === null) break;
        n += r;
      }
      hash.update(buf.subarray(0, n));
    }
  }
  return `sha256:${hash.digest("hex")}`;
}
