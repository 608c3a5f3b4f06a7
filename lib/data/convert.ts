/**
 * Conversions between example types, used by the paper's baselines: DPO on pairs binarized from
 * reward data, the K = 2 → 3 → 4 ablation, and reward losses run on preference data.
 *
 * @module
 */

import { mulberry32, randomInt, type Rng, sampleIndices } from "./random.ts";
import type { PreferenceExample, RewardExample } from "./types.ts";

/**
 * How to turn K scored responses into preference pairs:
 * - `best-vs-random`: the best response against one drawn uniformly from those scored strictly
 *   lower (Zephyr's binarization of UltraFeedback); one pair per prompt.
 * - `best-vs-worst`: the best against the worst; one pair per prompt.
 * - `all-pairs`: every one of the C(K, 2) pairs, the higher reward as chosen.
 *
 * Ties never make a pair: a prompt whose responses all score the same yields none.
 * The best (or worst) is the first in order among equals.
 */
export type PairStrategy = "best-vs-random" | "best-vs-worst" | "all-pairs";

/** Options for {@link rewardToPreference}. */
export type PairOptions = {
  strategy: PairStrategy;
  /** Seed for `best-vs-random` (default 0). */
  seed?: number;
};

/** Preference pairs from one reward example (see {@link PairStrategy}). */
export function rewardToPairs(example: RewardExample, strategy: PairStrategy, rng: Rng): PreferenceExample[] {
  const r = example.responses;
  const pair = (w: number, l: number): PreferenceExample => ({
    prompt: example.prompt,
    chosen: r[w].content,
    rejected: r[l].content,
  });
  if (strategy === "all-pairs") {
    const pairs: PreferenceExample[] = [];
    for (let i = 0; i < r.length; i++) {
      for (let j = i + 1; j < r.length; j++) {
        if (r[i].reward > r[j].reward) pairs.push(pair(i, j));
        else if (r[j].reward > r[i].reward) pairs.push(pair(j, i));
      }
    }
    return pairs;
  }
  let best = 0;
  let worst = 0;
  for (let i = 1; i < r.length; i++) {
    if (r[i].reward > r[best].reward) best = i;
    if (r[i].reward < r[worst].reward) worst = i;
  }
  if (r[best].reward === r[worst].reward) return [];
  if (strategy === "best-vs-worst") return [pair(best, worst)];
  if (strategy === "best-vs-random") {
    const lower = r.flatMap((x, i) => x.reward < r[best].reward ? [i] : []);
    return [pair(best, lower[randomInt(rng, lower.length)])];
  }
  throw new Error(`unknown pair strategy "${strategy}"; expected best-vs-random, best-vs-worst or all-pairs`);
}

/**
 * Binarize reward data into preference pairs, e.g. to train the DPO baseline on the same prompts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const examples = [{
 *   prompt: [{ role: "user", content: "2 + 2?" }],
 *   responses: [{ content: "4", reward: 1 }, { content: "5", reward: 0 }, { content: "four", reward: 0.9 }],
 * }];
 * const pairs = rewardToPreference(examples, { strategy: "best-vs-random", seed: 1 });
 * // the best against a worse one, drawn with the seed
 * assert.deepEqual(pairs.map((p) => [p.chosen, p.rejected]), [["4", "four"]]);
 * ```
 */
export function rewardToPreference(examples: RewardExample[], opts: PairOptions): PreferenceExample[] {
  return binarize(examples, opts).pairs;
}

/** The result of {@link binarize}. */
export type BinarizeResult = {
  pairs: PreferenceExample[];
  /** Prompts whose responses all have the same reward, which make no pair (every strategy skips ties). */
  allTies: number;
};

/** {@link rewardToPreference}, counting the prompts that made no pair, so a run can say how many. */
export function binarize(examples: RewardExample[], opts: PairOptions): BinarizeResult {
  const rng = mulberry32(opts.seed ?? 0);
  const pairs: PreferenceExample[] = [];
  let allTies = 0;
  for (const ex of examples) {
    const made = rewardToPairs(ex, opts.strategy, rng);
    if (made.length === 0) allTies++;
    pairs.push(...made);
  }
  return { pairs, allTies };
}

/** Options for {@link selectResponses}. */
export type SelectOptions = {
  /** `first`: the first K responses; `random`: a seeded uniform sample of K (default `first`). */
  mode?: "first" | "random";
  /** Seed for `random` (default 0). */
  seed?: number;
};

/** The result of {@link selectResponses}. */
export type SelectResult = {
  examples: RewardExample[];
  /** Examples dropped because they had fewer than K responses. */
  dropped: number;
  /** The dropped ones by their number of responses (`{3: 12}`: twelve prompts had 3). */
  droppedByK: Record<number, number>;
};

/**
 * Keep K of each example's responses (the paper's K = 2 → 3 → 4 ablation). The kept responses stay
 * in their original relative order with their rewards, so an order that encodes rank (ChenDRAG's
 * A0..A3, sorted by score) survives. Examples with fewer than K responses are dropped and counted.
 */
export function selectResponses(
  examples: RewardExample[],
  k: number,
  opts: SelectOptions = {},
): SelectResult {
  if (!Number.isInteger(k) || k < 2) throw new RangeError(`K must be an integer ≥ 2, got ${k}`);
  const rng = mulberry32(opts.seed ?? 0);
  const mode = opts.mode ?? "first";
  if (mode !== "first" && mode !== "random") {
    throw new Error(`unknown selection mode "${mode}"; expected first or random`);
  }
  const out: RewardExample[] = [];
  let dropped = 0;
  const droppedByK: Record<number, number> = {};
  for (const ex of examples) {
    const n = ex.responses.length;
    if (n < k) {
      dropped++;
      droppedByK[n] = (droppedByK[n] ?? 0) + 1;
      continue;
    }
    const keep = mode === "first" ? Array.from({ length: k }, (_, i) => i) : sampleIndices(n, k, rng);
    out.push({ prompt: ex.prompt, responses: keep.map((i) => ({ ...ex.responses[i] })) });
  }
  return { examples: out, dropped, droppedByK };
}

/**
 * Preference pairs as K = 2 reward data (chosen reward 1, rejected 0), so InfoNCA/NCA can run on
 * preference data: with α → 0 InfoNCA then equals DPO.
 */
export function preferenceToReward(examples: PreferenceExample[]): RewardExample[] {
  return examples.map((ex) => ({
    prompt: ex.prompt,
    responses: [{ content: ex.chosen, reward: 1 }, { content: ex.rejected, reward: 0 }],
  }));
}
