/**
 * The server's options: the CLI flags of `deno task serve` (a table read by lib/cli's engine) parsed into
 * {@link ServeOptions}, the limits that protect it (body size and deadline, prompt characters and tokens,
 * completion tokens, concurrency and queue length) with defaults that suit one model on one machine, and who
 * may call it (API key, Host names).
 * @module
 */
import { defaultsOf, parseArgv } from "../cli/options.ts";
import { helpText } from "../cli/help.ts";
import { deviceOption, type OptionSpec, UsageError } from "../cli/spec.ts";
import type { DeviceRequest } from "../runtime/device.ts";

/** The limits a request is held to. */
export type ServeLimits = {
  /** Jobs in the model worker at once (a request keeps its slot until the worker has stopped its job). */
  maxConcurrent: number;
  /** Requests waiting for a slot; more get 429. */
  maxQueue: number;
  /** Largest request body in bytes; larger get 413 (checked while the body arrives). */
  maxBodyBytes: number;
  /** Milliseconds a request may take to send its body once its headers are in; slower ones get 408. */
  bodyTimeoutMs: number;
  /** Longest prompt in tokens (default: the model's context length − 1). */
  maxPromptTokens?: number;
  /**
   * Longest prompt (and candidate) in characters, refused before tokenizing (default: 32 × the prompt
   * token limit, more characters than any tokenizer packs into that many tokens of ordinary text).
   */
  maxPromptChars?: number;
  /** Largest `max_tokens` a request may ask for. */
  maxTokensLimit: number;
};

/** Default limits. */
export const DEFAULT_LIMITS: ServeLimits = {
  maxConcurrent: 2,
  maxQueue: 16,
  maxBodyBytes: 1 << 20,
  bodyTimeoutMs: 30_000,
  maxTokensLimit: 4096,
};

/** Everything `startServer` needs. */
export type ServeOptions = {
  /** A run folder or exported model folder (default: the latest demo run in `runsDir`). */
  model?: string;
  /** The reference model folder (default: what the run recorded). */
  reference?: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  host: string;
  device: DeviceRequest;
  /** ONNX Runtime threads per session (default: all cores but one, so the HTTP thread keeps one). */
  threads?: number;
  limits: ServeLimits;
  /** Where runs are (for the default model). */
  runsDir: string;
  /** No access log. */
  quiet: boolean;
  /** Required as `Authorization: Bearer <key>` on /v1/* (`--api-key`, else env NCA_API_KEY); none: open. */
  apiKey?: string;
  /**
   * Host header names accepted besides the bound address and loopback names (`--allowed-hosts`); "*" accepts
   * any. A name without a port matches every port.
   */
  allowedHosts: string[];
  /** Show absolute paths of the machine in responses (default: names relative to the cwd, or base names). */
  exposePaths: boolean;
};

const BODY_S = DEFAULT_LIMITS.bodyTimeoutMs / 1000;

/** The flags' values, only those given. */
type ServeFlags = {
  model?: string;
  reference?: string;
  port?: number;
  host?: string;
  device?: DeviceRequest;
  threads?: number;
  maxConcurrent?: number;
  maxQueue?: number;
  maxBodyBytes?: number;
  /** Seconds. */
  bodyTimeout?: number;
  maxPromptTokens?: number;
  maxPromptChars?: number;
  maxTokensLimit?: number;
  apiKey?: string;
  allowedHosts?: string[];
  exposePaths?: boolean;
  runs?: string;
  quiet?: boolean;
};

const MODEL = "Model";
const SERVER = "Server";
const LIMITS = "Limits";
const ACCESS = "Access";

/** `--allowed-hosts a,b:8000`: lower-cased names, empty entries dropped. */
function hostList(raw: unknown): string[] {
  return String(raw).split(",").map((h) => h.trim().toLowerCase()).filter((h) => h.length > 0);
}

