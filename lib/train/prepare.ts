/**
 * From a loaded dataset to what the training graph eats: the examples converted to the form the loss
 * needs (reward data for InfoNCA/NCA, pairs for DPO/NCA-pair/IPO, completions for SFT), K responses chosen,
 * tokenized, responses sorted by reward (best first: column 0 is "chosen" in the graph's metrics), soft
 * labels softmax(r/α) computed exactly here, and a held-out split for evaluation.
 * @module
 */
import type { LoadedDataset } from "../data/load.ts";
import type { PairStrategy } from "../data/convert.ts";
import { binarize, preferenceToReward, selectResponses } from "../data/convert.ts";
import { DataError } from "../data/errors.ts";
import { count, describeCounts, type ShapeDrops } from "../data/report.ts";
import {
  type EncodingTokenizer,
  type TokenizedExample,
  tokenizeExamples,
  type TokenizeOptions,
} from "../data/tokenize.ts";
import { mulberry32, shuffleInPlace } from "../data/random.ts";
import type { PreferenceExample, RewardExample, SftExample } from "../data/types.ts";
import { softLabels } from "../losses/soft_labels.ts";
import { rankByReward } from "../losses/metrics.ts";
import type { TrainLossName } from "./graph_losses.ts";

/** A tokenized example ready for batching: responses best first, soft labels for reward losses. */
export type PreparedExample = TokenizedExample & { labels?: number[] };

/** How examples are shaped for a loss. */
export type ShapeOptions = {
  loss: TrainLossName;
  /** Responses per prompt for reward losses (first K, or a seeded sample). Default: all. */
  k?: number;
  kMode?: "first" | "random";
  /** Pairs from reward data for the pairwise losses. */
  pairStrategy?: PairStrategy;
  seed?: number;
};

/** What kind of examples a loss trains on. */
export function lossDataKind(loss: TrainLossName): "reward" | "preference" | "sft" {
  if (loss === "infonca" || loss === "nca") return "reward";
  if (loss === "sft") return "sft";
  return "preference";
}

/** Converts a dataset's examples to the kind the loss needs, with K chosen. Throws when it cannot. */
export function shapeExamples(
  ds: LoadedDataset,
  o: ShapeOptions,
): (RewardExample | PreferenceExample | SftExample)[] {
  return shapeDataset(ds, o).examples;
}

/** Shaped examples and what shaping dropped. */
export type ShapedData = {
  examples: (RewardExample | PreferenceExample | SftExample)[];
  drops: ShapeDrops;
  /** `pairs` when a pairwise loss binarized reward data. */
  unit: "prompts" | "pairs";
};

/**
 * {@link shapeExamples}, counting what is dropped: prompts with fewer than `--k` responses (by how many
 * they had) and prompts whose responses all tie when reward data is binarized into pairs. Data that cannot
 * train the loss at all says why: a mixed K names the first row that differs, a `--k` above every prompt's
 * count says how many responses the prompts have.
 */
