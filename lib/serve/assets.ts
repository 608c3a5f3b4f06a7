/**
 * The dashboard's static files, loaded into memory once at start-up: uPlot's script and stylesheet from the
 * installed npm package (node_modules/uplot/dist — no CDN, so the page works offline and behind firewalls)
 * and the page's own HTML, script and stylesheet from lib/serve/static/.
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { exists } from "../files.ts";

/** A file the app serves: its bytes and content type. */
export type Asset = { body: Uint8Array<ArrayBuffer>; type: string };

/** The dashboard's files by URL path under /static/ (and "index.html" for /). */
export type Assets = Map<string, Asset>;

const UPLOT_FILES: [string, string, string][] = [
  ["uplot.min.js", "uPlot.iife.min.js", "text/javascript; charset=utf-8"],
  ["uplot.min.css", "uPlot.min.css", "text/css; charset=utf-8"],
];

const OWN_FILES: [string, string][] = [
  ["index.html", "text/html; charset=utf-8"],
  ["dashboard.js", "text/javascript; charset=utf-8"],
  ["dashboard.css", "text/css; charset=utf-8"],
];

/** The installed uplot package's dist folder: searched upward from this module, then from the cwd. */
export async function findUplotDist(): Promise<string> {
  const tried: string[] = [];
  for (let start of [dirname(fileURLToPath(import.meta.url)), Deno.cwd()]) {
    for (;;) {
      const dist = join(start, "node_modules", "uplot", "dist");
      tried.push(dist);
      if (await exists(join(dist, "uPlot.iife.min.js"))) return dist;
      const up = dirname(start);
      if (up === start) break;
      start = up;
    }
  }
  throw new Error(
    `uPlot is not installed (looked in ${
      tried.slice(0, 3).join(", ")
    }, …): run \`deno install\` in the project`,
  );
}

/** Reads every dashboard file. */
export async function loadAssets(): Promise<Assets> {
  const assets: Assets = new Map();
  const dist = await findUplotDist();
  for (const [name, file, type] of UPLOT_FILES) {
    assets.set(name, { body: await Deno.readFile(join(dist, file)), type });
  }
  const own = new URL("./static/", import.meta.url);
  for (const [name, type] of OWN_FILES) {
    assets.set(name, { body: await Deno.readFile(new URL(name, own)), type });
  }
  return assets;
}
