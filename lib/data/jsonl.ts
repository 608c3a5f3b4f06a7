/**
 * Streaming JSON Lines reader: datasets can be gigabytes, so the file is read in chunks (gunzipped when
 * it is gzip) and parsed one line at a time.
 *
 * @module
 */

import { openBytes } from "./compression.ts";
import { checkTextEncoding, EncodingError, notUtf8Error } from "./encoding.ts";
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
 * Lines of a text file without their terminators (`\n` or `\r\n`), as `[line, lineNumber]` with
 * 1-based numbers. The file may be gzip (see compression.ts). It must be UTF-8 (a byte-order mark is
 * dropped): UTF-16 and other encodings are refused by {@link checkTextEncoding}, and a line that is not
 * valid UTF-8 stops with an {@link EncodingError} naming that line, rather than turning into U+FFFD or
 * a JSON syntax error. Lines are split as bytes, so each is decoded on its own and the bad one is known.
 */
export async function* readLines(path: string): AsyncGenerator<[string, number]> {
  const { stream, gzip } = await openBytes(path);
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let lineNumber = 0;
  let parts: Uint8Array[] = []; // the current line's bytes from earlier chunks
  const decode = (bytes: Uint8Array): string => {
    let text: string;
    try {
      text = decoder.decode(bytes);
    } catch {
      throw notUtf8Error(path, lineNumber, bytes);
    }
    return text.endsWith("\r") ? text.slice(0, -1) : text;
  };
  const joined = (last: Uint8Array) => parts.length === 0 ? last : concat([...parts, last]);
  let checked = false;
  try {
    for await (const chunk of stream) {
      if (!checked && chunk.length > 0) {
        checkTextEncoding(path, chunk);
        checked = true;
      }
      let start = 0;
      for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
        lineNumber++;
        const line = decode(joined(chunk.subarray(start, nl)));
        parts = [];
        yield [line, lineNumber];
        start = nl + 1;
      }
      if (start < chunk.length) parts.push(chunk.slice(start));
    }
  } catch (e) {
    if (!gzip || e instanceof EncodingError) throw e;
    throw new Error(`${path}: the gzip data is corrupt or cut short (after line ${lineNumber}): ${e}`);
  }
  if (parts.length > 0) {
    lineNumber++;
    yield [decode(concat(parts)), lineNumber];
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Stream the records of a JSON Lines file. Blank lines are skipped (but still counted, so line
 * numbers match an editor's); each other line must hold one JSON object.
 *
 * @example
 * ```ts
 * import { join } from "node:path";
 * const dir = await Deno.makeTempDir();
 * const path = join(dir, "train.jsonl");
 * await Deno.writeTextFile(path, '{"prompt": "hi", "completion": "hello"}\n\n{"prompt": "bye"}\n');
 * for await (const { row, line } of readJsonl(path)) console.log(line, Object.keys(row));
 * // 1 ["prompt", "completion"], then 3 ["prompt"]: the blank line 2 is skipped but counted
 * await Deno.remove(dir, { recursive: true });
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
