/**
 * Test helpers for lib/data: temporary files in JSONL and Parquet (with real nested Parquet
 * columns, as Hub files have them, not JSON strings).
 *
 * @module
 */

import { join } from "node:path";
import { brotliCompressSync, gzipSync, zstdCompressSync } from "node:zlib";
import { ByteWriter, parquetWrite } from "hyparquet-writer";

/** A column type: scalars, lists and structs (nullable everywhere, like pyarrow writes them). */
export type ColType = "string" | "double" | "int64" | { list: ColType } | { struct: Record<string, ColType> };

/** Parquet codecs the writer can produce here. */
export type Codec = "UNCOMPRESSED" | "SNAPPY" | "GZIP" | "ZSTD" | "BROTLI";

// deno-lint-ignore no-explicit-any
type SchemaElement = any;

function schemaFor(name: string, type: ColType): SchemaElement[] {
  if (type === "string") {
    return [{ name, type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "OPTIONAL" }];
  }
  if (type === "double") return [{ name, type: "DOUBLE", repetition_type: "OPTIONAL" }];
  if (type === "int64") return [{ name, type: "INT64", repetition_type: "OPTIONAL" }];
  if ("list" in type) {
    return [
      { name, repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
      { name: "list", repetition_type: "REPEATED", num_children: 1 },
      ...schemaFor("element", type.list),
    ];
  }
  const fields = Object.entries(type.struct);
  return [
    { name, repetition_type: "OPTIONAL", num_children: fields.length },
    ...fields.flatMap(([k, t]) => schemaFor(k, t)),
  ];
}

function convert(value: unknown, type: ColType): unknown {
  if (value === null || value === undefined) return null;
  if (type === "int64") return typeof value === "number" ? BigInt(value) : value;
  if (typeof type === "string") return value;
  if ("list" in type) return (value as unknown[]).map((v) => convert(v, type.list));
  const obj = value as Record<string, unknown>;
  return Object.fromEntries(Object.entries(type.struct).map(([k, t]) => [k, convert(obj[k], t)]));
}

/** The message list column type (`[{role, content}]`). */
export const MESSAGES: ColType = { list: { struct: { content: "string", role: "string" } } };

/** Write rows as a Parquet file with the given column types. */
export function parquetBytes(
  rows: Record<string, unknown>[],
  types: Record<string, ColType>,
  opts: { codec?: Codec; rowGroupSize?: number } = {},
): Uint8Array {
  const names = Object.keys(types);
  const writer = new ByteWriter();
  parquetWrite({
    writer,
    columnData: names.map((name) => ({ name, data: rows.map((r) => convert(r[name], types[name])) })),
    schema: [{ name: "root", num_children: names.length }, ...names.flatMap((n) => schemaFor(n, types[n]))],
    codec: opts.codec ?? "SNAPPY",
    compressors: {
      GZIP: (b: Uint8Array) => new Uint8Array(gzipSync(b)),
      ZSTD: (b: Uint8Array) => new Uint8Array(zstdCompressSync(b)),
      BROTLI: (b: Uint8Array) => new Uint8Array(brotliCompressSync(b)),
    },
    rowGroupSize: opts.rowGroupSize ?? 2,
  });
  return new Uint8Array(writer.getBuffer());
}

/** A fresh temporary directory, removed by the returned disposer. */
export async function tempDir(): Promise<{ dir: string; path: (name: string) => string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "nca-data-test-" });
  return {
    dir,
    path: (name: string) => join(dir, name),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Write rows as JSON Lines (strings in `rows` are written verbatim as lines). */
export async function writeJsonl(path: string, rows: unknown[]): Promise<string> {
  await Deno.writeTextFile(
    path,
    rows.map((r) => typeof r === "string" ? r : JSON.stringify(r)).join("\n") + "\n",
  );
  return path;
}

/** Write rows as Parquet. */
export async function writeParquet(
  path: string,
  rows: Record<string, unknown>[],
  types: Record<string, ColType>,
  opts: { codec?: Codec; rowGroupSize?: number } = {},
): Promise<string> {
  await Deno.writeFile(path, parquetBytes(rows, types, opts));
  return path;
}

/** Collect an async iterable. */
export async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/** The error a promise rejects with (fails when it resolves). */
export async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected the promise to reject");
}
