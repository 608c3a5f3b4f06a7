/**
 * Read and write the safetensors format used by Hugging Face checkpoints.
 *
 * Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes of
 * JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, then the raw
 * little-endian tensor data. Offsets are relative to the start of the data section.
 *
 * Everything the toolkit trains on is fp32, so reading converts every floating dtype (F64, F32, F16, BF16)
 * to fp32 and writing converts fp32 to the requested output dtype. Reading goes by ranges through one file
 * handle so a checkpoint never needs more memory than its fp32 tensors plus one raw tensor.
 *
 * @module
 */
import { tempPathFor, writeFileAtomic } from "../files.ts";
import {
  decodeToFloat32,
  encodeFromFloat32,
  isLoadableDtype,
  type OutputDtype,
  outputDtypeName,
  outputDtypeSize,
  SAFETENSORS_DTYPES,
  type SafetensorsDtype,
} from "./float_codec.ts";

/** Atomic writes live in lib/files.ts; re-exported here, where they were first. */
export { tempPathFor, writeFileAtomic };

/** A tensor as the toolkit holds it in memory: always fp32, row-major, HF layout. */
export interface Float32Tensor {
  dtype: "float32";
  shape: number[];
  data: Float32Array;
}

/** One tensor entry of a parsed header; offsets are absolute file offsets (already past the header). */
export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offset of the tensor's first byte in the file. */
  begin: number;
  /** Absolute byte offset one past the tensor's last byte. */
  end: number;
}

/** A validated header: what a file holds and where, without any tensor data. */
export interface SafetensorsHeader {
  file: string;
  /** Entries sorted by offset. */
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  /** Absolute offset of the data section (8 + N). */
  dataStart: number;
  /** Size in bytes of the whole file. */
  fileSize: number;
}

/** Options for loading tensors. */
export interface ReadOptions {
  /** Load only tensors whose name passes; the others are never read from disk. */
  filter?: (name: string) => boolean;
}

/** Options for writing tensors. */
export interface WriteOptions {
  /** Output dtype; fp32 by default. */
  dtype?: OutputDtype;
  /** Extra `__metadata__` entries; `{"format": "pt"}` is always present, as HF writes it. */
  metadata?: Record<string, string>;
}

/** A header larger than this is rejected, as the reference implementation does (guards against garbage). */
export const MAX_HEADER_BYTES = 100_000_000;

// ---------------------------------------------------------------------------------------------------------
// Header parsing and validation
// ---------------------------------------------------------------------------------------------------------

