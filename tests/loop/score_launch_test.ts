/**
 * `deno task score` under a launcher (torchrun's RANK/WORLD_SIZE/LOCAL_RANK, as mpirun or srun would set
 * theirs): rank r scores the rows whose index is r modulo the ranks, rank 0 interleaves the shards into the
 * file and sidecar one process writes (rows skipped with --skip-errors included); the wait for a rank that
 * never finishes is bounded and names it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { scoreFile, scoreMetaPath } from "../../lib/loop/score.ts";
import { mergeScoreShards, scoreAsRank } from "../../lib/loop/score_shards.ts";
import { rankShardPath } from "../../lib/loop/rank_shards.ts";
import type { ScoreItem, Scorer } from "../../lib/loop/scorers/types.ts";
import { jsonl, SAMPLE_ROWS } from "./_score_helpers.ts";
import { finished, spawnEntry } from "./_fixtures.ts";

const MAIN = new URL("../../score/main.ts", import.meta.url).pathname;
const EXACT = new URL("./_exact_reward.ts", import.meta.url).pathname;

const spawnScore = (args: string[], env: Record<string, string>) => spawnEntry(MAIN, args, env);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "score_launch_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** 11 rows (an odd count, so the shards differ in size): the sample rows, one malformed, one that throws. */
const ROWS: unknown[] = [
  ...SAMPLE_ROWS,
  { id: 4, prompt: "no responses here" },
  ...SAMPLE_ROWS.map((r) => ({ ...r, id: Number(r.id) + 5 })),
  { id: 9, prompt: "fail", answer: "x", responses: ["boom", "x"] },
  { id: 10, prompt: "again", answer: "y", responses: ["y"] },
];

Deno.test("score under 2 ranks (RANK/WORLD_SIZE/LOCAL_RANK) writes the one-process file and sidecar, byte for byte", async () => {
  await withDir(async (dir) => {
    const data = join(dir, "samples.jsonl");
    await Deno.writeTextFile(data, jsonl(ROWS));
    const args = (out: string) => [
      ...["--data", data, "--out", join(dir, out), "--reward-fn", EXACT],
      ...["--batch", "2", "--skip-errors", "--quiet"],
    ];
    const one = await finished(spawnScore(args("one.jsonl"), {}));
    assert.equal(one.code, 0, one.text);
    // both ranks at once, as a launcher starts them
    const ranks = [0, 1].map((r) =>
      spawnScore(args("two.jsonl"), { RANK: String(r), WORLD_SIZE: "2", LOCAL_RANK: String(r) })
    );
    const [r0, r1] = await Promise.all(ranks.map(finished));
    assert.equal(r1.code, 0, r1.text);
    assert.equal(r0.code, 0, r0.text);
    assert.match(r0.text, /merged the 2 ranks' shards, 9 rows, into .*two\.jsonl/);
    assert.match(r1.text, /rank 1\/2: done: \d+ rows in .*two\.jsonl\.shard-1-of-2/);
    const oneText = await Deno.readTextFile(join(dir, "one.jsonl"));
    assert.equal(oneText.split("\n").length - 1, 9, "two rows skipped");
    assert.equal(await Deno.readTextFile(join(dir, "two.jsonl")), oneText);
    assert.equal(
      await Deno.readTextFile(scoreMetaPath(join(dir, "two.jsonl"))),
      await Deno.readTextFile(scoreMetaPath(join(dir, "one.jsonl"))),
    );
    // the merged file is one process's: that command run on it again has nothing left to do
    const again = await finished(spawnScore(args("two.jsonl"), {}));
    assert.equal(again.code, 0, again.text);
    assert.match(again.text, /done: 9 rows in .*two\.jsonl \(0 scored now, after 11 earlier/);
    assert.equal(await Deno.readTextFile(join(dir, "two.jsonl")), oneText);
  });
});

/** A scorer in this process: each response's length. */
const lengthScorer: Scorer = {
  kind: "reward-fn",
  name: "length",
  settings: {},
  score: (items: readonly ScoreItem[]) => Promise.resolve(items.map((i) => i.response.length)),
  release: () => Promise.resolve(),
};

Deno.test("scoreAsRank: a rank whose shard never completes fails rank 0's wait in bounded time, named", async () => {
  await withDir(async (dir) => {
    const data = join(dir, "samples.jsonl"), out = join(dir, "w.jsonl");
    await Deno.writeTextFile(data, jsonl(ROWS.slice(0, 4)));
    const o = { data, out, scorer: lengthScorer, log: () => {} };
    await scoreAsRank(o, { rank: 2, size: 3 });
    const t0 = performance.now();
    await assert.rejects(
      scoreAsRank(o, { rank: 0, size: 3 }, { timeoutMs: 300, pollMs: 20 }),
      /rank 0\/3: the shard of rank 1 did not complete .*w\.jsonl\.shard-1-of-3/,
    );
    assert.ok(performance.now() - t0 < 5000);
    assert.equal(await Deno.stat(out).then(() => true, () => false), false, "nothing merged");
    // a shard stopped half-way (its sidecar not complete) is not complete either
    const shard1 = rankShardPath(out, { index: 1, count: 3 });
    await scoreFile({ ...o, out: shard1, shard: { index: 1, count: 3 } });
    const meta = JSON.parse(await Deno.readTextFile(scoreMetaPath(shard1)));
    await Deno.writeTextFile(scoreMetaPath(shard1), JSON.stringify({ ...meta, complete: false }));
    await assert.rejects(
      scoreAsRank(o, { rank: 0, size: 3 }, { timeoutMs: 300, pollMs: 20 }),
      /shard of rank 1 did not/,
    );
    await assert.rejects(mergeScoreShards(out, 3), /w\.jsonl\.shard-1-of-3 \(rank 1\/3\) is not complete/);
    // rank 1 rerun: it finishes, and rank 0 merges the input's 4 rows in order
    await scoreAsRank(o, { rank: 1, size: 3 });
    const r = await scoreAsRank(o, { rank: 0, size: 3 }, { timeoutMs: 300, pollMs: 20 });
    assert.equal(r.merged?.rows, 4);
    const ids = (await Deno.readTextFile(out)).trim().split("\n").map((l) => JSON.parse(l).id);
    assert.deepEqual(ids, [0, 1, 2, 3]);
  });
});