/** Seconds > 0 (`--body-timeout`), throwing naming the flag. */
function seconds(raw: unknown, flag: string): number {
  const n = typeof raw === "string" && raw.trim() !== "" ? Number(raw) : typeof raw === "number" ? raw : NaN;
  if (!Number.isFinite(n) || n <= 0) {
    throw new RangeError(`${flag} must be a number of seconds > 0, got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** Every option of `deno task serve`. */
export const SERVE_SPECS: readonly OptionSpec<ServeFlags>[] = Object.freeze(
  [
    {
      key: "model",
      flag: "model",
      kind: "string",
      group: MODEL,
      arg: "folder",
      defaultText: "the latest demo run in --runs",
      help: "a run folder (runs/<name>-<stamp>) or an exported model folder",
    },
    {
      key: "reference",
      flag: "reference",
      kind: "string",
      group: MODEL,
      arg: "folder",
      defaultText: "what the run recorded",
      help: "reference model for /v1/logprobs",
    },
    deviceOption({ group: MODEL, default: "cpu", help: "where the model runs" }),
    {
      key: "threads",
      flag: "threads",
      kind: "int",
      group: MODEL,
      min: 1,
      arg: "n",
      defaultText: "cores − 1",
      help: "ONNX Runtime threads per session",
    },
    {
      key: "runs",
      flag: "runs",
      kind: "string",
      group: MODEL,
      arg: "folder",
      default: "runs",
      help: "where to look for the default demo run",
    },
    {
      key: "port",
      flag: "port",
      kind: "int",
      group: SERVER,
      min: 0,
      check: (v) => (v <= 65535 ? undefined : "must be at most 65535"),
      arg: "n",
      default: 8000,
      help: "port; 0: any free port",
    },
    {
      key: "host",
      flag: "host",
      kind: "string",
      group: SERVER,
      arg: "address",
      default: "127.0.0.1",
      help: "address to listen on",
    },
    { key: "quiet", flag: "quiet", kind: "boolean", group: SERVER, help: "no access log" },
    {
      key: "maxConcurrent",
      flag: "max-concurrent",
      kind: "int",
      group: LIMITS,
      min: 1,
      arg: "n",
      default: DEFAULT_LIMITS.maxConcurrent,
      help: "jobs in the model worker at once",
    },
    {
      key: "maxQueue",
      flag: "max-queue",
      kind: "int",
      group: LIMITS,
      min: 0,
      arg: "n",
      default: DEFAULT_LIMITS.maxQueue,
      help: "requests waiting for a slot; beyond it 429",
    },
    {
      key: "maxBodyBytes",
      flag: "max-body-bytes",
      kind: "int",
      group: LIMITS,
      min: 1,
      arg: "n",
      default: DEFAULT_LIMITS.maxBodyBytes,
      help: "largest request body; beyond it 413",
    },
    {
      key: "bodyTimeout",
      flag: "body-timeout",
      kind: "number",
      group: LIMITS,
      parse: seconds,
      arg: "s",
      default: BODY_S,
      help: "seconds to send a body once the headers are in; beyond it 408",
    },
    {
      key: "maxPromptTokens",
      flag: "max-prompt-tokens",
      kind: "int",
      group: LIMITS,
      min: 1,
      arg: "n",
      defaultText: "the model's context length − 1",
      help: "longest prompt",
    },
    {
      key: "maxPromptChars",
      flag: "max-prompt-chars",
      kind: "int",
      group: LIMITS,
      min: 1,
      arg: "n",
      defaultText: "32 × tokens",
      help: "longest prompt in characters, refused before tokenizing",
    },
    {
      key: "maxTokensLimit",
      flag: "max-tokens-limit",
      kind: "int",
      group: LIMITS,
      min: 1,
      arg: "n",
      default: DEFAULT_LIMITS.maxTokensLimit,
      help: "largest max_tokens a request may ask for",
    },
    {
      key: "apiKey",
      flag: "api-key",
      kind: "string",
      group: ACCESS,
      arg: "key",
      defaultText: "env NCA_API_KEY",
      help: 'require "Authorization: Bearer <key>" on /v1/*',
    },
    {
      key: "allowedHosts",
      flag: "allowed-hosts",
      kind: "list",
      group: ACCESS,
      parse: hostList,
      arg: "a,b",
      defaultText: "none",
      help: 'Host names accepted besides localhost, 127.0.0.1, [::1] and --host ("*": any)',
    },
    {
      key: "exposePaths",
      flag: "expose-paths",
      kind: "boolean",
      group: ACCESS,
      help: "show absolute paths in responses (default: relative to the cwd, or base names)",
    },
  ] satisfies OptionSpec<ServeFlags>[],
);

/** The CLI's help text. */
export const SERVE_USAGE = helpText(SERVE_SPECS, {
  usage: "deno task serve [options]",
  intro: "Serve an aligned model with an OpenAI-compatible API, log-prob inspection and a dashboard.",
});

/**
 * Parses the CLI's arguments; `null` when help was asked for. Throws {@link UsageError} listing every
 * problem, each naming its flag. `env` reads the environment (NCA_API_KEY when `--api-key` is absent).
 */
export function parseServeArgs(
  args: string[],
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): ServeOptions | null {
  const { values: v, help, errors } = parseArgv(SERVE_SPECS, args, {
    positionalHint: "(pass the model with --model)",
  });
  if (help) return null;
  const apiKey = (v.apiKey ?? env("NCA_API_KEY"))?.trim();
  if (v.apiKey !== undefined && !apiKey) errors.push("--api-key must not be empty");
  if (errors.length) throw new UsageError(errors);
  const d = defaultsOf(SERVE_SPECS);
  return {
    model: v.model,
    reference: v.reference,
    port: v.port ?? d.port!,
    host: v.host ?? d.host!,
    device: v.device ?? d.device!,
    threads: v.threads,
    limits: {
      maxConcurrent: v.maxConcurrent ?? DEFAULT_LIMITS.maxConcurrent,
      maxQueue: v.maxQueue ?? DEFAULT_LIMITS.maxQueue,
      maxBodyBytes: v.maxBodyBytes ?? DEFAULT_LIMITS.maxBodyBytes,
      bodyTimeoutMs: v.bodyTimeout !== undefined
        ? Math.round(v.bodyTimeout * 1000)
        : DEFAULT_LIMITS.bodyTimeoutMs,
      maxPromptTokens: v.maxPromptTokens,
      maxPromptChars: v.maxPromptChars,
      maxTokensLimit: v.maxTokensLimit ?? DEFAULT_LIMITS.maxTokensLimit,
    },
    runsDir: v.runs ?? d.runs!,
    quiet: v.quiet ?? false,
    ...(apiKey ? { apiKey } : {}),
    allowedHosts: v.allowedHosts ?? [],
    exposePaths: v.exposePaths ?? false,
  };
}
