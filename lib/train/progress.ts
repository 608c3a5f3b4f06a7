/**
 * A live one-line progress display for training: step/total, a bar, a smoothed ETA, tokens/s and the
 * metrics a user watches (loss, reward margin, accuracy). On a terminal the line redraws in place with
 * `\r`; elsewhere (CI logs, `| tee`) a plain line is printed every N steps so logs stay readable.
 *
 * The formatting functions are pure and tested; {@link ProgressDisplay} only decides when to write.
 *
 * @module
 */

import { EtaEstimator, formatCount, formatDuration, progressBar } from "../cli/progress.ts";

/** A metric value in at most ~8 characters: 4 significant digits, scientific when very small or large. */
export function formatMetric(v: number): string {
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e-3 && a < 1e5) return String(Number(v.toPrecision(4)));
  const [m, e] = v.toExponential(2).split("e");
  return `${m.replace(/\.?0+$/, "")}e${e.replace("+", "")}`;
}

/** The metrics shown, in order, with their short labels. */
export const SHOWN_METRICS: readonly (readonly [string, string])[] = Object.freeze([
  ["loss", "loss"],
  ["rewards/margins", "margin"],
  ["rewards/accuracies", "acc"],
]);

/** Everything one progress line shows. */
export type ProgressState = {
  step: number;
  totalSteps: number;
  /** Estimated seconds left (omitted or non-finite: unknown, shown as `eta …`). */
  etaS?: number;
  /** Seconds since the start (shown when the run is done instead of the ETA). */
  elapsedS?: number;
  tokensPerS?: number;
  epoch?: number;
  /** The process's resident memory, bytes. */
  memory?: number;
  /** Metric values by TRL name; see {@link SHOWN_METRICS}. */
  metrics?: Readonly<Record<string, number | undefined>>;
  /** Cells of the bar; 0 for none (plain log lines). Default 20. */
  barWidth?: number;
  /** ASCII bar instead of block characters. */
  ascii?: boolean;
  /** Cut the line to this many characters (a terminal line must not wrap, or `\r` cannot redraw it). */
  maxWidth?: number;
};

/**
 * One progress line, e.g.
 * `step  12/100 ███▌         12% | eta 3m 05s | 1.23k tok/s | mem 3.2 GiB | loss 0.6931  margin 0.0123  acc 0.625`.
 */
export function formatProgressLine(state: ProgressState): string {
  const total = Math.max(0, state.totalSteps);
  const frac = total > 0 ? state.step / total : 0;
  const digits = String(total).length;
  const parts: string[] = [];
  const pct = `${Math.floor(Math.min(1, Math.max(0, frac)) * 100)}%`.padStart(4);
  const barWidth = state.barWidth ?? 20;
  const head = `step ${String(state.step).padStart(digits)}/${total}`;
  parts.push(
    barWidth > 0 ? `${head} ${progressBar(frac, barWidth, state.ascii)} ${pct}` : `${head} ${pct.trim()}`,
  );
  if (state.epoch !== undefined && Number.isFinite(state.epoch)) {
    parts.push(`epoch ${state.epoch.toFixed(2)}`);
  }
  if (total > 0 && state.step >= total && state.elapsedS !== undefined) {
    parts.push(`took ${formatDuration(state.elapsedS)}`);
  } else {
    const eta = state.etaS ?? NaN;
    parts.push(`eta ${Number.isFinite(eta) && eta >= 0 ? formatDuration(eta) : "…"}`);
  }
  if (state.tokensPerS !== undefined && Number.isFinite(state.tokensPerS)) {
    parts.push(`${formatCount(state.tokensPerS)} tok/s`);
  }
  if (state.memory !== undefined && Number.isFinite(state.memory)) {
    parts.push(`mem ${(state.memory / 2 ** 30).toFixed(1)} GiB`);
  }
  const shown: string[] = [];
  for (const [name, label] of SHOWN_METRICS) {
    const v = state.metrics?.[name];
    if (v !== undefined) shown.push(`${label} ${formatMetric(v)}`);
  }
  if (shown.length) parts.push(shown.join("  "));
  const line = parts.join(" | ");
  if (state.maxWidth !== undefined && line.length > state.maxWidth) {
    return line.slice(0, Math.max(0, state.maxWidth - 1)) + "…";
  }
  return line;
}

