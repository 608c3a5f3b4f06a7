/**
 * `deno task score`'s work: read sampled responses (the rows `deno task sample` writes, `{id, prompt,
 * responses: [{content, …}], …}`, or any reward or preference data), score every response with a
 * {@link Scorer}, and write the reward format `deno task train` reads: each input row with `reward` added
 * to each response and `"scorer": {"kind", "name"}`. Preference rows (`chosen`/`rejected`) gain
 * `responses: [{content: chosen, reward}, {content: rejected, reward}]`.
 *
 * Resumable: rows are scored `batch` at a time and appended, and after each append the sidecar
 * `<out>.meta.json` records how many input rows were consumed, how many bytes of the output are complete,
 * and a hash of the rows consumed. A rerun with the same configuration (the input and the scorer's kind,
 * name and settings) cuts the output back to the recorded end (a batch half-written when the run stopped
 * is scored again), checks that the rows already consumed have not changed, and continues; a different
 * configuration is refused. Runs that are interrupted and resumed write the same file as one that is not.
 *
 * With `skipErrors`, a row that is malformed or whose responses cannot all be scored is left out and
 * counted (the meta file lists them), instead of stopping the run.
 *
 * Under a launcher with several ranks ({@link scoreAsRank}), rank r of n scores the rows whose index is r
 * modulo n into `<out>.shard-r-of-n` (a file like the above, with its own sidecar), and rank 0 interleaves
 * the finished shards into `<out>`: the file, and sidecar, one process writes.
 * @module
 */
import { resolve } from "node:path";
import { DataError, describeValue, FieldError } from "../data/errors.ts";
import { expectArray, expectContent, isObject } from "../data/fields.ts";
import { readLines } from "../data/jsonl.ts";
import { toPrompt } from "../data/messages.ts";
import { parsePreference } from "../data/formats.ts";
import { readParquetMetadata } from "../data/parquet.ts";
import { readRecords, recordFileKind } from "../data/records.ts";
import type { Message } from "../data/types.ts";
import { exists, readJsonObject, withPath, writeJsonAtomic } from "../files.ts";
import { lockFile } from "../lock.ts";
import { formatDuration } from "../cli/progress.ts";
import type { ScoreItem, Scorer, ScorerKind } from "./scorers/types.ts";
import type { RankShard } from "./rank_shards.ts";

/** A row to score: the prompt, the responses, and how to write the row back with its rewards. */
export type ScoreRow = {
  prompt: Message[];
  responses: string[];
  /** The field each response came from, for messages (`responses[2]`, `chosen`). */
  fields: string[];
  /** The output row: the input row with the rewards and the scorer. */
  output(rewards: number[], scorer: { kind: ScorerKind; name: string }): Record<string, unknown>;
};

/**
 * The prompt and responses of a data row: `responses` (strings or objects with `content` or `text`) with
 * `prompt` or `messages`, or a preference row's `chosen` and `rejected`. Throws a {@link FieldError}.
 */
export function readScoreRow(row: Record<string, unknown>): ScoreRow {
  if (row.responses !== undefined && row.responses !== null) {
    const promptField = row.prompt == null && row.messages != null ? "messages" : "prompt";
    const prompt = toPrompt(row[promptField], promptField);
    const list = expectArray(row.responses, "responses");
    if (list.length === 0) throw new FieldError("responses", "expected at least one response, got []");
    const responses = list.map((r, i) => {
      if (typeof r === "string") return r;
      if (!isObject(r)) {
        throw new FieldError(`responses[${i}]`, `expected an object, got ${describeValue(r)}`);
      }
      const key = r.content !== undefined ? "content" : "text";
      if (r[key] === undefined) {
        throw new FieldError(
          `responses[${i}].content`,
          'is missing (expected the text in "content" or "text")',
        );
      }
      return expectContent(r[key], `responses[${i}].${key}`);
    });
    return {
      prompt,
      responses,
      fields: responses.map((_, i) => `responses[${i}]`),
      output: (rewards, scorer) => ({
        ...row,
        responses: list.map((r, i) =>
          isObject(r) ? { ...r, reward: rewards[i] } : { content: r, reward: rewards[i] }
        ),
        scorer,
      }),
    };
  }
  if (row.chosen != null && row.rejected != null) {
    const p = parsePreference(row);
    const asGiven = typeof row.prompt === "string" && p.prompt.length === 1 &&
      p.prompt[0].content === row.prompt;
    return {
      prompt: p.prompt,
      responses: [p.chosen, p.rejected],
      fields: ["chosen", "rejected"],
      output: (rewards, scorer) => ({
        ...row,
        prompt: asGiven ? row.prompt : p.prompt,
        responses: [{ content: p.chosen, reward: rewards[0] }, { content: p.rejected, reward: rewards[1] }],
        scorer,
      }),
    };
  }
  throw new FieldError(
    "responses",
    `is missing: expected "responses" (as deno task sample writes them) or "chosen" and "rejected" ` +
      `(fields here: ${Object.keys(row).join(", ") || "none"})`,
  );
}

