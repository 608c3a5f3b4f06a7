/**
 * The scorer flags shared by `deno task score` and `deno task eval`: one of `--reward-model`,
 * `--reward-fn` or `--judge-url`, with their settings, as one option table read by lib/cli's engine, parsed
 * into a {@link ScorerSpec} and made into a {@link Scorer}, so both commands read the same flags the same
 * way.
 * @module
 */
import { deviceOption, type OptionSpec, UsageError } from "../../cli/spec.ts";
import { parseTemplateKwargs } from "../../data/chat.ts";
import type { DeviceRequest } from "../../runtime/device.ts";
import { DEFAULT_MAX_RESPONSE_BYTES, judgeScorer } from "./judge.ts";
import { DEFAULT_REWARD_TIMEOUT_S, rewardFnScorer } from "./reward_fn.ts";
import { rewardModelScorer } from "./reward_model.ts";
import { MAX_TIMER_MS, type Scorer } from "./types.ts";

export { UsageError };

/** The scorer flags' values, only those given. */
export type ScorerFlags = {
  rewardModel?: string;
  device?: DeviceRequest;
  threads?: number;
  maxLength?: number;
  templateKwargs?: Record<string, unknown>;
  rewardFn?: string;
  rewardTimeout?: number;
  judgeUrl?: string;
  judgeModel?: string;
  judgeApiKey?: string;
  rubric?: string;
  concurrency?: number;
  retries?: number;
  judgeMaxTokens?: number;
  judgeTimeout?: number;
  judgeMaxBytes?: number;
};

/**
 * Reads a number of seconds for a timer: > 0, and at most what a timer holds in milliseconds (2^31-1: a
 * longer delay overflows and fires at once). Throws naming `flag`.
 */
export function parseSeconds(raw: unknown, flag: string): number {
  const s = typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
  const got = typeof raw === "string" ? JSON.stringify(raw) : String(raw);
  if (!Number.isFinite(s) || s <= 0) {
    throw new UsageError(`${flag} must be a number of seconds > 0, got ${got}`);
  }
  if (s * 1000 > MAX_TIMER_MS) {
    throw new UsageError(
      `${flag} must be at most ${MAX_TIMER_MS / 1000} seconds (timers hold at most 2^31-1 ms, about ` +
        `24.8 days), got ${got}`,
    );
  }
  return s;
}

const MODEL = "A reward model (LlamaForSequenceClassification, Qwen2…, Qwen3…, Mistral…, Gemma2…, Phi3…, " +
  "GPT2…; one label)";
const FUNCTION = "A reward function (verifiable tasks)";
const JUDGE = "An LLM judge (any OpenAI-compatible /v1/chat/completions, at temperature 0)";

