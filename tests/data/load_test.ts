import assert from "node:assert/strict";
import { DataError } from "../../lib/data/errors.ts";
import { loadDataset } from "../../lib/data/load.ts";
import { rejection, tempDir, writeJsonl, writeParquet } from "./helpers.ts";

const good = (i: number) => ({
  prompt: `q${i}`,
  responses: [{ text: `a${i}`, reward: 1 }, { text: `b${i}`, reward: 0 }, { text: `c${i}`, reward: 2 }],
});
const badReward = {
  prompt: "q",
  responses: [{ text: "a", reward: 1 }, { text: "b", reward: 0 }, { text: "c", reward: "abc" }],
};

Deno.test("loadDataset: a bad field stops loading with file, line and field", async () => {
  await using tmp = await tempDir();
  const rows: unknown[] = Array.from({ length: 16 }, (_, i) => good(i));
  rows.push(badReward, good(99));
  const path = await writeJsonl(tmp.path("data.jsonl"), rows);
  const err = await rejection(loadDataset(path));
  assert.ok(err instanceof DataError);
  assert.equal(err.file, path);
  assert.equal(err.line, 17);
  assert.equal(err.field, "responses[2].reward");
  assert.equal(err.message, `${path}:17: field "responses[2].reward": expected a finite number, got "abc"`);
});

Deno.test("loadDataset: invalid JSON stops loading with file and line", async () => {
  await using tmp = await tempDir();
  const path = await writeJsonl(tmp.path("data.jsonl"), [
    good(0),
    "",
    '{"prompt": "q", "responses": [',
    good(1),
  ]);
  const err = await rejection(loadDataset(path));
  assert.ok(err instanceof DataError);
  assert.equal(err.line, 3);
  assert.equal(err.field, undefined);
  assert.match(err.message, /data\.jsonl:3: invalid JSON/);
});

Deno.test("loadDataset: skipBad skips and reports bad lines of every kind", async () => {
  await using tmp = await tempDir();
  const path = await writeJsonl(tmp.path("data.jsonl"), [
    good(0),
    badReward, // 2: bad field
    "{oops", // 3: invalid JSON
    "[]", // 4: not an object
    { prompt: "q", responses: [{ text: "a", reward: 1 }] }, // 5: K = 1
    good(5),
    { chosen: "x", rejected: "y" }, // 7: a preference row in a reward file
  ]);
  const ds = await loadDataset(path, { skipBad: true });
  assert.equal(ds.format, "reward");
  assert.equal(ds.examples.length, 2);
  assert.equal(ds.records, 7);
  assert.equal(ds.skipped.length, 5);
  assert.deepEqual(ds.skipped.map((s) => s.line), [2, 3, 4, 5, 7]);
  assert.deepEqual(ds.skipped.map((s) => s.field), [
    "responses[2].reward",
    undefined,
    undefined,
    "responses",
    "prompt",
  ]);
  assert.match(ds.skipped[0].message, /^expected a finite number, got "abc"$/);
  assert.match(ds.skipped[1].message, /^invalid JSON/);
  assert.match(ds.skipped[2].message, /expected a JSON object/);
  assert.match(ds.skipped[3].message, /at least 2 scored responses/);
  assert.match(
    ds.skipped[4].message,
    /is missing .*looks like the "preference" format; the file is read as "reward"/,
  );
});

Deno.test("loadDataset: Parquet errors name the row", async () => {
  await using tmp = await tempDir();
  const rows = [good(0), good(1), {
    prompt: "q",
    responses: [{ text: "a", reward: 1 }, { text: "b", reward: null }],
  }];
  const path = await writeParquet(tmp.path("data.parquet"), rows, {
    prompt: "string",
    responses: { list: { struct: { text: "string", reward: "double" } } },
  });
  const err = await rejection(loadDataset(path));
  assert.ok(err instanceof DataError);
  assert.equal(err.unit, "row");
  assert.equal(err.line, 3);
  assert.equal(
    err.message,
    `${path}: row 3: field "responses[1].reward": expected a finite number, got null`,
  );
  const ds = await loadDataset(path, { skipBad: true });
  assert.equal(ds.examples.length, 2);
  assert.deepEqual(ds.skipped, [{
    file: path,
    line: 3,
    unit: "row",
    field: "responses[1].reward",
    message: "expected a finite number, got null",
  }]);
});

Deno.test("loadDataset: undetectable format", async () => {
  await using tmp = await tempDir();
  const path = await writeJsonl(tmp.path("data.jsonl"), [{ text: "hello" }, good(1)]);
  const err = await rejection(loadDataset(path));
  assert.ok(err instanceof DataError);
  assert.equal(err.line, 1);
  assert.match(
    err.message,
    /data\.jsonl:1: cannot tell the data format from the fields \[text\]; known formats: ultrafeedback/,
  );
  // With skipBad, detection moves on to the next record.
  const ds = await loadDataset(path, { skipBad: true });
  assert.equal(ds.format, "reward");
  assert.equal(ds.skipped.length, 1);
  const only = await writeJsonl(tmp.path("only.jsonl"), [{ text: "hello" }]);
  await assert.rejects(loadDataset(only, { skipBad: true }), /no usable records \(1 skipped\)/);
});

Deno.test("loadDataset: limit stops after that many examples", async () => {
  await using tmp = await tempDir();
  const path = await writeJsonl(tmp.path("data.jsonl"), [good(0), good(1), good(2), badReward]);
  const ds = await loadDataset(path, { limit: 2 });
  assert.equal(ds.examples.length, 2);
  assert.equal(ds.records, 2);
  if (ds.kind === "reward") assert.equal(ds.examples[1].prompt[0].content, "q1");
  assert.equal((await loadDataset(path, { limit: 3 })).examples.length, 3); // never reaches the bad line
});

Deno.test("loadDataset: unsupported extension and an empty file with a named format", async () => {
  await using tmp = await tempDir();
  await Deno.writeTextFile(tmp.path("data.csv"), "a,b\n");
  await assert.rejects(loadDataset(tmp.path("data.csv")), /unsupported data file type/);
  await Deno.writeTextFile(tmp.path("empty.jsonl"), "");
  const ds = await loadDataset(tmp.path("empty.jsonl"), { format: "preference" });
  assert.deepEqual([ds.kind, ds.examples.length], ["preference", 0]);
});
