/**
 * POST /v1/completions — OpenAI's legacy completions API: a plain-text prompt (or several), continued as it
 * is, without a chat template. `logprobs: k` returns the legacy shape (tokens, token_logprobs,
 * top_logprobs as {token: logprob} maps, text_offset). Streams `text_completion` chunks.
 * @module
 */
import { Hono } from "hono";
import type { ServeContext } from "../context.ts";
import type { LogprobEntry } from "../generation.ts";
import { jsonBody } from "../middleware/json_body.ts";
import {
  bodyLimitsOf,
  checkModel,
  checkPromptChars,
  checkPromptLength,
  checkUnsupported,
  resolveMaxTokens,
  sharedSettings,
} from "../request_checks.ts";
import { type CompletionFormat, openAiFinish, respondWithGeneration, responseId } from "../respond.ts";
import { completionRequestSchema, MAX_N } from "../schemas.ts";
import { invalidRequest } from "../errors.ts";

/** Most choices (prompts × n) one request may ask for. */
export const MAX_CHOICES = 4 * MAX_N;

/** The legacy log-probs object of a completion choice. */
export type LegacyLogprobs = {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[] | null;
  text_offset: number[];
};

/** Log-prob entries in the legacy shape; offsets count from `offset` (the text already sent). */
export function legacyLogprobs(entries: LogprobEntry[], withTop: boolean, offset = 0): LegacyLogprobs {
  const text_offset: number[] = [];
  let at = offset;
  for (const e of entries) {
    text_offset.push(at);
    at += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: withTop
      ? entries.map((e) => Object.fromEntries(e.top.map((t) => [t.token, t.logprob])))
      : null,
    text_offset,
  };
}

/** The completions route. */
export function completionsRoute(ctx: ServeContext): Hono {
  const app = new Hono();
  app.post("/v1/completions", jsonBody(completionRequestSchema, bodyLimitsOf(ctx)), async (c) => {
    const body = c.get("body");
    checkModel(ctx, body.model);
    checkUnsupported(body);
    const texts = typeof body.prompt === "string" ? [body.prompt] : body.prompt;
    const n = body.n ?? 1;
    // the counts and sizes first: tokenizing is the expensive part
    if (texts.length * n > MAX_CHOICES) {
      throw invalidRequest(
        `${texts.length} prompts × n = ${n} asks for ${
          texts.length * n
        } choices; at most ${MAX_CHOICES} per request`,
        "prompt",
      );
    }
    const param = (i: number) => texts.length > 1 ? `prompt[${i}]` : "prompt";
    texts.forEach((t, i) => checkPromptChars(ctx, t.length, param(i)));
    const prompts = await ctx.tokens.texts(texts, c.req.raw.signal);
    prompts.forEach((p, i) => checkPromptLength(ctx, p.length, param(i)));
    const longest = Math.max(...prompts.map((p) => p.length));
    const maxTokens = resolveMaxTokens(ctx, longest, body.max_tokens, "max_tokens");
    const logprobs = body.logprobs !== undefined && body.logprobs !== null;
    const k = body.logprobs ?? 0;
    const id = responseId("cmpl");
    const created = Math.floor(Date.now() / 1000);
    const model = ctx.source.id;
    const head = { id, object: "text_completion", created, model, system_fingerprint: null };
    const sentChars = new Map<number, number>();

    const format: CompletionFormat = {
      start: () => [],
      event: (e) => {
        if (e.kind === "finish") {
          return {
            ...head,
            choices: [{ index: e.index, text: "", logprobs: null, finish_reason: openAiFinish(e.reason) }],
          };
        }
        const offset = sentChars.get(e.index) ?? 0;
        sentChars.set(e.index, offset + e.text.length);
        return {
          ...head,
          choices: [{
            index: e.index,
            text: e.text,
            logprobs: logprobs ? legacyLogprobs(e.logprobs, k > 0, offset) : null,
            finish_reason: null,
          }],
        };
      },
      usage: (usage) => ({ ...head, choices: [], usage }),
      complete: (r) => ({
        ...head,
        choices: r.choices.map((ch) => ({
          index: ch.index,
          text: ch.text,
          logprobs: logprobs ? legacyLogprobs(ch.logprobs, k > 0) : null,
          finish_reason: openAiFinish(ch.finishReason),
        })),
        usage: r.usage,
      }),
    };

    const { sampling, ...answer } = sharedSettings(body, ctx.defaults);
    return respondWithGeneration(c, ctx, {
      request: {
        // choice i·n + j is prompt i's j-th sample, as OpenAI orders them
        prompts: prompts.flatMap((p) => Array.from({ length: n }, () => p)),
        promptTokens: prompts.reduce((a, p) => a + p.length, 0),
        maxTokens,
        ...sampling,
        logprobs,
        topLogprobs: k,
        continuation: true,
      },
      ...answer,
      format,
    });
  });
  return app;
}
