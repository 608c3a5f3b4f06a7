/**
 * The scorer flags shared by `deno task score` and `deno task eval`: one of `--reward-model`,
 * `--reward-fn` or `--judge-url`, with their settings, parsed into a {@link ScorerSpec} and made into a
 * {@link Scorer}, so both commands read the same flags the same way.
 * @module
 */
import { type DeviceRequest, parseDevice } from "../../runtime/device.ts";
import { DEFAULT_MAX_RESPONSE_BYTES, judgeScorer } from "./judge.ts";
import { DEFAULT_REWARD_TIMEOUT_S, rewardFnScorer } from "./reward_fn.ts";
import { rewardModelScorer } from "./reward_model.ts";
import { MAX_TIMER_MS, type Scorer } from "./types.ts";
import { intFlag, UsageError } from "../../cli.ts";

export { intFlag, UsageError };

/** The scorer sections of a command's `--help`. */
export const SCORER_USAGE =
  `A reward model (LlamaForSequenceClassification, Qwen2…, Qwen3…, Mistral…, Gemma2…, Phi3…, GPT2…; one label):
  --reward-model <folder>  a Hugging Face folder; (prompt, response) is rendered with its own chat template
  --device cpu|cuda|auto   where it runs (default cpu)
  --threads <n>            ONNX Runtime threads (default: all cores)
  --max-length <n>         longest sequence in tokens; longer ones keep their END, where the head reads
                           (default: the model's context length)

A reward function (verifiable tasks):
  --reward-fn <file.ts>    a module exporting reward(prompt, response, row) or a default function, returning
                           a number (or true/false); prompt is the prompt's (last user message's) text. It
                           runs in a process of its own, each call with its own copy of the row
  --reward-timeout <s>     seconds one call may take; then it is stopped and the response fails, or is
                           skipped with --skip-errors (default 60, at most 2147483). Importing the module
                           may take the longer of this and 60 s

An LLM judge (any OpenAI-compatible /v1/chat/completions, at temperature 0):
  --judge-url <url>        e.g. http://127.0.0.1:8000 (or …/v1, or the full endpoint)
  --judge-model <name>     default: the first model of GET /v1/models
  --judge-api-key <key>    default: env JUDGE_API_KEY
  --rubric <file>          the prompt, with {prompt} and {response} (default: an UltraFeedback-style rubric
                           asking for an overall 1–10 score as "Rating: N")
  --concurrency <n>        requests in flight (default 4)
  --retries <n>            more tries for an answer without a rating or a failed request (default 2)
  --judge-max-tokens <n>   max_tokens of an answer (default 1024)
  --judge-timeout <s>      seconds to wait for an answer (default 300, at most 2147483)
  --judge-max-bytes <n>    the largest answer read, in bytes (default 4194304, 4 MiB); a larger one fails
                           its response at once (not retried: the same request would answer the same)

The score is the last "Rating: N" / "Score: N" in the judge's answer, else its last line when that is a
number ("7", "7/10"). N is a plain decimal ("7", "7.5"): "7abc", "8.5.2", "1e1" or "0x10" is no rating.
`;

/** The scorer flags, for `node:util` parseArgs. */
export const SCORER_FLAGS = {
  "reward-model": { type: "string" },
  device: { type: "string" },
  threads: { type: "string" },
  "max-length": { type: "string" },
  "reward-fn": { type: "string" },
  "reward-timeout": { type: "string" },
  "judge-url": { type: "string" },
  "judge-model": { type: "string" },
  "judge-api-key": { type: "string" },
  rubric: { type: "string" },
  concurrency: { type: "string" },
  retries: { type: "string" },
  "judge-max-tokens": { type: "string" },
  "judge-timeout": { type: "string" },
  "judge-max-bytes": { type: "string" },
} as const;

/** Which scorer, with its settings. */
export type ScorerSpec =
  | { kind: "reward-model"; path: string; device: DeviceRequest; threads?: number; maxLength?: number }
  | { kind: "reward-fn"; path: string; timeoutS: number }
  | {
    kind: "judge";
    url: string;
    model?: string;
    apiKey?: string;
    rubric?: string;
    concurrency: number;
    retries: number;
    maxTokens: number;
    timeoutS: number;
    maxResponseBytes: number;
  };

/**
 * A flag of seconds for a timer: a number > 0 whose milliseconds a timer holds (at most 2^31-1: a longer
 * delay overflows and fires at once), or `fallback` when not given.
 */
export function secondsFlag(flag: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  const s = Number(v);
  if (v.trim() === "" || !Number.isFinite(s) || s <= 0) {
    throw new UsageError(`--${flag} must be a number of seconds > 0, got "${v}"`);
  }
  if (s * 1000 > MAX_TIMER_MS) {
    throw new UsageError(
      `--${flag} must be at most ${MAX_TIMER_MS / 1000} seconds (timers hold at most 2^31-1 ms, about ` +
        `24.8 days), got "${v}"`,
    );
  }
  return s;
}

