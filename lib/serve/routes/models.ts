/**
 * GET /v1/models and /v1/models/{id} — the one served model, in OpenAI's list shape, plus what a client
 * may want to know about it: its context length, its run and reference (folder names, see paths.ts), and
 * the run's β and α.
 * @module
 */
import { Hono } from "hono";
import type { ServeContext } from "../context.ts";
import { notFound } from "../errors.ts";

/** The served model as OpenAI's model object (with extra fields OpenAI clients ignore). */
export function modelObject(ctx: ServeContext) {
  return {
    id: ctx.source.id,
    object: "model" as const,
    created: ctx.createdAt,
    owned_by: "nca-align",
    root: ctx.paths.show(ctx.source.modelDir),
    max_model_len: ctx.contextLength,
    run: ctx.paths.showOrNull(ctx.source.runDir),
    reference: ctx.paths.showOrNull(ctx.source.referenceDir),
    loss: ctx.source.loss,
    beta: ctx.source.beta,
    alpha: ctx.source.alpha,
  };
}

/** The models routes. */
export function modelsRoute(ctx: ServeContext): Hono {
  const app = new Hono();
  app.get("/v1/models", (c) => c.json({ object: "list", data: [modelObject(ctx)] }));
  app.get("/v1/models/:id{.+}", (c) => {
    const id = c.req.param("id");
    if (id !== ctx.source.id) throw notFound(`the model "${id}" does not exist`, "model_not_found");
    return c.json(modelObject(ctx));
  });
  return app;
}
