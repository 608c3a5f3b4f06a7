import assert from "node:assert/strict";
import { DataError } from "../../lib/data/errors.ts";
import { readJsonl, readLines } from "../../lib/data/jsonl.ts";
import { openAsyncBuffer, readParquet, readParquetMetadata } from "../../lib/data/parquet.ts";
import { readRecords, recordFileKind } from "../../lib/data/records.ts";
import { type Codec, collect, MESSAGES, rejection, tempDir, writeJsonl, writeParquet } from "./helpers.ts";

Deno.test("readLines: numbering, CRLF, no trailing newline, multi-byte characters across chunks", async () => {
  await using tmp = await tempDir();
  const long = "é".repeat(100_000); // 200 kB: crosses read chunks mid-character
  await Deno.writeTextFile(tmp.path("a.txt"), `one\r\n\ntwo\n${long}\nlast`);
  const lines = await collect(readLines(tmp.path("a.txt")));
  assert.deepEqual(lines.map(([, n]) => n), [1, 2, 3, 4, 5]);
  assert.deepEqual(lines.map(([t]) => t.length), [3, 0, 3, 100_000, 4]);
  assert.equal(lines[3][0], long);
});

Deno.test("readJsonl: rows with 1-based line numbers, blank lines skipped but counted", async () => {
  await using tmp = await tempDir();
  const path = await writeJsonl(tmp.path("d.jsonl"), [{ a: 1 }, "", "   ", { a: 2 }]);
  assert.deepEqual(await collect(readJsonl(path)), [{ row: { a: 1 }, line: 1 }, { row: { a: 2 }, line: 4 }]);
});

Deno.test("readJsonl: invalid JSON and non-objects name file and line", async () => {
  await using tmp = await tempDir();
  const path = await writeJsonl(tmp.path("bad.jsonl"), [{ a: 1 }, "{not json", "[1, 2]", "42", { a: 5 }]);
  const err = await rejection(collect(readJsonl(path)));
  assert.ok(err instanceof DataError);
  assert.equal(err.file, path);
  assert.equal(err.line, 2);
  assert.match(err.message, new RegExp(`^${path.replaceAll(".", "\\.")}:2: invalid JSON`));

  const errors: DataError[] = [];
  const rows = await collect(readJsonl(path, { onError: (e) => errors.push(e) }));
  assert.deepEqual(rows.map((r) => r.line), [1, 5]);
  assert.deepEqual(errors.map((e) => e.line), [2, 3, 4]);
  assert.match(errors[1].message, /:3: expected a JSON object, got an array/);
  assert.match(errors[2].message, /:4: expected a JSON object, got number/);
});

Deno.test("readJsonl: a JSON array file gets a hint", async () => {
  await using tmp = await tempDir();
  const path = tmp.path("arr.json");
  await Deno.writeTextFile(path, '[{"a": 1},\n{"a": 2}]\n');
  const err = await rejection(collect(readRecords(path)));
  assert.match(err.message, /arr\.json:1: invalid JSON.*not JSON Lines/);
});

Deno.test("readParquet: rows across row groups, nested lists of structs, INT64 as bigint", async () => {
  await using tmp = await tempDir();
  const rows = Array.from({ length: 5 }, (_, i) => ({
    prompt: `p${i}`,
    chosen: [{ role: "user", content: `p${i}` }, { role: "assistant", content: `c${i}` }],
    score: i * 1.5,
    n: i,
  }));
  const path = await writeParquet(tmp.path("d.parquet"), rows, {
    prompt: "string",
    chosen: MESSAGES,
    score: "double",
    n: "int64",
  }, { rowGroupSize: 2 });
  const meta = await readParquetMetadata(path);
  assert.equal(meta.row_groups.length, 3);
  const got = await collect(readParquet(path));
  assert.deepEqual(got.map((r) => r.line), [1, 2, 3, 4, 5]);
  assert.equal(got[3].row.prompt, "p3");
  assert.deepEqual(got[3].row.chosen, [{ content: "p3", role: "user" }, {
    content: "c3",
    role: "assistant",
  }]);
  assert.equal(got[3].row.score, 4.5);
  assert.equal(got[3].row.n, 3n);
});

for (const codec of ["UNCOMPRESSED", "SNAPPY", "GZIP", "ZSTD", "BROTLI"] as Codec[]) {
  Deno.test(`readParquet: ${codec} codec`, async () => {
    await using tmp = await tempDir();
    const rows = [{ text: "hello ".repeat(50) }, { text: "world" }, { text: null }];
    const path = await writeParquet(tmp.path("c.parquet"), rows, { text: "string" }, { codec });
    const got = await collect(readParquet(path));
    assert.deepEqual(got.map((r) => r.row.text), ["hello ".repeat(50), "world", null]);
  });
}

Deno.test("openAsyncBuffer: concurrent slices read the right bytes", async () => {
  await using tmp = await tempDir();
  const bytes = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
  await Deno.writeFile(tmp.path("b.bin"), bytes);
  using buf = await openAsyncBuffer(tmp.path("b.bin"));
  assert.equal(buf.byteLength, 1000);
  const [a, b, c] = await Promise.all([buf.slice(0, 10), buf.slice(500, 520), buf.slice(990)]);
  assert.deepEqual(new Uint8Array(a), bytes.slice(0, 10));
  assert.deepEqual(new Uint8Array(b), bytes.slice(500, 520));
  assert.deepEqual(new Uint8Array(c), bytes.slice(990));
});

Deno.test("readParquet: a file that is not Parquet", async () => {
  await using tmp = await tempDir();
  await Deno.writeTextFile(tmp.path("x.parquet"), "definitely not parquet");
  const err = await rejection(collect(readParquet(tmp.path("x.parquet"))));
  assert.match(err.message, /x\.parquet: not a readable Parquet file/);
});

Deno.test("readRecords picks the reader by extension", async () => {
  await using tmp = await tempDir();
  const j = await writeJsonl(tmp.path("a.JSONL"), [{ x: 1 }]);
  const p = await writeParquet(tmp.path("a.parquet"), [{ x: 1 }], { x: "double" });
  assert.deepEqual(await collect(readRecords(j)), [{ row: { x: 1 }, line: 1 }]);
  assert.deepEqual((await collect(readRecords(p))).map((r) => r.row), [{ x: 1 }]);
  assert.equal(recordFileKind("x.json"), "jsonl");
  assert.equal(recordFileKind("x.ndjson"), "jsonl");
  assert.throws(() => recordFileKind("data.csv"), /data\.csv: unsupported data file type; expected \.jsonl/);
  const err = await rejection(collect(readRecords(tmp.path("missing.jsonl"))));
  assert.ok(err instanceof Deno.errors.NotFound);
});
