import assert from "node:assert/strict";
import { preferenceToReward, rewardToPreference, selectResponses } from "../../lib/data/convert.ts";
import type { RewardExample } from "../../lib/data/types.ts";

const prompt = [{ role: "user", content: "q" }];
const ex = (rewards: number[]): RewardExample => ({
  prompt,
  responses: rewards.map((reward, i) => ({ content: `r${i}`, reward })),
});

Deno.test("all-pairs: C(K, 2) pairs, higher reward chosen, ties skipped", () => {
  const pairs = rewardToPreference([ex([3, 1, 4, 2])], { strategy: "all-pairs" });
  assert.equal(pairs.length, 6);
  assert.deepEqual(pairs.map((p) => [p.chosen, p.rejected]), [
    ["r0", "r1"],
    ["r2", "r0"],
    ["r0", "r3"],
    ["r2", "r1"],
    ["r3", "r1"],
    ["r2", "r3"],
  ]);
  assert.ok(pairs.every((p) => p.prompt === prompt));
  // K = 5 → 10 pairs; one tie (two 7s) → 9.
  assert.equal(rewardToPreference([ex([1, 2, 3, 4, 5])], { strategy: "all-pairs" }).length, 10);
  assert.equal(rewardToPreference([ex([7, 7, 3, 4, 5])], { strategy: "all-pairs" }).length, 9);
  assert.equal(rewardToPreference([ex([2, 2, 2])], { strategy: "all-pairs" }).length, 0);
  // Counts add up over examples.
  assert.equal(
    rewardToPreference([ex([1, 2]), ex([1, 2, 3]), ex([4, 4])], { strategy: "all-pairs" }).length,
    4,
  );
});

Deno.test("best-vs-worst: one pair per prompt, first among equals, all-tied skipped", () => {
  const pairs = rewardToPreference([ex([3, 1, 4, 1]), ex([5, 5]), ex([0, 9, 9, -1])], {
    strategy: "best-vs-worst",
  });
  assert.deepEqual(pairs.map((p) => [p.chosen, p.rejected]), [["r2", "r1"], ["r1", "r3"]]);
});

Deno.test("best-vs-random: the best against a strictly lower one, seeded", () => {
  const data = Array.from({ length: 200 }, () => ex([2, 9, 2, 5, 9]));
  const a = rewardToPreference(data, { strategy: "best-vs-random", seed: 7 });
  const b = rewardToPreference(data, { strategy: "best-vs-random", seed: 7 });
  const c = rewardToPreference(data, { strategy: "best-vs-random", seed: 8 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  assert.equal(a.length, 200);
  assert.ok(a.every((p) => p.chosen === "r1"));
  const rejected = new Set(a.map((p) => p.rejected));
  assert.deepEqual([...rejected].sort(), ["r0", "r2", "r3"]); // never the tied r4
  assert.deepEqual(rewardToPreference([ex([1, 1])], { strategy: "best-vs-random" }), []);
  assert.throws(
    () => rewardToPreference([ex([1, 2])], { strategy: "nope" as "all-pairs" }),
    /unknown pair strategy/,
  );
});

Deno.test("selectResponses: first K keeps order and rewards", () => {
  const { examples, dropped } = selectResponses([ex([4, 3, 2, 1]), ex([1, 2]), ex([5, 6, 7])], 3);
  assert.equal(dropped, 1);
  assert.deepEqual(examples.map((e) => e.responses), [
    [{ content: "r0", reward: 4 }, { content: "r1", reward: 3 }, { content: "r2", reward: 2 }],
    [{ content: "r0", reward: 5 }, { content: "r1", reward: 6 }, { content: "r2", reward: 7 }],
  ]);
});

Deno.test("selectResponses: a seeded random K keeps the original relative order", () => {
  const data = Array.from({ length: 100 }, () => ex([4, 3, 2, 1])); // sorted by reward, like A0..A3
  const a = selectResponses(data, 2, { mode: "random", seed: 3 });
  assert.deepEqual(a, selectResponses(data, 2, { mode: "random", seed: 3 }));
  assert.notDeepEqual(a, selectResponses(data, 2, { mode: "random", seed: 4 }));
  const seen = new Set<string>();
  for (const e of a.examples) {
    assert.equal(e.responses.length, 2);
    const [x, y] = e.responses;
    assert.ok(x.reward > y.reward, "order kept");
    assert.equal(Number(x.content.slice(1)), 4 - x.reward, "reward stays with its response");
    seen.add(`${x.content},${y.content}`);
  }
  assert.equal(seen.size, 6); // all C(4, 2) subsets occur
  assert.throws(() => selectResponses(data, 1), /K must be an integer ≥ 2/);
  // The input is not modified.
  assert.equal(data[0].responses.length, 4);
});

Deno.test("preferenceToReward: K = 2 with rewards 1 and 0", () => {
  assert.deepEqual(preferenceToReward([{ prompt, chosen: "good", rejected: "bad" }]), [
    { prompt, responses: [{ content: "good", reward: 1 }, { content: "bad", reward: 0 }] },
  ]);
});
