/**
 * POST /v1/chat/completions — OpenAI's chat API over the served model: the messages go through the model's
 * own chat template (the one training used), and the answer comes back whole or, with `stream: true`, as
 * `chat.completion.chunk` events. Supports n, max_tokens / max_completion_tokens, temperature, top_p,
 * seed, stop, logprobs / top_logprobs, stream_options.include_usage, and vLLM's ignore_eos, top_k,
 * repetition_penalty and chat_template_kwargs (variables for the template, e.g. `enable_thinking`). Sampling
 * parameters a request leaves out take the model's generation_config.json defaults.
 * @module
 */
import { Hono } from "hono";
import type { Message } from "../../data/types.ts";
import type { ServeContext } from "../context.ts";
import { invalidRequest } from "../errors.ts";
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
  templateFailure,
  templateKwargsOf,
} from "../request_checks.ts";
import { type CompletionFormat, openAiFinish, respondWithGeneration, responseId } from "../respond.ts";
import { type ChatMessage, chatRequestSchema } from "../schemas.ts";

/** OpenAI's per-token log-prob object. */
export type ChatTokenLogprob = {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
};

const encoder = new TextEncoder();
const bytesOf = (s: string) => [...encoder.encode(s)];

/** Log-prob entries in the chat API's shape. */
export function chatLogprobs(entries: LogprobEntry[]): ChatTokenLogprob[] {
  return entries.map((e) => ({
    token: e.token,
    logprob: e.logprob,
    bytes: bytesOf(e.token),
    top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: bytesOf(t.token) })),
  }));
}

/** A request message as the chat template sees it (text parts joined; "developer" is a system message). */
export function toTemplateMessage(m: ChatMessage): Message {
  const content = m.content === null
    ? ""
    : typeof m.content === "string"
    ? m.content
    : m.content.map((p) => p.text).join("");
  return { role: m.role === "developer" ? "system" : m.role, content };
}

/** The chat completions route. */
export function chatCompletionsRoute(ctx: ServeContext): Hono {
  const app = new Hono();
  app.post("/v1/chat/completions", jsonBody(chatRequestSchema, bodyLimitsOf(ctx)), async (c) => {
    const body = c.get("body");
    checkModel(ctx, body.model);
    checkUnsupported(body);
    if (body.top_logprobs && !body.logprobs) {
      throw invalidRequest("top_logprobs needs logprobs: true", "top_logprobs", "invalid_value");
    }
    const templateKwargs = templateKwargsOf(ctx, body.chat_template_kwargs);
    const messages = body.messages.map(toTemplateMessage);
    checkPromptChars(ctx, messages.reduce((a, m) => a + m.content.length, 0), "messages");
    let promptIds: number[];
    try {
      promptIds = (await ctx.tokens.chat({ messages, templateKwargs }, c.req.raw.signal)).prompt;
    } catch (e) {
      throw templateFailure(e, "messages");
    }
    checkPromptLength(ctx, promptIds.length, "messages");
    const param = body.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
    const maxTokens = resolveMaxTokens(
      ctx,
      promptIds.length,
      body.max_completion_tokens ?? body.max_tokens,
      param,
    );
    const n = body.n ?? 1;
    const logprobs = body.logprobs ?? false;
    const id = responseId("chatcmpl");
    const created = Math.floor(Date.now() / 1000);
    const model = ctx.source.id;
    const head = { id, object: "chat.completion.chunk", created, model, system_fingerprint: null };

    const format: CompletionFormat = {
      start: () =>
        Array.from({ length: n }, (_, index) => ({
          ...head,
          choices: [{
            index,
            delta: { role: "assistant", content: "" },
            logprobs: null,
            finish_reason: null,
          }],
        })),
      event: (e) =>
        e.kind === "delta"
          ? {
            ...head,
            choices: [{
              index: e.index,
              delta: { content: e.text },
              logprobs: logprobs ? { content: chatLogprobs(e.logprobs), refusal: null } : null,
              finish_reason: null,
            }],
          }
          : {
            ...head,
            choices: [{ index: e.index, delta: {}, logprobs: null, finish_reason: openAiFinish(e.reason) }],
          },
      usage: (usage) => ({ ...head, choices: [], usage }),
      complete: (r) => ({
        id,
        object: "chat.completion",
        created,
        model,
        system_fingerprint: null,
        choices: r.choices.map((ch) => ({
          index: ch.index,
          message: { role: "assistant", content: ch.text, refusal: null },
          logprobs: logprobs ? { content: chatLogprobs(ch.logprobs), refusal: null } : null,
          finish_reason: openAiFinish(ch.finishReason),
        })),
        usage: r.usage,
      }),
    };

    const { sampling, ...answer } = sharedSettings(body, ctx.defaults);
    return respondWithGeneration(c, ctx, {
      request: {
        prompts: Array.from({ length: n }, () => promptIds),
        promptTokens: promptIds.length,
        maxTokens,
        ...sampling,
        logprobs,
        topLogprobs: body.top_logprobs ?? 0,
        continuation: false,
      },
      ...answer,
      format,
    });
  });
  return app;
}