/** The sidecar file of an output. */
export function scoreMetaPath(out: string): string {
  return `${out}.meta.json`;
}

/** What the sidecar holds. */
export type ScoreMeta = {
  version: 1;
  /** The input file, resolved. */
  input: string;
  scorer: { kind: ScorerKind; name: string; settings: Record<string, unknown> };
  progress: {
    /** Input rows consumed (written or skipped). */
    rowsRead: number;
    rowsWritten: number;
    /** Responses scored in written rows. */
    sequences: number;
    /** Bytes of the output that hold complete batches. */
    bytes: number;
    /** FNV-1a of the rows consumed, to notice an input changed under a resumed run. */
    inputHash: string;
    /** Rows left out with `skipErrors` (`file:line`). */
    skipped: string[];
    /** A shard's only: the input index of each row in `skipped`, for rank 0 to interleave the shards. */
    skippedRows?: number[];
  };
  /** A rank's shard file's only: its rows are the input's whose index is `index` modulo `count`. */
  shard?: RankShard;
  complete: boolean;
};

/** What a run reports as it goes (after each batch). */
export type ScoreProgress = {
  /** Rows consumed in all, this run and earlier ones. */
  rowsRead: number;
  /** Rows to consume in all (the input's rows, or `limit`), when known. */
  rowsTotal: number | null;
  /** Rows and responses scored by this run, and its seconds so far. */
  rowsThisRun: number;
  sequencesThisRun: number;
  seconds: number;
  skipped: number;
};

/** Options of {@link scoreFile}. */
export type ScoreFileOptions = {
  /** The input (JSONL, gzip or not, or Parquet). */
  data: string;
  /** The output JSONL. */
  out: string;
  scorer: Scorer;
  /** Rows scored and appended together (default 8). */
  batch?: number;
  /** Score only the first this many rows of the input. */
  limit?: number;
  /**
   * Score only the rows whose index (among the first `limit`) is `index` modulo `count`, for a rank's shard
   * ({@link scoreAsRank}); `out` then records it. Progress and results count this shard's rows.
   */
  shard?: RankShard;
  /** Leave out rows that are malformed or cannot be scored (the scorer must be made with it too). */
  skipErrors?: boolean;
  /**
   * Stops after the current batch (what was written stays; a rerun continues); a scorer stopped by it in
   * the middle of a batch (a reward function made with the same signal) stops the run before that batch.
   */
  signal?: AbortSignal;
  onProgress?: (p: ScoreProgress) => void;
  /** Where notices go (resuming, a torn batch dropped); default console.error. */
  log?: (line: string) => void;
};

/** What a run did. */
export type ScoreFileResult = {
  /** Rows consumed and written, in all. */
  rowsRead: number;
  rowsWritten: number;
  /** Rows this run scored (0 when there was nothing left). */
  rowsThisRun: number;
  sequencesThisRun: number;
  /** Rows a previous run had consumed. */
  resumedFrom: number;
  skipped: string[];
  seconds: number;
  /** Whether the input is done (false after `signal` stopped it). */
  complete: boolean;
};

