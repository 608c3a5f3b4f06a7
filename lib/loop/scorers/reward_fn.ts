/**
 * A reward function as a scorer, for verifiable tasks (math answers, unit tests, exact formats): a module
 * exporting `reward(prompt, response, row)` (or a default function) that returns a number, or a promise of
 * one. `prompt` is the prompt's text: the row's prompt when it is a string, else its last user message (the
 * whole conversation is in `row`). true/false count as 1/0. A throw or a result that is not a finite number
 * is an error naming the row and the response (or, with `skipErrors`, a skipped item).
 *
 * ```ts
 * // reward.ts
 * export default (prompt: string, response: string, row: { answer: string }) =>
 *   response.trim() === row.answer ? 1 : 0;
 * ```
 * @module
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Message } from "../../data/types.ts";
import { failItem, type ScoreItem, type Scorer, type SkipOptions } from "./types.ts";

/** What a reward module exports. */
export type RewardFunction = (
  prompt: string,
  response: string,
  row: Record<string, unknown>,
) => number | boolean | Promise<number | boolean>;

/** The text a reward function gets as `prompt`: a lone user message's text, else the last user message's. */
export function promptText(prompt: readonly Message[]): string {
  for (let i = prompt.length - 1; i >= 0; i--) if (prompt[i].role === "user") return prompt[i].content;
  return prompt.at(-1)?.content ?? "";
}

/** A short content hash (FNV-1a, 32 bits, hex), so a resumed file notices an edited module. */
function hashText(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

/** Imports `path` and finds its reward function: the named export `reward`, else the default export. */
export async function loadRewardFunction(path: string): Promise<{ fn: RewardFunction; exportName: string }> {
  const url = pathToFileURL(resolve(path)).href;
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (e) {
    throw new Error(`${path}: could not import the reward module: ${(e as Error).message}`, { cause: e });
  }
  for (const name of ["reward", "default"]) {
    if (typeof mod[name] === "function") return { fn: mod[name] as RewardFunction, exportName: name };
  }
  throw new Error(
    `${path}: exports no reward function (write \`export default function (prompt, response, row) { … }\` ` +
      `or \`export function reward(prompt, response, row)\`; it returns a number)`,
  );
}

/** A reward function's result as a reward, or why it is not one. */
function asReward(v: unknown): number | string {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") return Number.isFinite(v) ? v : `the reward function returned ${v} (not finite)`;
  return `the reward function returned ${v === undefined ? "nothing" : JSON.stringify(v) ?? String(v)}` +
    ` (expected a finite number)`;
}

/** The scorer of a reward module. Items are scored one at a time, in order. */
export async function rewardFnScorer(path: string, o: SkipOptions = {}): Promise<Scorer> {
  const { fn, exportName } = await loadRewardFunction(path);
  const source = await Deno.readTextFile(path);
  return {
    kind: "reward-fn",
    name: path,
    settings: { module: resolve(path), export: exportName, sha: hashText(source) },
    async score(items: readonly ScoreItem[]): Promise<number[]> {
      const out: number[] = [];
      for (const [i, item] of items.entries()) {
        let v: unknown;
        try {
          v = await fn(promptText(item.prompt), item.response, item.row);
        } catch (e) {
          out.push(failItem(item, i, `the reward function threw: ${(e as Error)?.message ?? e}`, o, e));
          continue;
        }
        const r = asReward(v);
        out.push(typeof r === "number" ? r : failItem(item, i, r, o));
      }
      return out;
    },
    release: () => Promise.resolve(),
  };
}
