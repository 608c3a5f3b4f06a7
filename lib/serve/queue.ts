/**
 * Admission control for model work. The model runs in one worker whose compute is the scarce resource: at
 * most `maxConcurrent` requests run at once (their generation steps interleave in the worker), at most
 * `maxQueue` more wait their turn in arrival order, and anything beyond is refused at once with 429 so that
 * clients back off instead of piling up connections. A waiting request whose client goes away leaves the
 * queue; a running one holds its slot until the model worker has finished its job (respond.ts releases it
 * then, not when the client leaves), so the slots count jobs in the worker, and the next waiter starts
 * the moment one ends.
 * @module
 */
import { ApiError } from "./errors.ts";

/** The queue's limits. */
export type QueueLimits = {
  /** Requests running at once (≥ 1). */
  maxConcurrent: number;
  /** Requests waiting for a slot (≥ 0); beyond this, {@link QueueFullError}. */
  maxQueue: number;
};

/** What the queue holds now: reported by /health. */
export type QueueStats = QueueLimits & { running: number; waiting: number };

/** Thrown by {@link AdmissionQueue.acquire} when every slot and every waiting place is taken: a 429. */
export class QueueFullError extends ApiError {
  constructor(limits: QueueLimits) {
    super(
      429,
      `the server is busy: ${limits.maxConcurrent} request(s) running and ${limits.maxQueue} waiting ` +
        `(--max-concurrent, --max-queue); retry later`,
      "rate_limit_error",
      null,
      "queue_full",
    );
    this.name = "QueueFullError";
  }
}

/** Gives back a slot; calling it more than once is harmless. */
export type Release = () => void;

type Waiter = { grant: (release: Release) => void; fail: (e: unknown) => void };

/** A FIFO of requests for at most `maxConcurrent` slots. */
export class AdmissionQueue {
  #running = 0;
  readonly #waiting: Waiter[] = [];

  constructor(readonly limits: QueueLimits) {
    if (!Number.isInteger(limits.maxConcurrent) || limits.maxConcurrent < 1) {
      throw new RangeError(`maxConcurrent must be an integer ≥ 1, got ${limits.maxConcurrent}`);
    }
    if (!Number.isInteger(limits.maxQueue) || limits.maxQueue < 0) {
      throw new RangeError(`maxQueue must be an integer ≥ 0, got ${limits.maxQueue}`);
    }
  }

  /** Running and waiting counts with the limits. */
  stats(): QueueStats {
    return { ...this.limits, running: this.#running, waiting: this.#waiting.length };
  }

  /**
   * Waits for a slot. Throws {@link QueueFullError} at once when the queue is full, and the signal's reason
   * when it aborts while waiting (the waiter leaves the queue).
   */
  acquire(signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#running < this.limits.maxConcurrent) {
      this.#running++;
      return Promise.resolve(this.#releaser());
    }
    if (this.#waiting.length >= this.limits.maxQueue) return Promise.reject(new QueueFullError(this.limits));
    return new Promise<Release>((resolve, reject) => {
      const onAbort = () => {
        const i = this.#waiting.indexOf(waiter);
        if (i >= 0) this.#waiting.splice(i, 1);
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        grant: (release) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(release);
        },
        fail: (e) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  /** Fails every waiter (server shutdown). Running requests keep their slots until released. */
  rejectWaiting(reason: unknown): void {
    for (const w of this.#waiting.splice(0)) w.fail(reason);
  }

  #releaser(): Release {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.#waiting.shift();
      if (next) next.grant(this.#releaser()); // the slot passes straight to the next waiter
      else this.#running--;
    };
  }
}
