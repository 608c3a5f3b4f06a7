/**
 * Load a whole dataset (a file, a folder, a glob or a Hub layout folder) into normalized examples, with
 * precise errors for bad records and an opt-in to skip them.
 *
 * @module
 */

import { DataError, FieldError, type RecordUnit } from "./errors.ts";
import {
  detectFormat,
  FORMAT_KIND,
  FORMAT_NAMES,
  isFormatName,
  parseRecord,
  undetectedFormatMessage,
} from "./formats.ts";
import { readRecords, recordFileKind } from "./records.ts";
import { type DataFiles, resolveDataFiles, type SplitRole } from "./sources.ts";
import type { FormatName, PreferenceExample, RewardExample, SftExample } from "./types.ts";

/** Options for {@link loadDataset}. */
export type LoadOptions = {
  /** The source format; detected from the first record's fields when left out. */
  format?: FormatName;
  /** Skip malformed records (reported in `skipped`) instead of stopping at the first one. */
  skipBad?: boolean;
  /** Stop after this many good examples. */
  limit?: number;
  /** Which split of a Hub layout folder to read (default `train`; see sources.ts). */
  role?: SplitRole;
};

/** A record that was skipped, and why: `file` and `line` (a row, for Parquet) as in a {@link DataError}. */
export type SkippedRecord = {
  file: string;
  line: number;
  unit: RecordUnit;
  field: string | undefined;
  message: string;
};

/** Where an example came from, for messages about it after loading (a mixed K, say). */
export type RecordOrigin = { file: string; line: number; unit: RecordUnit };

/** What every loaded dataset carries besides its examples. */
export type LoadInfo = {
  /** The source format (given or detected). */
  format: FormatName;
  /** Records skipped with `skipBad` (empty otherwise). `skipped.length` is how many. */
  skipped: SkippedRecord[];
  /** Records read (good and skipped). */
  records: number;
  /** The files read (and, for a Hub layout folder, the split and the splits left out). */
  input: DataFiles;
  /** Each example's file and line, index for index. */
  origins: RecordOrigin[];
};

/** A loaded dataset, discriminated by the kind of example its format produces. */
export type LoadedDataset =
  & LoadInfo
  & (
    | { kind: "reward"; examples: RewardExample[] }
    | { kind: "preference"; examples: PreferenceExample[] }
    | { kind: "sft"; examples: SftExample[] }
  );

/** A skipped record as an error message reads: `data.jsonl:17: field "responses[2].reward": …`. */
export function describeSkipped(s: SkippedRecord): string {
  return new DataError(s.file, s.line, s.message, s.field, s.unit).message;
}

/**
 * Read a dataset and normalize every record (see formats.ts for the formats). `path` is a JSONL
 * (optionally gzip) or Parquet file, a folder, a glob or a Hub layout folder (see sources.ts); the files
 * are read in order, and every message names the file the record is in.
 *
 * By default the first malformed record stops loading with a {@link DataError} naming file, line
 * (or row) and field: `data.jsonl:17: field "responses[2].reward": expected a finite number, got "abc"`.
 * With `skipBad: true` such records are skipped and listed in `skipped`. A file that is not UTF-8 stops
 * loading either way (an `EncodingError`): skipping its lines would only hide that.
 *
 * @example
 * ```ts
 * import { join } from "node:path";
 * const dir = await Deno.makeTempDir();
 * const rows = [
 *   { prompt: "2 + 2?", responses: [{ text: "4", reward: 1 }, { text: "5", reward: 0 }] },
 *   { prompt: "3 + 3?", responses: [{ text: "6", reward: "high" }, { text: "7", reward: 0 }] }, // bad row
 * ];
 * await Deno.writeTextFile(join(dir, "scored.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n"));
 * const ds = await loadDataset(join(dir, "scored.jsonl"), { skipBad: true });
 * if (ds.kind === "reward") console.log(ds.examples.length, "prompts, K =", ds.examples[0].responses.length);
 * console.log(`${ds.skipped.length} bad rows skipped`); // 1 prompts, K = 2; 1 bad rows skipped
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadDataset(path: string, opts: LoadOptions = {}): Promise<LoadedDataset> {
  if (opts.format !== undefined && !isFormatName(opts.format)) {
    throw new Error(`unknown data format "${opts.format}"; expected one of ${FORMAT_NAMES.join(", ")}`);
  }
  const input = await resolveDataFiles(path, { role: opts.role });
  const skipped: SkippedRecord[] = [];
  const skip = (e: DataError) =>
    skipped.push({ file: e.file, line: e.line, unit: e.unit, field: e.field, message: e.reason });
  const limit = opts.limit ?? Infinity;
  let format = opts.format;
  let detectedIn: string | undefined;
  let records = 0;
  const examples: (RewardExample | PreferenceExample | SftExample)[] = [];
  const origins: RecordOrigin[] = [];
  const onError = opts.skipBad ? (e: DataError) => (records++, skip(e)) : undefined;

  for (const file of input.files) {
    if (examples.length >= limit) break;
    const unit: RecordUnit = recordFileKind(file) === "parquet" ? "row" : "line";
    for await (const { row, line } of readRecords(file, { onError })) {
      records++;
      try {
        if (format === undefined) {
          format = detectOrThrow(row);
          detectedIn = file;
        }
        examples.push(parseRecord(format, row));
        origins.push({ file, line, unit });
      } catch (e) {
        const readAs = detectedIn === undefined || detectedIn === file ? "the file is" : "the data is";
        const error = toDataError(withFormatHint(e, row, format, readAs), file, line, unit);
        if (!opts.skipBad) throw error;
        skip(error);
      }
      if (examples.length >= limit) break;
    }
  }
  if (format === undefined) {
    throw new Error(
      `${path}: no usable records${
        skipped.length ? ` (${skipped.length} skipped)` : ""
      }; cannot tell the format`,
    );
  }
  return { kind: FORMAT_KIND[format], format, examples, skipped, records, input, origins } as LoadedDataset;
}

function detectOrThrow(row: Record<string, unknown>): FormatName {
  const format = detectFormat(row);
  if (format === undefined) throw new FieldError("", undetectedFormatMessage(row));
  return format;
}

/** A record of another format in the file is a common mistake (mixed files): say so. */
function withFormatHint(
  e: unknown,
  row: Record<string, unknown>,
  format: FormatName | undefined,
  readAs: string,
): unknown {
  if (!(e instanceof FieldError) || format === undefined) return e;
  const looksLike = detectFormat(row);
  if (looksLike === undefined || looksLike === format) return e;
  return new FieldError(
    e.field,
    `${e.message} (this record looks like the "${looksLike}" format; ${readAs} read as "${format}")`,
  );
}

function toDataError(e: unknown, path: string, line: number, unit: RecordUnit): DataError {
  if (e instanceof DataError) return e;
  if (e instanceof FieldError) return new DataError(path, line, e.message, e.field || undefined, unit);
  return new DataError(path, line, e instanceof Error ? e.message : String(e), undefined, unit);
}
