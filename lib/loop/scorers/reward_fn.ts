/**
 * A reward function as a scorer, for verifiable tasks (math answers, unit tests, exact formats): a module
 * exporting `reward(prompt, response, row)` (or a default function) that returns a number, or a promise of
 * one. `prompt` is the prompt's text: the row's prompt when it is a string, else its last user message (the
 * whole conversation is in `row`). true/false count as 1/0. A throw or a result that is not a finite number
 * is an error naming the row and the response (or, with `skipErrors`, a skipped item).
 *
 * The function runs in a process of its own (reward_fn_process.ts), one call at a time, each with its own
 * copy of the row, so that it cannot change what is written, and so that one stuck in a loop can be stopped:
 * a call taking longer than `timeoutS` (default 60 s) kills the process and fails its item (a later item
 * starts a fresh process, importing the module again), and aborting `signal` or `release()` kills it at once.
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
import {
  checkTimeoutS,
  failItem,
  type ScoreItem,
  type Scorer,
  ScorerStoppedError,
  type SkipOptions,
} from "./types.ts";
import { type FromChild, RewardProcess, type ToChild } from "./reward_fn_process.ts";

/** What a reward module exports. */
export type RewardFunction = (
  prompt: string,
  response: string,
  row: Record<string, unknown>,
) => number | boolean | Promise<number | boolean>;

/** Options of {@link rewardFnScorer}. */
export type RewardFnOptions = SkipOptions & {
  /**
   * Seconds one call may take (default {@link DEFAULT_REWARD_TIMEOUT_S}); then the process is killed and
   * the item fails. At most 2^31-1 ms.
   */
  timeoutS?: number;
  /**
   * Seconds the module's import (with the process's start) may take: default the longer of `timeoutS` and
   * {@link DEFAULT_REWARD_TIMEOUT_S}, since a first import may fetch and compile dependencies.
   */
  importTimeoutS?: number;
  /** Aborting it stops the scorer at once: the process is killed and a pending `score()` rejects. */
  signal?: AbortSignal;
};

/** The default of {@link RewardFnOptions.timeoutS}: generous for a check, short of a hung run. */
export const DEFAULT_REWARD_TIMEOUT_S = 60;

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

/** The reward function of an imported module `mod` (from `path`): `reward`, else the default export. */
export function findRewardFunction(
  mod: Record<string, unknown>,
  path: string,
): { fn: RewardFunction; exportName: string } {
  for (const name of ["reward", "default"]) {
    if (typeof mod[name] === "function") return { fn: mod[name] as RewardFunction, exportName: name };
  }
  throw new Error(
    `${path}: exports no reward function (write \`export default function (prompt, response, row) { … }\` ` +
      `or \`export function reward(prompt, response, row)\`; it returns a number)`,
  );
}

/**
 * Imports `path` on this thread and finds its reward function (the scorer imports it in its process
 * instead, where a module stuck at its top level can be stopped).
 */
export async function loadRewardFunction(path: string): Promise<{ fn: RewardFunction; exportName: string }> {
  const url = pathToFileURL(resolve(path)).href;
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (e) {
    throw new Error(`${path}: could not import the reward module: ${(e as Error).message}`, { cause: e });
  }
  return findRewardFunction(mod, path);
}

