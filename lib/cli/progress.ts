/**
 * Formatting for progress lines, shared by the entries (train's step line, sample's and score's lines):
 * durations and ETAs, counts with k/M/G, bars, and a smoothed seconds-per-step estimate for the ETA.
 * All pure apart from the clock the caller passes in.
 * @module
 */

/**
 * A duration for people: `0s`, `42ms`, `0.4s`, `42s`, `3m 05s`, `1h 02m`, `2d 03h`; `--` when unknown (NaN,
 * negative, infinite). Under a second it keeps its digits: a short run's "took 0s" told nothing.
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--";
  if (seconds === 0) return "0s"; // nothing left (an ETA at the end)
  if (seconds < 0.095) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 0.95) return `${seconds.toFixed(1)}s`;
  const s = Math.round(seconds);
  const pad = (n: number) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${pad(Math.floor((s % 86400) / 3600))}h`;
}

/** A count with a k/M/G suffix and 3 significant digits: `950`, `1.23k`, `45.6M`. */
export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return "--";
  const a = Math.abs(n);
  if (a < 1000) return String(Math.round(n));
  for (const [div, suffix] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]] as const) {
    if (a >= div) return `${Number((n / div).toPrecision(3))}${suffix}`;
  }
  return String(n);
}

/**
 * A progress bar of `width` cells; on a terminal with eighth-blocks (`█▌ `), otherwise `#` and `-`.
 * The fraction is clamped to [0, 1].
 */
export function progressBar(fraction: number, width: number, ascii = false): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  if (ascii) {
    const full = Math.round(f * width);
    return "#".repeat(full) + "-".repeat(width - full);
  }
  const eighths = Math.round(f * width * 8);
  const full = Math.floor(eighths / 8);
  const rest = eighths % 8;
  const partial = rest ? "▏▎▍▌▋▊▉"[rest - 1] : "";
  return "█".repeat(full) + partial + " ".repeat(width - full - (rest ? 1 : 0));
}

/**
 * Seconds per step as an exponential moving average with bias correction (tqdm's smoothing), so the ETA
 * follows speed changes without jumping around on every chunk. Steps may arrive in chunks (a graph run of
 * several optimizer steps); each chunk's time is divided over its steps.
 */
export class EtaEstimator {
  readonly #smoothing: number;
  #avg = 0;
  #weight = 0;
  #lastStep: number | undefined;
  #lastTime: number | undefined;

  /** `smoothing` in (0, 1]: the weight of the newest chunk (1 = no smoothing). */
  constructor(smoothing = 0.3) {
    if (!(smoothing > 0 && smoothing <= 1)) {
      throw new RangeError(`smoothing must be in (0, 1], got ${smoothing}`);
    }
    this.#smoothing = smoothing;
  }

  /**
   * Record that `step` steps are done at time `timeS` (seconds, any origin). The first call sets the origin.
   * Steps reported with no time passed since the last record give no rate: they are measured with the next.
   */
  update(step: number, timeS: number): void {
    if (this.#lastTime !== undefined && step > this.#lastStep! && !(timeS > this.#lastTime)) return;
    if (this.#lastStep !== undefined && this.#lastTime !== undefined && step > this.#lastStep) {
      const perStep = (timeS - this.#lastTime) / (step - this.#lastStep);
      this.#avg = this.#smoothing * perStep + (1 - this.#smoothing) * this.#avg;
      this.#weight = this.#smoothing + (1 - this.#smoothing) * this.#weight;
    }
    if (this.#lastStep === undefined || step >= this.#lastStep) {
      this.#lastStep = step;
      this.#lastTime = timeS;
    }
  }

  /** Smoothed seconds per step; NaN before two updates. */
  get secondsPerStep(): number {
    return this.#weight > 0 ? this.#avg / this.#weight : NaN;
  }

  /** Seconds left until `totalSteps`; NaN when not yet known. */
  eta(totalSteps: number): number {
    if (this.#lastStep === undefined) return NaN;
    return Math.max(0, totalSteps - this.#lastStep) * this.secondsPerStep;
  }
}
