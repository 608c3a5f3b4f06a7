/**
 * GET /health — liveness for load balancers and scripts: answers at once from the HTTP thread (the model
 * runs in its worker, so a long generation never delays it), with the queue's state and the number of jobs
 * the model worker is running; 503 with the reason once the model worker has died.
 * @module
 */
import { Hono } from "hono";
import type { ServeContext } from "../context.ts";

/** The health route. */
export function healthRoute(ctx: ServeContext): Hono {
  const app = new Hono();
  const started = performance.now();
  app.get("/health", (c) => {
    const failure = ctx.engine.failure();
    return c.json({
      status: failure ? "error" : "ok",
      ...(failure ? { error: failure } : {}),
      model: ctx.source.id,
      uptime_s: Math.round((performance.now() - started) / 1000),
      queue: ctx.queue.stats(),
      model_jobs: ctx.engine.activeJobs(),
    }, failure ? 503 : 200);
  });
  return app;
}
