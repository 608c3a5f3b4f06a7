import assert from "node:assert/strict";
import { join } from "node:path";
import { DataError } from "../../lib/data/errors.ts";
import { loadDataset } from "../../lib/data/load.ts";
import { globRegExp, naturalCompare, resolveDataFiles } from "../../lib/data/sources.ts";
import { rejection, tempDir, writeJsonl, writeParquet } from "./helpers.ts";

const reward = (i: number) => ({
  prompt: `q${i}`,
  responses: [{ text: `a${i}`, reward: 1 }, { text: `b${i}`, reward: 0 }],
});
const REWARD_TYPES = {
  prompt: "string",
  responses: { list: { struct: { text: "string", reward: "double" } } },
} as const;
const prefs = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ prompt: `p${from + i}`, chosen: "yes", rejected: "no" }));
const PREF_TYPES = { prompt: "string", chosen: "string", rejected: "string" } as const;
const prompts = (ds: { kind: string; examples: unknown[] }) =>
  (ds.examples as { prompt: { content: string }[] }[]).map((e) => e.prompt[0].content);

Deno.test("globRegExp: * and ? stay in a name, ** crosses folders, a leading dot needs spelling", () => {
  const re = globRegExp("*.jsonl");
  assert.ok(re.test("a.jsonl"));
  assert.ok(!re.test("sub/a.jsonl"));
  assert.ok(!re.test(".hidden.jsonl"));
  assert.ok(globRegExp("part-?.json").test("part-1.json"));
  assert.ok(!globRegExp("part-?.json").test("part-10.json"));
  const deep = globRegExp("**/*.parquet");
  assert.ok(deep.test("x.parquet") && deep.test("a/b/x.parquet"));
  assert.ok(!deep.test("a/b/x.parquetx"));
  assert.ok(globRegExp("a+b(1)/*.jsonl").test("a+b(1)/x.jsonl")); // regex characters are literal
});

Deno.test("naturalCompare: digit runs compare as numbers", () => {
  const names = ["shard-10.jsonl", "shard-2.jsonl", "shard-1.jsonl", "a.jsonl"];
  assert.deepEqual(names.sort(naturalCompare), [
    "a.jsonl",
    "shard-1.jsonl",
    "shard-2.jsonl",
    "shard-10.jsonl",
  ]);
});

Deno.test("a folder of files: every data file, sorted, metadata and hidden files left out", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path("folder");
  await Deno.mkdir(join(dir, "more"), { recursive: true });
  await writeJsonl(join(dir, "b-10.jsonl"), [reward(3)]);
  await writeJsonl(join(dir, "b-2.jsonl"), [reward(1), reward(2)]);
  await writeParquet(join(dir, "more", "c.parquet"), [reward(4)], REWARD_TYPES);
  await Deno.writeTextFile(join(dir, "README.md"), "# data\n");
  await Deno.writeTextFile(join(dir, "dataset_infos.json"), "{}\n");
  await Deno.writeTextFile(join(dir, ".hidden.jsonl"), "not json\n");
  const ds = await loadDataset(dir);
  assert.deepEqual(ds.input.files, [
    join(dir, "b-2.jsonl"),
    join(dir, "b-10.jsonl"),
    join(dir, "more", "c.parquet"),
  ]);
  assert.deepEqual(prompts(ds), ["q1", "q2", "q3", "q4"]);
  assert.equal(ds.records, 4);
  assert.deepEqual(ds.origins.map((o) => [o.file, o.line, o.unit]), [
    [join(dir, "b-2.jsonl"), 1, "line"],
    [join(dir, "b-2.jsonl"), 2, "line"],
    [join(dir, "b-10.jsonl"), 1, "line"],
    [join(dir, "more", "c.parquet"), 1, "row"],
  ]);
});

Deno.test("a bad row in the second file of a folder names that file and line", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path("folder");
  await Deno.mkdir(dir);
  await writeJsonl(join(dir, "1.jsonl"), [reward(0), reward(1)]);
  await writeJsonl(join(dir, "2.jsonl"), [reward(2), {
    prompt: "q",
    responses: [{ text: "a", reward: null }],
  }]);
  const err = await rejection(loadDataset(dir));
  assert.ok(err instanceof DataError);
  assert.equal(
    err.message,
    `${join(dir, "2.jsonl")}:2: field "responses[0].reward": expected a finite number, got null`,
  );
  const ds = await loadDataset(dir, { skipBad: true });
  assert.deepEqual(ds.skipped.map((s) => [s.file, s.line]), [[join(dir, "2.jsonl"), 2]]);
  assert.equal(ds.examples.length, 3);
});

Deno.test("a glob: the matching data files in natural order; no match is a clear error", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path("data");
  await Deno.mkdir(join(dir, "sub"), { recursive: true });
  await writeParquet(join(dir, "part-10.parquet"), [reward(10)], REWARD_TYPES);
  await writeParquet(join(dir, "part-9.parquet"), [reward(9)], REWARD_TYPES);
  await writeJsonl(join(dir, "other.jsonl"), [reward(0)]);
  await writeParquet(join(dir, "sub", "part-1.parquet"), [reward(1)], REWARD_TYPES);
  const ds = await loadDataset(`${dir}/*.parquet`);
  assert.deepEqual(ds.input.files, [join(dir, "part-9.parquet"), join(dir, "part-10.parquet")]);
  assert.deepEqual(prompts(ds), ["q9", "q10"]);
  const deep = await resolveDataFiles(`${dir}/**/part-*.parquet`);
  assert.deepEqual(deep.files, [
    join(dir, "part-9.parquet"),
    join(dir, "part-10.parquet"),
    join(dir, "sub", "part-1.parquet"),
  ]);
  await assert.rejects(resolveDataFiles(`${dir}/*.csv`), /data\/\*\.csv: no data files match/);
  await Deno.writeTextFile(join(dir, "notes.txt"), "x");
  await assert.rejects(
    resolveDataFiles(`${dir}/*.txt`),
    /no data files match \(it matches 1 file\(s\) of other types/,
  );
  await assert.rejects(resolveDataFiles(tmp.path("nothing.jsonl")), /nothing\.jsonl: no such file or folder/);
});

