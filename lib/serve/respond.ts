/**
 * The part of a generation request that both OpenAI routes share once the request is valid: wait for a slot
 * in the admission queue (429 when full), run the generation, and answer either with one JSON object or as
 * a stream of chunks. The slot is released only when the model worker has finished the job — a client that
 * disconnects stops its generation at the next decode step, and the slot waits for the worker to say so —
 * so the queue counts jobs in the worker, and disconnecting clients cannot pile work up behind
 * `--max-concurrent`. The routes only say how their chunks and responses look ({@link CompletionFormat}).
 * @module
 */
import type { Context } from "hono";
import type { ServeContext } from "./context.ts";
import { clientClosed, shuttingDown } from "./errors.ts";
import {
  type ChoiceEvent,
  type FinishReason,
  type GenerationRequest,
  type GenerationResult,
  runGeneration,
} from "./generation.ts";
import type { Release } from "./queue.ts";
import { sseResponse } from "./sse.ts";

/** How one route's responses look. */
export type CompletionFormat = {
  /** Chunks sent before any token (chat: each choice's role). */
  start(): unknown[];
  /** The chunk for one choice event. */
  event(e: ChoiceEvent): unknown;
  /** The last chunk, with usage (`stream_options.include_usage`). */
  usage(u: GenerationResult["usage"]): unknown;
  /** The whole response, when not streaming. */
  complete(r: GenerationResult): unknown;
};

/** What to generate and how to answer. */
export type RespondOptions = {
  request: Omit<GenerationRequest, "signal" | "onEvent">;
  stream: boolean;
  includeUsage: boolean;
  format: CompletionFormat;
};

/** OpenAI's finish reasons only ("abort" is never delivered: the client is gone). */
export function openAiFinish(r: FinishReason): "stop" | "length" {
  return r === "length" ? "length" : "stop";
}

/** A short random id with a prefix (`chatcmpl-…`, `cmpl-…`). */
export function responseId(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

/**
 * Waits for a slot in the admission queue: 429 when it is full; 499 (nginx's "client closed request", never
 * seen by anyone) when the client leaves while waiting; 503 once the server is shutting down.
 */
export async function acquireSlot(ctx: ServeContext, signal: AbortSignal): Promise<Release> {
  if (ctx.shutdown.aborted) throw shuttingDown(); // tokenized while the server began to stop
  try {
    return await ctx.queue.acquire(signal);
  } catch (e) {
    if (signal.aborted) throw clientClosed();
    throw e;
  }
}

/** Queues, generates and answers (see the module documentation). */
export async function respondWithGeneration(
  c: Context,
  ctx: ServeContext,
  o: RespondOptions,
): Promise<Response> {
  const requestSignal = c.req.raw.signal;
  const release = await acquireSlot(ctx, requestSignal);

  if (!o.stream) {
    const abort = new AbortController();
    const onAbort = () => abort.abort();
    requestSignal.addEventListener("abort", onAbort, { once: true });
    try {
      const result = await runGeneration(ctx.engine, ctx.codec, { ...o.request, signal: abort.signal });
      return c.json(o.format.complete(result));
    } finally {
      requestSignal.removeEventListener("abort", onAbort);
      release();
    }
  }

  return sseResponse(requestSignal, async (send, signal) => {
    try {
      for (const chunk of o.format.start()) send(chunk);
      // a disconnect aborts `signal`: the worker ends the job at its next step, and only then does
      // runGeneration return and the slot go to the next request
      const result = await runGeneration(ctx.engine, ctx.codec, {
        ...o.request,
        signal,
        onEvent: (e) => send(o.format.event(e)),
      });
      if (o.includeUsage) send(o.format.usage(result.usage));
    } finally {
      release();
    }
  }, ctx.paths.scrub);
}