/** JSON for data rows: Parquet's INT64 values (bigint) as numbers (as strings past 2^53). */
function stringify(v: unknown): string {
  return JSON.stringify(
    v,
    (_k, x) => typeof x === "bigint" ? (Number.isSafeInteger(Number(x)) ? Number(x) : String(x)) : x,
  );
}

/** FNV-1a over a string, continuing from `h`. */
function fnv(h: number, text: string): number {
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
const FNV_START = 0x811c9dc5;
const hex = (h: number) => h.toString(16).padStart(8, "0");

/** Rows in the input: non-blank lines of JSONL, the row count of Parquet (a quick pass, for the ETA). */
export async function countRecords(path: string): Promise<number> {
  if (recordFileKind(path) === "parquet") return Number((await readParquetMetadata(path)).num_rows);
  let n = 0;
  for await (const [line] of readLines(path)) if (line.trim() !== "") n++;
  return n;
}

/** The first difference between a recorded configuration and this run's, or null. */
export function configDifference(a: unknown, b: unknown, path = ""): string | null {
  if (isObject(a) && isObject(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const d = configDifference(a[k], b[k], path ? `${path}.${k}` : k);
      if (d) return d;
    }
    return null;
  }
  if (stringify(a) === stringify(b)) return null;
  const show = (v: unknown) => {
    const s = stringify(v) ?? "nothing";
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  };
  return `${path}: ${show(a)} then, ${show(b)} now`;
}

/** Reads and checks the sidecar of an existing output; null when starting afresh. */
export async function resumeState(
  out: string,
  fresh: Omit<ScoreMeta, "progress" | "complete">,
): Promise<ScoreMeta | null> {
  const side = scoreMetaPath(out);
  const meta = await readJsonObject(side) as ScoreMeta | null;
  const size = (await exists(out)) ? (await Deno.stat(out)).size : null;
  if (!meta) {
    if (size === null || size === 0) return null;
    const why = "it is not a file this command was writing; remove it or choose another --out";
    throw new Error(`${out} exists without ${side}: ${why}`);
  }
  if (meta.version !== 1 || !isObject(meta.progress)) throw new Error(`${side}: not a score run's meta file`);
  const then = { input: meta.input, scorer: meta.scorer, shard: meta.shard };
  const now = { input: fresh.input, scorer: fresh.scorer, shard: fresh.shard };
  const diff = configDifference(then, now);
  if (diff) {
    const what = `to start over remove it and ${side}, or choose another --out`;
    throw new Error(`${out} was scored with another configuration (${diff}); ${what}`);
  }
  if ((size ?? 0) < meta.progress.bytes) {
    const what = `it was changed outside this command; remove both to start over`;
    throw new Error(
      `${out} is shorter (${size ?? 0} bytes) than ${side} records (${meta.progress.bytes}): ${what}`,
    );
  }
  return meta;
}

/** Scores the responses of every row of `data` into `out` (see the module documentation). */
export async function scoreFile(o: ScoreFileOptions): Promise<ScoreFileResult> {
  const log = o.log ?? ((line: string) => console.error(line));
  const batch = o.batch ?? 8;
  if (!Number.isSafeInteger(batch) || batch < 1) throw new RangeError(`batch must be ≥ 1, got ${batch}`);
  const scorer = o.scorer;
  // one writer per file: a second run on it is refused at once, naming the first
  await using _lock = await lockFile(resolve(o.out), { log });
  const fresh = {
    version: 1 as const,
    input: resolve(o.data),
    scorer: { kind: scorer.kind, name: scorer.name, settings: { ...scorer.settings } },
    ...(o.shard && o.shard.count > 1 ? { shard: { index: o.shard.index, count: o.shard.count } } : {}),
  };
  const previous = await resumeState(o.out, fresh);
  const meta: ScoreMeta = previous ?? {
    ...fresh,
    progress: {
      rowsRead: 0,
      rowsWritten: 0,
      sequences: 0,
      bytes: 0,
      inputHash: hex(FNV_START),
      skipped: [],
      ...(fresh.shard ? { skippedRows: [] } : {}),
    },
    complete: false,
  };
  const p = meta.progress;
  meta.complete = false;
  const file = await Deno.open(o.out, { write: true, create: true }).catch((e) => {
    throw withPath(e, o.out);
  });
  // the output is cut back to its last complete batch only once the input is known to be the same
  let ready = false;
  const prepare = async () => {
    if (ready) return;
    ready = true;
    const size = (await file.stat()).size;
    if (size > p.bytes) {
      if (previous) log(`${o.out}: dropping ${size - p.bytes} bytes after the last complete batch`);
      await file.truncate(p.bytes);
    }
    await file.seek(p.bytes, Deno.SeekMode.Start);
  };
  try {
    if (!previous) await writeJsonAtomic(scoreMetaPath(o.out), meta);
    else if (p.rowsRead > 0) log(`${o.out}: resuming after ${p.rowsRead} rows (${p.rowsWritten} written)`);
    return await run(o, meta, file, prepare, log, batch);
  } finally {
    file.close();
  }
}

async function run(
  o: ScoreFileOptions,
  meta: ScoreMeta,
  file: Deno.FsFile,
  prepare: () => Promise<void>,
  log: (line: string) => void,
  batch: number,
): Promise<ScoreFileResult> {
  const p = meta.progress, scorer = o.scorer;
  const unit = recordFileKind(o.data) === "parquet" ? "row" : "line";
  const where = (line: number) => unit === "line" ? `${o.data}:${line}` : `${o.data}: row ${line}`;
  const resumedFrom = p.rowsRead;
  const limit = o.limit ?? Infinity;
  // a shard's counts are of its own rows (input index ≡ index mod count); the sidecar's rowsRead is the input's
  const shard = meta.shard ?? { index: 0, count: 1 };
  const ofShard = (inputRows: number) => Math.max(0, Math.ceil((inputRows - shard.index) / shard.count));
  const total = await countRecords(o.data).then((n) => ofShard(Math.min(n, limit))).catch(() => null);
  const t0 = performance.now();
  let rowsThisRun = 0, sequencesThisRun = 0, hash = FNV_START, consumed = 0;
  let pending: {
    line: number;
    index: number;
    row?: ScoreRow;
    raw: Record<string, unknown>;
    error?: DataError;
  }[] = [];
  const encoder = new TextEncoder();
  const result = (complete: boolean): ScoreFileResult => ({
    rowsRead: ofShard(p.rowsRead),
    rowsWritten: p.rowsWritten,
    rowsThisRun,
    sequencesThisRun,
    resumedFrom: ofShard(resumedFrom),
    skipped: [...p.skipped],
    seconds: (performance.now() - t0) / 1000,
    complete,
  });

  /** Scores and appends the pending rows; false when the signal stopped the scorer before the end. */
  const flush = async (): Promise<boolean> => {
    await prepare();
    const rows = pending.filter((r) => r.row);
    const items: ScoreItem[] = rows.flatMap((r) =>
      r.row!.responses.map((response, i) => ({
        prompt: r.row!.prompt,
        response,
        row: r.raw,
        at: `${where(r.line)} ${r.row!.fields[i]}`,
      }))
    );
    let rewards: number[];
    try {
      rewards = items.length ? await scorer.score(items) : [];
    } catch (e) {
      // stopped mid-batch: nothing of it written, the rerun scores it again
      if (o.signal?.aborted) return false;
      throw e;
    }
    if (rewards.length !== items.length) {
      throw new Error(
        `the ${scorer.kind} scorer gave ${rewards.length} rewards for ${items.length} responses`,
      );
    }
    let text = "", at = 0, written = 0, sequences = 0;
    for (const r of pending) {
      if (!r.row) {
        p.skipped.push(where(r.line));
        p.skippedRows?.push(r.index);
        log(`skipped ${r.error!.message}`);
        continue;
      }
      const k = r.row.responses.length, mine = rewards.slice(at, at + k);
      at += k;
      if (mine.some((x) => Number.isNaN(x))) {
        p.skipped.push(where(r.line));
        p.skippedRows?.push(r.index);
        continue;
      }
      text += stringify(r.row.output(mine, { kind: scorer.kind, name: scorer.name })) + "\n";
      written++;
      sequences += k;
    }
    const bytes = encoder.encode(text);
    try {
      for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
      await file.syncData();
    } catch (e) {
      throw withPath(e, o.out);
    }
    p.bytes += bytes.length;
    p.rowsRead = consumed; // the input rows up to the last pending one, other shards' rows included
    p.rowsWritten += written;
    p.sequences += sequences;
    p.inputHash = hex(hash);
    await writeJsonAtomic(scoreMetaPath(o.out), meta);
    rowsThisRun += pending.length;
    sequencesThisRun += items.length;
    pending = [];
    o.onProgress?.({
      rowsRead: ofShard(p.rowsRead),
      rowsTotal: total,
      rowsThisRun,
      sequencesThisRun,
      seconds: (performance.now() - t0) / 1000,
      skipped: p.skipped.length,
    });
    return true;
  };

  for await (const { row, line } of readRecords(o.data)) {
    if (consumed >= limit) break;
    hash = fnv(hash, stringify(row));
    consumed++;
    if (consumed <= resumedFrom) {
      if (consumed === resumedFrom && hex(hash) !== p.inputHash) {
        throw new Error(
          `${o.data}: its first ${resumedFrom} rows changed since ${o.out} was started from them; to start over ` +
            `remove ${o.out} and ${scoreMetaPath(o.out)}`,
        );
      }
      continue;
    }
    if ((consumed - 1) % shard.count !== shard.index) continue;
    try {
      pending.push({ line, index: consumed - 1, row: readScoreRow(row), raw: row });
    } catch (e) {
      if (!(e instanceof FieldError)) throw e;
      const error = new DataError(o.data, line, e.message, e.field, unit);
      if (!o.skipErrors) throw error;
      pending.push({ line, index: consumed - 1, raw: row, error });
    }
    if (pending.length >= batch) {
      if (!await flush() || o.signal?.aborted) return result(false);
    }
  }
  if (consumed < resumedFrom) {
    throw new Error(`${o.data} has ${consumed} rows, fewer than the ${resumedFrom} ${o.out} was scored from`);
  }
  if (pending.length && !await flush()) return result(false);
  await prepare();
  // a shard whose last rows are other shards' has consumed them too (as one process would record)
  p.rowsRead = consumed;
  p.inputHash = hex(hash);
  meta.complete = true;
  await writeJsonAtomic(scoreMetaPath(o.out), meta);
  return result(true);
}

/** A progress line: rows done/total, rows/s, sequences/s, the ETA and what was skipped. */
export function formatScoreProgress(p: ScoreProgress): string {
  const rps = p.seconds > 0 ? p.rowsThisRun / p.seconds : NaN;
  const sps = p.seconds > 0 ? p.sequencesThisRun / p.seconds : NaN;
  const left = p.rowsTotal === null ? NaN : (p.rowsTotal - p.rowsRead) / rps;
  const fmt = (x: number) => Number.isFinite(x) ? x.toFixed(x < 10 ? 2 : 1) : "--";
  return `scored ${p.rowsRead}${p.rowsTotal === null ? "" : `/${p.rowsTotal}`} rows · ${fmt(rps)} rows/s · ` +
    `${fmt(sps)} sequences/s · ETA ${formatDuration(left)}${p.skipped ? ` · ${p.skipped} skipped` : ""}`;
}

/**
 * A progress printer for stderr: on a terminal one line redrawn in place, elsewhere a line at most every
 * `everyS` seconds (and the last one), so logs stay readable. Call `done()` at the end.
 */
export function scoreProgressPrinter(everyS = 10): { update: (p: ScoreProgress) => void; done: () => void } {
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let lastAt = -Infinity, last: ScoreProgress | null = null, shown: ScoreProgress | null = null;
  const write = (s: string) => Deno.stderr.writeSync(enc.encode(s));
  return {
    update(p) {
      last = p;
      if (tty) write(`\r\x1b[2K${formatScoreProgress(p)}`);
      else if (p.seconds - lastAt >= everyS) {
        write(`${formatScoreProgress(p)}\n`);
        lastAt = p.seconds;
        shown = p;
      }
    },
    done() {
      if (tty && last) write("\n");
      else if (last && last !== shown) write(`${formatScoreProgress(last)}\n`);
    },
  };
}
