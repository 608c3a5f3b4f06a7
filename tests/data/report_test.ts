/**
 * Every dropped row is counted and said: skipped bad rows (--skip-bad-rows), prompts with fewer than K
 * responses, all-tie prompts under a pairwise loss, a mixed K with file:line; through the trainer's
 * data loading (loadRunInputs), whose lines are what the run prints.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DataError } from "../../lib/data/errors.ts";
import { loadDataset } from "../../lib/data/load.ts";
import { parseTrainOptions } from "../../lib/train/options.ts";
import { shapeDataset } from "../../lib/train/prepare.ts";
import { loadRunInputs } from "../../lib/train/run_inputs.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { saveModelFolder } from "../../lib/model/model_folder.ts";
import type { TrainConfig } from "../../lib/train/option_specs.ts";
import { defaultTrainOptions } from "../../lib/train/options.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";
import { rejection, tempDir, writeJsonl, writeParquet } from "./helpers.ts";

/** An UltraFeedback (raw) row with these overall scores (null where the dataset has none). */
const uf = (i: number, scores: (number | null)[]) => ({
  instruction: `what is ${i} plus ${i}`,
  completions: scores.map((s, j) => ({ response: `answer ${j}`, overall_score: s })),
});
/** A reward row with these rewards. */
const rw = (i: number, rewards: number[]) => ({
  prompt: `what is ${i}`,
  responses: rewards.map((r, j) => ({ content: `${i} ${j}`, reward: r })),
});

