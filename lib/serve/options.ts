/**
 * The server's options: the CLI flags of `deno task serve` parsed into {@link ServeOptions}, the limits
 * that protect it (body size and deadline, prompt characters and tokens, completion tokens, concurrency and
 * queue length) with defaults that suit one model on one machine, and who may call it (API key, Host names).
 * @module
 */
import { parseArgs } from "node:util";
import { type DeviceRequest, parseDevice } from "../runtime/device.ts";

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

/** The CLI's help text. */
export const SERVE_USAGE =
  `Serve an aligned model with an OpenAI-compatible API, log-prob inspection and a dashboard.

Usage: deno task serve [options]

  --model <folder>         a run folder (runs/<name>-<stamp>) or an exported model folder
                           (default: the latest demo run in runs/)
  --reference <folder>     reference model for /v1/logprobs (default: what the run recorded)
  --port <n>               port (default 8000; 0 = any free port)
  --host <address>         address to listen on (default 127.0.0.1)
  --device cpu|cuda|auto   where the model runs (default cpu)
  --threads <n>            ONNX Runtime threads per session (default: cores − 1)
  --max-concurrent <n>     jobs in the model worker at once (default ${DEFAULT_LIMITS.maxConcurrent})
  --max-queue <n>          requests waiting for a slot; beyond it 429 (default ${DEFAULT_LIMITS.maxQueue})
  --max-body-bytes <n>     largest request body; beyond it 413 (default ${DEFAULT_LIMITS.maxBodyBytes})
  --body-timeout <s>       seconds to send a body once the headers are in; beyond it 408 (default ${BODY_S})
  --max-prompt-tokens <n>  longest prompt (default: the model's context length − 1)
  --max-prompt-chars <n>   longest prompt in characters, refused before tokenizing (default: 32 × tokens)
  --max-tokens-limit <n>   largest max_tokens a request may ask for (default ${DEFAULT_LIMITS.maxTokensLimit})
  --api-key <key>          require "Authorization: Bearer <key>" on /v1/* (default: env NCA_API_KEY)
  --allowed-hosts <a,b>    Host names accepted besides localhost, 127.0.0.1, [::1] and --host ("*": any)
  --expose-paths           show absolute paths in responses (default: relative to the cwd, or base names)
  --runs <folder>          where to look for the default demo run (default runs)
  --quiet                  no access log
  -h, --help               this text
`;

function integer(flag: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\s*\d+\s*$/.test(v) || !Number.isSafeInteger(n) || n < min) {
    throw new RangeError(`--${flag} must be a whole number ≥ ${min}, got "${v}"`);
  }
  return n;
}

function seconds(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n <= 0) {
    throw new RangeError(`--${flag} must be a number of seconds > 0, got "${v}"`);
  }
  return Math.round(n * 1000);
}

/** `--allowed-hosts a,b:8000`: lower-cased names, empty entries dropped. */
function hostList(v: string | undefined): string[] {
  return (v ?? "").split(",").map((h) => h.trim().toLowerCase()).filter((h) => h.length > 0);
}

/**
 * Parses the CLI's arguments; `null` when help was asked for. Throws naming the bad flag. `env` reads the
 * environment (NCA_API_KEY when `--api-key` is absent).
 */
export function parseServeArgs(
  args: string[],
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): ServeOptions | null {
  const { values: v, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      model: { type: "string" },
      reference: { type: "string" },
      port: { type: "string" },
      host: { type: "string" },
      device: { type: "string" },
      threads: { type: "string" },
      "max-concurrent": { type: "string" },
      "max-queue": { type: "string" },
      "max-body-bytes": { type: "string" },
      "body-timeout": { type: "string" },
      "max-prompt-tokens": { type: "string" },
      "max-prompt-chars": { type: "string" },
      "max-tokens-limit": { type: "string" },
      "api-key": { type: "string" },
      "allowed-hosts": { type: "string" },
      "expose-paths": { type: "boolean" },
      runs: { type: "string" },
      quiet: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (v.help) return null;
  if (positionals.length) {
    throw new RangeError(`unexpected argument "${positionals[0]}" (pass the model with --model)`);
  }
  const port = integer("port", v.port, 0) ?? 8000;
  if (port > 65535) throw new RangeError(`--port must be at most 65535, got ${port}`);
  const apiKey = (v["api-key"] ?? env("NCA_API_KEY"))?.trim();
  if (v["api-key"] !== undefined && !apiKey) throw new RangeError("--api-key must not be empty");
  return {
    model: v.model,
    reference: v.reference,
    port,
    host: v.host ?? "127.0.0.1",
    device: parseDevice(v.device ?? "cpu"),
    threads: integer("threads", v.threads, 1),
    limits: {
      maxConcurrent: integer("max-concurrent", v["max-concurrent"], 1) ?? DEFAULT_LIMITS.maxConcurrent,
      maxQueue: integer("max-queue", v["max-queue"], 0) ?? DEFAULT_LIMITS.maxQueue,
      maxBodyBytes: integer("max-body-bytes", v["max-body-bytes"], 1) ?? DEFAULT_LIMITS.maxBodyBytes,
      bodyTimeoutMs: seconds("body-timeout", v["body-timeout"]) ?? DEFAULT_LIMITS.bodyTimeoutMs,
      maxPromptTokens: integer("max-prompt-tokens", v["max-prompt-tokens"], 1),
      maxPromptChars: integer("max-prompt-chars", v["max-prompt-chars"], 1),
      maxTokensLimit: integer("max-tokens-limit", v["max-tokens-limit"], 1) ?? DEFAULT_LIMITS.maxTokensLimit,
    },
    runsDir: v.runs ?? "runs",
    quiet: v.quiet ?? false,
    ...(apiKey ? { apiKey } : {}),
    allowedHosts: hostList(v["allowed-hosts"]),
    exposePaths: v["expose-paths"] ?? false,
  };
}
