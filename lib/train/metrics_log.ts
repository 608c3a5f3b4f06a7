/**
 * The per-step metrics log of a run, `metrics.jsonl`: one JSON object per line, with TRL's metric names
 * (`loss`, `rewards/chosen`, `rewards/margins`, `logps/chosen`, the reference repo's `rewards/A0..`,
 * `eval/loss`, …) so users can load it with pandas (`pd.read_json(path, lines=True)`) and compare runs.
 *
 * Every line goes to the file in one unbuffered write as soon as it is logged (optionally fsynced), so a
 * crash loses at most the line being written, and the reader tolerates exactly that: a truncated last line.
 * JSON has no NaN or Infinity, so non-finite values are written as `null` (pandas reads them as NaN) and
 * read back as NaN.
 *
 * @module
 */

import { writeTextAtomic } from "../files.ts";

/**
 * One logged step. `step` counts optimizer steps (1 after the first update, as TRL logs it); `epoch` is
 * fractional. Eval entries use an `eval/` prefix and may share a line with training metrics or stand alone.
 */
export type MetricsRecord = {
  step: number;
  epoch: number;
  loss?: number;
  "rewards/chosen"?: number;
  "rewards/rejected"?: number;
  "rewards/margins"?: number;
  "rewards/accuracies"?: number;
  "logps/chosen"?: number;
  "logps/rejected"?: number;
  grad_norm?: number;
  lr?: number;
  tokens_per_s?: number;
  /** `rewards/A0..`, `logps/A0..`, `eval/*` and anything else numeric. */
  [name: string]: number | undefined;
};

/** Options for {@link MetricsWriter.open}. */
export type MetricsWriterOptions = {
  /** Keep existing lines (resuming) instead of starting an empty file. Default false. */
  append?: boolean;
  /**
   * When appending: drop records with `step` greater than this first (they were logged after the checkpoint
   * being resumed from and will be logged again). Default: keep all.
   */
  truncateAfterStep?: number;
  /** fsync after every line so even a power cut keeps it. Default true (cheap next to a training step). */
  fsync?: boolean;
};

/** The line a record becomes: compact JSON, non-finite numbers as `null`, `step` and `epoch` first. */
export function formatMetricsLine(record: MetricsRecord): string {
  const { step, epoch, ...rest } = record;
  const out: Record<string, number | null> = { step, epoch: finiteOrNull(epoch) };
  for (const [k, v] of Object.entries(rest)) {
    if (v === undefined) continue;
    if (typeof v !== "number") throw new TypeError(`metric "${k}" must be a number, got ${typeof v}`);
    out[k] = finiteOrNull(v);
  }
  return JSON.stringify(out) + "\n";
}

function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

/**
 * Appends records to `metrics.jsonl`. Writes go straight to the file descriptor (no buffering in this
 * process), one `write` per line.
 */
export class MetricsWriter {
  #file: Deno.FsFile | undefined;
  readonly #fsync: boolean;
  readonly path: string;

  private constructor(path: string, file: Deno.FsFile, fsync: boolean) {
    this.path = path;
    this.#file = file;
    this.#fsync = fsync;
  }

  /**
   * Open a log. When appending, a partial last line left by a crash is cut off first (otherwise the next
   * record would be glued onto it and corrupt a line in the middle), and records past `truncateAfterStep`
   * are dropped; both rewrites are atomic.
   */
  static async open(path: string, options: MetricsWriterOptions = {}): Promise<MetricsWriter> {
    if (options.append) {
      await repairForAppend(path, options.truncateAfterStep);
    }
    const file = await Deno.open(path, {
      write: true,
      create: true,
      append: options.append ?? false,
      truncate: !options.append,
    });
    return new MetricsWriter(path, file, options.fsync ?? true);
  }