/** A tiny model folder (random weights, the test tokenizer) and `pref.jsonl`: what loadRunInputs reads. */
async function withSetup(fn: (s: { dir: string; model: string }) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "data-report-test-" });
  try {
    await writeTinyTokenizer(`${dir}/tok`, { chatTemplate: true });
    const cfg = tinyConfig("llama", { vocabSize: 128 });
    await saveModelFolder(`${dir}/model`, cfg, initWeights(cfg, { seed: 1 }), {
      tokenizerFrom: `${dir}/tok`,
    });
    const prefs = Array.from(
      { length: 24 },
      (_, i) => ({ prompt: `q ${i}`, chosen: "one", rejected: "two" }),
    );
    await writeJsonl(`${dir}/pref.jsonl`, prefs);
    await fn({ dir, model: `${dir}/model` });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function tinyConfigFor(s: { dir: string; model: string }, over: Partial<TrainConfig>): TrainConfig {
  return {
    ...defaultTrainOptions(),
    model: s.model,
    data: `${s.dir}/pref.jsonl`,
    evalFraction: 0.2,
    maxLength: 48,
    maxPromptLength: 24,
    ...over,
  };
}

Deno.test("--skip-bad-rows: a flag, off by default", () => {
  const on = parseTrainOptions(["--model", "m", "--data", "d.jsonl", "--skip-bad-rows"]);
  const off = parseTrainOptions(["--model", "m", "--data", "d.jsonl"]);
  assert.ok(!("help" in on) && !("help" in off));
  if ("help" in on || "help" in off) return;
  assert.equal(on.skipBadRows, true);
  assert.equal(off.skipBadRows, false);
});

Deno.test("UltraFeedback with a null overall_score: a precise error, or skipped and reported with the flag", async () => {
  await withSetup(async (s) => {
    const rows = Array.from({ length: 30 }, (_, i) => uf(i, [7, 3.5, 9, 1]));
    rows[2] = uf(2, [7, null, 9, 1]);
    const data = await writeJsonl(`${s.dir}/uf.jsonl`, rows);
    const err = await rejection(loadRunInputs(tinyConfigFor(s, { data }), () => {}));
    assert.ok(err instanceof DataError);
    assert.equal(
      err.message,
      `${data}:3: field "completions[1].overall_score": expected a finite number, got null ` +
        "(--skip-bad-rows skips such rows)",
    );

    const log: string[] = [];
    const p = await loadRunInputs(tinyConfigFor(s, { data, skipBadRows: true }), (l) => log.push(l));
    assert.deepEqual(log.slice(0, 2), [
      `  skipped ${data}:3: field "completions[1].overall_score": expected a finite number, got null`,
      `data: 30 rows from ${data} (ultrafeedback); 1 row skipped (--skip-bad-rows); 29 prompts`,
    ]);
    assert.equal(p.train.length + p.eval.length, 29);
    const train = p.data.train as Record<string, unknown>;
    assert.equal(train.rows, 30);
    assert.equal(train.skipped_rows, 1);
    assert.deepEqual(train.skipped, [
      `${data}:3: field "completions[1].overall_score": expected a finite number, got null`,
    ]);
  });
});

Deno.test("many skipped rows: the first 20 listed, then '… and N more', and the count", async () => {
  await withSetup(async (s) => {
    const rows = Array.from({ length: 50 }, (_, i) => uf(i, i % 2 ? [null, 1] : [2, 1]));
    const data = await writeJsonl(`${s.dir}/uf.jsonl`, rows);
    const log: string[] = [];
    const p = await loadRunInputs(tinyConfigFor(s, { data, skipBadRows: true }), (l) => log.push(l));
    assert.equal(log.filter((l) => l.startsWith("  skipped ")).length, 20);
    assert.equal(
      log[0],
      `  skipped ${data}:2: field "completions[0].overall_score": expected a finite number, got null`,
    );
    assert.equal(
      log[19],
      `  skipped ${data}:40: field "completions[0].overall_score": expected a finite number, got null`,
    );
    assert.equal(log[20], "  … and 5 more");
    assert.equal(
      log[21],
      `data: 50 rows from ${data} (ultrafeedback); 25 rows skipped (--skip-bad-rows); 25 prompts`,
    );
    const train = p.data.train as Record<string, unknown>;
    assert.equal(train.skipped_rows, 25);
    assert.equal((train.skipped as string[]).length, 20);
  });
});

Deno.test("rows with fewer than K responses are dropped and counted; --k above every row's K says so", async () => {
  await withSetup(async (s) => {
    const rows = Array.from(
      { length: 24 },
      (_, i) => rw(i, i < 3 ? [1, 2, 3] : i === 3 ? [1, 2] : [1, 2, 3, 4]),
    );
    const data = await writeJsonl(`${s.dir}/k.jsonl`, rows);
    const log: string[] = [];
    const p = await loadRunInputs(tinyConfigFor(s, { data, k: 4 }), (l) => log.push(l));
    assert.equal(
      log[0],
      `data: 24 rows from ${data} (reward); 4 prompts with fewer than 4 responses dropped ` +
        "(1 with 2 responses, 3 with 3); 20 prompts",
    );
    assert.equal(p.train.length + p.eval.length, 20);
    assert.deepEqual((p.data.train as Record<string, unknown>).too_few_responses, {
      k: 4,
      count: 4,
      by_k: { 2: 1, 3: 3 },
    });

    // K = 4 data, --k 5: nothing left, and the message says what the data has
    const four = await writeJsonl(
      `${s.dir}/four.jsonl`,
      Array.from({ length: 10 }, (_, i) => rw(i, [1, 2, 3, 4])),
    );
    await assert.rejects(
      loadRunInputs(tinyConfigFor(s, { data: four, k: 5 }), () => {}),
      new RegExp(
        `^RangeError: ${four.replaceAll(".", "\\.")}: every prompt has at most 4 responses; ` +
          `--k 5 needs 5 \\(10 prompts: 10 with 4 responses\\)$`,
      ),
    );
    // preference pairs are K = 2
    await assert.rejects(
      loadRunInputs(tinyConfigFor(s, { data: `${s.dir}/pref.jsonl`, k: 3 }), () => {}),
      /every prompt has at most 2 responses; --k 3 needs 3 \(24 prompts: 24 with 2 responses; preference pairs are K = 2\)/,
    );
  });
});

Deno.test("a pairwise loss on reward data counts the all-tie prompts that make no pair", async () => {
  await withSetup(async (s) => {
    const rows = Array.from({ length: 24 }, (_, i) => rw(i, i % 4 === 0 ? [3, 3, 3] : [1, 5, 2]));
    const data = await writeJsonl(`${s.dir}/ties.jsonl`, rows);
    for (const pairStrategy of ["best-vs-random", "best-vs-worst", "all-pairs"] as const) {
      const log: string[] = [];
      const p = await loadRunInputs(
        tinyConfigFor(s, { data, loss: "dpo", pairStrategy }),
        (l) => log.push(l),
      );
      const pairs = pairStrategy === "all-pairs" ? 18 * 3 : 18;
      assert.equal(
        log[0],
        `data: 24 rows from ${data} (reward); 6 all-tie prompts made no pair; ${pairs} pairs`,
        pairStrategy,
      );
      assert.equal((p.data.train as Record<string, unknown>).all_ties, 6);
      assert.equal(p.train.length + p.eval.length, pairs);
    }
    const allTied = await writeJsonl(`${s.dir}/all-tied.jsonl`, [rw(0, [1, 1]), rw(1, [2, 2, 2])]);
    await assert.rejects(
      loadRunInputs(tinyConfigFor(s, { data: allTied, loss: "dpo" }), () => {}),
      /all-tied\.jsonl: no preference pairs: the responses of all 2 prompts have equal rewards, and ties make no pair/,
    );
  });
});

Deno.test("a mixed K names the file and line of the first row that differs, across files too", async () => {
  await using tmp = await tempDir();
  const dir = tmp.path("mixed");
  await Deno.mkdir(dir);
  await writeJsonl(join(dir, "a.jsonl"), [rw(0, [1, 2, 3, 4]), rw(1, [4, 3, 2, 1])]);
  await writeJsonl(join(dir, "b.jsonl"), [rw(2, [1, 2, 3, 4]), "", rw(3, [1, 2, 3]), rw(4, [1, 2, 3])]);
  const err = await rejection(
    Promise.resolve().then(async () => shapeDataset(await loadDataset(dir), { loss: "nca" })),
  );
  assert.ok(err instanceof DataError);
  assert.equal(
    err.message,
    `${
      join(dir, "b.jsonl")
    }:3: has 3 responses, earlier rows have 4 (5 prompts: 2 with 3 responses, 3 with 4); ` +
      "pass --k 3 to train on 3 responses of every prompt",
  );
  // Parquet names the row
  const pq = await writeParquet(tmp.path("mixed.parquet"), [rw(0, [1, 2]), rw(1, [1, 2, 3])], {
    prompt: "string",
    responses: { list: { struct: { content: "string", reward: "double" } } },
  });
  await assert.rejects(
    Promise.resolve().then(async () => shapeDataset(await loadDataset(pq), { loss: "infonca" })),
    /mixed\.parquet: row 2: has 3 responses, earlier rows have 2/,
  );
  // with --k the longer rows are cut to K and nothing is dropped
  const shaped = shapeDataset(await loadDataset(dir), { loss: "nca", k: 3 });
  assert.deepEqual([shaped.examples.length, shaped.drops.tooFewResponses?.count], [5, 0]);
});

Deno.test("eval data from a Hub layout folder: the train split trains, the test split evaluates", async () => {
  await withSetup(async (s) => {
    const hub = `${s.dir}/hub`;
    await Deno.mkdir(`${hub}/data`, { recursive: true });
    const types = { prompt: "string", chosen: "string", rejected: "string" } as const;
    const prefs = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => ({ prompt: `q ${from + i}`, chosen: "one", rejected: "two" }));
    await writeParquet(`${hub}/data/train-00000-of-00002.parquet`, prefs(0, 10), types);
    await writeParquet(`${hub}/data/train-00001-of-00002.parquet`, prefs(10, 10), types);
    await writeParquet(`${hub}/data/test-00000-of-00001.parquet`, prefs(100, 3), types);
    const log: string[] = [];
    const p = await loadRunInputs(tinyConfigFor(s, { data: hub, loss: "dpo" }), (l) => log.push(l));
    assert.deepEqual(log.slice(0, 2), [
      `data: 20 rows from 2 files (preference, split train of ${hub}); 20 prompts`,
      `  not read: the splits test ("${hub}/data/test-00000-of-00001.parquet"); pass one to --eval-data to evaluate on it`,
    ]);
    assert.equal(p.train.length + p.eval.length, 20);
    const both = await loadRunInputs(tinyConfigFor(s, { data: hub, evalData: hub, loss: "dpo" }), () => {});
    assert.deepEqual([both.train.length, both.eval.length], [20, 3]);
    assert.equal((both.data.eval as Record<string, unknown>).split, "test");
  });
});
