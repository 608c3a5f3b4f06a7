/**
 * Read and write a Hugging Face model folder's weights: a single `model.safetensors`, or shards listed in
 * `model.safetensors.index.json` (`{"metadata": {...}, "weight_map": {tensor: file}}`).
 *
 * Loading converts everything to fp32 (see `safetensors.ts`) and opens each shard exactly once. Saving splits
 * tensors into shards with the same algorithm, file names and index JSON as `transformers`'
 * `save_pretrained(safe_serialization=True)`, so the folder loads unchanged in Python.
 *
 * @module
 */

import { basename, dirname, join, resolve } from "node:path";
import {
  type Float32Tensor,
  numelOf,
  type ReadOptions,
  readSafetensors,
  readSafetensorsHeader,
  type SafetensorsEntry,
  type SafetensorsHeader,
  type TensorHeader,
  tensorPairs,
  type TensorReader,
  type TensorSource,
  writeSafetensorsStream,
} from "./safetensors.ts";
import {
  decodeToFloat32,
  isLoadableDtype,
  type OutputDtype,
  outputDtypeSize,
  type SafetensorsDtype,
} from "./float_codec.ts";
import { isFile, writeTextAtomic } from "../files.ts";

/** File name of unsharded weights. */
export const SAFE_WEIGHTS_NAME = "model.safetensors";
/** File name of the shard index. */
export const SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json";
/** The default shard size of recent `transformers` releases. */
export const DEFAULT_MAX_SHARD_SIZE = "5GB";

/** A shard index as `transformers` writes it. */
export interface ShardIndex {
  metadata: Record<string, unknown>;
  weight_map: Record<string, string>;
}

/** Why a shard file name is acceptable: a plain name inside the folder, never a path that escapes it. */
function checkShardFileName(file: string, tensor: string, indexPath: string): void {
  if (file === "" || file !== basename(file) || file === "." || file === ".." || file.includes("\\")) {
    throw new Error(
      `${indexPath}: weight_map["${tensor}"] = ${JSON.stringify(file)} is not a plain file name`,
    );
  }
}

/** Validate a parsed index (`metadata` is optional, as some hand-made indexes omit it). */
export function parseShardIndex(json: unknown, indexPath: string): ShardIndex {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`${indexPath}: shard index must be a JSON object`);
  }
  const { metadata = {}, weight_map: weightMap } = json as Record<string, unknown>;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new Error(`${indexPath}: missing "weight_map" object`);
  }
  if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) {
    throw new Error(`${indexPath}: "metadata" must be an object`);
  }
  const map: Record<string, string> = {};
  for (const [tensor, file] of Object.entries(weightMap)) {
    if (typeof file !== "string") {
      throw new Error(`${indexPath}: weight_map["${tensor}"] must be a file name`);
    }
    checkShardFileName(file, tensor, indexPath);
    map[tensor] = file;
  }
  return { metadata: metadata as Record<string, unknown>, weight_map: map };
}

/** Read and validate a `model.safetensors.index.json`. */
export async function readShardIndex(indexPath: string): Promise<ShardIndex> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw e;
    throw new Error(`${indexPath}: not valid JSON: ${(e as Error).message}`);
  }
  return parseShardIndex(json, indexPath);
}

/**
 * A tensor as the weight files store it: which file, where in it, in which dtype. Nothing of its data is read;
 * ONNX Runtime reads frozen weights straight from these byte ranges (see lib/model/stored.ts).
 */
export interface StoredTensor {
  /** Absolute path of the safetensors file. */
  file: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offsets of the tensor's first byte and one past its last. */
  begin: number;
  end: number;
}

function storedOf(header: SafetensorsHeader, e: SafetensorsEntry): StoredTensor {
  return { file: resolve(header.file), dtype: e.dtype, shape: e.shape, begin: e.begin, end: e.end };
}

/**
 * The shards an index names, each with the tensors the index assigns to it (checked to exist), read by
 * `read` (each file opened once by it).
 */
