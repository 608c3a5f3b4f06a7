/**
 * Streaming JSON Lines reader: datasets can be gigabytes, so the file is read in chunks and
 * parsed one line at a time.
 *
 * @module
 */

import { DataError } from "./errors.ts";
import type { RawRecord } from "./types.ts";

/** Options for {@link readJsonl}. */
export type ReadJsonlOptions = {
  /**
   * Called with each line that is not a JSON object; the line is then skipped. Without it, such a
   * line ends the iteration with that {@link DataError}.
   */
  onError?: (error: DataError) => void;
};

/**
 * Lines of a text file, decoded as UTF-8, without their terminators (`\n` or `\r\n`).
 * Yields `[line, lineNumber]` with 1-based numbers.
 */
export async function* readLines(path: string): AsyncGenerator<[string, number]> {
  using file = await Deno.open(path, { read: true });
  const decoder = new TextDecoder("utf-8");
  let pending = "";
  let lineNumber = 0;
  const strip = (line: string) => line.endsWith("\r") ? line.slice(0, -1) : line;
  for await (const chunk of file.readable) {
    pending += decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let nl = pending.indexOf("\n"); nl !== -1; nl = pending.indexOf("\n", start)) {
      yield [strip(pending.slice(start, nl)), ++lineNumber];
      start = nl + 1;
    }
    pending = pending.slice(start);
  }
  pending += decoder.decode();
  if (pending.length > 0) yield [strip(pending), ++lineNumber];
}

/**
 * Stream the records of a JSON Lines file. Blank lines are skipped (but still counted, so line
 * numbers match an editor's); each other line must hold one JSON object.
 *
 * @example
 * ```ts
 * for await (const { row, line } of readJsonl("train.jsonl")) console.log(line, Object.keys(row));
 * ```
 */
export async function* readJsonl(path: string, opts: ReadJsonlOptions = {}): AsyncGenerator<RawRecord> {
  let first = true;
  for await (const [text, line] of readLines(path)) {
    if (text.trim() === "") continue;
    // A file that is one JSON array (or pretty-printed JSON) is not JSON Lines: say so once.
    const hint = first && /^\s*[[{]\s*$|^\s*\[/.test(text)
      ? " (this looks like a JSON document, not JSON Lines: write one object per line)"
      : "";
    first = false;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      const error = new DataError(path, line, `invalid JSON: ${(e as Error).message}${hint}`);
      if (!opts.onError) throw error;
      opts.onError(error);
      continue;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      const got = Array.isArray(value) ? "an array" : value === null ? "null" : typeof value;
      const error = new DataError(path, line, `expected a JSON object, got ${got}${hint}`);
      if (!opts.onError) throw error;
      opts.onError(error);
      continue;
    }
    yield { row: value as Record<string, unknown>, line };
  }
}
