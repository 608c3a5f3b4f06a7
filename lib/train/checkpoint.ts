/**
 * Crash-safe checkpoints of a training run, so a killed or crashed run resumes where it left off instead
 * of starting over.
 *
 * Layout inside a run's `checkpoints/` folder:
 *
 * ```text
 * checkpoints/
 *   latest                      "checkpoint-1200\n" (for people and other tools)
 *   checkpoint-1000/
 *     tensors.safetensors       trainable weights and optimizer state, fp32, under the parameters' own
 *                               names and shapes: `<param>`, `<param>.exp_avg`, `<param>.exp_avg_sq`
 *     state.json                {format, version, savedAt, files: {name: {bytes, sha256}}, scalars:
 *                               {step, loss_scale, …}, meta: {step, epoch, dataPosition, schedule, …}}
 *   checkpoint-1200/
 * ```
 *
 * Every file's SHA-256 is recorded and verified on load, so damage that keeps the size (a bad sector, a
 * stray write) is caught: the loader falls back to the newest intact checkpoint and says so, and when
 * checkpoints exist but none is intact it stops with an error instead of starting over (and deletes
 * nothing).
 *
 * A checkpoint is written into a hidden temporary folder, every file fsynced, then renamed into place in
 * one step, so `checkpoint-<step>/` either is complete or does not exist; `latest` is replaced the same way
 * (temp file + rename). Leftover temporary folders from a crash are ignored by the loader and removed by the
 * next save. The loader also checks each candidate (state file, recorded size, safetensors header), so a
 * checkpoint damaged after the fact is skipped with a warning and the previous one is used.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { readSafetensors, writeSafetensors } from "../model/safetensors.ts";
import type { ScheduleConfig } from "./schedule.ts";
import { withPath, writeTextAtomic } from "../files.ts";

/** The `format` field of `state.json`. */
export const CHECKPOINT_FORMAT = "alignment-checkpoint";
/** The version of the layout; bumped when it changes incompatibly (version 1, without checksums, still loads). */
export const CHECKPOINT_VERSION = 2;
/** Name of the pointer file naming the newest checkpoint folder. */
export const LATEST_FILE = "latest";
/** File names inside a checkpoint folder. */
export const TENSORS_FILE = "tensors.safetensors";
export const STATE_FILE = "state.json";

const TMP_PREFIX = ".tmp-";
const NAME = /^checkpoint-(\d+)$/;

/** A tensor to save: a flat array (saved with shape `[length]`) or an array with its shape. */
export type CheckpointTensor = Float32Array | { shape: readonly number[]; data: Float32Array };

/** Where training stood when the checkpoint was taken: everything beyond the tensors needed to resume. */
export type CheckpointMeta = {
  /** Optimizer steps completed. */
  step: number;
  /** Fractional epoch. */
  epoch: number;
  /** Position in the data order (e.g. examples consumed in the current epoch). */
  dataPosition?: number;
  /** State of the run's PRNG(s), as JSON. */
  rngState?: unknown;
  /** The learning-rate schedule, so a resume with other settings can be noticed. */
  schedule?: ScheduleConfig;
  /** Hash of the run's config (see {@link hashConfig}); resuming under another config is refused. */
  configHash?: string;
  [key: string]: unknown;
};

/**
 * What {@link saveCheckpoint} stores: named tensors, scalar state (the optimizer's step, the loss scale)
 * and where training stood.
 */
export type CheckpointData = {
  tensors: Record<string, CheckpointTensor>;
  scalars?: Record<string, number>;
  meta: CheckpointMeta;
};

/** A checkpoint read back. */
export type LoadedCheckpoint = {
  /** The checkpoint folder. */
  path: string;
  step: number;
  meta: CheckpointMeta;
  tensors: Record<string, Float32Array>;
  shapes: Record<string, number[]>;
  /** Scalar state saved beside the tensors (empty for version-1 checkpoints). */
  scalars: Record<string, number>;
  /** The layout version the checkpoint was written with. */
  version: number;
};

