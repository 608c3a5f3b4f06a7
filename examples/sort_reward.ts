/**
 * The demo task's reward as a reward-function module for `deno task score --reward-fn` and `deno task eval
 * --reward-fn`: the fraction of digits in the right place (lib/train/demo/task.ts), for prompts such as
 * `sort 3 1 4 1`.
 *
 * ```sh
 * deno task score --data samples.jsonl --reward-fn examples/sort_reward.ts --out scored.jsonl
 * ```
 * @module
 */
import { parsePrompt, reward as sortReward } from "../lib/train/demo/task.ts";

/** The reward of `response` to the sorting prompt `prompt`, in [0, 1]. */
export default function reward(prompt: string, response: string): number {
  return sortReward(parsePrompt(prompt), response);
}
