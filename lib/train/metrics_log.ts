/**
 * The per-step metrics log of a run, `metrics.jsonl`: one JSON object per line, with TRL's metric names
 * (`loss`, `rewards/chosen`, `rewards/margins`, `logps/chosen`, the reference repo's `rewards/A0..`,
 * `eval/loss`, …) so users can load it with pandas (`pd.read_json(path, lines=True)`) and compare runs.
 *
 * Every line goes to the file in one unbuffered write as soon as it is logged (optionally fsynced), so a
 * crash loses at most the line being written, and the reader tolerates exactly that: a truncated last line.
 * JSON has no NaN or Infinity, so non-finite values are written as `null` (pandas reads them as NaN) and
 * read back as NaN. The same lines can go to a TensorBoard event file too (tensorboard.ts), and
 * `--logging-steps` writes one line per window of steps, as TRL's `logging_steps` does.
 *
 * @module
 */

import { join } from "node:path";
import { withPath, writeTextAtomic } from "../files.ts";
import { TensorBoardWriter } from "./tensorboard.ts";

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
  /** Also write each line as TensorBoard scalars to an event file in this folder (`--report-to tensorboard`). */
  tensorboard?: string;
  /**
   * Write training metrics every this many steps (TRL's `logging_steps`), each line the mean of the steps
   * since the last one (`lr`, `grad_norm`, `loss_scale`, `epoch`: the last step's; `skipped`: the sum).
   * Evaluations are written when they come. Default 1: every step as it is.
   */
  every?: number;
};

/** Metrics a logging window reports at its last step rather than averaged, and the ones it adds up. */
const LAST_OF_WINDOW = new Set(["epoch", "lr", "grad_norm", "loss_scale"]);
const SUM_OF_WINDOW = new Set(["skipped"]);

/** One line for the records of a logging window (see {@link MetricsWriterOptions.every}). */
export function aggregateRecords(records: readonly MetricsRecord[]): MetricsRecord {
  const last = records[records.length - 1];
  const sums = new Map<string, { sum: number; n: number }>();
  for (const r of records) {
    for (const [k, v] of Object.entries(r)) {
      if (k === "step" || v === undefined) continue;
      const s = sums.get(k) ?? { sum: 0, n: 0 };
      s.sum += v;
      s.n++;
      sums.set(k, s);
    }
  }
  const out: MetricsRecord = { step: last.step, epoch: last.epoch };
  for (const [k, { sum, n }] of sums) {
    out[k] = LAST_OF_WINDOW.has(k) ? (last[k] ?? NaN) : SUM_OF_WINDOW.has(k) ? sum : sum / n;
  }
  return out;
}

const isEval = (k: string) => k.startsWith("eval/");

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
 * Appends records to `metrics.jsonl` (and a TensorBoard event file when asked). Writes go straight to the
 * file descriptor (no buffering in this process), one `write` per line; with `every` > 1 the steps of a
 * logging window wait in memory until its last step, {@link MetricsWriter.flush} or close.
 */
export class MetricsWriter {
  #file: Deno.FsFile | undefined;
  readonly #fsync: boolean;
  readonly #tensorboard: TensorBoardWriter | undefined;
  readonly #every: number;
  /** Training records of the current logging window (every > 1). */
  #window: MetricsRecord[] = [];
  readonly path: string;

  private constructor(
    path: string,
    file: Deno.FsFile,
    fsync: boolean,
    tensorboard: TensorBoardWriter | undefined,
    every: number,
  ) {
    this.path = path;
    this.#file = file;
    this.#fsync = fsync;
    this.#tensorboard = tensorboard;
    this.#every = every;
  }

