/**
 * One line per request — method, path, status, milliseconds — so an operator sees traffic and failures
 * as they happen. Streaming responses are logged when their headers go out.
 *
 * What comes from the request is escaped ({@link escapeLogText}): the path is percent-decoded, so `%0a`,
 * `%1b[2J` or `%00` would otherwise forge log lines, drive the terminal, or break grep.
 * @module
 */
import type { MiddlewareHandler } from "hono";

/**
 * Characters that must not reach a log line raw: C0 controls (newline, ESC, NUL, …), DEL, C1 controls
 * (NEL among them), the Unicode line and paragraph separators, and the bidirectional overrides and
 * isolates (which make text display in another order than it reads); the backslash too, so that every
 * escape is unambiguous.
 */
// deno-lint-ignore no-control-regex
const UNSAFE = /[\x00-\x1f\x7f-\x9f\\\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * Request-controlled text as one line of printable text: each unsafe character written as `\xHH` (up to
 * U+00FF) or `\uHHHH`, a backslash as `\\`. Everything else is kept as it is.
 */
export function escapeLogText(text: string): string {
  return text.replace(UNSAFE, (ch) => {
    if (ch === "\\") return "\\\\";
    const code = ch.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/** Logs every request through `log`, the method and path escaped ({@link escapeLogText}). */
export function accessLog(log: (line: string) => void): MiddlewareHandler {
  return async (c, next) => {
    const t0 = performance.now();
    await next();
    const ms = (performance.now() - t0).toFixed(0);
    log(`${escapeLogText(c.req.method)} ${escapeLogText(c.req.path)} ${c.res.status} ${ms} ms`);
  };
}
