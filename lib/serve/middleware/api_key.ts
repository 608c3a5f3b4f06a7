/**
 * `--api-key`: the API (/v1/*) answers only requests with `Authorization: Bearer <key>`, as OpenAI and
 * vLLM do, so the official clients work by passing `apiKey`. Anything else gets 401 in OpenAI's shape
 * (`code: "invalid_api_key"`). /health, the dashboard page and its static files stay open: they carry no
 * data, and the page asks for the key itself (static/dashboard.js).
 * @module
 */
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors.ts";

const encoder = new TextEncoder();

/** Compares in time that depends on the length only, so timing does not reveal how much of a key matched. */
function sameKey(given: string, want: Uint8Array): boolean {
  const g = encoder.encode(given);
  if (g.length !== want.length) return false;
  let diff = 0;
  for (let i = 0; i < g.length; i++) diff |= g[i] ^ want[i];
  return diff === 0;
}

function unauthorized(message: string): ApiError {
  return new ApiError(401, message, "invalid_request_error", null, "invalid_api_key", {
    "www-authenticate": 'Bearer realm="nca-align"',
  });
}

/** 401 unless the request carries `Authorization: Bearer <key>`. */
export function apiKeyCheck(key: string): MiddlewareHandler {
  const want = encoder.encode(key);
  return async (c, next) => {
    const header = c.req.header("authorization");
    const m = header === undefined ? null : /^\s*Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) {
      throw unauthorized(
        'no API key given: send it as "Authorization: Bearer <key>" (this server was started with --api-key)',
      );
    }
    if (!sameKey(m[1], want)) throw unauthorized("incorrect API key provided");
    await next();
  };
}
