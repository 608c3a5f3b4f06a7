/**
 * A data file's bytes as a stream, gunzipped on the way when the file is gzip: datasets are often shipped
 * as `.jsonl.gz`, and decompressing them first would double the disk they take. Web streams'
 * `DecompressionStream`, so nothing is held in memory beyond a chunk.
 *
 * @module
 */

const GZIP_MAGIC = [0x1f, 0x8b];

/** An open data file: its (decompressed) bytes, and whether they were gzip. */
export type ByteSource = { stream: ReadableStream<Uint8Array>; gzip: boolean };

/**
 * Open `path` for streaming. Gzip is recognized by its magic bytes, whatever the name says; a name ending
 * in `.gz` whose bytes are not gzip is refused, since something went wrong writing it.
 */
export async function openBytes(path: string): Promise<ByteSource> {
  const file = await Deno.open(path, { read: true });
  try {
    const head = new Uint8Array(GZIP_MAGIC.length);
    let n = 0;
    while (n < head.length) {
      const got = await file.read(head.subarray(n));
      if (got === null) break;
      n += got;
    }
    await file.seek(0, Deno.SeekMode.Start);
    const gzip = n === head.length && GZIP_MAGIC.every((b, i) => head[i] === b);
    if (!gzip && path.toLowerCase().endsWith(".gz")) {
      throw new Error(`${path}: not gzip data (the name ends in .gz but the file has no gzip header)`);
    }
    const stream = gzip ? file.readable.pipeThrough(new DecompressionStream("gzip")) : file.readable;
    return { stream, gzip };
  } catch (e) {
    file.close();
    throw e;
  }
}