/** Options for {@link saveCheckpoint}. */
export type SaveCheckpointOptions = {
  /** How many checkpoints to keep, newest first (default 2, at least 1). */
  keep?: number;
};

/** Options for {@link loadLatestCheckpoint}. */
export type LoadCheckpointOptions = {
  /** Where warnings about skipped checkpoints go (default `console.warn`). */
  warn?: (message: string) => void;
  /** When given, a checkpoint whose `meta.configHash` differs is an error (not skipped): wrong run. */
  configHash?: string;
};

/** A file of a checkpoint as `state.json` records it. */
type FileRecord = { bytes: number; sha256: string };

/** The shape of `state.json`. */
type StateFile = {
  format: string;
  version: number;
  savedAt: string;
  tensorsFile: string;
  tensorsBytes: number;
  tensorCount: number;
  /** Version 2: every data file's size and SHA-256. */
  files?: Record<string, FileRecord>;
  scalars?: Record<string, number>;
  meta: CheckpointMeta;
};

/** SHA-256 of a file, read in 8 MiB pieces (checkpoints of full fine-tuning run to gigabytes). */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using f = await Deno.open(path, { read: true });
  const buf = new Uint8Array(8 << 20);
  for (;;) {
    const n = await f.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
  }
  return hash.digest("hex");
}

/** A checkpoint folder found on disk (not yet validated). */
export type CheckpointEntry = { step: number; name: string; path: string };

