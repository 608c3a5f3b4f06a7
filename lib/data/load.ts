/**
 * Load a whole dataset file into normalized examples, with precise errors for bad records and an
 * opt-in to skip them.
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
import type { FormatName, PreferenceExample, RewardExample, SftExample } from "./types.ts";

/** Options for {@link loadDataset}. */
export type LoadOptions = {
  /** The source format; detected from the first record's fields when left out. */
  format?: FormatName;
  /** Skip malformed records (reported in `skipped`) instead of stopping at the first one. */
  skipBad?: boolean;
  /** Stop after this many good examples. */
  limit?: number;
};

/** A record that was skipped, and why. */
export type SkippedRecord = { line: number; field: string | undefined; message: string };

/** What every loaded dataset carries besides its examples. */
export type LoadInfo = {
  /** The source format (given or detected). */
  format: FormatName;
  /** Records skipped with `skipBad` (empty otherwise). `skipped.length` is how many. */
  skipped: SkippedRecord[];
  /** Records read (good and skipped). */
  records: number;
};

/** A loaded dataset, discriminated by the kind of example its format produces. */
export type LoadedDataset =
  & LoadInfo
  & (
    | { kind: "reward"; examples: RewardExample[] }
    | { kind: "preference"; examples: PreferenceExample[] }
    | { kind: "sft"; examples: SftExample[] }
  );

/**
 * Read a JSONL or Parquet file and normalize every record (see formats.ts for the formats).
 *
 * By default the first malformed record stops loading with a {@link DataError} naming file, line
 * (or row) and field: `data.jsonl:17: field "responses[2].reward": expected a finite number, got "abc"`.
 * With `skipBad: true` such records are skipped and listed in `skipped`.
 *
 * @example
 * ```ts
 * const ds = await loadDataset("ultrafeedback.parquet", { skipBad: true });
 * if (ds.kind === "reward") console.log(ds.examples.length, "prompts, K =", ds.examples[0].responses.length);
 * console.log(`${ds.skipped.length} bad rows skipped`);
 * ```
 */
export async function loadDataset(path: string, opts: LoadOptions = {}): Promise<LoadedDataset> {
  if (opts.format !== undefined && !isFormatName(opts.format)) {
    throw new Error(`unknown data format "${opts.format}"; expected one of ${FORMAT_NAMES.join(", ")}`);
  }
  const unit: RecordUnit = recordFileKind(path) === "parquet" ? "row" : "line";
  const skipped: SkippedRecord[] = [];
  const skip = (error: DataError) =>
    skipped.push({ line: error.line, field: error.field, message: error.reason });
  const limit = opts.limit ?? Infinity;
  let format = opts.format;
  let records = 0;
  const examples: (RewardExample | PreferenceExample | SftExample)[] = [];
  const onError = opts.skipBad ? (e: DataError) => (records++, skip(e)) : undefined;

  if (limit > 0) {
    for await (const { row, line } of readRecords(path, { onError })) {
      records++;
      try {
        format ??= detectOrThrow(row);
        examples.push(parseRecord(format, row));
      } catch (e) {
        const error = toDataError(withFormatHint(e, row, format), path, line, unit);
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
  return { kind: FORMAT_KIND[format], format, examples, skipped, records } as LoadedDataset;
}

function detectOrThrow(row: Record<string, unknown>): FormatName {
  const format = detectFormat(row);
  if (format === undefined) throw new FieldError("", undetectedFormatMessage(row));
  return format;
}

/** A record of another format in the file is a common mistake (mixed files): say so. */
function withFormatHint(e: unknown, row: Record<string, unknown>, format: FormatName | undefined): unknown {
  if (!(e instanceof FieldError) || format === undefined) return e;
  const looksLike = detectFormat(row);
  if (looksLike === undefined || looksLike === format) return e;
  return new FieldError(
    e.field,
    `${e.message} (this record looks like the "${looksLike}" format; the file is read as "${format}")`,
  );
}

function toDataError(e: unknown, path: string, line: number, unit: RecordUnit): DataError {
  if (e instanceof DataError) return e;
  if (e instanceof FieldError) return new DataError(path, line, e.message, e.field || undefined, unit);
  return new DataError(path, line, e instanceof Error ? e.message : String(e), undefined, unit);
}
