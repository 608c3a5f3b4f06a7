/**
 * The Hono app: middleware (access log, body limit, errors in OpenAI's shape) and the routes, each built
 * from the {@link ServeContext}. `app.fetch` is what `Deno.serve` runs; tests may call `app.request()`
 * without a socket.
 * @module
 */
import { Hono } from "hono";
import type { Assets } from "./assets.ts";
import type { ServeContext } from "./context.ts";
import { accessLog } from "./middleware/access_log.ts";
import { bodyLimit } from "./middleware/body_limit.ts";
import { onError, onNotFound } from "./middleware/errors.ts";
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
  app.onError(onError(ctx.log));
  app.notFound(onNotFound);
  app.use(accessLog(ctx.log));
  app.use("/v1/*", bodyLimit(ctx.limits.maxBodyBytes));
  app.route("/", healthRoute(ctx));
  app.route("/", modelsRoute(ctx));
  app.route("/", chatCompletionsRoute(ctx));
  app.route("/", completionsRoute(ctx));
  app.route("/", logprobsRoute(ctx));
  app.route("/", metricsRoute(ctx));
  app.route("/", dashboardRoute(assets));
  return app;
}