Deno.test("Hub layout: the folder reads the train shards in order; the eval role reads test", async () => {
  await using tmp = await tempDir();
  const hub = tmp.path("my-dataset");
  await Deno.mkdir(join(hub, "data"), { recursive: true });
  await Deno.writeTextFile(join(hub, "README.md"), "---\nconfigs: []\n---\n");
  await writeParquet(join(hub, "data", "train-00001-of-00002.parquet"), prefs(3, 2), PREF_TYPES);
  await writeParquet(join(hub, "data", "train-00000-of-00002.parquet"), prefs(0, 3), PREF_TYPES);
  await writeParquet(join(hub, "data", "test-00000-of-00001.parquet"), prefs(100, 1), PREF_TYPES);
  const ds = await loadDataset(hub);
  assert.equal(ds.input.split, "train");
  assert.deepEqual(ds.input.files, [
    join(hub, "data", "train-00000-of-00002.parquet"),
    join(hub, "data", "train-00001-of-00002.parquet"),
  ]);
  assert.deepEqual(prompts(ds), ["p0", "p1", "p2", "p3", "p4"]);
  assert.deepEqual(ds.input.otherSplits.map((s) => [s.name, s.pattern]), [
    ["test", join(hub, "data", "test-00000-of-00001.parquet")],
  ]);
  const test = await loadDataset(hub, { role: "eval" });
  assert.equal(test.input.split, "test");
  assert.deepEqual(prompts(test), ["p100"]);
  assert.deepEqual(test.input.otherSplits.map((s) => [s.name, s.pattern]), [
    ["train", join(hub, "data", "train-*.parquet")],
  ]);
  // a row error names the shard and its row
  await writeParquet(
    join(hub, "data", "train-00001-of-00002.parquet"),
    [...prefs(3, 1), { prompt: "x", chosen: null, rejected: "no" }],
    PREF_TYPES,
  );
  const err = await rejection(loadDataset(hub));
  assert.match(err.message, /data\/train-00001-of-00002\.parquet: row 2: field "chosen"/);
});

Deno.test("Hub layout like ultrafeedback_binarized: train_prefs is picked; several train splits list them", async () => {
  await using tmp = await tempDir();
  const hub = tmp.path("ultrafeedback_binarized");
  await Deno.mkdir(join(hub, "data"), { recursive: true });
  await writeParquet(join(hub, "data", "train_prefs-00000-of-00001.parquet"), prefs(0, 2), PREF_TYPES);
  await writeParquet(join(hub, "data", "test_prefs-00000-of-00001.parquet"), prefs(50, 1), PREF_TYPES);
  const ds = await loadDataset(hub);
  assert.equal(ds.input.split, "train_prefs");
  assert.deepEqual(prompts(ds), ["p0", "p1"]);
  assert.equal((await resolveDataFiles(hub, { role: "eval" })).split, "test_prefs");

  await writeParquet(join(hub, "data", "train_sft-00000-of-00002.parquet"), prefs(0, 1), PREF_TYPES);
  await writeParquet(join(hub, "data", "train_sft-00001-of-00002.parquet"), prefs(0, 1), PREF_TYPES);
  const err = await rejection(loadDataset(hub));
  assert.equal(
    err.message,
    `${hub}: cannot tell which split is the training one; the folder has the splits ` +
      `test_prefs (1 file), train_prefs (1 file), train_sft (2 files). ` +
      `Pass one split's files, e.g. "${join(hub, "data", "train_prefs-00000-of-00001.parquet")}"`,
  );
  // the suggested glob works
  const sft = await loadDataset(join(hub, "data", "train_sft-*.parquet"));
  assert.equal(sft.input.files.length, 2);
});

Deno.test("Hub layout with split folders; a test-only folder is not trained on", async () => {
  await using tmp = await tempDir();
  const hub = tmp.path("hub");
  await Deno.mkdir(join(hub, "train"), { recursive: true });
  await Deno.mkdir(join(hub, "validation"), { recursive: true });
  await writeJsonl(join(hub, "train", "a.jsonl"), [reward(1)]);
  await writeJsonl(join(hub, "train", "b.jsonl"), [reward(2)]);
  await writeJsonl(join(hub, "validation", "a.jsonl"), [reward(3)]);
  const train = await resolveDataFiles(hub);
  assert.equal(train.split, "train");
  assert.deepEqual(train.files, [join(hub, "train", "a.jsonl"), join(hub, "train", "b.jsonl")]);
  assert.equal((await resolveDataFiles(hub, { role: "eval" })).split, "validation");
  const only = tmp.path("only-test");
  await Deno.mkdir(only);
  await writeJsonl(join(only, "test.jsonl"), [reward(1)]);
  await assert.rejects(
    resolveDataFiles(only),
    /cannot tell which split is the training one.*test \(1 file\)/,
  );
});

Deno.test("a folder with no data files says what it found", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path("saved");
  await Deno.mkdir(dir);
  await Deno.writeFile(join(dir, "data-00000-of-00001.arrow"), new Uint8Array(8));
  await assert.rejects(resolveDataFiles(dir), /no data files in the folder.*save_to_disk/);
});
