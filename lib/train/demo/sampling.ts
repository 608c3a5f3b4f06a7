/**
 * Sampling and scoring for the demo: K responses per prompt from an exported policy (the same generation
 * code the server uses), rewarded by the task's program; and the log-probs of given responses under a
 * model folder (the scoring graph the trainer uses for the reference model).
 * @module
 */
import type { Tokenizer } from "../../data/tokenize.ts";
import { tokenizePrompt } from "../../data/tokenize.ts";
import { generate } from "../../model/generate.ts";
import { openGenerator, openScorer } from "../../model/open.ts";
import type { Device } from "../../runtime/tensor.ts";
import { scoreExamples } from "../scoring.ts";
import { promptText, reward, type SortPrompt } from "./task.ts";

/** A sampled response: its tokens (EOS included when it ended there), text, reward and log-prob. */
export type Sample = { tokens: number[]; text: string; reward: number; logp: number };

/** Prompt token ids, rendered exactly as in training. */
export function promptIds(tok: Tokenizer, p: SortPrompt): number[] {
  return tokenizePrompt(tok, [{ role: "user", content: promptText(p) }]);
}

/** Samples `k` responses per prompt from an exported policy folder (temperature 0 = greedy). */
export async function sampleResponses(
  policyDir: string,
  tok: Tokenizer,
  prompts: SortPrompt[],
  o: { k: number; temperature: number; seed: number; device: Device; maxNewTokens?: number; batch?: number },
): Promise<Sample[][]> {
  await using generator = await openGenerator(policyDir, { device: o.device, log: () => {} });
  const eos = tok.eos_token_id as number;
  const out: Sample[][] = prompts.map(() => []);
  const ids = prompts.map((p) => promptIds(tok, p));
  const batch = o.batch ?? 512;
  const jobs: number[] = [];
  for (let i = 0; i < prompts.length; i++) for (let j = 0; j < o.k; j++) jobs.push(i);
  for (let at = 0; at < jobs.length; at += batch) {
    const part = jobs.slice(at, at + batch);
    const res = await generate(generator.session, part.map((i) => ids[i]), {
      maxNewTokens: o.maxNewTokens ?? 10,
      eosTokenIds: [eos],
      temperature: o.temperature,
      seed: o.seed + at,
    });
    res.rows.forEach((row, r) => {
      const i = part[r];
      const body = row.tokens.filter((t) => t !== eos);
      const text = body.length ? tok.decode(body, { skip_special_tokens: true }).trim() : "";
      out[i].push({
        tokens: row.tokens,
        text,
        reward: reward(prompts[i], text),
        logp: row.logprobs.reduce((a, b) => a + b, 0),
      });
    });
  }
  return out;
}

/** Log-probs of given responses (token ids, EOS included) under a model folder. */
export async function scoreUnder(
  modelDir: string,
  tok: Tokenizer,
  prompts: SortPrompt[],
  responses: number[][],
  device: Device,
): Promise<number[]> {
  await using scorer = await openScorer(modelDir, { device });
  const examples = prompts.map((p, i) => ({ promptIds: promptIds(tok, p), responseIds: [responses[i]] }));
  const pad = (tok.pad_token_id ?? tok.eos_token_id) as number;
  const scores = await scoreExamples(scorer, examples, { padId: pad, batchSize: 256 });
  return scores.logps.map((x) => x[0]);
}