export function shapeDataset(ds: LoadedDataset, o: ShapeOptions): ShapedData {
  const want = lossDataKind(o.loss);
  const seed = o.seed ?? 0;
  const drops: ShapeDrops = { allTies: 0 };
  const src = ds.input.source;
  if (want === "reward") {
    let ex: RewardExample[];
    if (ds.kind === "reward") ex = ds.examples;
    else if (ds.kind === "preference") ex = preferenceToReward(ds.examples);
    else {throw new TypeError(
        `the ${o.loss} loss needs reward or preference data; ${ds.format} data has neither`,
      );}
    const byK: Record<number, number> = {};
    for (const e of ex) byK[e.responses.length] = (byK[e.responses.length] ?? 0) + 1;
    const counts = `${count(ex.length)} prompts: ${describeCounts(byK)}`;
    if (o.k !== undefined) {
      const sel = selectResponses(ex, o.k, { mode: o.kMode ?? "first", seed });
      drops.tooFewResponses = { k: o.k, count: sel.dropped, byK: sel.droppedByK };
      if (sel.examples.length === 0 && ex.length > 0) {
        const most = Math.max(...Object.keys(byK).map(Number));
        const pairs = ds.kind === "preference" ? "; preference pairs are K = 2" : "";
        throw new RangeError(
          `${src}: every prompt has at most ${most} responses; --k ${o.k} needs ${o.k} (${counts}${pairs})`,
        );
      }
      ex = sel.examples;
    } else {
      const first = ex[0]?.responses.length;
      const odd = ex.findIndex((e) => e.responses.length !== first);
      if (odd !== -1) {
        const fewest = Math.min(...Object.keys(byK).map(Number));
        throw new DataError(
          ds.origins[odd].file,
          ds.origins[odd].line,
          `has ${ex[odd].responses.length} responses, earlier rows have ${first} (${counts}); ` +
            `pass --k ${fewest} to train on ${fewest} responses of every prompt`,
          undefined,
          ds.origins[odd].unit,
        );
      }
    }
    return { examples: ex, drops, unit: "prompts" };
  }
  if (want === "preference") {
    if (ds.kind === "preference") return { examples: ds.examples, drops, unit: "prompts" };
    if (ds.kind === "reward") {
      const { pairs, allTies } = binarize(ds.examples, {
        strategy: o.pairStrategy ?? "best-vs-random",
        seed,
      });
      drops.allTies = allTies;
      if (pairs.length === 0 && ds.examples.length > 0) {
        throw new RangeError(
          `${src}: no preference pairs: the responses of all ${count(ds.examples.length)} prompts ` +
            `have equal rewards, and ties make no pair`,
        );
      }
      return { examples: pairs, drops, unit: "pairs" };
    }
    throw new TypeError(`the ${o.loss} loss needs preference or reward data; ${ds.format} data has neither`);
  }
  const examples = ds.kind === "sft"
    ? ds.examples
    : ds.kind === "preference"
    ? ds.examples.map((e) => ({ prompt: e.prompt, completion: e.chosen }))
    : ds.examples.map((e) => ({
      prompt: e.prompt,
      completion: e.responses[rankByReward(e.responses.map((r) => r.reward))[0]].content,
    }));
  return { examples, drops, unit: "prompts" };
}

/** Sorts each example's responses by reward (best first, stable) and attaches soft labels. */
export function rankAndLabel(examples: TokenizedExample[], alpha: number): PreparedExample[] {
  return examples.map((ex) => {
    if (!ex.rewards) return ex;
    const order = rankByReward(ex.rewards);
    const rewards = order.map((i) => ex.rewards![i]);
    return {
      promptIds: ex.promptIds,
      responseIds: order.map((i) => ex.responseIds[i]),
      rewards,
      labels: softLabels([rewards], alpha)[0],
    };
  });
}

/** Tokenizes shaped examples and ranks them. */
export function prepareExamples(
  tokenizer: EncodingTokenizer,
  examples: (RewardExample | PreferenceExample | SftExample)[],
  o: TokenizeOptions & { alpha: number },
): PreparedExample[] {
  return rankAndLabel(tokenizeExamples(tokenizer, examples, o), o.alpha);
}

/** A seeded held-out split: `fraction` of the examples (at least one when there are two or more). */
export function splitHeldOut<T>(items: T[], fraction: number, seed: number): { train: T[]; eval: T[] } {
  if (!(fraction >= 0 && fraction < 1)) {
    throw new RangeError(`the eval fraction must be in [0, 1), got ${fraction}`);
  }
  const n = items.length;
  const nEval = fraction === 0 || n < 2 ? 0 : Math.max(1, Math.round(n * fraction));
  const idx = items.map((_, i) => i);
  shuffleInPlace(idx, mulberry32(seed ^ 0x5eed));
  const evalSet = new Set(idx.slice(0, nEval));
  return { train: items.filter((_, i) => !evalSet.has(i)), eval: items.filter((_, i) => evalSet.has(i)) };
}