async function shardedRead<T>(
  indexPath: string,
  options: ReadOptions,
  read: (path: string, names: Set<string>) => Promise<Map<string, T>>,
): Promise<Map<string, T>> {
  const index = await readShardIndex(indexPath);
  const dir = dirname(indexPath);
  const byFile = new Map<string, Set<string>>();
  for (const [tensor, file] of Object.entries(index.weight_map)) {
    if (options.filter && !options.filter(tensor)) continue;
    if (!byFile.has(file)) byFile.set(file, new Set());
    byFile.get(file)!.add(tensor);
  }
  const out = new Map<string, T>();
  for (const [file, names] of byFile) {
    const path = join(dir, file);
    if (!(await isFile(path))) {
      throw new Error(`${indexPath}: shard ${file} (holding e.g. "${[...names][0]}") not found`);
    }
    const tensors = await read(path, names);
    for (const name of names) {
      const t = tensors.get(name);
      if (!t) {
        throw new Error(
          `${path}: tensor "${name}" listed in ${SAFE_WEIGHTS_INDEX_NAME} is not in this shard`,
        );
      }
      out.set(name, t);
    }
  }
  return out;
}

/** Where the tensors an index assigns live: each shard's header read once. */
function shardedEntries(indexPath: string, options: ReadOptions): Promise<Map<string, StoredTensor>> {
  return shardedRead(indexPath, options, async (path, names) => {
    const header = await readSafetensorsHeader(path);
    return new Map(header.entries.filter((e) => names.has(e.name)).map((e) => [e.name, storedOf(header, e)]));
  });
}

/** The safetensors file (single, or the index of shards) holding a model's weights. */
async function weightsPath(path: string): Promise<string> {
  if (path.endsWith(".index.json") || path.endsWith(".safetensors")) return path;
  const single = join(path, SAFE_WEIGHTS_NAME);
  if (await isFile(single)) return single;
  const indexPath = join(path, SAFE_WEIGHTS_INDEX_NAME);
  if (await isFile(indexPath)) return indexPath;
  throw new Error(
    `${path}: no ${SAFE_WEIGHTS_NAME} or ${SAFE_WEIGHTS_INDEX_NAME} found (pytorch_model.bin checkpoints are not supported; convert them to safetensors)`,
  );
}

/**
 * Where each tensor of a model's weights lives, from the headers alone (cheap for any size): a folder
 * (its `model.safetensors` wins over an index, as in `transformers`), a `.safetensors` file or an index.
 */
export async function weightEntries(
  path: string,
  options: ReadOptions = {},
): Promise<Map<string, StoredTensor>> {
  const file = await weightsPath(path);
  if (file.endsWith(".index.json")) return await shardedEntries(file, options);
  const header = await readSafetensorsHeader(file);
  const out = new Map<string, StoredTensor>();
  for (const e of header.entries) {
    if (!options.filter || options.filter(e.name)) out.set(e.name, storedOf(header, e));
  }
  return out;
}

/**
 * Reads stored tensors as fp32, each file opened once and read in file order, so memory holds the fp32
 * results plus one raw tensor.
 */
export async function readStoredTensors<K>(
  tensors: ReadonlyMap<K, StoredTensor>,
): Promise<Map<K, Float32Tensor>> {
  const byFile = new Map<string, [K, StoredTensor][]>();
  for (const [k, t] of tensors) {
    if (!byFile.has(t.file)) byFile.set(t.file, []);
    byFile.get(t.file)!.push([k, t]);
  }
  const out = new Map<K, Float32Tensor>();
  for (const [file, list] of byFile) {
    using f = await Deno.open(file, { read: true });
    list.sort((a, b) => a[1].begin - b[1].begin);
    for (const [k, t] of list) {
      out.set(k, { dtype: "float32", shape: t.shape, data: await readRange(f, file, t) });
    }
  }
  return out;
}

/** One stored tensor as fp32. */
export async function readStoredTensor(t: StoredTensor): Promise<Float32Array> {
  using f = await Deno.open(t.file, { read: true });
  return await readRange(f, t.file, t);
}