/** The scorer flags, by scorer, in `--help` order. */
export const SCORER_SPECS: readonly OptionSpec<ScorerFlags>[] = Object.freeze(
  [
    {
      key: "rewardModel",
      flag: "reward-model",
      kind: "string",
      group: MODEL,
      arg: "folder",
      help: "a Hugging Face folder; (prompt, response) is rendered with its own chat template",
    },
    deviceOption({ group: MODEL, default: "cpu", help: "where it runs" }),
    {
      key: "threads",
      flag: "threads",
      kind: "int",
      group: MODEL,
      min: 1,
      arg: "n",
      defaultText: "all cores",
      help: "ONNX Runtime threads",
    },
    {
      key: "maxLength",
      flag: "max-length",
      kind: "int",
      group: MODEL,
      min: 1,
      arg: "n",
      defaultText: "the model's context length",
      help: "longest sequence in tokens; longer ones keep their END, where the head reads",
    },
    {
      key: "templateKwargs",
      flag: "chat-template-kwargs",
      kind: "json",
      group: MODEL,
      parse: (raw, flag) => parseTemplateKwargs(raw, flag),
      arg: "json",
      defaultText: "none",
      help: `variables for its chat template, a JSON object (e.g. '{"enable_thinking": false}')`,
    },
    {
      key: "rewardFn",
      flag: "reward-fn",
      kind: "string",
      group: FUNCTION,
      arg: "file.ts",
      help:
        "a module exporting reward(prompt, response, row) or a default function, returning a number (or " +
        "true/false); prompt is the prompt's (last user message's) text. It runs in a process of its own, " +
        "each call with its own copy of the row",
    },
    {
      key: "rewardTimeout",
      flag: "reward-timeout",
      kind: "number",
      group: FUNCTION,
      parse: parseSeconds,
      arg: "s",
      default: DEFAULT_REWARD_TIMEOUT_S,
      defaultText: `${DEFAULT_REWARD_TIMEOUT_S}, at most ${Math.floor(MAX_TIMER_MS / 1000)}`,
      help: "seconds one call may take; then it is stopped and the response fails, or is skipped with " +
        "--skip-errors. Importing the module may take the longer of this and 60 s",
    },
    {
      key: "judgeUrl",
      flag: "judge-url",
      kind: "string",
      group: JUDGE,
      arg: "url",
      help: "e.g. http://127.0.0.1:8000 (or …/v1, or the full endpoint)",
    },
    {
      key: "judgeModel",
      flag: "judge-model",
      kind: "string",
      group: JUDGE,
      arg: "name",
      defaultText: "the first model of GET /v1/models",
      help: "the model asked",
    },
    {
      key: "judgeApiKey",
      flag: "judge-api-key",
      kind: "string",
      group: JUDGE,
      arg: "key",
      defaultText: "env JUDGE_API_KEY",
      help: "sent as Authorization: Bearer <key>",
    },
    {
      key: "rubric",
      flag: "rubric",
      kind: "string",
      group: JUDGE,
      arg: "file",
      defaultText: 'an UltraFeedback-style rubric asking for an overall 1–10 score as "Rating: N"',
      help: "the prompt, with {prompt} and {response}",
    },
    {
      key: "concurrency",
      flag: "concurrency",
      kind: "int",
      group: JUDGE,
      min: 1,
      arg: "n",
      default: 4,
      help: "requests in flight",
    },
    {
      key: "retries",
      flag: "retries",
      kind: "int",
      group: JUDGE,
      min: 0,
      arg: "n",
      default: 2,
      help: "more tries for an answer without a rating or a failed request",
    },
    {
      key: "judgeMaxTokens",
      flag: "judge-max-tokens",
      kind: "int",
      group: JUDGE,
      min: 1,
      arg: "n",
      default: 1024,
      help: "max_tokens of an answer",
    },
    {
      key: "judgeTimeout",
      flag: "judge-timeout",
      kind: "number",
      group: JUDGE,
      parse: parseSeconds,
      arg: "s",
      default: 300,
      defaultText: `300, at most ${Math.floor(MAX_TIMER_MS / 1000)}`,
      help: "seconds to wait for an answer",
    },
    {
      key: "judgeMaxBytes",
      flag: "judge-max-bytes",
      kind: "int",
      group: JUDGE,
      min: 1,
      arg: "n",
      default: DEFAULT_MAX_RESPONSE_BYTES,
      defaultText: `${DEFAULT_MAX_RESPONSE_BYTES}, 4 MiB`,
      help: "the largest answer read, in bytes; a larger one fails its response at once (not retried: the " +
        "same request would answer the same)",
    },
  ] satisfies OptionSpec<ScorerFlags>[],
);

/** What the scorer sections of a `--help` end with: how a judge's answer is read. */
export const SCORER_NOTES =
  `The score is the last "Rating: N" / "Score: N" in the judge's answer, else its last line when that is a
number ("7", "7/10"). N is a plain decimal ("7", "7.5"): "7abc", "8.5.2", "1e1" or "0x10" is no rating.`;

/** Which scorer, with its settings. */
export type ScorerSpec =
  | {
    kind: "reward-model";
    path: string;
    device: DeviceRequest;
    /** Which CUDA device (a rank under a launcher: its local rank's). */
    deviceId?: number;
    threads?: number;
    maxLength?: number;
    /** Variables for the reward model's chat template (`--chat-template-kwargs`). */
    templateKwargs?: Record<string, unknown>;
  }
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

