/**
 * The demo's task: sort a few digits. A prompt is `sort 3 1 4 1`, the answer `1 1 3 4`. The reward is
 * computed by a program, with partial credit: the fraction of positions that hold the right digit
 * (a response of the wrong length is compared position by position against the longer of the two), so
 * K sampled responses get graded rewards, as UltraFeedback's scores grade K completions.
 * @module
 */
import { mulberry32, type Rng } from "../../data/random.ts";

/** A prompt of the task: the digits to sort. */
export type SortPrompt = { digits: number[] };

/** The prompt's text, as the user writes it. */
export function promptText(p: SortPrompt): string {
  return `sort ${p.digits.join(" ")}`;
}

/** The correct answer's text. */
export function answerText(p: SortPrompt): string {
  return [...p.digits].sort((a, b) => a - b).join(" ");
}

/** Parses a prompt text back (for rewarding data that comes as text). */
export function parsePrompt(text: string): SortPrompt {
  const m = text.trim().match(/^sort((?:\s+\d)+)\s*$/);
  if (!m) throw new RangeError(`not a sort prompt: "${text}"`);
  return { digits: m[1].trim().split(/\s+/).map(Number) };
}

/**
 * The reward of a response in [0, 1]: positions holding the sorted digit, over the longer length.
 * 1 exactly when the response is the sorted list; non-digits count as wrong positions.
 */
export function reward(p: SortPrompt, response: string): number {
  const target = [...p.digits].sort((a, b) => a - b);
  const got = response.trim().split(/\s+/).filter((t) => t.length > 0);
  const n = Math.max(target.length, got.length);
  let right = 0;
  for (let i = 0; i < Math.min(target.length, got.length); i++) if (got[i] === String(target[i])) right++;
  return n === 0 ? 0 : right / n;
}

/** Random prompts of `minLen..maxLen` digits, seeded. */
export function samplePrompts(n: number, seed: number, minLen = 3, maxLen = 5): SortPrompt[] {
  const r = mulberry32(seed);
  return Array.from({ length: n }, () => {
    const len = minLen + Math.floor(r() * (maxLen - minLen + 1));
    return { digits: Array.from({ length: len }, () => Math.floor(r() * 10)) };
  });
}

/**
 * A noisy demonstration: the right answer with probability `1 − noise`, else a corrupted one (two
 * adjacent digits swapped, a digit replaced, or one dropped) — the imperfect SFT data the paper's
 * alignment stage starts from.
 */
export function noisyDemonstration(p: SortPrompt, noise: number, rng: Rng): string {
  const sorted = [...p.digits].sort((a, b) => a - b);
  if (rng() >= noise) return sorted.join(" ");
  const out = [...sorted];
  const kind = Math.floor(rng() * 3);
  const i = Math.floor(rng() * out.length);
  if (kind === 0 && out.length > 1) {
    const j = Math.min(i + 1, out.length - 1), k = j === i ? i - 1 : i;
    [out[k], out[j]] = [out[j], out[k]];
  } else if (kind === 1) out[i] = (out[i] + 1 + Math.floor(rng() * 9)) % 10;
  else if (out.length > 1) out.splice(i, 1);
  return out.join(" ");
}