async function readRange(f: Deno.FsFile, file: string, t: StoredTensor): Promise<Float32Array> {
  if (!isLoadableDtype(t.dtype)) {
    throw new Error(
      `${file}: a tensor of dtype ${t.dtype} cannot be loaded as fp32 (supported: F64, F32, F16, BF16)`,
    );
  }
  const raw = new Uint8Array(t.end - t.begin);
  await f.seek(t.begin, Deno.SeekMode.Start);
  let off = 0;
  while (off < raw.length) {
    const n = await f.read(raw.subarray(off));
    if (n === null) {
      throw new Error(`${file}: truncated while reading a tensor (${off} of ${raw.length} bytes)`);
    }
    off += n;
  }
  return decodeToFloat32(raw, t.dtype, numelOf(t.shape));
}

/**
 * Load a model's weights as fp32 from a folder (or directly from a `.safetensors` file or an index file).
 * Like `transformers`, a folder's `model.safetensors` wins over an index.
 */
export async function loadWeights(
  path: string,
  options: ReadOptions = {},
): Promise<Map<string, Float32Tensor>> {
  const file = await weightsPath(path);
  if (!file.endsWith(".index.json")) return await readSafetensors(file, options);
  return await shardedRead(file, options, (p, names) => readSafetensors(p, { filter: (n) => names.has(n) }));
}

// ---------------------------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------------------------

const SIZE_UNITS: Record<string, number> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KIB: 2 ** 10,
  MIB: 2 ** 20,
  GIB: 2 ** 30,
  TIB: 2 ** 40,
};

