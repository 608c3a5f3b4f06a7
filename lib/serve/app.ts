/**
 * The Hono app: middleware (access log, errors in OpenAI's shape, the Host check, 503 once shutting down,
 * the API key on /v1/*) and the routes, each built from the {@link ServeContext}. `app.fetch` is what
 * `Deno.serve` runs; tests may call `app.request()` without a socket. Request bodies are read by each
 * POST route under the body limits (middleware/read_body.ts).
 * @module
 */
import { Hono } from "hono";
import type { Assets } from "./assets.ts";
import type { ServeContext } from "./context.ts";
import { shuttingDown } from "./errors.ts";
import { accessLog } from "./middleware/access_log.ts";
import { apiKeyCheck } from "./middleware/api_key.ts";
import { onError, onNotFound } from "./middleware/errors.ts";
import { hostCheck } from "./middleware/host_check.ts";
import { chatCompletionsRoute } from "./routes/chat_completions.ts";
import { completionsRoute } from "./routes/completions.ts";
import { dashboardRoute } from "./routes/dashboard.ts";
import { healthRoute } from "./routes/health.ts";
import { logprobsRoute } from "./routes/logprobs.ts";
import { metricsRoute } from "./routes/metrics.ts";
import { modelsRoute } from "./routes/models.ts";

/** Builds the app for a loaded model. */
export function createApp(ctx: ServeContext, assets: Assets): Hono {
  const app = new Hono();
  app.onError(onError(ctx.log, ctx.paths.scrub));
  app.notFound(onNotFound);
  app.use(accessLog(ctx.log));
  app.use(hostCheck(ctx.hosts));
  app.use("/v1/*", async (_c, next) => {
    if (ctx.shutdown.aborted) throw shuttingDown();
    await next();
  });
  if (ctx.apiKey !== null) app.use("/v1/*", apiKeyCheck(ctx.apiKey));
  app.route("/", healthRoute(ctx));
  app.route("/", modelsRoute(ctx));
  app.route("/", chatCompletionsRoute(ctx));
  app.route("/", completionsRoute(ctx));
  app.route("/", logprobsRoute(ctx));
  app.route("/", metricsRoute(ctx));
  app.route("/", dashboardRoute(assets));
  return app;
}
