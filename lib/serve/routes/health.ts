/**
 * GET /health — liveness for load balancers and scripts: answers at once from the HTTP thread (the model
 * and the tokenizer run in workers, so neither a long generation nor a megabyte of text delays it), with
 * the queue's state, the jobs the model worker has not finished (`model_jobs`: never more than
 * `maxConcurrent`, since a request keeps its slot until the worker has stopped its job) and the tokenizing
 * jobs; 503 with the reason once the model worker has died or the server is shutting down. Open without
 * the API key (it tells nothing about the model's data).
 * @module
 */
import { Hono } from "hono";
import type { ServeContext } from "../context.ts";

/** The health route. */
export function healthRoute(ctx: ServeContext): Hono {
  const app = new Hono();
  const started = performance.now();
  app.get("/health", (c) => {
    const failure = ctx.shutdown.aborted ? "the server is shutting down" : ctx.engine.failure();
    return c.json({
      status: failure ? "error" : "ok",
      ...(failure ? { error: ctx.paths.scrub(failure) } : {}),
      model: ctx.source.id,
      uptime_s: Math.round((performance.now() - started) / 1000),
      queue: ctx.queue.stats(),
      model_jobs: ctx.engine.activeJobs(),
      tokenizer: { where: ctx.tokens.where, pending: ctx.tokens.pending() },
    }, failure ? 503 : 200);
  });
  return app;
}
