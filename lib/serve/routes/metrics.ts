/**
 * GET /v1/runs/current/metrics — the loaded run's training log (metrics.jsonl, TRL's names, one record per
 * step; non-finite values as null) with its summary and configuration: what the dashboard plots. Read on
 * each request, so a run that is still training shows its latest steps. Serving a bare model folder gives
 * `run: null` and no records. Folders (the run's, and absolute paths in its config and summary) appear as
 * paths.ts shows them.
 * @module
 */
import { Hono } from "hono";
import { readMetrics } from "../../train/metrics_log.ts";
import { runPaths } from "../../train/run_folder.ts";
import type { ServeContext } from "../context.ts";

async function readJsonOrNull(path: string): Promise<unknown> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof SyntaxError) return null;
    throw e;
  }
}

/** The metrics route. */
export function metricsRoute(ctx: ServeContext): Hono {
  const app = new Hono();
  app.get("/v1/runs/current/metrics", async (c) => {
    const { runDir } = ctx.source;
    if (!runDir) {
      return c.json({
        object: "run.metrics",
        run: null,
        config: null,
        summary: null,
        metrics: [],
        records: [],
      });
    }
    const paths = runPaths(runDir);
    const records = await readMetrics(paths.metrics);
    const names = new Set<string>();
    for (const r of records) for (const k of Object.keys(r)) if (k !== "step" && k !== "epoch") names.add(k);
    return c.json({
      object: "run.metrics",
      run: {
        id: ctx.source.id,
        dir: ctx.paths.show(runDir),
        loss: ctx.source.loss,
        beta: ctx.source.beta,
        alpha: ctx.source.alpha,
      },
      config: ctx.paths.redact(ctx.source.trainConfig),
      summary: ctx.paths.redact(await readJsonOrNull(paths.summary)),
      metrics: [...names].sort(),
      records,
    });
  });
  return app;
}
