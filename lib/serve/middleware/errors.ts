/**
 * Every failure as an OpenAI-style error response: the app's `onError` (thrown {@link ApiError}s keep their
 * status and headers; Hono's HTTPExceptions keep theirs; anything else is a 500) and its `notFound`
 * (unknown routes get a JSON 404 naming the method and path, not Hono's plain-text one). Nothing a request
 * does can take the server down: the error ends that request only. Only unexpected errors are logged with
 * their stack; expected 5xx (a failed model run, 503 at shutdown) get one line. Server-error messages are
 * scrubbed of absolute paths before they leave (paths.ts).
 * @module
 */
import type { Context, ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { ApiError, type ApiErrorType, notFound, toApiError } from "../errors.ts";
import { escapeLogText } from "./access_log.ts";

/** Writes an {@link ApiError} as the response. */
export function errorResponse(c: Context, e: ApiError): Response {
  return c.json(e.toJSON(), e.status as 400, e.headers);
}

/**
 * The app's error handler; `log` receives server-side failures (5xx: the stack of unexpected ones), and
 * `scrub` cleans the message of a 5xx before it is sent.
 */
export function onError(
  log: (line: string) => void,
  scrub: (text: string) => string = (t) => t,
): ErrorHandler {
  return (err, c) => {
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if (err instanceof HTTPException) {
      const type: ApiErrorType = err.status >= 500 ? "server_error" : "invalid_request_error";
      e = new ApiError(err.status, err.message || `HTTP ${err.status}`, type);
    } else e = toApiError(err);
    // the request's method and path are the client's text: escaped, so a log line stays one line
    const where = escapeLogText(`${c.req.method} ${c.req.path}`);
    if (!(err instanceof ApiError) && !(err instanceof HTTPException)) {
      log(`error in ${where}: ${err.stack ?? err}`);
    } else if (e.status >= 500) log(`${e.status} in ${where}: ${escapeLogText(e.message)}`);
    if (e.status >= 500) e = new ApiError(e.status, scrub(e.message), e.type, e.param, e.code, e.headers);
    return errorResponse(c, e);
  };
}

/** Unknown routes: 404 with the OpenAI error shape. */
export const onNotFound: NotFoundHandler = (c) =>
  errorResponse(c, notFound(`no route ${c.req.method} ${c.req.path} (see GET /v1/models, /health, /)`));