/** A value shown in a message, short, whatever it is (JSON.stringify throws on a BigInt inside). */
function show(v: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    text = Object.prototype.toString.call(v);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** A reward function's result as a reward, or why it is not one. */
export function asReward(v: unknown): number | string {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") return Number.isFinite(v) ? v : `the reward function returned ${v} (not finite)`;
  if (typeof v === "bigint") {
    const digits = String(v);
    const n = digits.length > 40 ? `${digits.slice(0, 37)}...` : digits;
    return `the reward function returned a BigInt (${n}n); return a number`;
  }
  if (typeof v === "symbol") return `the reward function returned a symbol (${String(v)}); return a number`;
  if (typeof v === "function") return `the reward function returned a function; return a number`;
  return `the reward function returned ${v === undefined ? "nothing" : show(v)} (expected a finite number)`;
}

/** A failure of one item (its reason, ready for {@link failItem}); anything else stops the scoring. */
class ItemFailure extends Error {}

/** One call's arguments. */
type Call = { prompt: string; response: string; row: Record<string, unknown> };

/** What is waiting on the process (its load, or calls), told of each message, a crash or a stop. */
type Waiting = {
  onMessage(m: FromChild): void;
  /** The process failed (an error outside a call, a crash): it is terminated already. */
  onCrash(reason: string): void;
  onStop(why: Error): void;
};

/**
 * The process a reward module runs in: started on demand, terminated on a timeout, a crash, a stop or a
 * release. The calls of one batch are sent together (the process runs them one at a time, in order), as a
 * round trip per call would cost ten times more; each call's deadline starts when the one before it ends.
 */
class RewardHost {
  #proc: RewardProcess | null = null;
  #waiting: Waiting | null = null;
  #stopped: Error | null = null;
  #lastId = 0;
  readonly #url: string;
  readonly #signal?: AbortSignal;
  readonly #onAbort = () => {
    const reason = this.#signal?.reason;
    const why = reason instanceof Error && reason.name !== "AbortError" ? ` (${reason.message})` : "";
    this.stop(
      new ScorerStoppedError(`${this.path}: the reward function was stopped${why}`, { cause: reason }),
    );
  };

  constructor(
    readonly path: string,
    readonly timeoutS: number,
    readonly importTimeoutS: number,
    signal?: AbortSignal,
  ) {
    this.#url = pathToFileURL(resolve(path)).href;
    this.#signal = signal;
    if (signal?.aborted) this.#onAbort();
    else signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /** Starts a process and imports the module in it: the reward function's export name. */
  async load(): Promise<string> {
    if (this.#stopped) throw this.#stopped;
    const w = RewardProcess.start();
    this.#proc = w;
    w.onmessage = (m) => {
      if (w !== this.#proc) return;
      // an error outside a call leaves the module's state suspect: a fresh process for the next item
      if (m.type === "uncaught") this.#crash(m.reason);
      else this.#waiting?.onMessage(m);
    };
    w.onexit = (reason) => {
      if (w === this.#proc) this.#crash(reason);
    };
    const m = await new Promise<FromChild>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting = null;
        this.#kill();
        reject(
          new Error(`${this.path}: importing the reward module took longer than ${this.importTimeoutS} s`),
        );
      }, this.importTimeoutS * 1000);
      const done = () => {
        clearTimeout(timer);
        this.#waiting = null;
      };
      this.#waiting = {
        onMessage: (m) => {
          if (m.type !== "loaded" && m.type !== "load-failed") return;
          done();
          resolve(m);
        },
        onCrash: (reason) => {
          done();
          reject(new Error(`${this.path}: the reward module failed while loading: ${reason}`));
        },
        onStop: (why) => {
          done();
          reject(why);
        },
      };
      w.postMessage({ type: "load", url: this.#url, path: this.path } satisfies ToChild);
    });
    if (m.type === "loaded") return m.exportName;
    this.#kill();
    throw new Error(m.type === "load-failed" ? m.message : `${this.path}: the process answered ${m.type}`);
  }

  /**
   * The reward of each call, or its {@link ItemFailure} (a throw, a result that is not a number, a
   * timeout, a crash, a row that cannot be sent). A timeout or a crash ends the process: the calls after it
   * go to a fresh one. With `stopAtFailure`, the calls after the first failure are not made.
   */
  async callAll(calls: readonly Call[], stopAtFailure: boolean): Promise<(number | ItemFailure)[]> {
    const out: (number | ItemFailure)[] = [];
    let from = 0;
    while (from < calls.length) {
      if (this.#stopped) throw this.#stopped;
      if (!this.#proc) await this.load();
      from = await this.#callFrom(calls, from, out, stopAtFailure);
      if (stopAtFailure && out.some((r) => r instanceof ItemFailure)) break;
    }
    return out;
  }

  /** Terminates the process for good; what waits on it rejects with `why`, and so does every later call. */
  stop(why: Error): void {
    if (this.#stopped) return;
    this.#stopped = why;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#kill();
    this.#waiting?.onStop(why);
  }

  /**
   * Sends `calls[from…]` and fills `out` as the answers come, in order: the index after the last one
   * answered, when all are, or when one ends the process (a timeout, a crash), cannot be sent, or fails
   * with `stopAtFailure`.
   */
  #callFrom(
    calls: readonly Call[],
    from: number,
    out: (number | ItemFailure)[],
    stopAtFailure: boolean,
  ): Promise<number> {
    const w = this.#proc!;
    return new Promise<number>((resolve, reject) => {
      const base = this.#lastId + 1 - from;
      let end = from, unsendable: string | null = null;
      for (; end < calls.length; end++) {
        try {
          w.postMessage({ type: "call", id: base + end, ...calls[end] } satisfies ToChild);
        } catch (e) {
          // a row structured clone cannot copy: the calls before it are made, then it fails
          unsendable = (e as Error).message;
          break;
        }
      }
      this.#lastId = base + end - 1;
      let next = from, timer: ReturnType<typeof setTimeout> | undefined;
      const finish = (after: number) => {
        clearTimeout(timer);
        this.#waiting = null;
        resolve(after);
      };
      const fail = (reason: string) => {
        out[next] = new ItemFailure(reason);
        finish(next + 1);
      };
      // each call's deadline starts when the one before it is answered
      const advance = () => {
        clearTimeout(timer);
        if (next < end) {
          timer = setTimeout(() => {
            this.#kill();
            fail(`the reward function timed out after ${this.timeoutS} s (--reward-timeout)`);
          }, this.timeoutS * 1000);
        } else if (unsendable !== null) {
          fail(`the reward function failed: the row cannot be passed to its process: ${unsendable}`);
        } else finish(next);
      };
      this.#waiting = {
        onMessage: (m) => {
          if ((m.type !== "result" && m.type !== "failed") || m.id !== base + next) return;
          if (m.type === "result") out[next] = m.reward;
          else {
            const cause = new Error(m.reason);
            if (m.stack) cause.stack = m.stack;
            out[next] = new ItemFailure(m.reason, { cause });
            if (stopAtFailure) {
              // the calls still queued are not wanted
              if (next + 1 < end) this.#kill();
              finish(next + 1);
              return;
            }
          }
          next++;
          advance();
        },
        onCrash: (reason) => fail(`the reward function failed: ${reason}`),
        onStop: (why) => {
          clearTimeout(timer);
          this.#waiting = null;
          reject(why);
        },
      };
      advance();
    });
  }

  /** The process failed: it is terminated, and what waits on it is told. */
  #crash(reason: string): void {
    this.#kill();
    this.#waiting?.onCrash(reason);
  }

  #kill(): void {
    this.#proc?.terminate();
    this.#proc = null;
  }
}

