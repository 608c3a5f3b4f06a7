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
 * The file kind for a path: `.jsonl`, `.ndjson` and `.json` (JSON Lines, which is what Hugging Face
 * `datasets` writes with `to_json`) → "jsonl"; `.parquet` → "parquet". Throws for anything else.
 */
export function recordFileKind(path: string): RecordFileKind {
  const lower = path.toLowerCase();
  if (lower.endsWith(".parquet")) return "parquet";
  if (lower.endsWith(".jsonl") || lower.endsWith(".ndjson") || lower.endsWith(".json")) return "jsonl";
  throw new Error(
    `${path}: unsupported data file type; expected .jsonl, .json (JSON Lines), .ndjson or .parquet`,
  );
}

/**
 * Stream the records of a JSONL or Parquet file, chosen by extension. `line` is the 1-based line
 * (JSONL) or row (Parquet) number.
 *
 * @example
 * ```ts
 * for await (const { row, line } of readRecords("data/train.parquet")) { ... }
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
