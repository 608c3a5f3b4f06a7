/**
 * GET / — the dashboard: the run's training curves (uPlot) and the log-prob inspector (static/index.html,
 * static/dashboard.js); GET /static/{file} — its script, stylesheet and uPlot's, served from memory.
 * @module
 */
import { Hono } from "hono";
import type { Asset, Assets } from "../assets.ts";
import { notFound } from "../errors.ts";

function send(asset: Asset): Response {
  return new Response(asset.body, {
    headers: { "content-type": asset.type, "cache-control": "no-cache" },
  });
}

/** The dashboard routes. */
export function dashboardRoute(assets: Assets): Hono {
  const app = new Hono();
  app.get("/", () => send(assets.get("index.html")!));
  app.get("/static/:file", (c) => {
    const file = c.req.param("file");
    const asset = file === "index.html" ? undefined : assets.get(file);
    if (!asset) throw notFound(`no static file "${file}"`);
    return send(asset);
  });
  return app;
}
