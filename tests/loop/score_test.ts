/**
 * `deno task score`'s file-level run (lib/loop/score.ts) with a reward function and a reward model: the
 * output is the reward format `loadDataset` reads (right K, right rewards, the scorer named), failures name
 * the row and the response, `skipErrors` leaves rows out and counts them, and an interrupted run resumed
 * (a torn batch in the file included) writes the same file as one that was not interrupted; a changed
 * configuration or input is refused.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadDataset } from "../../lib/data/load.ts";
import { loadTokenizer } from "../../lib/data/tokenize.ts";
import { readScoreRow, scoreFile, scoreMetaPath } from "../../lib/loop/score.ts";
import { type RewardFnOptions, rewardFnScorer } from "../../lib/loop/scorers/reward_fn.ts";
import type { Scorer } from "../../lib/loop/scorers/types.ts";
import { rewardModelIds, rewardModelScorer } from "../../lib/loop/scorers/reward_model.ts";
import { EXACT_REWARDS, jsonl, readRows, rewardsOf, SAMPLE_ROWS } from "./_score_helpers.ts";
import { rewardConfig, writeRewardFolder } from "./_reward_fixture.ts";

const EXACT = new URL("./_exact_reward.ts", import.meta.url).pathname;
const BOOL = new URL("./_bool_reward.ts", import.meta.url).pathname;
const quiet = () => {};

/** The reward function scorers a test made, released (their workers terminated) when it ends. */
const made: Scorer[] = [];
async function fnScorer(path: string, o?: RewardFnOptions): Promise<Scorer> {
  const s = await rewardFnScorer(path, o);
  made.push(s);
  return s;
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "score_test_" });
  try {
    await fn(dir);
  } finally {
    for (const s of made.splice(0)) await s.release();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("score: a reward function scores exact answers into the reward format train reads", async () => {
  await withDir(async (dir) => {
    const data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
    await Deno.writeTextFile(data, jsonl(SAMPLE_ROWS));
    const scorer = await fnScorer(EXACT);
    const r = await scoreFile({ data, out, scorer, batch: 3, log: quiet });
    assert.equal(r.complete, true);
    assert.equal(r.rowsWritten, 4);
    assert.equal(r.sequencesThisRun, 9);
    const rows = await readRows(out);
    assert.deepEqual(rewardsOf(rows), EXACT_REWARDS);
    // the input row is kept, the scorer named; sampling's fields stay on each response
    assert.deepEqual(rows[0].scorer, { kind: "reward-fn", name: EXACT });
    assert.equal(rows[0].id, 0);
    assert.deepEqual((rows[0].responses as unknown[])[0], {
      content: "4",
      tokens: 1,
      finish_reason: "stop",
      reward: 1,
    });
    assert.deepEqual(rows[2].responses, [{ content: "2", reward: 1 }, { content: "two", reward: 0 }]);
    assert.deepEqual(rows[3].responses, [{ content: "yes", reward: 1 }, { content: "no", reward: 0 }]);
    const ds = await loadDataset(out);
    assert.equal(ds.kind, "reward");
    if (ds.kind !== "reward") return;
    assert.deepEqual(ds.examples.map((e) => e.responses.length), [3, 2, 2, 2]);
    assert.deepEqual(ds.examples.map((e) => e.responses.map((x) => x.reward)), EXACT_REWARDS);
    assert.deepEqual(ds.examples[1].prompt[0], { role: "system", content: "be brief" });
    const meta = JSON.parse(await Deno.readTextFile(scoreMetaPath(out)));
    assert.equal(meta.complete, true);
    assert.equal(meta.progress.rowsWritten, 4);
    // a default export returning booleans scores 1/0
    const out2 = join(dir, "bool.jsonl");
    await scoreFile({ data, out: out2, scorer: await fnScorer(BOOL), log: quiet });
    assert.deepEqual(rewardsOf(await readRows(out2)), [[1, 0, 0], [1, 0], [1, 0], [1, 0]]);
  });
});

Deno.test("score: a reward function that throws or returns NaN is an error naming the row and response", async () => {
  await withDir(async (dir) => {
    const data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
    const rows = [
      SAMPLE_ROWS[0],
      { prompt: "p", answer: "1", responses: [{ content: "1" }, { content: "boom" }] },
      { prompt: "q", answer: "1", responses: [{ content: "nan" }, { content: "1" }] },
      SAMPLE_ROWS[1],
    ];
    await Deno.writeTextFile(data, jsonl(rows));
    await assert.rejects(
      async () => await scoreFile({ data, out, scorer: await fnScorer(EXACT), log: quiet }),
      (e: Error) =>
        e.message === `${data}:2 responses[1]: the reward function threw: cannot parse the answer`,
    );
    assert.equal(await Deno.readTextFile(out), "");
    // one row per batch: the row before the failure is written, and the rerun continues from it
    await assert.rejects(
      async () => await scoreFile({ data, out, scorer: await fnScorer(EXACT), batch: 1, log: quiet }),
      new RegExp(`^ScoreError: ${data}:2 responses\\[1\\]: the reward function threw`),
    );
    assert.equal((await readRows(out)).length, 1);
    const skipped: [string, string][] = [];
    const scorer = await fnScorer(EXACT, {
      skipErrors: true,
      onSkip: (at, why) => skipped.push([at, why]),
    });
    const r = await scoreFile({ data, out, scorer, batch: 1, skipErrors: true, log: quiet });
    assert.deepEqual(skipped, [
      [`${data}:2 responses[1]`, "the reward function threw: cannot parse the answer"],
      [`${data}:3 responses[0]`, "the reward function returned NaN (not finite)"],
    ]);
    assert.equal(r.resumedFrom, 1);
    assert.deepEqual(r.skipped, [`${data}:2`, `${data}:3`]);
    assert.equal(r.rowsWritten, 2);
    assert.deepEqual(rewardsOf(await readRows(out)), [[1, 0.5, 0], [1, 0]]);
    const meta = JSON.parse(await Deno.readTextFile(scoreMetaPath(out)));
    assert.deepEqual(meta.progress.skipped, [`${data}:2`, `${data}:3`]);
  });
});

Deno.test("score: a malformed row names file, line and field; skipErrors counts it", async () => {
  await withDir(async (dir) => {
    const data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
    await Deno.writeTextFile(
      data,
      jsonl([SAMPLE_ROWS[0], { prompt: "no responses here", answer: "1" }, SAMPLE_ROWS[1]]),
    );
    await assert.rejects(
      async () => await scoreFile({ data, out, scorer: await fnScorer(EXACT), log: quiet }),
      new RegExp(`${data}:2: field "responses": is missing: expected "responses"`),
    );
    await Deno.remove(out);
    await Deno.remove(scoreMetaPath(out));
    const logged: string[] = [];
    const r = await scoreFile({
      data,
      out,
      scorer: await fnScorer(EXACT),
      skipErrors: true,
      log: (l) => logged.push(l),
    });
    assert.deepEqual(r.skipped, [`${data}:2`]);
    assert.equal(r.rowsWritten, 2);
    assert.match(logged.join("\n"), /skipped .*:2: field "responses"/);
    assert.throws(() => readScoreRow({ prompt: "x", responses: [] }), /at least one response/);
  });
});

Deno.test("score: an interrupted run, resumed, writes the same file; other settings or input are refused", async () => {
  await withDir(async (dir) => {
    const data = join(dir, "samples.jsonl");
    const rows = [...SAMPLE_ROWS, ...SAMPLE_ROWS.map((r) => ({ ...r, id: `${r.id}-b` }))];
    await Deno.writeTextFile(data, jsonl(rows));
    const whole = join(dir, "whole.jsonl"), parts = join(dir, "parts.jsonl");
    await scoreFile({ data, out: whole, scorer: await fnScorer(EXACT), batch: 2, log: quiet });

    const stop = new AbortController();
    const first = await scoreFile({
      data,
      out: parts,
      scorer: await fnScorer(EXACT),
      batch: 2,
      signal: stop.signal,
      onProgress: (p) => p.rowsRead >= 4 && stop.abort(),
      log: quiet,
    });
    assert.equal(first.complete, false);
    assert.equal(first.rowsRead, 4);
    // a batch half-written when the process died
    await Deno.writeTextFile(parts, '{"id": 4, "prompt": "what is', { append: true });

    // another reward function, or a changed input, is refused
    await assert.rejects(
      async () => await scoreFile({ data, out: parts, scorer: await fnScorer(BOOL), log: quiet }),
      /was scored with another configuration \(scorer\.name: .*_exact_reward\.ts" then, .*_bool_reward\.ts" now\)/,
    );
    const changed = [{ ...rows[0], answer: "5" }, ...rows.slice(1)];
    await Deno.writeTextFile(data, jsonl(changed));
    await assert.rejects(
      async () => await scoreFile({ data, out: parts, scorer: await fnScorer(EXACT), log: quiet }),
      /its first 4 rows changed since/,
    );
    await Deno.writeTextFile(data, jsonl(rows));

    const logged: string[] = [];
    const second = await scoreFile({
      data,
      out: parts,
      scorer: await fnScorer(EXACT),
      batch: 3,
      log: (l) => logged.push(l),
    });
    assert.equal(second.complete, true);
    assert.equal(second.resumedFrom, 4);
    assert.equal(second.rowsThisRun, 4);
    assert.match(logged.join("\n"), /dropping \d+ bytes after the last complete batch/);
    assert.equal(await Deno.readTextFile(parts), await Deno.readTextFile(whole));
    // a complete file rerun: nothing to do, unchanged
    const third = await scoreFile({ data, out: parts, scorer: await fnScorer(EXACT), log: quiet });
    assert.equal(third.rowsThisRun, 0);
    assert.equal(await Deno.readTextFile(parts), await Deno.readTextFile(whole));
    // a file this command did not write is not overwritten
    const other = join(dir, "other.jsonl");
    await Deno.writeTextFile(other, "{}\n");
    await assert.rejects(
      async () => await scoreFile({ data, out: other, scorer: await fnScorer(EXACT), log: quiet }),
      /exists without .*other\.jsonl\.meta\.json/,
    );
  });
});

Deno.test("score: a reward model renders with its own template, batches without changing rewards", async () => {
  await withDir(async (dir) => {
    const model = join(dir, "rm"), data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
    await writeRewardFolder(model, rewardConfig("llama"));
    await Deno.writeTextFile(data, jsonl(SAMPLE_ROWS));
    const scorer = await rewardModelScorer(model, { threads: 1, batch: 3, log: quiet });
    try {
      const r = await scoreFile({ data, out, scorer, batch: 2, log: quiet });
      assert.equal(r.rowsWritten, 4);
      assert.equal(scorer.sequences, 9);
      const ds = await loadDataset(out);
      assert.equal(ds.kind, "reward");
      if (ds.kind !== "reward") return;
      assert.deepEqual(ds.examples.map((e) => e.responses.length), [3, 2, 2, 2]);
      const rows = await readRows(out);
      assert.deepEqual(rows[0].scorer, { kind: "reward-model", name: model });
      // each reward is the one of its sequence alone (padding and batching change nothing)
      for (const [i, row] of SAMPLE_ROWS.entries()) {
        const sr = readScoreRow(row);
        const alone = await scorer.score(
          sr.responses.map((response) => ({ prompt: sr.prompt, response, row })),
        );
        ds.examples[i].responses.forEach((x, j) =>
          assert.ok(Math.abs(x.reward - alone[j]) < 1e-5, `row ${i}`)
        );
      }
      const all = ds.examples.flatMap((e) => e.responses.map((x) => x.reward));
      assert.ok(new Set(all.map((x) => x.toFixed(5))).size >= 7, "distinct responses get distinct rewards");
    } finally {
      await scorer.release();
    }
    // the conversation the template renders, and truncation keeping the end
    const tok = await loadTokenizer(model, { log: quiet });
    const item = {
      prompt: [{ role: "system", content: "be brief" }, { role: "user", content: "hi" }],
      response: "7",
    };
    const full = rewardModelIds(tok, item, 1000);
    const text = "<|system|>\nbe brief<eos>\n<|user|>\nhi<eos>\n<|assistant|>\n7<eos>\n";
    assert.deepEqual(full, { ids: tok.encode(text, { add_special_tokens: false }), cut: false });
    assert.deepEqual(rewardModelIds(tok, item, 4), { ids: full.ids.slice(-4), cut: true });
    const cut = await rewardModelScorer(model, { threads: 1, maxLength: 4, log: quiet });
    try {
      await cut.score([{ ...item, row: {} }]);
      assert.equal(cut.truncated, 1);
    } finally {
      await cut.release();
    }
    await assert.rejects(
      () => rewardModelScorer(model, { maxLength: 1000, log: quiet }),
      /beyond what .* models exactly \(128/,
    );
  });
});