/** Number of elements of a shape (1 for a scalar `[]`). */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/** Read the 8-byte little-endian header length, rejecting values no valid file can have. */
function headerLength(prefix: Uint8Array, file: string, fileSize: number): number {
  if (fileSize < 8) {
    throw new Error(
      `${file}: truncated safetensors file (${fileSize} bytes, need at least 8 for the header length)`,
    );
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(`${file}: safetensors header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const len = Number(n);
  if (8 + len > fileSize) {
    throw new Error(
      `${file}: truncated safetensors file: header claims ${len} bytes but the file has only ${
        fileSize - 8
      } after the length`,
    );
  }
  return len;
}

/**
 * Parse and validate a header the way the reference implementation does: known dtypes, shapes consistent
 * with byte ranges, ranges contiguous (no overlap, no gap) and exactly covering the data section. Errors name
 * the file and the tensor.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  fileSize: number,
  file: string,
): SafetensorsHeader {
  const dataStart = 8 + headerBytes.length;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new Error(`${file}: safetensors header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (!isObject(json)) throw new Error(`${file}: safetensors header must be a JSON object`);

  const metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (value === null) continue;
      if (!isObject(value)) throw new Error(`${file}: __metadata__ must be an object of strings`);
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== "string") throw new Error(`${file}: __metadata__.${k} must be a string`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    if (!isObject(value)) throw new Error(`${where}: header entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = value;
    if (typeof dtype !== "string" || !Object.hasOwn(SAFETENSORS_DTYPES, dtype)) {
      throw new Error(
        `${where}: unknown dtype ${JSON.stringify(dtype)} (known: ${
          Object.keys(SAFETENSORS_DTYPES).join(", ")
        })`,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw new Error(
        `${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
      );
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      throw new Error(`${where}: data_offsets must be [begin, end], got ${JSON.stringify(offsets)}`);
    }
    const [b, e] = offsets as number[];
    if (e < b) throw new Error(`${where}: data_offsets [${b}, ${e}] end before begin`);
    const expected = numelOf(shape) * SAFETENSORS_DTYPES[dtype as SafetensorsDtype];
    if (e - b !== expected) {
      throw new Error(
        `${where}: data_offsets [${b}, ${e}] span ${e - b} bytes but ${dtype}${
          JSON.stringify(shape)
        } needs ${expected}`,
      );
    }
    entries.push({
      name,
      dtype: dtype as SafetensorsDtype,
      shape: [...shape],
      begin: dataStart + b,
      end: dataStart + e,
    });
  }

  entries.sort((x, y) => x.begin - y.begin || x.end - y.end);
  const dataSize = fileSize - dataStart;
  let cursor = dataStart;
  for (const entry of entries) {
    const rel = `[${entry.begin - dataStart}, ${entry.end - dataStart}]`;
    if (entry.end > fileSize) {
      throw new Error(
        `${file}: tensor "${entry.name}": data_offsets ${rel} run past the end of the data section (${dataSize} bytes): file truncated or header wrong`,
      );
    }
    if (entry.begin < cursor) {
      throw new Error(`${file}: tensor "${entry.name}": data_offsets ${rel} overlap the previous tensor`);
    }
    if (entry.begin > cursor) {
      throw new Error(
        `${file}: tensor "${entry.name}": data_offsets ${rel} leave a gap after byte ${cursor - dataStart}`,
      );
    }
    cursor = entry.end;
  }
  if (cursor !== fileSize) {
    throw new Error(
      `${file}: data section has ${dataSize} bytes but the header accounts for ${cursor - dataStart}`,
    );
  }
  return { file, entries, metadata, dataStart, fileSize };
}

/** Parse the header of an in-memory safetensors file. */
export function headerFromBytes(bytes: Uint8Array, file = "<memory>"): SafetensorsHeader {
  const n = headerLength(bytes, file, bytes.length);
  return parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.length, file);
}

// ---------------------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------------------

/** Fill `buf` from the file's current position; a short read means the file shrank or lied. */
async function readExactly(f: Deno.FsFile, buf: Uint8Array, file: string, what: string): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const n = await f.read(buf.subarray(off));
    if (n === null) {
      throw new Error(`${file}: truncated while reading ${what} (${off} of ${buf.length} bytes)`);
    }
    off += n;
  }
}

async function readHeaderFrom(f: Deno.FsFile, file: string): Promise<SafetensorsHeader> {
  const fileSize = (await f.stat()).size;
  const prefix = new Uint8Array(8);
  if (fileSize >= 8) await readExactly(f, prefix, file, "the header length");
  const n = headerLength(prefix, file, fileSize);
  const headerBytes = new Uint8Array(n);
  await readExactly(f, headerBytes, file, "the header");
  return parseSafetensorsHeader(headerBytes, fileSize, file);
}

/** Read and validate only a file's header (cheap even for a multi-GB shard). */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  using f = await Deno.open(path, { read: true });
  return await readHeaderFrom(f, path);
}

function checkLoadable(entry: SafetensorsEntry, file: string): void {
  if (!isLoadableDtype(entry.dtype)) {
    throw new Error(
      `${file}: tensor "${entry.name}": dtype ${entry.dtype} cannot be loaded as fp32 (supported: F64, F32, F16, BF16)`,
    );
  }
}

/**
 * Load a safetensors file as fp32 tensors. The file is opened once: the header is read first, then each
 * selected tensor's byte range, in file order, so peak memory is the fp32 result plus one raw tensor.
 */
