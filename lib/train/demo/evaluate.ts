/**
 * How the demo judges a policy on held-out prompts: the mean reward of sampled responses (temperature 1:
 * the policy's own distribution), the exact-match rate of greedy answers, and KL(π‖μ) to the reference,
 * estimated as the mean of log π(y) − log μ(y) over the policy's samples.
 * @module
 */
import type { Tokenizer } from "../../data/tokenize.ts";
import type { Device } from "../../runtime/tensor.ts";
import { sampleResponses, scoreUnder } from "./sampling.ts";
import type { SortPrompt } from "./task.ts";

/** A policy's scores on the held-out prompts. */
export type PolicyScore = { meanReward: number; exactMatch: number; greedyReward: number; kl: number };

/** Scores a policy folder against a reference folder on `prompts`. */
export async function scorePolicy(
  policyDir: string,
  referenceDir: string,
  tok: Tokenizer,
  prompts: SortPrompt[],
  o: { seed: number; device: Device },
): Promise<PolicyScore> {
  const sampled =
    (await sampleResponses(policyDir, tok, prompts, { k: 1, temperature: 1, seed: o.seed, device: o.device }))
      .map((s) => s[0]);
  const greedy =
    (await sampleResponses(policyDir, tok, prompts, { k: 1, temperature: 0, seed: o.seed, device: o.device }))
      .map((s) => s[0]);
  let kl = 0;
  if (policyDir !== referenceDir) {
    const ref = await scoreUnder(referenceDir, tok, prompts, sampled.map((s) => s.tokens), o.device);
    kl = sampled.reduce((a, s, i) => a + (s.logp - ref[i]), 0) / prompts.length;
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return {
    meanReward: mean(sampled.map((s) => s.reward)),
    exactMatch: mean(greedy.map((s) => (s.reward === 1 ? 1 : 0))),
    greedyReward: mean(greedy.map((s) => s.reward)),
    kl,
  };
}