  /**
   * Open a log. When appending, a partial last line left by a crash is cut off first (otherwise the next
   * record would be glued onto it and corrupt a line in the middle), and records past `truncateAfterStep`
   * are dropped; both rewrites are atomic.
   */
  static async open(path: string, options: MetricsWriterOptions = {}): Promise<MetricsWriter> {
    const every = options.every ?? 1;
    if (!Number.isSafeInteger(every) || every < 1) {
      throw new RangeError(`every must be an integer ≥ 1, got ${every}`);
    }
    if (options.append) {
      await repairForAppend(path, options.truncateAfterStep);
    }
    const file = await Deno.open(path, {
      write: true,
      create: true,
      append: options.append ?? false,
      truncate: !options.append,
    });
    let tb: TensorBoardWriter | undefined;
    if (options.tensorboard !== undefined) {
      // a resumed run rewrites the event files from the repaired log: one file, no step past the checkpoint
      // twice (the steps a killed run logged after its last checkpoint are trained, and logged, again)
      if (options.append) await removeEventFiles(options.tensorboard);
      tb = await TensorBoardWriter.open(options.tensorboard);
      if (options.append) {
        for (const { step, ...rest } of await readMetrics(path)) tb.scalars(step, definedValues(rest));
      }
    }
    return new MetricsWriter(path, file, options.fsync ?? true, tb, every);
  }

  /** Log one record; resolves once its line (or its window's) is in the file. */
  async write(record: MetricsRecord): Promise<void> {
    if (!this.#file) throw new Error(`metrics log ${this.path} is closed`);
    if (!Number.isFinite(record.step)) throw new TypeError(`metrics record needs a numeric step`);
    if (this.#every === 1) return await this.#emit(record);
    const train: MetricsRecord = { step: record.step, epoch: record.epoch };
    const evals: MetricsRecord = { step: record.step, epoch: record.epoch };
    for (const [k, v] of Object.entries(record)) {
      if (k !== "step" && k !== "epoch") (isEval(k) ? evals : train)[k] = v;
    }
    const hasTrain = Object.keys(train).length > 2, hasEval = Object.keys(evals).length > 2;
    // an evaluation on its own line ends the run (the final one): the last window first
    if (!hasTrain && hasEval) await this.flush();
    if (hasTrain) this.#window.push(train);
    if (hasEval) await this.#emit(evals);
    if (hasTrain && record.step % this.#every === 0) await this.flush();
  }

  /** Write the pending logging window, if any (before a checkpoint, so a resumed log has every step). */
  async flush(): Promise<void> {
    if (this.#window.length === 0) return;
    const line = aggregateRecords(this.#window);
    this.#window = [];
    await this.#emit(line);
  }

  async #emit(record: MetricsRecord): Promise<void> {
    const file = this.#file!;
    const bytes = new TextEncoder().encode(formatMetricsLine(record));
    try {
      let off = 0;
      while (off < bytes.length) off += await file.write(bytes.subarray(off));
      if (this.#fsync) await file.syncData();
    } catch (e) {
      throw withPath(e, this.path);
    }
    this.#scalars(record);
  }

  #scalars(record: MetricsRecord): void {
    if (!this.#tensorboard) return;
    const { step, ...rest } = record;
    this.#tensorboard.scalars(step, definedValues(rest));
  }

  /** Close the files (a pending logging window is written first); further writes throw. Safe to call twice. */
  close(): void {
    const file = this.#file;
    if (file && this.#window.length) {
      const line = aggregateRecords(this.#window);
      this.#window = [];
      const bytes = new TextEncoder().encode(formatMetricsLine(line));
      let off = 0;
      while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
      this.#scalars(line);
    }
    file?.close();
    this.#file = undefined;
    this.#tensorboard?.close();
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

/** A record's values without the undefined ones, as TensorBoard scalars. */
function definedValues(record: Record<string, number | undefined>): Record<string, number> {
  const values: Record<string, number> = {};
  for (const [k, v] of Object.entries(record)) if (v !== undefined) values[k] = v;
  return values;
}

/** Removes the TensorBoard event files of `dir` (a missing folder has none). */
async function removeEventFiles(dir: string): Promise<void> {
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.startsWith("events.out.tfevents.")) await Deno.remove(join(dir, e.name));
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}
