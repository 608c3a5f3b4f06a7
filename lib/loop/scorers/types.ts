/**
 * What scores (prompt, response) pairs: a reward model, a reward function or an LLM judge behind one small
 * interface, so that `deno task score` (lib/loop/score.ts) and evaluation use the same scorers.
 * @module
 */
import type { Message } from "../../data/types.ts";

/** The kinds of scorer, as the scored file's `scorer.kind` names them. */
export type ScorerKind = "reward-model" | "reward-fn" | "judge";

/** One response to score. */
export type ScoreItem = {
  /** The conversation before the response (a plain prompt is one user message). */
  prompt: Message[];
  response: string;
  /** The data row the response belongs to, as read (a reward function may read its other fields). */
  row: Record<string, unknown>;
  /** Where it came from, for error messages: `samples.jsonl:12 responses[2]`. */
  at?: string;
};

/** A scorer. */
export interface Scorer {
  readonly kind: ScorerKind;
  /** What scored, as written to `scorer.name` (the model folder, the module, the judge's model). */
  readonly name: string;
  /**
   * What determines the scores besides the inputs (resolved paths, a module's hash, the rubric, limits):
   * a resumed file refuses to continue with different settings.
   */
  readonly settings: Readonly<Record<string, unknown>>;
  /**
   * One reward per item, in order. A failure throws a {@link ScoreError} naming the item; a scorer made
   * with `skipErrors` reports it to its `onSkip` and gives NaN for that item instead.
   */
  score(items: readonly ScoreItem[]): Promise<number[]>;
  /**
   * Frees what the scorer holds (a session, a worker). A reward function's worker is terminated even in the
   * middle of a call: its pending {@link Scorer.score} rejects, and so do later calls.
   */
  release(): Promise<void>;
}

/** Options every scorer takes about failures. */
export type SkipOptions = {
  /** Give NaN for an item that fails (and report it to `onSkip`) instead of throwing. */
  skipErrors?: boolean;
  /** Told about each skipped item: its `at` and why. */
  onSkip?: (at: string, reason: string) => void;
};

/** A failure to score one item: the message starts with where it is (`samples.jsonl:12 responses[2]: …`). */
export class ScoreError extends Error {
  override name = "ScoreError";
  constructor(readonly at: string, readonly reason: string, options?: ErrorOptions) {
    super(`${at}: ${reason}`, options);
  }
}

/** What a failure does under {@link SkipOptions}: throws, or reports it and gives NaN. */
export function failItem(
  item: ScoreItem,
  index: number,
  reason: string,
  o: SkipOptions,
  cause?: unknown,
): number {
  const at = item.at ?? `item ${index}`;
  if (!o.skipErrors) throw new ScoreError(at, reason, cause === undefined ? undefined : { cause });
  o.onSkip?.(at, reason);
  return NaN;
}

/**
 * A scorer stopped from outside (its `signal` aborted, or released) while it was scoring: what was pending
 * is abandoned, not failed, so a run that stops this way can be resumed.
 */
export class ScorerStoppedError extends Error {
  override name = "ScorerStoppedError";
}

/** The longest delay a timer holds: past 2^31-1 ms (about 24.8 days) setTimeout fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Throws a RangeError unless `seconds` is a timeout a timer can hold: a number > 0 whose milliseconds are
 * at most {@link MAX_TIMER_MS} (a larger one would overflow and fire at once). `name` is the option's.
 */
export function checkTimeoutS(name: string, seconds: number): void {
  if (typeof seconds !== "number" || !(seconds > 0) || !(seconds * 1000 <= MAX_TIMER_MS)) {
    const limit = `≤ ${MAX_TIMER_MS / 1000} (timers hold at most 2^31-1 ms, about 24.8 days)`;
    throw new RangeError(`${name} must be a number of seconds > 0 and ${limit}, got ${seconds}`);
  }
}