/**
 * The scorer the parsed flags `v` choose (exactly one of `--reward-model`, `--reward-fn`, `--judge-url`),
 * refusing settings of another scorer. `env` reads JUDGE_API_KEY; `readText` reads `--rubric`.
 */
export function scorerSpecFrom(
  v: Partial<Record<keyof typeof SCORER_FLAGS, string>>,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  readText: (path: string) => string = (p) => Deno.readTextFileSync(p),
): ScorerSpec {
  const chosen = (["reward-model", "reward-fn", "judge-url"] as const).filter((k) => v[k] !== undefined);
  if (chosen.length !== 1) {
    throw new UsageError(
      chosen.length === 0
        ? "choose a scorer: --reward-model, --reward-fn or --judge-url"
        : `choose one scorer, not ${chosen.map((k) => `--${k}`).join(" and ")}`,
    );
  }
  const only = (kind: string, flags: string[]) => {
    for (const f of flags) {
      if (v[f as keyof typeof v] !== undefined) throw new UsageError(`--${f} applies to ${kind} only`);
    }
  };
  const modelFlags = ["device", "threads", "max-length"];
  const fnFlags = ["reward-timeout"];
  const judgeFlags = [
    "judge-model",
    "judge-api-key",
    "rubric",
    "concurrency",
    "retries",
    "judge-max-tokens",
    "judge-timeout",
    "judge-max-bytes",
  ];
  let scorer: ScorerSpec;
  if (v["reward-model"] !== undefined) {
    only("--judge-url", judgeFlags);
    only("--reward-fn", fnFlags);
    let device: DeviceRequest;
    try {
      device = parseDevice(v.device ?? "cpu");
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    scorer = {
      kind: "reward-model",
      path: v["reward-model"],
      device,
      threads: intFlag("threads", v.threads, 1),
      maxLength: intFlag("max-length", v["max-length"], 1),
    };
  } else if (v["reward-fn"] !== undefined) {
    only("--reward-model", modelFlags);
    only("--judge-url", judgeFlags);
    scorer = {
      kind: "reward-fn",
      path: v["reward-fn"],
      timeoutS: secondsFlag("reward-timeout", v["reward-timeout"], DEFAULT_REWARD_TIMEOUT_S),
    };
  } else {
    only("--reward-model", modelFlags);
    only("--reward-fn", fnFlags);
    const timeout = secondsFlag("judge-timeout", v["judge-timeout"], 300);
    let rubric: string | undefined;
    if (v.rubric !== undefined) {
      try {
        rubric = readText(v.rubric);
      } catch (e) {
        throw new UsageError(`--rubric ${v.rubric}: ${(e as Error).message}`);
      }
      for (const p of ["{prompt}", "{response}"]) {
        if (!rubric.includes(p)) throw new UsageError(`--rubric ${v.rubric} has no ${p} placeholder`);
      }
    }
    scorer = {
      kind: "judge",
      url: v["judge-url"]!,
      model: v["judge-model"],
      apiKey: v["judge-api-key"] ?? env("JUDGE_API_KEY"),
      rubric,
      concurrency: intFlag("concurrency", v.concurrency, 1) ?? 4,
      retries: intFlag("retries", v.retries, 0) ?? 2,
      maxTokens: intFlag("judge-max-tokens", v["judge-max-tokens"], 1) ?? 1024,
      timeoutS: timeout,
      maxResponseBytes: intFlag("judge-max-bytes", v["judge-max-bytes"], 1) ?? DEFAULT_MAX_RESPONSE_BYTES,
    };
  }
  return scorer;
}

/**
 * Makes the scorer the arguments ask for. Aborting `a.signal` (Ctrl-C, SIGTERM) stops a reward function at
 * once, even one stuck in a call: its pending `score()` rejects with a ScorerStoppedError.
 */
export async function makeScorer(
  s: ScorerSpec,
  a: { batch: number; skipErrors: boolean; signal?: AbortSignal },
  log: (line: string) => void,
): Promise<Scorer> {
  const skip = {
    skipErrors: a.skipErrors,
    onSkip: (at: string, why: string) => log(`skipped ${at}: ${why}`),
  };
  if (s.kind === "reward-model") {
    return await rewardModelScorer(s.path, {
      device: s.device,
      threads: s.threads,
      batch: a.batch,
      maxLength: s.maxLength,
      log,
      ...skip,
    });
  }
  if (s.kind === "reward-fn") {
    return await rewardFnScorer(s.path, { ...skip, timeoutS: s.timeoutS, signal: a.signal });
  }
  return await judgeScorer({ ...s, ...skip });
}
