/**
 * Checks every generation request passes before it may queue for the model: the model name, parameters this
 * server cannot honour, the prompt's characters (before tokenizing: the cheap bound) and the token limits
 * (prompt length, `max_tokens`, and both together against the model's context length). Each failure is a
 * 400/404 that names the parameter, as OpenAI's do. Also what both generation routes read alike from a
 * request: the sampling settings and how to answer.
 * @module
 */
import { RESERVED_TEMPLATE_KWARGS } from "../data/chat.ts";
import { invalidRequest, notFound } from "./errors.ts";
import type { ServeContext } from "./context.ts";
import type { SamplingDefaults } from "../model/sampling.ts";
import type { GenerationRequest } from "./generation.ts";
import type { BodyLimits } from "./middleware/read_body.ts";
import type { SamplingRequest } from "./schemas.ts";
import { TokenizeError } from "./tokens.ts";

/** What a POST body is held to: size, deadline, shutdown. */
export function bodyLimitsOf(ctx: ServeContext): BodyLimits {
  return { maxBytes: ctx.limits.maxBodyBytes, timeoutMs: ctx.limits.bodyTimeoutMs, shutdown: ctx.shutdown };
}

/**
 * A request's chat template variables over the served run's (what it trained with, so prompts render as
 * in training): the request's win, key by key. The variables the server sets itself are refused.
 */
export function templateKwargsOf(
  ctx: ServeContext,
  asked: Record<string, unknown> | null | undefined,
): Record<string, unknown> | undefined {
  const reserved = Object.keys(asked ?? {}).filter((k) => RESERVED_TEMPLATE_KWARGS.includes(k));
  if (reserved.length) {
    throw invalidRequest(
      `chat_template_kwargs may not set ${reserved.join(", ")} (the server sets them)`,
      "chat_template_kwargs",
      "invalid_value",
    );
  }
  const run = ctx.source.templateKwargs;
  return run || asked ? { ...run, ...asked } : undefined;
}

/**
 * 400 for a prompt (or candidate) of more characters than `--max-prompt-chars`, before any tokenizing: a
 * megabyte of text costs the tokenizer half a second, and no tokenizer makes that few tokens of it.
 */
export function checkPromptChars(ctx: ServeContext, chars: number, param: string): void {
  const limit = ctx.limits.maxPromptChars;
  if (chars > limit) {
    throw invalidRequest(
      `${param} is ${chars} characters long; this server accepts at most ${limit} (--max-prompt-chars)`,
      param,
      "context_length_exceeded",
    );
  }
}

/** A chat template that could not render the messages is the request's fault: 400; other failures pass. */
export function templateFailure(e: unknown, param: string): unknown {
  if (e instanceof TokenizeError && e.template) {
    return invalidRequest(`the chat template could not render the ${param}: ${e.message}`, param);
  }
  return e;
}

/** 404 unless `model` is absent or the served model's id. */
export function checkModel(ctx: ServeContext, model: string | undefined): void {
  if (model !== undefined && model !== ctx.source.id) {
    throw notFound(
      `the model "${model}" does not exist; this server serves "${ctx.source.id}" (GET /v1/models)`,
      "model_not_found",
    );
  }
}

/** Fields OpenAI defines that this server implements only at their neutral values. */
type Unsupported = {
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  tools?: unknown[] | null;
  response_format?: { type: string } | null;
  echo?: boolean | null;
  suffix?: string | null;
  best_of?: number | null;
};

/** 400 for parameters set to something this server cannot do (rather than ignoring them silently). */
export function checkUnsupported(body: Unsupported): void {
  const refuse = (param: string, what: string) => {
    throw invalidRequest(`${param} ${what} is not supported by this server`, param, "unsupported_parameter");
  };
  if (body.frequency_penalty) refuse("frequency_penalty", "≠ 0");
  if (body.presence_penalty) refuse("presence_penalty", "≠ 0");
  if (body.logit_bias && Object.keys(body.logit_bias).length) refuse("logit_bias", "(non-empty)");
  if (body.tools && body.tools.length) refuse("tools", "(tool calling)");
  if (body.response_format && body.response_format.type !== "text") {
    refuse("response_format", `of type "${body.response_format.type}"`);
  }
  if (body.echo) refuse("echo", "= true");
  if (body.suffix) refuse("suffix", "(insertion)");
  if (body.best_of !== undefined && body.best_of !== null && body.best_of !== 1) refuse("best_of", "≠ 1");
}

/** 400 when a prompt is empty, longer than `--max-prompt-tokens`, or leaves no room to generate. */
export function checkPromptLength(ctx: ServeContext, tokens: number, param: string): void {
  if (tokens === 0) {
    throw invalidRequest("the prompt is empty: it has no tokens to continue", param, "invalid_value");
  }
  const limit = ctx.limits.maxPromptTokens;
  if (tokens > limit) {
    throw invalidRequest(
      `the prompt is ${tokens} tokens long; this server accepts at most ${limit} (--max-prompt-tokens)`,
      param,
      "context_length_exceeded",
    );
  }
  if (tokens >= ctx.contextLength) {
    throw invalidRequest(
      `the prompt is ${tokens} tokens long; the model's context is ${ctx.contextLength} tokens and a ` +
        "completion needs at least one",
      param,
      "context_length_exceeded",
    );
  }
}

/**
 * The completion budget: the request's `max_tokens` (400 above `--max-tokens-limit`, or when prompt +
 * completion would not fit the context), else as many as fit, up to the limit.
 */
export function resolveMaxTokens(
  ctx: ServeContext,
  promptTokens: number,
  requested: number | null | undefined,
  param: string,
): number {
  const room = ctx.contextLength - promptTokens;
  if (requested === undefined || requested === null) return Math.min(room, ctx.limits.maxTokensLimit);
  if (requested > ctx.limits.maxTokensLimit) {
    throw invalidRequest(
      `${param} is ${requested}; this server allows at most ${ctx.limits.maxTokensLimit} (--max-tokens-limit)`,
      param,
      "invalid_value",
    );
  }
  if (requested > room) {
    throw invalidRequest(
      `the prompt (${promptTokens} tokens) plus ${param} (${requested}) exceeds the model's context of ` +
        `${ctx.contextLength} tokens; ask for at most ${room}`,
      param,
      "context_length_exceeded",
    );
  }
  return requested;
}

/** `stop` as a list. */
export function stopList(stop: string | string[] | null | undefined): string[] {
  if (stop === undefined || stop === null) return [];
  return typeof stop === "string" ? [stop] : stop;
}

/**
 * The sampling settings of a chat or completions request (the model's `defaults` where absent, then
 * OpenAI's), and how to answer.
 */
export function sharedSettings(body: SamplingRequest, defaults: SamplingDefaults = {}): {
  sampling: Pick<
    GenerationRequest,
    "temperature" | "topP" | "topK" | "repetitionPenalty" | "seed" | "stop" | "ignoreEos"
  >;
  stream: boolean;
  includeUsage: boolean;
} {
  const topK = body.top_k ?? defaults.topK ?? 0;
  return {
    sampling: {
      temperature: body.temperature ?? defaults.temperature ?? 1,
      topP: body.top_p ?? defaults.topP ?? 1,
      topK: topK < 0 ? 0 : topK,
      repetitionPenalty: body.repetition_penalty ?? defaults.repetitionPenalty ?? 1,
      seed: body.seed ?? undefined,
      stop: stopList(body.stop),
      ignoreEos: body.ignore_eos ?? false,
    },
    stream: body.stream ?? false,
    includeUsage: body.stream_options?.include_usage ?? false,
  };
}