  /** Log one record; resolves once the line is in the file. */
  async write(record: MetricsRecord): Promise<void> {
    const file = this.#file;
    if (!file) throw new Error(`metrics log ${this.path} is closed`);
    if (!Number.isFinite(record.step)) throw new TypeError(`metrics record needs a numeric step`);
    const bytes = new TextEncoder().encode(formatMetricsLine(record));
    let off = 0;
    while (off < bytes.length) off += await file.write(bytes.subarray(off));
    if (this.#fsync) await file.syncData();
  }

  /** Close the file; further writes throw. Safe to call twice. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

async function repairForAppend(path: string, truncateAfterStep: number | undefined): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (text === "") return;
  const lines = text.split("\n");
  // A file that ends with "\n" splits into [...lines, ""]; anything else after the last "\n" is partial.
  const complete = lines.slice(0, -1);
  const partial = lines[lines.length - 1] !== "";
  let kept = complete;
  if (truncateAfterStep !== undefined) {
    kept = complete.filter((line) => {
      const rec = parseLine(line);
      return rec === undefined || rec.step <= truncateAfterStep;
    });
  }
  if (!partial && kept.length === complete.length) return;
  await writeTextAtomic(path, kept.map((l) => l + "\n").join(""));
}

function parseLine(line: string): MetricsRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const rec: Record<string, number> = {};
  for (const [k, v] of Object.entries(value)) {
    if (v === null) rec[k] = NaN;
    else if (typeof v === "number") rec[k] = v;
    else return undefined;
  }
  if (!Number.isFinite(rec.step)) return undefined;
  if (rec.epoch === undefined) rec.epoch = NaN;
  return rec as MetricsRecord;
}

/**
 * Parse the text of a metrics log. Blank lines are ignored and a malformed *last* line (a crash mid-write)
 * is dropped; a malformed line anywhere else is real corruption and throws with its line number.
 */
export function parseMetrics(text: string, source = "metrics.jsonl"): MetricsRecord[] {
  const lines = text.split("\n");
  let last = lines.length - 1;
  while (last >= 0 && lines[last].trim() === "") last--;
  const out: MetricsRecord[] = [];
  for (let i = 0; i <= last; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    const rec = parseLine(line);
    if (rec === undefined) {
      if (i === last) break;
      throw new Error(`${source}:${i + 1}: not a metrics record: ${line.slice(0, 80)}`);
    }
    out.push(rec);
  }
  return out;
}

/** Read a run's `metrics.jsonl` (see {@link parseMetrics}); a missing file reads as no records. */
export async function readMetrics(path: string): Promise<MetricsRecord[]> {
  try {
    return parseMetrics(await Deno.readTextFile(path), path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

/** What `summary.json` holds. */
export type MetricsSummary = {
  /** Number of records read. */
  records: number;
  /** The highest step logged. */
  steps: number;
  /** The epoch of the last record. */
  epoch: number;
  /** Each metric's last finite value (NaN when it never had one). */
  final: Record<string, number>;
  /** How many of the last records {@link MetricsSummary.meanLast} averages. */
  lastN: number;
  /** Each training metric's mean over its last `lastN` finite values (smooths step-to-step noise). */
  meanLast: Record<string, number>;
  /** The lowest `eval/loss` and its step, when there was an evaluation. */
  bestEval?: { step: number; loss: number };
};

/**
 * Summarize a run's records for `summary.json`: final values, the best eval loss and means over the last
 * `lastN` steps of each training metric (eval metrics are too sparse to average; their final value is kept).
 */
export function summarize(records: readonly MetricsRecord[], lastN = 20): MetricsSummary {
  if (!Number.isSafeInteger(lastN) || lastN < 1) {
    throw new RangeError(`lastN must be an integer ≥ 1, got ${lastN}`);
  }
  const final: Record<string, number> = {};
  const series = new Map<string, number[]>();
  let steps = 0;
  let bestEval: MetricsSummary["bestEval"];
  for (const rec of records) {
    steps = Math.max(steps, rec.step);
    for (const [k, v] of Object.entries(rec)) {
      if (k === "step" || k === "epoch" || v === undefined) continue;
      if (!(k in final)) final[k] = NaN;
      if (!Number.isFinite(v)) continue;
      final[k] = v;
      if (!k.startsWith("eval/")) {
        let s = series.get(k);
        if (!s) series.set(k, s = []);
        s.push(v);
      }
    }
    const evalLoss = rec["eval/loss"];
    if (evalLoss !== undefined && Number.isFinite(evalLoss) && (!bestEval || evalLoss < bestEval.loss)) {
      bestEval = { step: rec.step, loss: evalLoss };
    }
  }
  const meanLast: Record<string, number> = {};
  for (const [k, values] of series) {
    const tail = values.slice(-lastN);
    meanLast[k] = tail.reduce((a, b) => a + b, 0) / tail.length;
  }
  const summary: MetricsSummary = {
    records: records.length,
    steps,
    epoch: records.length ? records[records.length - 1].epoch : 0,
    final,
    lastN,
    meanLast,
  };
  if (bestEval) summary.bestEval = bestEval;
  return summary;
}