const flagOf = (key: keyof ScorerFlags) => `--${SCORER_SPECS.find((s) => s.key === key)!.flag}`;

/**
 * The scorer the parsed flags `v` choose (exactly one of `--reward-model`, `--reward-fn`, `--judge-url`),
 * refusing settings of another scorer (all of them listed at once). `env` reads JUDGE_API_KEY; `readText`
 * reads `--rubric`. Throws {@link UsageError}.
 */
export function scorerSpecFrom(
  v: Partial<ScorerFlags>,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  readText: (path: string) => string = (p) => Deno.readTextFileSync(p),
): ScorerSpec {
  const chosen = (["rewardModel", "rewardFn", "judgeUrl"] as const).filter((k) => v[k] !== undefined);
  if (chosen.length !== 1) {
    throw new UsageError(
      chosen.length === 0
        ? "choose a scorer: --reward-model, --reward-fn or --judge-url"
        : `choose one scorer, not ${chosen.map(flagOf).join(" and ")}`,
    );
  }
  const errors: string[] = [];
  const only = (kind: keyof ScorerFlags, keys: (keyof ScorerFlags)[]) => {
    for (const k of keys) if (v[k] !== undefined) errors.push(`${flagOf(k)} applies to ${flagOf(kind)} only`);
  };
  const modelKeys: (keyof ScorerFlags)[] = ["device", "threads", "maxLength", "templateKwargs"];
  const fnKeys: (keyof ScorerFlags)[] = ["rewardTimeout"];
  const judgeKeys: (keyof ScorerFlags)[] = [
    "judgeModel",
    "judgeApiKey",
    "rubric",
    "concurrency",
    "retries",
    "judgeMaxTokens",
    "judgeTimeout",
    "judgeMaxBytes",
  ];
  const [kind] = chosen;
  if (kind !== "rewardModel") only("rewardModel", modelKeys);
  if (kind !== "rewardFn") only("rewardFn", fnKeys);
  if (kind !== "judgeUrl") only("judgeUrl", judgeKeys);
  let scorer: ScorerSpec;
  if (kind === "rewardModel") {
    scorer = {
      kind: "reward-model",
      path: v.rewardModel!,
      device: v.device ?? "cpu",
      threads: v.threads,
      maxLength: v.maxLength,
    };
    if (v.templateKwargs !== undefined) scorer.templateKwargs = v.templateKwargs;
  } else if (kind === "rewardFn") {
    scorer = { kind: "reward-fn", path: v.rewardFn!, timeoutS: v.rewardTimeout ?? DEFAULT_REWARD_TIMEOUT_S };
  } else {
    let rubric: string | undefined;
    if (v.rubric !== undefined) {
      try {
        rubric = readText(v.rubric);
      } catch (e) {
        errors.push(`--rubric ${v.rubric}: ${(e as Error).message}`);
      }
      for (const p of ["{prompt}", "{response}"]) {
        if (rubric !== undefined && !rubric.includes(p)) {
          errors.push(`--rubric ${v.rubric} has no ${p} placeholder`);
        }
      }
    }
    scorer = {
      kind: "judge",
      url: v.judgeUrl!,
      model: v.judgeModel,
      apiKey: v.judgeApiKey ?? env("JUDGE_API_KEY"),
      rubric,
      concurrency: v.concurrency ?? 4,
      retries: v.retries ?? 2,
      maxTokens: v.judgeMaxTokens ?? 1024,
      timeoutS: v.judgeTimeout ?? 300,
      maxResponseBytes: v.judgeMaxBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
    };
  }
  if (errors.length) throw new UsageError(errors);
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
      deviceId: s.deviceId,
      threads: s.threads,
      batch: a.batch,
      maxLength: s.maxLength,
      templateKwargs: s.templateKwargs,
      log,
      ...skip,
    });
  }
  if (s.kind === "reward-fn") {
    return await rewardFnScorer(s.path, { ...skip, timeoutS: s.timeoutS, signal: a.signal });
  }
  return await judgeScorer({ ...s, ...skip });
}