export async function readSafetensors(
  path: string,
  options: ReadOptions = {},
): Promise<Map<string, Float32Tensor>> {
  using f = await Deno.open(path, { read: true });
  const header = await readHeaderFrom(f, path);
  const selected = header.entries.filter((e) => !options.filter || options.filter(e.name));
  for (const entry of selected) checkLoadable(entry, path);
  const out = new Map<string, Float32Tensor>();
  for (const entry of selected) {
    const raw = new Uint8Array(entry.end - entry.begin);
    await f.seek(entry.begin, Deno.SeekMode.Start);
    await readExactly(f, raw, path, `tensor "${entry.name}"`);
    out.set(entry.name, {
      dtype: "float32",
      shape: entry.shape,
      data: decodeToFloat32(raw, entry.dtype, numelOf(entry.shape)),
    });
  }
  return out;
}

/** Decode an in-memory safetensors file as fp32 tensors (tests, small files, bytes from elsewhere). */
export function decodeSafetensors(
  bytes: Uint8Array,
  file = "<memory>",
  options: ReadOptions = {},
): Map<string, Float32Tensor> {
  const header = headerFromBytes(bytes, file);
  const out = new Map<string, Float32Tensor>();
  for (const entry of header.entries) {
    if (options.filter && !options.filter(entry.name)) continue;
    checkLoadable(entry, file);
    // slice() copies, so the result never aliases the caller's buffer.
    const raw = bytes.slice(entry.begin, entry.end);
    out.set(entry.name, {
      dtype: "float32",
      shape: entry.shape,
      data: decodeToFloat32(raw, entry.dtype, numelOf(entry.shape)),
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------------

/** Tensors to write: a Map, a record or any iterable of name/tensor pairs; only shape and data are used. */
export type TensorSource =
  | Map<string, { shape: readonly number[]; data: Float32Array }>
  | Record<string, { shape: readonly number[]; data: Float32Array }>
  | Iterable<readonly [string, { shape: readonly number[]; data: Float32Array }]>;

/** Normalize a tensor source to an array of pairs, checking that data length matches shape. */
export function tensorPairs(
  tensors: TensorSource,
): [string, { shape: readonly number[]; data: Float32Array }][] {
  const pairs = tensors instanceof Map || Symbol.iterator in tensors
    ? [...(tensors as Iterable<readonly [string, { shape: readonly number[]; data: Float32Array }]>)]
    : Object.entries(tensors);
  const seen = new Set<string>();
  for (const [name, t] of pairs) {
    if (name === "__metadata__") throw new Error(`tensor name "__metadata__" is reserved by safetensors`);
    if (seen.has(name)) throw new Error(`duplicate tensor name "${name}"`);
    seen.add(name);
    if (!t.shape.every(isNonNegInt)) {
      throw new Error(`tensor "${name}": invalid shape ${JSON.stringify(t.shape)}`);
    }
    if (numelOf(t.shape) !== t.data.length) {
      throw new Error(
        `tensor "${name}": shape ${JSON.stringify(t.shape)} has ${
          numelOf(t.shape)
        } elements but data has ${t.data.length}`,
      );
    }
  }
  return pairs.map(([n, t]) => [n, t]);
}

/** What a file's header says of a tensor: its name and shape, all its layout needs before any data. */
export type TensorHeader = { name: string; shape: readonly number[] };

/** Reads one tensor's values when its turn comes to be written (a stream never holds them all). */
export type TensorReader = (name: string) => Float32Array | Promise<Float32Array>;

/** What a writer emits: the padded header and the tensors in file order. */
export interface SafetensorsLayout {
  /** The 8-byte length followed by the space-padded JSON header. */
  headerBytes: Uint8Array;
  /** Tensors in the order their bytes follow the header. */
  order: { name: string; numel: number; bytes: number }[];
  /** Total file size in bytes. */
  fileSize: number;
}

/**
 * Lay out a file exactly as the reference writer does: tensors sorted by name (all share one dtype),
 * `__metadata__` first, compact JSON, header padded with spaces to a multiple of 8 so the data is aligned.
 */
export function planSafetensors(
  tensors: TensorSource | readonly TensorHeader[],
  options: WriteOptions = {},
): SafetensorsLayout {
  const specs: TensorHeader[] = Array.isArray(tensors)
    ? checkSpecs(tensors as readonly TensorHeader[])
    : tensorPairs(tensors as TensorSource).map(([name, t]) => ({ name, shape: t.shape }));
  const dtype = options.dtype ?? "float32";
  const size = outputDtypeSize(dtype);
  const sorted = [...specs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const merged: Record<string, string> = { format: "pt", ...options.metadata };
  const metadata: Record<string, string> = {};
  for (const k of Object.keys(merged).sort()) metadata[k] = merged[k];
  const header: Record<string, unknown> = { __metadata__: metadata };
  const order: SafetensorsLayout["order"] = [];
  let offset = 0;
  for (const { name, shape } of sorted) {
    const numel = numelOf(shape);
    const bytes = numel * size;
    header[name] = {
      dtype: outputDtypeName(dtype),
      shape: [...shape],
      data_offsets: [offset, offset + bytes],
    };
    order.push({ name, numel, bytes });
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const headerBytes = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(headerBytes.buffer).setBigUint64(0, BigInt(padded), true);
  headerBytes.set(json, 8);
  return { headerBytes, order, fileSize: headerBytes.length + offset };
}

/** Specs checked as {@link tensorPairs} checks tensors: valid shapes, unique and allowed names. */
function checkSpecs(specs: readonly TensorHeader[]): TensorHeader[] {
  const seen = new Set<string>();
  for (const { name, shape } of specs) {
    if (name === "__metadata__") throw new Error(`tensor name "__metadata__" is reserved by safetensors`);
    if (seen.has(name)) throw new Error(`duplicate tensor name "${name}"`);
    seen.add(name);
    if (!shape.every(isNonNegInt)) {
      throw new Error(`tensor "${name}": invalid shape ${JSON.stringify(shape)}`);
    }
  }
  return [...specs];
}

/** Encode tensors as an in-memory safetensors file (small files and tests; big ones use the streaming writer). */
export function encodeSafetensors(tensors: TensorSource, options: WriteOptions = {}): Uint8Array {
  const dtype = options.dtype ?? "float32";
  const byName = new Map(tensorPairs(tensors));
  const layout = planSafetensors(tensors, options);
  const out = new Uint8Array(layout.fileSize);
  out.set(layout.headerBytes, 0);
  let pos = layout.headerBytes.length;
  for (const t of layout.order) {
    out.set(encodeFromFloat32(byName.get(t.name)!.data, dtype), pos);
    pos += t.bytes;
  }
  return out;
}

async function writeAll(f: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await f.write(bytes.subarray(off));
}

/**
 * Write tensors to a safetensors file atomically, streaming one tensor at a time (fp32 data is written
 * straight from the caller's arrays). Returns the file size in bytes.
 */
export async function writeSafetensors(
  path: string,
  tensors: TensorSource,
  options: WriteOptions = {},
): Promise<number> {
  const byName = new Map(tensorPairs(tensors));
  return await writeSafetensorsStream(
    path,
    [...byName].map(([name, t]) => ({ name, shape: t.shape })),
    (n) => byName.get(n)!.data,
    options,
  );
}

/**
 * {@link writeSafetensors} for tensors that are read only when written: `read(name)` is called once per
 * tensor, in file order, and its values are encoded, written and dropped before the next, so a model of
 * any size is written with one tensor in memory. Atomic; returns the file size in bytes.
 */
export async function writeSafetensorsStream(
  path: string,
  specs: readonly TensorHeader[],
  read: TensorReader,
  options: WriteOptions = {},
): Promise<number> {
  const dtype = options.dtype ?? "float32";
  const layout = planSafetensors(specs, options);
  await writeFileAtomic(path, async (f) => {
    await writeAll(f, layout.headerBytes);
    for (const t of layout.order) {
      const data = await read(t.name);
      if (data.length !== t.numel) {
        throw new Error(`tensor "${t.name}": ${data.length} values for ${t.numel} elements`);
      }
      await writeAll(f, encodeFromFloat32(data, dtype));
    }
  });
  return layout.fileSize;
}