/** The scorer of a reward module. Items are scored one at a time, in order, in a process. */
export async function rewardFnScorer(path: string, o: RewardFnOptions = {}): Promise<Scorer> {
  const timeoutS = o.timeoutS ?? DEFAULT_REWARD_TIMEOUT_S;
  checkTimeoutS("timeoutS", timeoutS);
  const importTimeoutS = o.importTimeoutS ?? Math.max(timeoutS, DEFAULT_REWARD_TIMEOUT_S);
  checkTimeoutS("importTimeoutS", importTimeoutS);
  const host = new RewardHost(path, timeoutS, importTimeoutS, o.signal);
  let exportName: string, source: string;
  try {
    exportName = await host.load();
    source = await Deno.readTextFile(path);
  } catch (e) {
    host.stop(new ScorerStoppedError(`${path}: the reward function scorer failed to start`));
    throw e;
  }
  const scoreAll = async (items: readonly ScoreItem[]): Promise<number[]> => {
    const calls = items.map((it) => ({ prompt: promptText(it.prompt), response: it.response, row: it.row }));
    const answers = await host.callAll(calls, !o.skipErrors);
    // failures are reported in order; without skipErrors the first throws
    return items.map((item, i) => {
      const r = answers[i];
      return r instanceof ItemFailure ? failItem(item, i, r.message, o, r.cause) : r;
    });
  };
  // one batch at a time in the process: calls of score() made together run one after the other
  let queue: Promise<unknown> = Promise.resolve();
  return {
    kind: "reward-fn",
    name: path,
    settings: { module: resolve(path), export: exportName, sha: hashText(source) },
    score(items: readonly ScoreItem[]): Promise<number[]> {
      const run = queue.then(() => scoreAll(items));
      queue = run.catch(() => {});
      return run;
    },
    release() {
      host.stop(new ScorerStoppedError(`${path}: the reward function scorer was released`));
      return Promise.resolve();
    },
  };
}
