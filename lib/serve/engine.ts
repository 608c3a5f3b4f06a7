/**
 * The HTTP thread's handle on the model worker (worker.ts): starts it, loads the model, and turns the
 * message protocol (protocol.ts) into calls — a generation job with per-token callbacks that can be stopped
 * row by row or aborted, and scoring as a promise. Routes depend on the {@link Engine} interface only.
 * @module
 */
import type { Device } from "../runtime/tensor.ts";
import { type ApiError, serverError, shuttingDown } from "./errors.ts";
import type { FromWorker, GenerateRequest, RowDone, ScoreRequest, TokenEvent, ToWorker } from "./protocol.ts";

/** What a generation job asks for (the protocol's request without its routing fields). */
export type GenerationParams = Omit<GenerateRequest, "type" | "id">;

/** Receives a job's events in order: every token of a row comes before the row's `onRowDone`. */
export type GenerationListener = {
  onToken(e: TokenEvent): void;
  onRowDone(e: RowDone): void;
};

/** A running generation job. */
export type GenerationHandle = {
  /** Ends one row at its next step. */
  stopRow(row: number): void;
  /** Ends every row at its next step (their finish reason is "abort"). */
  abort(): void;
  /**
   * Settles when the worker has finished every row — after an abort, once the worker has seen it and
   * stopped (rejects when the job failed).
   */
  done: Promise<void>;
};

/** What scoring asks for. */
export type ScoreParams = Omit<ScoreRequest, "type" | "id">;

/** Per-token log-probs of each candidate and their sums. */
export type ScoreResult = { tokenLogprobs: number[][]; sums: number[] };

/** The model operations the routes use. */
export interface Engine {
  generate(params: GenerationParams, listener: GenerationListener): GenerationHandle;
  score(params: ScoreParams): Promise<ScoreResult>;
  /** Why the model is unavailable (the worker crashed), or null while it works. */
  failure(): string | null;
  /** Jobs the worker has not finished (a disconnected client's job leaves within one step). */
  activeJobs(): number;
  /** Stops every job (they fail with 503) and the worker. */
  close(): Promise<void>;
}

/** How to start the worker. */
export type EngineOptions = {
  policyDir: string;
  referenceDir: string | null;
  device: Device;
  threads: number;
};

type Pending =
  | { kind: "generate"; listener: GenerationListener; resolve: () => void; reject: (e: unknown) => void }
  | { kind: "score"; resolve: (r: ScoreResult) => void; reject: (e: unknown) => void };

/** The {@link Engine} backed by a Deno Worker running worker.ts. */
export class WorkerEngine implements Engine {
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #dead: Error | undefined;
  /** What jobs sent after the engine died fail with. */
  #deadReason: ApiError | undefined;

  private constructor(private readonly worker: Worker, private readonly graphDir: string) {}

  /** Starts the worker and loads the generation model; rejects with the worker's reason when that fails. */
  static async start(opts: EngineOptions): Promise<WorkerEngine> {
    const graphDir = await Deno.makeTempDir({ prefix: "nca-serve-graphs-" });
    const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    const engine = new WorkerEngine(worker, graphDir);
    const ready = Promise.withResolvers<void>();
    worker.onmessage = (e: MessageEvent<FromWorker>) => {
      const m = e.data;
      if (m.type === "loaded") ready.resolve();
      else if (m.type === "load-failed") ready.reject(new Error(`loading ${opts.policyDir}: ${m.message}`));
      else engine.#dispatch(m);
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      const err = new Error(`the model worker crashed: ${e.message}`);
      ready.reject(err);
      engine.#fail(err, serverError(err.message, "model_unavailable"));
    };
    const load: ToWorker = { type: "load", ...opts, graphDir };
    worker.postMessage(load);
    try {
      await ready.promise;
    } catch (e) {
      worker.terminate();
      await Deno.remove(graphDir, { recursive: true }).catch(() => {});
      throw e;
    }
    return engine;
  }

  generate(params: GenerationParams, listener: GenerationListener): GenerationHandle {
    const id = this.#nextId++;
    const done = new Promise<void>((resolve, reject) => {
      if (this.#deadReason) return reject(this.#deadReason);
      this.#pending.set(id, { kind: "generate", listener, resolve, reject });
      this.#send({ type: "generate", id, ...params });
    });
    return {
      stopRow: (row) => this.#pending.has(id) && this.#send({ type: "stop-row", id, row }),
      abort: () => this.#pending.has(id) && this.#send({ type: "abort", id }),
      done,
    };
  }

  score(params: ScoreParams): Promise<ScoreResult> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      if (this.#deadReason) return reject(this.#deadReason);
      this.#pending.set(id, { kind: "score", resolve, reject });
      this.#send({ type: "score", id, ...params });
    });
  }

  failure(): string | null {
    return this.#dead?.message ?? null;
  }

  activeJobs(): number {
    return this.#pending.size;
  }

  async close(): Promise<void> {
    this.#fail(new Error("the server is shutting down"), shuttingDown());
    this.worker.terminate();
    await Deno.remove(this.graphDir, { recursive: true }).catch(() => {});
  }

  #send(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  #dispatch(m: FromWorker): void {
    if (!("id" in m)) return;
    const p = this.#pending.get(m.id);
    if (!p) return;
    switch (m.type) {
      case "token":
        if (p.kind === "generate") p.listener.onToken(m);
        break;
      case "row-done":
        if (p.kind === "generate") p.listener.onRowDone(m);
        break;
      case "done":
        this.#pending.delete(m.id);
        if (p.kind === "generate") p.resolve();
        break;
      case "scored":
        this.#pending.delete(m.id);
        if (p.kind === "score") p.resolve({ tokenLogprobs: m.tokenLogprobs, sums: m.sums });
        break;
      case "failed":
        this.#pending.delete(m.id);
        p.reject(serverError(`the model failed: ${m.message}`, "model_error"));
        break;
    }
  }

  /** Marks the engine dead and fails every pending job with `reason`. */
  #fail(err: Error, reason: ApiError): void {
    this.#dead ??= err;
    this.#deadReason ??= reason;
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      p.reject(reason);
    }
  }
}
