/**
 * Errors that point at the exact place in a data file: users fix data files by hand, so every
 * message says which file, which line (or row) and which field.
 *
 * @module
 */

/** Where a record came from: a JSONL line or a Parquet row (both 1-based). */
export type RecordUnit = "line" | "row";

/**
 * A problem with one record of a data file.
 *
 * The message reads `data.jsonl:17: field "responses[2].reward": expected a finite number, got "abc"`
 * (Parquet: `data.parquet: row 17: …`), so it can be pasted into an editor's go-to-line.
 */
export class DataError extends Error {
  /** The file as the caller named it. */
  readonly file: string;
  /** 1-based line (JSONL) or row (Parquet) number. */
  readonly line: number;
  /** The offending field as a path (`responses[2].reward`), when one field is to blame. */
  readonly field?: string;
  /** The reason alone, without the location prefix. */
  readonly reason: string;
  readonly unit: RecordUnit;

  constructor(file: string, line: number, reason: string, field?: string, unit: RecordUnit = "line") {
    const where = unit === "line" ? `${file}:${line}` : `${file}: row ${line}`;
    super(`${where}: ${field === undefined ? "" : `field "${field}": `}${reason}`);
    this.name = "DataError";
    this.file = file;
    this.line = line;
    this.field = field;
    this.reason = reason;
    this.unit = unit;
  }
}

/**
 * A problem with one field of a record, before the file and line are known. Parsers throw it;
 * the loader turns it into a {@link DataError}.
 */
export class FieldError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = "FieldError";
    this.field = field;
  }
}

/** A short, readable rendering of a bad value for error messages. */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing (the field is missing)";
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "number") return String(value);
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
