/**
 * Request bodies above `--max-body-bytes` are refused with 413 before they are read into memory: Hono's
 * body-limit middleware (it checks Content-Length, and counts a chunked body as it arrives), answering in
 * OpenAI's error shape.
 * @module
 */
import type { MiddlewareHandler } from "hono";
import { bodyLimit as honoBodyLimit } from "hono/body-limit";
import { ApiError } from "../errors.ts";
import { errorResponse } from "./errors.ts";

/** 413 for bodies larger than `maxBytes`. */
export function bodyLimit(maxBytes: number): MiddlewareHandler {
  return honoBodyLimit({
    maxSize: maxBytes,
    onError: (c) =>
      errorResponse(
        c,
        new ApiError(
          413,
          `the request body is larger than ${maxBytes} bytes (--max-body-bytes)`,
          "invalid_request_error",
          null,
          "request_too_large",
        ),
      ),
  });
}
