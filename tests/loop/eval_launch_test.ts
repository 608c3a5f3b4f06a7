/**
 * `deno task eval` under a launcher (torchrun's RANK/WORLD_SIZE/LOCAL_RANK, as mpirun or srun set theirs):
 * rank r evaluates the prompts whose index is r modulo the ranks, rank 0 puts the rows back in prompt order
 * and writes the folder one process writes, file for file; a rank without prompts still reports; rank 0's
 * wait for a rank that never finishes is bounded and names it, and an earlier run's shard is not taken.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { saveModelFolder } from "../../lib/model/model_folder.ts";
import { evaluateAgainstReference } from "../../lib/loop/eval.ts";
import {
  type EvalShard,
  evalShardPath,
  evaluateAsRank,
  mergeEvalShards,
} from "../../lib/loop/eval_shards.ts";
import { rewardFnScorer } from "../../lib/loop/scorers/reward_fn.ts";
import { finished, loopSetup, spawnEntry, writePrompts } from "./_fixtures.ts";

const MAIN = new URL("../../eval/main.ts", import.meta.url).pathname;
const REWARD = new URL("./_length_reward.ts", import.meta.url).pathname;
const FILES = ["eval.json", "samples_policy.jsonl", "samples_reference.jsonl", join("charts", "eval.svg")];

/** {@link loopSetup} with a second model (the policy) beside the first (the reference). */
async function twoModels(): Promise<{ dir: string; model: string; policy: string }> {
  const s = await loopSetup();
  const cfg = tinyConfig("llama", { vocabSize: 128 });
  const policy = join(s.dir, "policy");
  await saveModelFolder(policy, cfg, initWeights(cfg, { seed: 9, std: 0.08 }), {
    tokenizerFrom: join(s.dir, "tok"),
  });
  return { ...s, policy };
}

