import assert from "node:assert/strict";
import { DataError } from "../../lib/data/errors.ts";
import { EncodingError, invalidUtf8Offset } from "../../lib/data/encoding.ts";
import { readLines } from "../../lib/data/jsonl.ts";
import { loadDataset } from "../../lib/data/load.ts";
import { recordFileKind } from "../../lib/data/records.ts";
import { collect, rejection, tempDir } from "./helpers.ts";

const reward = (i: number) => ({
  prompt: `q${i}`,
  responses: [{ text: `a${i} é`, reward: 1 }, { text: `b${i}`, reward: 0 }],
});
const jsonl = (rows: unknown[]) =>
  rows.map((r) => typeof r === "string" ? r : JSON.stringify(r)).join("\n") + "\n";

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** UTF-16 bytes of `text` (little- or big-endian), with or without the byte-order mark. */
function utf16(text: string, endian: "LE" | "BE", bom: boolean): Uint8Array {
  const out = new Uint8Array((text.length + (bom ? 1 : 0)) * 2);
  const view = new DataView(out.buffer);
  const units = (bom ? "\uFEFF" : "") + text;
  for (let i = 0; i < units.length; i++) view.setUint16(2 * i, units.charCodeAt(i), endian === "LE");
  return out;
}

Deno.test("a .jsonl.gz file is read as a stream, with line numbers of the uncompressed text", async () => {
  await using tmp = await tempDir();
  // ~1.5 MB uncompressed: many decompressed chunks, lines split across them
  const rows = Array.from({ length: 3000 }, (_, i) => ({ ...reward(i), pad: "x".repeat(400 + (i % 97)) }));
  const path = tmp.path("data.jsonl.gz");
  await Deno.writeFile(path, await gzip(new TextEncoder().encode(jsonl(rows))));
  assert.equal(recordFileKind(path), "jsonl");
  assert.equal(recordFileKind("x.JSON.GZ"), "jsonl");
  const ds = await loadDataset(path);
  assert.equal(ds.examples.length, 3000);
  assert.equal(ds.origins[2999].line, 3000);
  if (ds.kind === "reward") assert.equal(ds.examples[2999].responses[0].content, "a2999 é");

  // a .json.gz with a bad row: the error names the .gz file and the line
  const bad = tmp.path("data.json.gz");
  await Deno.writeFile(bad, await gzip(new TextEncoder().encode(jsonl([reward(0), reward(1), "{oops"]))));
  const err = await rejection(loadDataset(bad));
  assert.ok(err instanceof DataError);
  assert.match(err.message, new RegExp(`^${bad.replaceAll(".", "\\.")}:3: invalid JSON`));
});

Deno.test("gzip problems: a cut-short file and a .gz name on plain text", async () => {
  await using tmp = await tempDir();
  const full = await gzip(new TextEncoder().encode(jsonl(Array.from({ length: 2000 }, (_, i) => reward(i)))));
  await Deno.writeFile(tmp.path("cut.jsonl.gz"), full.subarray(0, full.length >> 1));
  const cut = await rejection(loadDataset(tmp.path("cut.jsonl.gz")));
  assert.match(cut.message, /cut\.jsonl\.gz: the gzip data is corrupt or cut short \(after line \d+\)/);
  await Deno.writeTextFile(tmp.path("plain.jsonl.gz"), jsonl([reward(0)]));
  await assert.rejects(
    loadDataset(tmp.path("plain.jsonl.gz")),
    /plain\.jsonl\.gz: not gzip data \(the name ends in \.gz but the file has no gzip header\)/,
  );
  // gzip under a plain name is recognized by its bytes
  await Deno.writeFile(
    tmp.path("actually-gzip.jsonl"),
    await gzip(new TextEncoder().encode(jsonl([reward(0)]))),
  );
  assert.equal((await loadDataset(tmp.path("actually-gzip.jsonl"))).examples.length, 1);
  assert.throws(() => recordFileKind("d.parquet.gz"), /gzip-compressed Parquet file cannot be read in place/);
});

