/**
 * The server's options: the CLI flags of `deno task serve` parsed into {@link ServeOptions}, and the limits
 * that protect it (body size, prompt and completion tokens, concurrency and queue length) with defaults
 * that suit one model on one machine.
 * @module
 */
import { parseArgs } from "node:util";
import { type DeviceRequest, parseDevice } from "../runtime/device.ts";

/** The limits a request is held to. */
export type ServeLimits = {
  /** Requests running in the model worker at once. */
  maxConcurrent: number;
  /** Requests waiting for a slot; more get 429. */
  maxQueue: number;
  /** Largest request body in bytes; larger get 413. */
  maxBodyBytes: number;
  /** Longest prompt in tokens (default: the model's context length − 1). */
  maxPromptTokens?: number;
  /** Largest `max_tokens` a request may ask for. */
  maxTokensLimit: number;
};

/** Default limits. */
export const DEFAULT_LIMITS: ServeLimits = {
  maxConcurrent: 2,
  maxQueue: 16,
  maxBodyBytes: 1 << 20,
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
};

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
  --max-concurrent <n>     requests running at once (default ${DEFAULT_LIMITS.maxConcurrent})
  --max-queue <n>          requests waiting for a slot; beyond it 429 (default ${DEFAULT_LIMITS.maxQueue})
  --max-body-bytes <n>     largest request body; beyond it 413 (default ${DEFAULT_LIMITS.maxBodyBytes})
  --max-prompt-tokens <n>  longest prompt (default: the model's context length − 1)
  --max-tokens-limit <n>   largest max_tokens a request may ask for (default ${DEFAULT_LIMITS.maxTokensLimit})
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

/** Parses the CLI's arguments; `null` when help was asked for. Throws naming the bad flag. */
export function parseServeArgs(args: string[]): ServeOptions | null {
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
      "max-prompt-tokens": { type: "string" },
      "max-tokens-limit": { type: "string" },
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
      maxPromptTokens: integer("max-prompt-tokens", v["max-prompt-tokens"], 1),
      maxTokensLimit: integer("max-tokens-limit", v["max-tokens-limit"], 1) ?? DEFAULT_LIMITS.maxTokensLimit,
    },
    runsDir: v.runs ?? "runs",
    quiet: v.quiet ?? false,
  };
}
