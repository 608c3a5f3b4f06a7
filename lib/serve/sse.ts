/**
 * Server-sent events as OpenAI streams them: `data: <json>\n\n` per chunk, then `data: [DONE]`. The stream
 * is cancelled when the client goes away — Deno cancels the response body and aborts the request's signal,
 * and either one aborts the producer's signal — so a disconnected client stops its generation.
 * @module
 */
import { toApiError } from "./errors.ts";

/** Writes one event. Calls after the client left are dropped. */
export type SendEvent = (data: unknown) => void;

/**
 * A streaming response fed by `produce`. When `produce` throws, the error is sent as an event in OpenAI's
 * error shape (the SDKs raise it) before `[DONE]`; `scrub` cleans a server error's message first.
 */
export function sseResponse(
  requestSignal: AbortSignal,
  produce: (send: SendEvent, signal: AbortSignal) => Promise<void>,
  scrub: (text: string) => string = (t) => t,
): Response {
  const abort = new AbortController();
  const onRequestAbort = () => abort.abort(new DOMException("the client disconnected", "AbortError"));
  requestSignal.addEventListener("abort", onRequestAbort, { once: true });
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const write = (text: string) => {
        if (abort.signal.aborted) return;
        try {
          controller.enqueue(encoder.encode(text));
        } catch { /* the stream was cancelled */ }
      };
      const send: SendEvent = (data) => write(`data: ${JSON.stringify(data)}\n\n`);
      (async () => {
        try {
          await produce(send, abort.signal);
        } catch (e) {
          const body = toApiError(e).toJSON();
          if (body.error.type === "server_error") body.error.message = scrub(body.error.message);
          send(body);
        } finally {
          requestSignal.removeEventListener("abort", onRequestAbort);
          write("data: [DONE]\n\n");
          if (!abort.signal.aborted) controller.close();
        }
      })();
    },
    cancel() {
      abort.abort(new DOMException("the client disconnected", "AbortError"));
    },
  });
  return new Response(body, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    },
  });
}