Deno.test("a UTF-16 file is refused with its encoding and the fix", async () => {
  await using tmp = await tempDir();
  const text = jsonl([reward(0), reward(1)]);
  const cases: [string, Uint8Array, string][] = [
    ["le-bom.jsonl", utf16(text, "LE", true), "is UTF-16 (byte-order mark FF FE); save it as UTF-8"],
    ["be-bom.jsonl", utf16(text, "BE", true), "is UTF-16 (byte-order mark FE FF); save it as UTF-8"],
    ["le.jsonl", utf16(text, "LE", false), "is UTF-16LE (no byte-order mark; every other byte is zero)"],
    ["be.jsonl", utf16(text, "BE", false), "is UTF-16BE (no byte-order mark; every other byte is zero)"],
  ];
  for (const [name, bytes, message] of cases) {
    const path = tmp.path(name);
    await Deno.writeFile(path, bytes);
    const err = await rejection(loadDataset(path));
    assert.ok(err instanceof EncodingError, name);
    assert.ok(err.message.startsWith(`${path} ${message}`), err.message);
  }
  // compressed UTF-16 is found too (the check is on the decompressed bytes)
  await Deno.writeFile(tmp.path("le.jsonl.gz"), await gzip(utf16(text, "LE", true)));
  await assert.rejects(
    loadDataset(tmp.path("le.jsonl.gz")),
    /le\.jsonl\.gz is UTF-16 \(byte-order mark FF FE\)/,
  );
});

Deno.test("a UTF-8 byte-order mark is accepted silently", async () => {
  await using tmp = await tempDir();
  const body = new TextEncoder().encode(jsonl([reward(0), reward(1)]));
  const path = tmp.path("bom.jsonl");
  await Deno.writeFile(path, new Uint8Array([0xef, 0xbb, 0xbf, ...body]));
  const ds = await loadDataset(path);
  assert.equal(ds.examples.length, 2);
  assert.equal(ds.format, "reward");
  if (ds.kind === "reward") assert.equal(ds.examples[0].prompt[0].content, "q0");
});

Deno.test("a line that is not UTF-8 (Latin-1) names the line and the byte", async () => {
  await using tmp = await tempDir();
  const enc = new TextEncoder();
  const line2 = enc.encode('{"prompt": "caf');
  const latin1 = new Uint8Array([...enc.encode(jsonl([reward(0)])), ...line2, 0xe9, ...enc.encode('"}\n')]);
  const path = tmp.path("latin1.jsonl");
  await Deno.writeFile(path, latin1);
  const err = await rejection(loadDataset(path));
  assert.ok(err instanceof EncodingError);
  assert.equal(err.line, 2);
  assert.equal(
    err.message,
    `${path}:2: not UTF-8 text (byte 0xE9 at byte ${line2.length + 1} of the line); ` +
      "save the file as UTF-8 (it may be Latin-1 or Windows-1252)",
  );
  // not skippable: the whole file is in the wrong encoding, skipping lines would hide that
  await assert.rejects(loadDataset(path, { skipBad: true }), EncodingError);
  // readLines still gives every line of a valid file, CRLF stripped, multi-byte characters whole
  await Deno.writeTextFile(tmp.path("ok.txt"), "é\r\nü\n\nlast");
  assert.deepEqual(await collect(readLines(tmp.path("ok.txt"))), [["é", 1], ["ü", 2], ["", 3], ["last", 4]]);
});

Deno.test("invalidUtf8Offset: the first bad byte, past literal replacement characters", () => {
  const enc = new TextEncoder();
  assert.equal(invalidUtf8Offset(enc.encode("fine \uFFFD text")), -1);
  assert.equal(invalidUtf8Offset(new Uint8Array([...enc.encode("a\uFFFDb"), 0xff, 0x41])), 5);
  assert.equal(invalidUtf8Offset(new Uint8Array([0x41, 0xc3])), 1); // truncated sequence
});

Deno.test("a Parquet file named .jsonl says so", async () => {
  await using tmp = await tempDir();
  await Deno.writeFile(tmp.path("p.jsonl"), new Uint8Array([0x50, 0x41, 0x52, 0x31, 1, 2, 3, 4]));
  await assert.rejects(loadDataset(tmp.path("p.jsonl")), /p\.jsonl is a Parquet file, not JSON Lines/);
});