/** The checkpoint folders in `dir` sorted by step, oldest first; temporary and unrelated entries ignored. */
export async function listCheckpoints(dir: string): Promise<CheckpointEntry[]> {
  const out: CheckpointEntry[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const m = NAME.exec(e.name);
      if (e.isDirectory && m) out.push({ step: Number(m[1]), name: e.name, path: join(dir, e.name) });
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return out.sort((a, b) => a.step - b.step);
}

/**
 * A stable hash of a JSON-able config (keys sorted at every level, SHA-256, first 16 hex digits), for
 * `meta.configHash`.
 */
export async function hashConfig(config: unknown): Promise<string> {
  const canonical = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(canonical) : v !== null && typeof v === "object"
      ? Object.fromEntries(
        Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
      )
      : v;
  const bytes = new TextEncoder().encode(JSON.stringify(canonical(config)));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function checkMeta(meta: CheckpointMeta): void {
  if (!Number.isSafeInteger(meta.step) || meta.step < 0) {
    throw new RangeError(`checkpoint meta.step must be an integer ≥ 0, got ${meta.step}`);
  }
  if (typeof meta.epoch !== "number") throw new TypeError(`checkpoint meta.epoch must be a number`);
}

/** fsync a folder so a rename inside it survives a power cut; best effort (not every OS allows it). */
async function syncDir(path: string): Promise<void> {
  try {
    using f = await Deno.open(path, { read: true });
    await f.sync();
  } catch {
    // Windows and some filesystems refuse to open or sync folders; the rename is still atomic.
  }
}

async function removeQuietly(path: string): Promise<void> {
  await Deno.remove(path, { recursive: true }).catch(() => {});
}

/**
 * Save a checkpoint as `<dir>/checkpoint-<step>/` atomically, point `latest` at it, and prune: checkpoints
 * with a higher step (an abandoned timeline after resuming from an earlier one) and all but the newest
 * `keep` are deleted, as are temporary folders left by crashed saves. Returns the checkpoint folder.
 *
 * One run folder has one writer; two processes saving into the same `dir` at once are not supported.
 */
export async function saveCheckpoint(
  dir: string,
  data: CheckpointData,
  options: SaveCheckpointOptions = {},
): Promise<string> {
  const keep = options.keep ?? 2;
  if (!Number.isSafeInteger(keep) || keep < 1) {
    throw new RangeError(`keep must be an integer ≥ 1, got ${keep}`);
  }
  checkMeta(data.meta);
  const step = data.meta.step;
  await Deno.mkdir(dir, { recursive: true });

  // Temporary folders can only be leftovers of crashed saves: this process is the run's only writer.
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(TMP_PREFIX)) await removeQuietly(join(dir, e.name));
  }

  const name = `checkpoint-${step}`;
  const tmp = join(dir, `${TMP_PREFIX}${name}-${crypto.randomUUID().slice(0, 8)}`);
  const final = join(dir, name);
  await Deno.mkdir(tmp);
  try {
    const tensors = Object.entries(data.tensors).map(([k, t]) =>
      [k, t instanceof Float32Array ? { shape: [t.length], data: t } : t] as const
    );
    const bytes = await writeSafetensors(join(tmp, TENSORS_FILE), tensors, {
      metadata: { step: String(step) },
    });
    const state: StateFile = {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      savedAt: new Date().toISOString(),
      tensorsFile: TENSORS_FILE,
      tensorsBytes: bytes,
      tensorCount: tensors.length,
      files: { [TENSORS_FILE]: { bytes, sha256: await sha256File(join(tmp, TENSORS_FILE)) } },
      scalars: data.scalars ?? {},
      meta: data.meta,
    };
    await writeTextAtomic(join(tmp, STATE_FILE), JSON.stringify(state, null, 2) + "\n");
    await syncDir(tmp);

    // Re-saving a step: move the old folder aside first (rename cannot replace a non-empty folder).
    let old: string | undefined;
    try {
      await Deno.stat(final);
      old = join(dir, `${TMP_PREFIX}old-${name}-${crypto.randomUUID().slice(0, 8)}`);
      await Deno.rename(final, old);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    await Deno.rename(tmp, final);
    await syncDir(dir);
    if (old) await removeQuietly(old);
  } catch (e) {
    await removeQuietly(tmp);
    throw withPath(e, final); // a full disk says which checkpoint it could not write
  }

  await writeTextAtomic(join(dir, LATEST_FILE), `${name}\n`);
  await syncDir(dir);

  const all = await listCheckpoints(dir);
  const older = all.filter((c) => c.step < step);
  const doomed = [
    ...all.filter((c) => c.step > step),
    ...older.slice(0, Math.max(0, older.length - (keep - 1))),
  ];
  for (const c of doomed) await removeQuietly(c.path);
  return final;
}

/** Read and validate one checkpoint folder; throws with the reason when it is unusable. */
export async function loadCheckpoint(path: string): Promise<LoadedCheckpoint> {
  let state: StateFile;
  try {
    state = JSON.parse(await Deno.readTextFile(join(path, STATE_FILE)));
  } catch (e) {
    throw new Error(`${STATE_FILE} is missing or not JSON (${(e as Error).message})`);
  }
  if (state?.format !== CHECKPOINT_FORMAT) throw new Error(`${STATE_FILE} is not a checkpoint state file`);
  if (state.version !== CHECKPOINT_VERSION && state.version !== 1) {
    throw new Error(`checkpoint version ${state.version} is not supported (expected ${CHECKPOINT_VERSION})`);
  }
  checkMeta(state.meta);
  const m = NAME.exec(path.split(/[\\/]/).pop() ?? "");
  if (m && Number(m[1]) !== state.meta.step) {
    throw new Error(`folder says step ${m[1]} but ${STATE_FILE} says ${state.meta.step}`);
  }
  const file = join(path, state.tensorsFile ?? TENSORS_FILE);
  const size = (await Deno.stat(file)).size;
  if (size !== state.tensorsBytes) {
    throw new Error(`${state.tensorsFile} has ${size} bytes, ${STATE_FILE} recorded ${state.tensorsBytes}`);
  }
  if (state.version >= 2) {
    for (const [name, rec] of Object.entries(state.files ?? {})) {
      const sum = await sha256File(join(path, name));
      if (sum !== rec.sha256) {
        throw new Error(
          `${name} does not match its checksum (sha256 ${sum.slice(0, 12)}…, recorded ${
            rec.sha256.slice(0, 12)
          }…)`,
        );
      }
    }
  }
  const read = await readSafetensors(file);
  if (read.size !== state.tensorCount) {
    throw new Error(
      `${state.tensorsFile} has ${read.size} tensors, ${STATE_FILE} recorded ${state.tensorCount}`,
    );
  }
  const tensors: Record<string, Float32Array> = {};
  const shapes: Record<string, number[]> = {};
  for (const [name, t] of read) {
    tensors[name] = t.data;
    shapes[name] = t.shape;
  }
  return {
    path,
    step: state.meta.step,
    meta: state.meta,
    tensors,
    shapes,
    scalars: state.scalars ?? {},
    version: state.version,
  };
}

/**
 * Where the newest checkpoint in `dir` stood (its `state.json`, not its tensors: cheap, for checks before a
 * resume loads anything), or `undefined` when there is none. Unreadable state files are passed over, as
 * {@link loadLatestCheckpoint} would pass over their checkpoints.
 */
export async function newestCheckpointMeta(
  dir: string,
): Promise<{ path: string; meta: CheckpointMeta } | undefined> {
  for (const c of (await listCheckpoints(dir)).reverse()) {
    try {
      const state = JSON.parse(await Deno.readTextFile(join(c.path, STATE_FILE))) as StateFile;
      if (state?.format === CHECKPOINT_FORMAT && state.meta) return { path: c.path, meta: state.meta };
    } catch { /* a damaged checkpoint: the loader says so */ }
  }
  return undefined;
}

/**
 * The newest usable checkpoint in `dir`, or `undefined` when there is none (a fresh run). Candidates are
 * tried newest step first; unusable ones are skipped with a warning naming the reason. A `latest` pointer
 * that disagrees with the result (a crash between the folder rename and the pointer update, or a damaged
 * checkpoint) is reported too.
 *
 * @throws when `options.configHash` is given and the checkpoint was saved under a different config; and
 * when checkpoints exist but none is usable: starting over would throw their training away (and the next
 * save would prune them), so the run stops and leaves them for a person to look at.
 */
export async function loadLatestCheckpoint(
  dir: string,
  options: LoadCheckpointOptions = {},
): Promise<LoadedCheckpoint | undefined> {
  const warn = options.warn ?? ((m: string) => console.warn(m));
  const candidates = (await listCheckpoints(dir)).reverse();
  let pointer: string | undefined;
  try {
    pointer = (await Deno.readTextFile(join(dir, LATEST_FILE))).trim();
  } catch {
    pointer = undefined;
  }
  for (const c of candidates) {
    let loaded: LoadedCheckpoint;
    try {
      loaded = await loadCheckpoint(c.path);
    } catch (e) {
      warn(`skipping checkpoint ${c.path}: ${(e as Error).message}`);
      continue;
    }
    if (pointer !== c.name) {
      warn(
        `${join(dir, LATEST_FILE)} names ${pointer === undefined ? "nothing" : JSON.stringify(pointer)}; ` +
          `resuming from ${c.name}, the newest usable checkpoint`,
      );
    }
    if (options.configHash !== undefined && loaded.meta.configHash !== options.configHash) {
      throw new Error(
        `${c.path} was saved with config hash ${
          loaded.meta.configHash ?? "(none)"
        } but this run's is ${options.configHash}: ` +
          `the options changed since the checkpoint; start a new run or resume with the original options`,
      );
    }
    return loaded;
  }
  if (candidates.length > 0) {
    throw new Error(
      `${dir}: none of the ${candidates.length} checkpoint(s) is intact (see the warnings above); ` +
        `nothing was deleted. Move the checkpoints folder aside to start over from step 0`,
    );
  }
  return undefined;
}
