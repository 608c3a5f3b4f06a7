/**
 * One line per request — method, path, status, milliseconds — so an operator sees traffic and failures
 * as they happen. Streaming responses are logged when their headers go out.
 * @module
 */
import type { MiddlewareHandler } from "hono";

/** Logs every request through `log`. */
export function accessLog(log: (line: string) => void): MiddlewareHandler {
  return async (c, next) => {
    const t0 = performance.now();
    await next();
    log(`${c.req.method} ${c.req.path} ${c.res.status} ${(performance.now() - t0).toFixed(0)} ms`);
  };
}
