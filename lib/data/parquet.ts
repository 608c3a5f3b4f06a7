/**
 * Streaming Parquet reader over hyparquet: Hub datasets ship as Parquet, often hundreds of MB, so
 * the file is read through slice reads and decoded one row group at a time.
 *
 * @module
 */

import { type AsyncBuffer, type FileMetaData, parquetMetadataAsync, parquetReadObjects } from "hyparquet";
import { compressors } from "hyparquet-compressors";
import type { RawRecord } from "./types.ts";

/**
 * An open file seen as hyparquet's {@link AsyncBuffer}: `slice(start, end)` reads just those bytes.
 * Reads are serialized because a Deno file handle has one cursor (seek + read).
 */
export type FileAsyncBuffer = AsyncBuffer & Disposable & { close(): void };

/** Open `path` as an {@link AsyncBuffer} that reads byte ranges on demand. */
export async function openAsyncBuffer(path: string): Promise<FileAsyncBuffer> {
  const file = await Deno.open(path, { read: true });
  const { size } = await file.stat();
  let queue: Promise<unknown> = Promise.resolve();
  const readRange = async (start: number, end: number): Promise<ArrayBuffer> => {
    const out = new Uint8Array(end - start);
    await file.seek(start, Deno.SeekMode.Start);
    let offset = 0;
    while (offset < out.length) {
      const n = await file.read(out.subarray(offset));
      if (n === null) throw new Error(`${path}: unexpected end of file at byte ${start + offset}`);
      offset += n;
    }
    return out.buffer;
  };
  let closed = false;
  const close = () => {
    if (!closed) file.close();
    closed = true;
  };
  return {
    byteLength: size,
    slice(start: number, end?: number): Promise<ArrayBuffer> {
      const s = Math.max(0, start < 0 ? size + start : start);
      const e = Math.min(size, end === undefined ? size : end < 0 ? size + end : end);
      const result = queue.then(() => readRange(s, Math.max(s, e)));
      queue = result.catch(() => {});
      return result;
    },
    close,
    [Symbol.dispose]: close,
  };
}

/** Parquet file metadata (schema, row groups) without reading any data pages. */
export async function readParquetMetadata(path: string): Promise<FileMetaData> {
  using file = await openAsyncBuffer(path);
  return await parquetMetadataAsync(file);
}

/**
 * Stream the rows of a Parquet file as plain objects, one row group in memory at a time.
 * Codecs: snappy, gzip, zstd, brotli, lz4 (hyparquet-compressors). Nested columns (lists of
 * `{role, content}` structs) come back as arrays of objects; INT64 columns come back as `bigint`.
 *
 * @example
 * ```ts
 * import { join } from "node:path";
 * import { parquetWriteBuffer } from "hyparquet-writer";
 * const dir = await Deno.makeTempDir();
 * const columnData = [{ name: "prompt", data: ["2 + 2?", "3 + 3?"], type: "STRING" as const }];
 * const path = join(dir, "train_prefs.parquet");
 * await Deno.writeFile(path, new Uint8Array(parquetWriteBuffer({ columnData })));
 * for await (const { row, line } of readParquet(path)) console.log(line, row.prompt);
 * // 1 "2 + 2?", then 2 "3 + 3?"
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function* readParquet(path: string): AsyncGenerator<RawRecord> {
  using file = await openAsyncBuffer(path);
  let metadata: FileMetaData;
  try {
    metadata = await parquetMetadataAsync(file);
  } catch (e) {
    throw new Error(`${path}: not a readable Parquet file: ${(e as Error).message}`);
  }
  let rowStart = 0;
  for (const group of metadata.row_groups) {
    const rowEnd = rowStart + Number(group.num_rows);
    const rows = await parquetReadObjects({ file, metadata, compressors, rowStart, rowEnd });
    for (let i = 0; i < rows.length; i++) yield { row: rows[i], line: rowStart + i + 1 };
    rowStart = rowEnd;
  }
}
