/**
 * Errors in OpenAI's shape: `{error: {message, type, param, code}}`. Clients written for the OpenAI API
 * (the official SDKs, LangChain, curl scripts) read these fields, so every failure the server reports,
 * from a malformed body to a full queue, uses this one shape and a status code that says who is at fault.
 * @module
 */

/** OpenAI's error categories (`error.type`). */
export type ApiErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "rate_limit_error"
  | "server_error";

/** The JSON body of an error response. */
export type ApiErrorBody = {
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null };
};

/**
 * An error that becomes an HTTP response: thrown anywhere in a route or middleware, rendered by the error
 * middleware (middleware/errors.ts) with its status and OpenAI-style body.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ApiErrorType = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (`Connection: close` when the request body was left unread). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** The response body. */
  toJSON(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400: the request is malformed or asks for something the server cannot do; `param` names the field. */
export function invalidRequest(
  message: string,
  param: string | null = null,
  code: string | null = null,
): ApiError {
  return new ApiError(400, message, "invalid_request_error", param, code);
}

/** 404: an unknown route or model. */
export function notFound(message: string, code = "not_found"): ApiError {
  return new ApiError(404, message, "not_found_error", null, code);
}

/** An error for a failure inside the server (the model worker died, ONNX Runtime failed). */
export function serverError(message: string, code = "internal_error"): ApiError {
  return new ApiError(500, message, "server_error", null, code);
}

/**
 * 499 (nginx's "client closed request"): the client left while its request waited. Nobody receives it; it
 * keeps the access log honest.
 */
export function clientClosed(): ApiError {
  return new ApiError(
    499,
    "the client closed the request while it waited",
    "invalid_request_error",
    null,
    "client_closed",
  );
}

/**
 * 503 for work the server drops because it is shutting down (queued requests, running generations): the
 * client may retry elsewhere. Expected, so it is logged without a stack.
 */
export function shuttingDown(): ApiError {
  return new ApiError(
    503,
    "the server is shutting down; retry later",
    "server_error",
    null,
    "server_shutting_down",
    {
      connection: "close",
    },
  );
}

/** Renders any thrown value as an {@link ApiError} (unknown errors become 500s that keep their message). */
export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return serverError(message);
}