/** Parse a shard size as `transformers` accepts it: bytes, or "5GB" (decimal) / "5GiB" (binary). */
export function parseShardSize(size: number | string): number {
  if (typeof size === "number") {
    if (!Number.isFinite(size) || size <= 0) throw new Error(`max shard size must be positive, got ${size}`);
    return Math.floor(size);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*$/i.exec(size);
  if (!m) throw new Error(`cannot parse max shard size ${JSON.stringify(size)} (use e.g. 5GB, 500MB, 2GiB)`);
  const bytes = Math.floor(Number(m[1]) * SIZE_UNITS[(m[2] ?? "B").toUpperCase()]);
  if (bytes <= 0) throw new Error(`max shard size must be positive, got ${JSON.stringify(size)}`);
  return bytes;
}

/** The name of shard `i` (0-based) of `n`, e.g. `model-00001-of-00002.safetensors`. */
export function shardFileName(i: number, n: number): string {
  const pad = (x: number) => String(x).padStart(5, "0");
  return `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
}

/** How tensors are split into files; `index` is null when everything fits in one `model.safetensors`. */
export interface ShardPlan {
  shards: { file: string; names: string[]; bytes: number }[];
  index: ShardIndex | null;
}

/**
 * Split tensors into shards exactly as `huggingface_hub.split_state_dict_into_shards_factory` does: in the
 * given order, start a new shard when the next tensor would push the current one over the limit, and give a
 * tensor bigger than the limit a shard of its own (placed before the shard being filled).
 */
export function planShards(
  tensors: readonly { name: string; numel: number }[],
  options: { maxShardSize?: number | string; dtype?: OutputDtype } = {},
): ShardPlan {
  const max = parseShardSize(options.maxShardSize ?? DEFAULT_MAX_SHARD_SIZE);
  const size = outputDtypeSize(options.dtype ?? "float32");
  const shards: { names: string[]; bytes: number }[] = [];
  let current: { names: string[]; bytes: number } = { names: [], bytes: 0 };
  let totalSize = 0;
  let totalParameters = 0;
  for (const { name, numel } of tensors) {
    const bytes = numel * size;
    totalSize += bytes;
    totalParameters += numel;
    if (bytes > max) {
      shards.push({ names: [name], bytes });
      continue;
    }
    if (current.bytes + bytes > max) {
      shards.push(current);
      current = { names: [], bytes: 0 };
    }
    current.names.push(name);
    current.bytes += bytes;
  }
  if (current.names.length > 0 || shards.length === 0) shards.push(current);
  if (shards.length === 1) return { shards: [{ file: SAFE_WEIGHTS_NAME, ...shards[0] }], index: null };
  const named = shards.map((s, i) => ({ file: shardFileName(i, shards.length), ...s }));
  const weightMap: Record<string, string> = {};
  for (const s of named) for (const n of s.names) weightMap[n] = s.file;
  return {
    shards: named,
    index: { metadata: { total_parameters: totalParameters, total_size: totalSize }, weight_map: weightMap },
  };
}

/** Deep copy with object keys sorted, as Python's `json.dumps(..., sort_keys=True)` orders them. */
function sortKeys(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(sortKeys);
  if (typeof x === "object" && x !== null) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(x).sort()) out[k] = sortKeys((x as Record<string, unknown>)[k]);
    return out;
  }
  return x;
}

/** The index file's text, byte-identical to `json.dumps(index, indent=2, sort_keys=True) + "\n"`. */
export function shardIndexJson(index: ShardIndex): string {
  // Python escapes non-ASCII (ensure_ascii) where JSON.stringify does not.
  const text = JSON.stringify(sortKeys(index), null, 2).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return text + "\n";
}

/** Options for `saveWeights`. */
export interface SaveWeightsOptions {
  /** Largest shard in bytes or as "5GB"/"2GiB"; default "5GB" like `transformers`. */
  maxShardSize?: number | string;
  /** Output dtype; fp32 by default. */
  dtype?: OutputDtype;
  /** Extra `__metadata__` for every shard (`format: pt` is always set). */
  metadata?: Record<string, string>;
}

const SHARD_PATTERN = /^model-\d{5}-of-\d{5}\.safetensors$/;

/**
 * Save weights into a folder as `transformers` does: one `model.safetensors` when it fits in one shard,
 * otherwise `model-0000i-of-0000n.safetensors` plus the index. Every file is written atomically; the index
 * last, so a reader never sees an index naming a missing shard. Afterwards weight files of an earlier save
 * that the new one does not use are removed (stale shards, and a stale single file or index that would
 * otherwise shadow or contradict the new weights).
 */
export async function saveWeights(
  dir: string,
  tensors: TensorSource,
  options: SaveWeightsOptions = {},
): Promise<ShardPlan> {
  const byName = new Map(tensorPairs(tensors));
  const specs = [...byName].map(([name, t]) => ({ name, shape: t.shape }));
  return await saveWeightsStream(dir, specs, (n) => byName.get(n)!.data, options);
}

/**
 * {@link saveWeights} for tensors read only when written (`read(name)`, once each, shard by shard),
 * so a model of any size is saved with one tensor in memory.
 */
export async function saveWeightsStream(
  dir: string,
  specs: readonly TensorHeader[],
  read: TensorReader,
  options: SaveWeightsOptions = {},
): Promise<ShardPlan> {
  const shapes = new Map(specs.map((t) => [t.name, t.shape]));
  const plan = planShards(specs.map((t) => ({ name: t.name, numel: numelOf(t.shape) })), options);
  await Deno.mkdir(dir, { recursive: true });
  for (const shard of plan.shards) {
    await writeSafetensorsStream(
      join(dir, shard.file),
      shard.names.map((name) => ({ name, shape: shapes.get(name)! })),
      read,
      {
        dtype: options.dtype,
        metadata: options.metadata,
      },
    );
  }
  if (plan.index) {
    await writeTextAtomic(join(dir, SAFE_WEIGHTS_INDEX_NAME), shardIndexJson(plan.index));
  }
  const keep = new Set(plan.shards.map((s) => s.file));
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || keep.has(entry.name)) continue;
    const stale = SHARD_PATTERN.test(entry.name) || entry.name === SAFE_WEIGHTS_NAME ||
      (plan.index === null && entry.name === SAFE_WEIGHTS_INDEX_NAME);
    if (stale) await Deno.remove(join(dir, entry.name));
  }
  return plan;
}
