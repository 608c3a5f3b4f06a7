/**
 * Every failure as an OpenAI-style error response: the app's `onError` (thrown {@link ApiError}s keep their
 * status; Hono's HTTPExceptions keep theirs; anything else is a 500 that is logged) and its `notFound`
 * (unknown routes get a JSON 404 naming the method and path, not Hono's plain-text one). Nothing a request
 * does can take the server down: the error ends that request only.
 * @module
 */
import type { Context, ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { ApiError, type ApiErrorType, notFound, toApiError } from "../errors.ts";

/** Writes an {@link ApiError} as the response. */
export function errorResponse(c: Context, e: ApiError): Response {
  return c.json(e.toJSON(), e.status as 400);
}

/** The app's error handler; `log` receives server-side failures (5xx) with their stack. */
export function onError(log: (line: string) => void): ErrorHandler {
  return (err, c) => {
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if (err instanceof HTTPException) {
      const type: ApiErrorType = err.status >= 500 ? "server_error" : "invalid_request_error";
      e = new ApiError(err.status, err.message || `HTTP ${err.status}`, type);
    } else e = toApiError(err);
    if (e.status >= 500) log(`error in ${c.req.method} ${c.req.path}: ${err.stack ?? err.message}`);
    return errorResponse(c, e);
  };
}

/** Unknown routes: 404 with the OpenAI error shape. */
export const onNotFound: NotFoundHandler = (c) =>
  errorResponse(c, notFound(`no route ${c.req.method} ${c.req.path} (see GET /v1/models, /health, /)`));
