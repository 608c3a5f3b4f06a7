/**
 * Reading a request body under limits, before any of it is parsed:
 *
 * - JSON only: any other Content-Type is 415. A web page can send `text/plain` (or no type) across sites
 *   without asking the server first (a CORS "simple request"); `application/json` it cannot.
 * - Size: a declared Content-Length above `--max-body-bytes` is 413 before reading; a body without one is
 *   counted as it arrives and cut off at the limit.
 * - Time: the body must arrive within `--body-timeout` of the headers; a slow or half-sent body gets 408.
 * - Shutdown: a body still arriving when the server stops gets 503.
 * - A body that ends early (the client closed mid-way) is 400.
 *
 * Every refusal that leaves body bytes unread asks to close the connection.
 * @module
 */
import type { Context } from "hono";
import { ApiError, invalidRequest, shuttingDown } from "../errors.ts";

/** What a body is held to. */
export type BodyLimits = {
  maxBytes: number;
  timeoutMs: number;
  /** Aborted when the server starts shutting down. */
  shutdown: AbortSignal;
};

const CLOSE = { connection: "close" };

/** Whether a Content-Type header names JSON (`application/json`, or a `+json` type), parameters aside. */
export function isJsonType(header: string | undefined): boolean {
  const type = (header ?? "").split(";")[0].trim().toLowerCase();
  return type === "application/json" || /^application\/[\w.+-]+\+json$/.test(type);
}

function tooLarge(maxBytes: number): ApiError {
  return new ApiError(
    413,
    `the request body is larger than ${maxBytes} bytes (--max-body-bytes)`,
    "invalid_request_error",
    null,
    "request_too_large",
    CLOSE,
  );
}

/** The body as text, read under the limits (see the module documentation). */
export async function readJsonText(c: Context, o: BodyLimits): Promise<string> {
  const type = c.req.header("content-type");
  if (!isJsonType(type)) {
    throw new ApiError(
      415,
      `send the body as JSON with "Content-Type: application/json" (got ${
        type ? JSON.stringify(type.slice(0, 100)) : "none"
      })`,
      "invalid_request_error",
      null,
      "unsupported_media_type",
      CLOSE,
    );
  }
  const declared = c.req.header("content-length");
  if (declared !== undefined && Number(declared) > o.maxBytes) throw tooLarge(o.maxBytes);
  if (o.shutdown.aborted) throw shuttingDown();
  const body = c.req.raw.body;
  if (!body) return "";

  const reader = body.getReader();
  const stop = Promise.withResolvers<never>();
  stop.promise.catch(() => {}); // raced below; never left unhandled
  const timer = setTimeout(() => {
    stop.reject(
      new ApiError(
        408,
        `the request body did not arrive within ${o.timeoutMs / 1000} s (--body-timeout)`,
        "invalid_request_error",
        null,
        "request_timeout",
        CLOSE,
      ),
    );
  }, o.timeoutMs);
  const onShutdown = () => stop.reject(shuttingDown());
  o.shutdown.addEventListener("abort", onShutdown, { once: true });
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await Promise.race([reader.read(), stop.promise]);
      } catch (e) {
        if (e instanceof ApiError) throw e;
        throw new ApiError(
          400,
          `the request body ended before it was complete (${size} bytes arrived)`,
          "invalid_request_error",
          null,
          "incomplete_body",
          CLOSE,
        );
      }
      if (r.done) break;
      size += r.value.byteLength;
      if (size > o.maxBytes) throw tooLarge(o.maxBytes);
      chunks.push(r.value);
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  } finally {
    clearTimeout(timer);
    o.shutdown.removeEventListener("abort", onShutdown);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const ch of chunks) {
    bytes.set(ch, at);
    at += ch.byteLength;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw invalidRequest("the request body is not valid UTF-8", null, "invalid_json");
  }
}