Deno.test("eval under 2 ranks writes the one-process folder, file for file, and leaves no shard behind", async () => {
  const s = await twoModels();
  try {
    const prompts = await writePrompts(s.dir, 5); // odd: the ranks' shares differ in size
    const args = (out: string) => [
      ...["--model", s.policy, "--reference", s.model, "--prompts", prompts, "--reward-fn", REWARD],
      ...["--k", "3", "--max-new-tokens", "5", "--seed", "2", "--device", "cpu", "--out", join(s.dir, out)],
    ];
    const one = await finished(spawnEntry(MAIN, args("one"), {}));
    assert.equal(one.code, 0, one.text);
    const ranks = [0, 1].map((r) =>
      spawnEntry(MAIN, args("two"), { RANK: String(r), WORLD_SIZE: "2", LOCAL_RANK: String(r) })
    );
    const [r0, r1] = await Promise.all(ranks.map(finished));
    assert.equal(r1.code, 0, r1.text);
    assert.equal(r0.code, 0, r0.text);
    assert.match(r1.text, /rank 1\/2: evaluated 2 prompts into .*eval\.json\.shard-1-of-2; rank 0 merges/);
    assert.match(r0.text, /merged the 2 ranks' shares; wrote .*two\/eval\.json/);
    assert.match(r0.text, /win rate, policy over reference \(15 pairs\)/);
    assert.doesNotMatch(r1.text, /eval: (policy|reference|score|kl) /, "rank 0 alone shows progress");
    for (const f of FILES) {
      assert.equal(
        await Deno.readTextFile(join(s.dir, "two", f)),
        await Deno.readTextFile(join(s.dir, "one", f)),
        f,
      );
    }
    const left = (await Array.fromAsync(Deno.readDir(join(s.dir, "two")))).map((e) => e.name).sort();
    assert.deepEqual(left.filter((n) => n.includes("shard")), []);
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("eval as 3 ranks of 2 prompts: the rank without prompts reports too, and the merge is one process's", async () => {
  const s = await twoModels();
  const scorer = await rewardFnScorer(REWARD);
  try {
    const prompts = await writePrompts(s.dir, 2);
    const common = {
      policy: s.policy,
      reference: s.model,
      prompts,
      sample: { k: 2, maxNewTokens: 4, seed: 1 },
      scorer,
      batch: 4,
      log: () => {},
    };
    const whole = await evaluateAgainstReference(common);
    const out = join(s.dir, "out");
    await Deno.mkdir(out);
    const results = await Promise.all(
      [0, 1, 2].map((rank) => evaluateAsRank({ ...common, out }, { rank, size: 3 }, { pollMs: 50 })),
    );
    assert.deepEqual(results.map((r) => r.rows), [1, 1, 0]);
    const merged = results[0].merged!;
    assert.ok(merged && !results[1].merged && !results[2].merged);
    assert.deepEqual(merged.report, whole.report);
    const strip = (rows: typeof whole.policyRows) =>
      rows.map((r) => ({ ...r, responses: r.responses.map(({ ids: _ids, ...x }) => x) }));
    assert.deepEqual(merged.policyRows, strip(whole.policyRows));
    assert.deepEqual(merged.referenceRows, strip(whole.referenceRows));
  } finally {
    await scorer.release();
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("eval as rank 0: an earlier run's shard is not taken, and a rank that never comes is named", async () => {
  const s = await twoModels();
  const scorer = await rewardFnScorer(REWARD);
  try {
    const prompts = await writePrompts(s.dir, 3);
    const out = join(s.dir, "out");
    await Deno.mkdir(out);
    // an earlier run's rank 1 left its file (an hour old)
    const stale = evalShardPath(out, { index: 1, count: 2 });
    await Deno.writeTextFile(stale, "{}");
    const hourAgo = new Date(Date.now() - 3600_000);
    await Deno.utime(stale, hourAgo, hourAgo);
    const t0 = performance.now();
    await assert.rejects(
      evaluateAsRank(
        {
          policy: s.policy,
          reference: s.model,
          prompts,
          sample: { k: 1, maxNewTokens: 3 },
          scorer,
          log: () => {},
          out,
        },
        { rank: 0, size: 2 },
        { timeoutMs: 1000, pollMs: 50 },
      ),
      /rank 0\/2: the shard of rank 1 did not complete \(no progress for 1 s\): .*eval\.json\.shard-1-of-2/,
    );
    assert.ok(performance.now() - t0 < 60_000);
  } finally {
    await scorer.release();
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("mergeEvalShards refuses another evaluation's shard and a shard with rows missing, naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "eval_merge_test_" });
  try {
    const settings = { k: 1, temperature: 1 } as unknown as EvalShard["settings"];
    const row = (id: number) => ({ id, prompt: `p${id}`, responses: [] });
    const shard = (index: number, over: Partial<EvalShard> = {}): EvalShard => ({
      format: "nca-eval-shard",
      shard: { index, count: 2 },
      prompts: 3,
      settings,
      scorer: { kind: "reward-fn", name: "len" },
      models: { policy: "p", reference: "r" },
      policyRows: index === 0 ? [row(0), row(2)] : [row(1)],
      referenceRows: index === 0 ? [row(0), row(2)] : [row(1)],
      ...over,
    });
    const write = (s: EvalShard) => Deno.writeTextFile(evalShardPath(dir, s.shard), JSON.stringify(s));
    await write(shard(0));
    await write(shard(1, { settings: { ...settings, temperature: 0.5 } }));
    await assert.rejects(
      mergeEvalShards(dir, 2),
      /eval\.json\.shard-1-of-2 is another evaluation's: its settings .* differ from rank 0's/,
    );
    await write(shard(1, { policyRows: [], referenceRows: [] }));
    await assert.rejects(
      mergeEvalShards(dir, 2),
      /shard-1-of-2 has 0 policy and 0 reference rows for the 1 prompts of rank 1\/2/,
    );
    await Deno.writeTextFile(evalShardPath(dir, { index: 1, count: 2 }), "{ half");
    await assert.rejects(mergeEvalShards(dir, 2), /eval\.json\.shard-1-of-2: .*JSON/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("eval under a launcher without --out is a usage error (exit 2) before any work", async () => {
  const s = await loopSetup();
  try {
    const prompts = await writePrompts(s.dir, 2);
    const r = await finished(
      spawnEntry(
        MAIN,
        ["--model", s.model, "--reference", s.model, "--prompts", prompts, "--reward-fn", REWARD],
        { RANK: "1", WORLD_SIZE: "2" },
      ),
    );
    assert.equal(r.code, 2, r.text);
    assert.match(r.text, /rank 1\/2: --out is required with 2 ranks \(torchrun\)/);
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
