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

import { basename, dirname, join } from "node:path";
import {
  type Float32Tensor,
  type OutputDtype,
  outputDtypeSize,
  type ReadOptions,
  readSafetensors,
  tensorPairs,
  type TensorSource,
  writeSafetensors,
} from "./safetensors.ts";
import { isFile, writeTextAtomic } from "../files.ts";

/** File name of an unsharded checkpoint. */
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

/** Load the shards an index names, each file opened once, only the tensors the index assigns to it. */
async function loadSharded(indexPath: string, options: ReadOptions): Promise<Map<string, Float32Tensor>> {
  const index = await readShardIndex(indexPath);
  const dir = dirname(indexPath);
  const byFile = new Map<string, Set<string>>();
  for (const [tensor, file] of Object.entries(index.weight_map)) {
    if (options.filter && !options.filter(tensor)) continue;
    if (!byFile.has(file)) byFile.set(file, new Set());
    byFile.get(file)!.add(tensor);
  }
  const out = new Map<string, Float32Tensor>();
  for (const [file, names] of byFile) {
    const path = join(dir, file);
    if (!(await isFile(path))) {
      throw new Error(`${indexPath}: shard ${file} (holding e.g. "${[...names][0]}") not found`);
    }
    const tensors = await readSafetensors(path, { filter: (n) => names.has(n) });
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

/**
 * Load a model's weights as fp32 from a folder (or directly from a `.safetensors` file or an index file).
 * Like `transformers`, a folder's `model.safetensors` wins over an index.
 */
export async function loadCheckpoint(
  path: string,
  options: ReadOptions = {},
): Promise<Map<string, Float32Tensor>> {
  if (path.endsWith(".index.json")) return await loadSharded(path, options);
  if (path.endsWith(".safetensors")) return await readSafetensors(path, options);
  const single = join(path, SAFE_WEIGHTS_NAME);
  if (await isFile(single)) return await readSafetensors(single, options);
  const indexPath = join(path, SAFE_WEIGHTS_INDEX_NAME);
  if (await isFile(indexPath)) return await loadSharded(indexPath, options);
  throw new Error(
    `${path}: no ${SAFE_WEIGHTS_NAME} or ${SAFE_WEIGHTS_INDEX_NAME} found (pytorch_model.bin checkpoints are not supported; convert them to safetensors)`,
  );
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

/** Options for `saveCheckpoint`. */
export interface SaveCheckpointOptions {
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
export async function saveCheckpoint(
  dir: string,
  tensors: TensorSource,
  options: SaveCheckpointOptions = {},
): Promise<ShardPlan> {
  const pairs = tensorPairs(tensors);
  const byName = new Map(pairs);
  const plan = planShards(pairs.map(([name, t]) => ({ name, numel: t.data.length })), options);
  await Deno.mkdir(dir, { recursive: true });
  for (const shard of plan.shards) {
    await writeSafetensors(join(dir, shard.file), shard.names.map((n) => [n, byName.get(n)!] as const), {
      dtype: options.dtype,
      metadata: options.metadata,
    });
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
