/**
 * `deno task sample` under a launcher (torchrun's RANK/WORLD_SIZE, as mpirun or srun would set theirs): each
 * rank samples its shard and rank 0 merges them into the file one process writes; the wait for a rank that
 * never finishes is bounded and names it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { metaPath, sampleToFile, waitForShards } from "../../lib/loop/sample.ts";
import { rankShardPath } from "../../lib/loop/rank_shards.ts";
import { finished, spawnEntry, withSetup } from "./_fixtures.ts";

const MAIN = new URL("../../sample/main.ts", import.meta.url).pathname;

const spawnSample = (args: string[], env: Record<string, string>) => spawnEntry(MAIN, args, env);

Deno.test("sample under 2 ranks (RANK/WORLD_SIZE, no --shard) writes the one-process file, byte for byte", async () => {
  await withSetup(async (s) => {
    const args = (out: string) => [
      ...["--model", s.model, "--prompts", s.prompts, "--out", join(s.dir, out)],
      ...["--k", "2", "--max-new-tokens", "6", "--seed", "5", "--device", "cpu", "--quiet"],
    ];
    const one = await finished(spawnSample(args("one.jsonl"), {}));
    assert.equal(one.code, 0, one.text);
    // both ranks at once, as a launcher starts them
    const ranks = [0, 1].map((r) => spawnSample(args("two.jsonl"), { RANK: String(r), WORLD_SIZE: "2" }));
    const [r0, r1] = await Promise.all(ranks.map(finished));
    assert.equal(r1.code, 0, r1.text);
    assert.equal(r0.code, 0, r0.text);
    assert.match(r0.text, /merged the 2 ranks' shards, 11 prompts/);
    assert.match(r1.text, /rank 1\/2: wrote .*two\.jsonl\.shard-1-of-2 \(shard 1\/2\)/);
    assert.equal(
      await Deno.readTextFile(join(s.dir, "two.jsonl")),
      await Deno.readTextFile(join(s.dir, "one.jsonl")),
    );
    const meta = async (f: string) => JSON.parse(await Deno.readTextFile(metaPath(join(s.dir, f))));
    assert.deepEqual(await meta("two.jsonl"), await meta("one.jsonl"));
  });
});

Deno.test("sample under a launcher refuses --shard: every rank would write the same file", async () => {
  await withSetup(async (s) => {
    const r = await finished(spawnSample(
      ["--model", s.model, "--prompts", s.prompts, "--out", join(s.dir, "x.jsonl"), "--shard", "0/2"],
      { RANK: "0", WORLD_SIZE: "2" },
    ));
    assert.equal(r.code, 2, r.text);
    assert.match(r.text, /--shard with 2 ranks \(torchrun\)/);
  });
});

Deno.test("waitForShards: a rank whose shard never completes fails the wait in bounded time, named", async () => {
  await withSetup(async (s) => {
    const out = join(s.dir, "w.jsonl");
    const common = { model: s.model, prompts: s.prompts, k: 1, maxNewTokens: 3, device: "cpu" as const };
    for (const index of [0, 2]) {
      const shard = { index, count: 3 };
      await sampleToFile({ ...common, shard, out: rankShardPath(out, shard) });
    }
    const t0 = performance.now();
    await assert.rejects(
      waitForShards(out, 3, { timeoutMs: 300, pollMs: 20 }),
      /rank 0\/3: the shard of rank 1 did not complete .*w\.jsonl\.shard-1-of-3/,
    );
    assert.ok(performance.now() - t0 < 5000);
    // an unfinished shard (a row missing) is not complete either
    const shard = { index: 1, count: 3 };
    await sampleToFile({ ...common, shard, out: rankShardPath(out, shard) });
    assert.equal(await waitForShards(out, 3, { timeoutMs: 300, pollMs: 20 }), true);
    const text = await Deno.readTextFile(rankShardPath(out, shard));
    await Deno.writeTextFile(rankShardPath(out, shard), text.slice(0, text.indexOf("\n") + 1));
    await assert.rejects(waitForShards(out, 3, { timeoutMs: 300, pollMs: 20 }), /shard of rank 1 did not/);
  });
});
