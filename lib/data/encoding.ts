/**
 * Text encodings of JSON Lines files. The format is UTF-8, but files saved by Windows tools (Notepad,
 * PowerShell's `>`) are often UTF-16, and older ones Latin-1: without these checks they fail as
 * "Unexpected token" on line 1, which says nothing about the real problem. A UTF-8 byte-order mark is
 * fine (the decoder drops it).
 *
 * @module
 */

/** A data file whose bytes are not UTF-8 text; `line` is set when one line is to blame. */
export class EncodingError extends Error {
  readonly file: string;
  readonly line?: number;
  constructor(file: string, message: string, line?: number) {
    super(line === undefined ? `${file} ${message}` : `${file}:${line}: ${message}`);
    this.name = "EncodingError";
    this.file = file;
    this.line = line;
  }
}

const hex = (bytes: ArrayLike<number>) =>
  Array.from(bytes, (b) => b.toString(16).toUpperCase().padStart(2, "0")).join(" ");

const startsWith = (head: Uint8Array, prefix: number[]) => prefix.every((b, i) => head[i] === b);

/** UTF-32 first: its little-endian mark begins with UTF-16's. */
const BYTE_ORDER_MARKS: { bytes: number[]; encoding: string }[] = [
  { bytes: [0xff, 0xfe, 0x00, 0x00], encoding: "UTF-32" },
  { bytes: [0x00, 0x00, 0xfe, 0xff], encoding: "UTF-32" },
  { bytes: [0xff, 0xfe], encoding: "UTF-16" },
  { bytes: [0xfe, 0xff], encoding: "UTF-16" },
];

/**
 * Refuse a file whose first bytes show it is not UTF-8 text: a UTF-16/UTF-32 byte-order mark, UTF-16
 * without one (every other byte zero, as ASCII text in UTF-16 is), other zero bytes, or a Parquet file
 * under a JSON name. `head` is the start of the (decompressed) file.
 */
export function checkTextEncoding(path: string, head: Uint8Array): void {
  for (const { bytes, encoding } of BYTE_ORDER_MARKS) {
    if (head.length >= bytes.length && startsWith(head, bytes)) {
      throw new EncodingError(path, `is ${encoding} (byte-order mark ${hex(bytes)}); save it as UTF-8`);
    }
  }
  if (startsWith(head, [0x50, 0x41, 0x52, 0x31])) { // "PAR1"
    throw new EncodingError(path, "is a Parquet file, not JSON Lines; give it the .parquet extension");
  }
  const n = Math.min(head.length, 64) & ~1;
  let zeroEven = 0, zeroOdd = 0;
  for (let i = 0; i < n; i++) if (head[i] === 0) i % 2 ? zeroOdd++ : zeroEven++;
  if (n >= 4 && zeroEven === 0 && zeroOdd >= (n / 2) * 0.75) {
    throw new EncodingError(
      path,
      "is UTF-16LE (no byte-order mark; every other byte is zero); save it as UTF-8",
    );
  }
  if (n >= 4 && zeroOdd === 0 && zeroEven >= (n / 2) * 0.75) {
    throw new EncodingError(
      path,
      "is UTF-16BE (no byte-order mark; every other byte is zero); save it as UTF-8",
    );
  }
  const zero = head.subarray(0, 64).indexOf(0);
  if (zero !== -1) {
    throw new EncodingError(
      path,
      `is not UTF-8 text (a zero byte at offset ${zero}: UTF-16, UTF-32 or a binary file?); save it as UTF-8`,
    );
  }
}

const lossy = new TextDecoder("utf-8", { ignoreBOM: true });
const encoder = new TextEncoder();

/**
 * The offset of the first byte of `bytes` that is not part of valid UTF-8, or -1. Found from the lossy
 * decoding: everything before its first U+FFFD that was not a literal U+FFFD (EF BF BD) decoded cleanly.
 */
export function invalidUtf8Offset(bytes: Uint8Array): number {
  const text = lossy.decode(bytes);
  for (let i = text.indexOf("\uFFFD"); i !== -1; i = text.indexOf("\uFFFD", i + 1)) {
    const at = encoder.encode(text.slice(0, i)).length;
    if (!(bytes[at] === 0xef && bytes[at + 1] === 0xbf && bytes[at + 2] === 0xbd)) return at;
  }
  return -1;
}

/** The error for a line that is not UTF-8: which byte, and the likely encoding. */
export function notUtf8Error(path: string, line: number, bytes: Uint8Array): EncodingError {
  const at = invalidUtf8Offset(bytes);
  const which = at < 0 ? "" : ` (byte 0x${hex([bytes[at]])} at byte ${at + 1} of the line)`;
  return new EncodingError(
    path,
    `not UTF-8 text${which}; save the file as UTF-8 (it may be Latin-1 or Windows-1252)`,
    line,
  );
}
