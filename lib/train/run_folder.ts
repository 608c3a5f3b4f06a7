/**
 * The folder of one training run: `runs/<name>-<YYYYmmdd-HHMMSS>/`, holding everything a user needs to
 * inspect, resume, compare or serve the run. One place defines the layout so the trainer, the charts, the
 * server and the tests agree on file names:
 *
 * ```text
 * runs/nca-20240601-153000/
 *   config.json       the resolved options (what `--resume` re-reads)
 *   metrics.jsonl     one JSON object per logged step
 *   summary.json      final values, best eval loss, means over the last steps
 *   reference.json    how the reference model was made (and precomputed log-probs, when cached)
 *   charts/           loss.svg, rewards.svg, logps_chosen.svg
 *   checkpoints/      checkpoint-<step>/ folders and the `latest` pointer
 *   policy/           the trained model (HF folder, or adapters)
 * ```
 *
 * @module
 */

import { join } from "node:path";
import { RUN_POLICY_DIR } from "../model/open.ts";
import { exists, writeJsonAtomic } from "../files.ts";

/** Re-exported: run-folder code writes its JSON files with it. */
export { writeJsonAtomic };

/** Paths of a run's files, all inside `dir`. */
export type RunPaths = {
  dir: string;
  config: string;
  metrics: string;
  summary: string;
  reference: string;
  /** Folder of the SVG charts. */
  charts: string;
  /** Folder of the checkpoints (see `checkpoint.ts`). */
  checkpoints: string;
  /** Folder of the trained model. */
  policy: string;
};

/** The layout of a run folder (nothing is created). */
export function runPaths(dir: string): RunPaths {
  return {
    dir,
    config: join(dir, "config.json"),
    metrics: join(dir, "metrics.jsonl"),
    summary: join(dir, "summary.json"),
    reference: join(dir, "reference.json"),
    charts: join(dir, "charts"),
    checkpoints: join(dir, "checkpoints"),
    policy: join(dir, RUN_POLICY_DIR),
  };
}

const pad = (n: number, width = 2) => String(n).padStart(width, "0");

/** `YYYYmmdd-HHMMSS` in local time, the stamp of run folder names (sorts chronologically). */
export function timestamp(date: Date): string {
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}-${pad(date.getHours())}${
    pad(date.getMinutes())
  }${pad(date.getSeconds())}`;
}

/**
 * A name safe as a folder name on every OS: anything outside `[A-Za-z0-9._-]` becomes `-`, runs of `-` are
 * collapsed, and an empty result becomes `run`.
 */
export function sanitizeRunName(name: string): string {
  const s = name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/-{2,}/g, "-").replace(/^[-.]+|-+$/g, "");
  return s === "" ? "run" : s;
}

/**
 * Create a fresh run folder `<base>/<name>-<YYYYmmdd-HHMMSS>/` and return its paths. Two runs started in the
 * same second get `-2`, `-3`, … suffixes: creation is exclusive (`mkdir` fails if the folder exists), so
 * two processes never share a folder.
 */
export async function createRunFolder(
  base = "runs",
  name = "run",
  now: Date = new Date(),
): Promise<RunPaths> {
  await Deno.mkdir(base, { recursive: true });
  const stem = `${sanitizeRunName(name)}-${timestamp(now)}`;
  for (let i = 1; i < 10_000; i++) {
    const dir = join(base, i === 1 ? stem : `${stem}-${i}`);
    try {
      await Deno.mkdir(dir);
      return runPaths(dir);
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
  }
  throw new Error(`could not create a unique run folder for ${stem} in ${base}`);
}

const STAMP = /-(\d{8}-\d{6})(?:-(\d+))?$/;

/** The sort key of a run folder: its name's stamp (and suffix), else its modification time. */
async function runKey(dir: string, name: string): Promise<[string, number, number]> {
  const m = STAMP.exec(name);
  const mtime = (await Deno.stat(dir)).mtime?.getTime() ?? 0;
  return m ? [m[1], Number(m[2] ?? 1), mtime] : ["", 0, mtime];
}

/**
 * The newest finished-or-saved run in `base` (one with `summary.json` or `policy/`), optionally only runs
 * whose folder name starts with `prefix`; `undefined` when there is none. "Newest" goes by the stamp in the
 * folder name, so copying runs around does not reorder them; folders without a stamp go by mtime and count
 * as older than stamped ones.
 */
export async function findLatestRun(base = "runs", prefix?: string): Promise<string | undefined> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(base));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  let best: { dir: string; key: [string, number, number] } | undefined;
  for (const entry of entries) {
    if (!entry.isDirectory || (prefix !== undefined && !entry.name.startsWith(prefix))) continue;
    const paths = runPaths(join(base, entry.name));
    if (!(await exists(paths.summary)) && !(await exists(paths.policy))) continue;
    const key = await runKey(paths.dir, entry.name);
    if (!best || compareKeys(key, best.key) > 0) best = { dir: paths.dir, key };
  }
  return best?.dir;
}

function compareKeys(a: [string, number, number], b: [string, number, number]): number {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  return a[1] - b[1] || a[2] - b[2];
}