/** Options for {@link ProgressDisplay}. */
export type ProgressDisplayOptions = {
  totalSteps: number;
  /** Redraw in place (default: whether stdout is a terminal). */
  tty?: boolean;
  /** Without a terminal, print a line each time the step crosses a multiple of this (default 10). */
  every?: number;
  /** Where text goes (default: stdout, synchronously). */
  write?: (text: string) => void;
  /** Clock in seconds (default `performance.now() / 1000`). */
  now?: () => number;
  /** Terminal width (default: the console's, else 100). */
  columns?: number;
  /** The step the timing starts from (default 0; a resumed run: the step it resumed at). */
  startStep?: number;
  /**
   * Seconds already spent since `startStep` (default 0): a display made after its first chunk ran gets that
   * chunk's time, so the first line has a rate to base its ETA on, and `took` counts that chunk.
   */
  elapsedS?: number;
};

/** What the trainer reports after a step or chunk of steps. */
export type ProgressUpdate = {
  metrics?: Readonly<Record<string, number | undefined>>;
  /** Tokens per second; taken from `metrics.tokens_per_s` when omitted. */
  tokensPerS?: number;
  epoch?: number;
  /** The process's resident memory, bytes. */
  memory?: number;
};

/**
 * The progress line of a run. Call {@link ProgressDisplay.update} after each step or chunk,
 * {@link ProgressDisplay.log} for messages (they appear above the live line), and
 * {@link ProgressDisplay.finish} at the end.
 */
export class ProgressDisplay {
  readonly #total: number;
  readonly #tty: boolean;
  readonly #every: number;
  readonly #write: (text: string) => void;
  readonly #now: () => number;
  readonly #columns: number;
  readonly #eta = new EtaEstimator();
  readonly #start: number;
  #line = "";
  #lastPrinted: number | undefined;
  #state: ProgressState | undefined;

  constructor(options: ProgressDisplayOptions) {
    this.#total = options.totalSteps;
    this.#tty = options.tty ?? Deno.stdout.isTerminal();
    this.#every = Math.max(1, Math.floor(options.every ?? 10));
    const encoder = new TextEncoder();
    this.#write = options.write ?? ((text: string) => {
      const bytes = encoder.encode(text);
      let off = 0;
      while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
    });
    this.#now = options.now ?? (() => performance.now() / 1000);
    this.#columns = options.columns ?? consoleColumns();
    this.#start = this.#now() - Math.max(0, options.elapsedS ?? 0);
    this.#eta.update(options.startStep ?? 0, this.#start);
  }

  /** Report that `step` steps are done. */
  update(step: number, info: ProgressUpdate = {}): void {
    const t = this.#now();
    this.#eta.update(step, t);
    this.#state = {
      step,
      totalSteps: this.#total,
      etaS: this.#eta.eta(this.#total),
      elapsedS: t - this.#start,
      tokensPerS: info.tokensPerS ?? info.metrics?.tokens_per_s,
      epoch: info.epoch,
      memory: info.memory,
      metrics: info.metrics,
    };
    if (this.#tty) {
      this.#line = formatProgressLine({ ...this.#state, maxWidth: this.#columns - 1 });
      this.#write(`\r${this.#line}\x1b[K`);
      return;
    }
    const crossed = this.#lastPrinted === undefined ||
      Math.floor(step / this.#every) > Math.floor(this.#lastPrinted / this.#every) || step >= this.#total;
    if (crossed && step !== this.#lastPrinted) {
      this.#write(formatProgressLine({ ...this.#state, barWidth: 0 }) + "\n");
      this.#lastPrinted = step;
    }
  }

  /** Print a message on its own line without breaking the live line. */
  log(message: string): void {
    if (this.#tty && this.#line) this.#write(`\r\x1b[K${message}\n${this.#line}`);
    else this.#write(message + "\n");
  }

  /** End the display: the live line stays, and the cursor moves below it. */
  finish(): void {
    if (this.#tty) {
      if (this.#line) this.#write("\n");
    } else if (this.#state && this.#lastPrinted !== this.#state.step) {
      this.#write(formatProgressLine({ ...this.#state, barWidth: 0 }) + "\n");
    }
    this.#line = "";
  }
}

function consoleColumns(): number {
  try {
    return Deno.consoleSize().columns || 100;
  } catch {
    return 100;
  }
}
