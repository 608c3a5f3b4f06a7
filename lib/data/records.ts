/**
 * Pick a reader from the file extension, so callers can take whatever path a user passes.
 *
 * @module
 */

import { DataError } from "./errors.ts";
import { readJsonl } from "./jsonl.ts";
import { readParquet } from "./parquet.ts";
import type { RawRecord } from "./types.ts";

/** File kinds {@link readRecords} understands. */
export type RecordFileKind = "jsonl" | "parquet";

/** Options for {@link readRecords}. */
export type ReadRecordsOptions = {
  /** Called for JSONL lines that are not JSON objects, which are then skipped (default: throw). */
  onError?: (error: DataError) => void;
};

/**
 * The data file extensions, longest first: JSON Lines (`.json` too: what Hugging Face `datasets` writes
 * with `to_json`), gzip-compressed JSON Lines (read as a stream), and Parquet.
 */
export const DATA_EXTENSIONS: readonly string[] = [
  ".jsonl.gz",
  ".ndjson.gz",
  ".json.gz",
  ".jsonl",
  ".ndjson",
  ".json",
  ".parquet",
];

/** The data extension `path` ends with (lower case), or undefined. */
export function dataExtension(path: string): string | undefined {
  const lower = path.toLowerCase();
  return DATA_EXTENSIONS.find((e) => lower.endsWith(e));
}

/**
 * The file kind for a path: `.jsonl`, `.ndjson` and `.json`, each optionally `.gz` → "jsonl";
 * `.parquet` → "parquet". Throws for anything else.
 */
export function recordFileKind(path: string): RecordFileKind {
  const ext = dataExtension(path);
  if (ext === ".parquet") return "parquet";
  if (ext !== undefined) return "jsonl";
  if (path.toLowerCase().endsWith(".parquet.gz")) {
    // Parquet is read by byte ranges, which a gzip stream cannot give; its pages are compressed anyway.
    throw new Error(`${path}: a gzip-compressed Parquet file cannot be read in place; gunzip it first`);
  }
  throw new Error(
    `${path}: unsupported data file type; expected .jsonl, .json (JSON Lines), .ndjson, .parquet, ` +
      `or .jsonl.gz / .json.gz / .ndjson.gz`,
  );
}

/**
 * Stream the records of a JSONL (gzip or not) or Parquet file, chosen by extension. `line` is the
 * 1-based line (JSONL) or row (Parquet) number.
 *
 * @example
 * ```ts
 * import { join } from "node:path";
 * const dir = await Deno.makeTempDir();
 * const path = join(dir, "train.jsonl"); // or .jsonl.gz, .parquet…
 * await Deno.writeTextFile(path, '{"prompt": "2 + 2?", "chosen": "4", "rejected": "5"}\n');
 * for await (const { row, line } of readRecords(path)) console.log(line, row.prompt); // 1 "2 + 2?"
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function* readRecords(path: string, opts: ReadRecordsOptions = {}): AsyncGenerator<RawRecord> {
  const kind = recordFileKind(path);
  if (kind === "parquet") {
    yield* readParquet(path);
    return;
  }
  yield* readJsonl(path, opts);
}
