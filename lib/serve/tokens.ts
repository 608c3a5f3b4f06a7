/**
 * Tokenizing request text for the routes, off the HTTP thread: {@link WorkerTokenizer} sends each job to
 * the tokenizer worker (tokenizer_worker.ts), one at a time in arrival order, so the HTTP thread only
 * parses JSON and keeps answering (/health, streams) while a megabyte of text is tokenized. The queue of
 * jobs is bounded (beyond it 429) and a job whose client left before it started is dropped.
 * {@link InlineTokenizer} does the same on the calling thread: the fallback when the worker cannot start.
 * @module
 */
import type { Message } from "../data/types.ts";
import type { TextCodec } from "../data/codec.ts";
import { ApiError, clientClosed, serverError, shuttingDown } from "./errors.ts";

/**
 * A chat prompt, and candidate responses to score after it (the inspection endpoint); `templateKwargs`
 * render both.
 */
export type ChatJob = {
  kind: "chat";
  messages: Message[];
  templateKwargs?: Record<string, unknown>;
  candidates?: string[];
};

/** Plain-text prompts (completions). */
export type TextsJob = { kind: "texts"; texts: string[] };

/** What the worker tokenizes. */
export type TokenizeJob = ChatJob | TextsJob;

/** Messages to the tokenizer worker. */
export type ToTokenizer =
  | { type: "load"; folder: string; generationEos: number[] }
  | { type: "job"; id: number; job: TokenizeJob };

/** Messages from the tokenizer worker: a chat job's ids are `[prompt, ...candidates]`. */
export type FromTokenizer =
  | { type: "loaded" }
  | { type: "load-failed"; message: string }
  | { type: "result"; id: number; ids: number[][] }
  | { type: "error"; id: number; message: string; template: boolean };

/** A tokenizing failure; `template`: the chat template could not render the messages (a 400). */
export class TokenizeError extends Error {
  constructor(message: string, readonly template: boolean) {
    super(message);
    this.name = "TokenizeError";
  }
}

/** A tokenized chat prompt and its candidates' responses (each with its end token). */
export type ChatTokens = { prompt: number[]; responses: number[][] };

/** Tokenizing as the routes use it. */
export interface PromptTokenizer {
  /** Where the work runs: "worker" off the HTTP thread, "inline" on it. */
  readonly where: "worker" | "inline";
  /** A chat prompt through the template; `candidates` tokenized as responses. */
  chat(job: Omit<ChatJob, "kind">, signal?: AbortSignal): Promise<ChatTokens>;
  /** Plain-text prompts (BOS first when the tokenizer has one). */
  texts(texts: string[], signal?: AbortSignal): Promise<number[][]>;
  /** Jobs waiting or running. */
  pending(): number;
  /** Refuses further jobs (503) and stops the worker. */
  close(): void;
}

function run(codec: TextCodec, job: TokenizeJob): number[][] {
  if (job.kind === "texts") return job.texts.map((t) => codec.textPromptIds(t));
  let prompt: number[];
  try {
    prompt = codec.chatPromptIds(job.messages, job.templateKwargs);
  } catch (e) {
    throw new TokenizeError((e as Error).message, true);
  }
  return [prompt, ...codec.candidateIds(job.messages, job.candidates ?? [], job.templateKwargs)];
}

const asChat = (ids: number[][]): ChatTokens => ({ prompt: ids[0], responses: ids.slice(1) });

/** Tokenizes on the calling thread (tests; the fallback when the worker cannot start). */
export class InlineTokenizer implements PromptTokenizer {
  readonly where = "inline";
  #closed = false;
  constructor(private readonly codec: TextCodec) {}
  chat(job: Omit<ChatJob, "kind">): Promise<ChatTokens> {
    return this.#run({ kind: "chat", ...job }).then(asChat);
  }
  texts(texts: string[]): Promise<number[][]> {
    return this.#run({ kind: "texts", texts });
  }
  pending(): number {
    return 0;
  }
  close(): void {
    this.#closed = true;
  }
  #run(job: TokenizeJob): Promise<number[][]> {
    if (this.#closed) return Promise.reject(shuttingDown());
    try {
      return Promise.resolve(run(this.codec, job));
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

type Queued = {
  job: TokenizeJob;
  resolve: (ids: number[][]) => void;
  reject: (e: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
};

/** Tokenizes in the tokenizer worker (see the module documentation). */
export class WorkerTokenizer implements PromptTokenizer {
  readonly where = "worker";
  #nextId = 1;
  #current: (Queued & { id: number }) | null = null;
  readonly #queue: Queued[] = [];
  #closed = false;
  /** Set when the worker died: jobs then run on the HTTP thread, as before there was a worker. */
  #fallback: InlineTokenizer | null = null;

  private constructor(
    private readonly worker: Worker,
    private readonly codec: TextCodec,
    private readonly maxPending: number,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Starts the worker on a model folder (the same tokenizer as `codec`, which it falls back to if the
   * worker dies). `maxPending`: jobs that may wait or run; more get 429.
   */
  static async start(
    folder: string,
    generationEos: number[],
    codec: TextCodec,
    o: { maxPending: number; log: (line: string) => void },
  ): Promise<WorkerTokenizer> {
    const worker = new Worker(new URL("./tokenizer_worker.ts", import.meta.url), { type: "module" });
    const t = new WorkerTokenizer(worker, codec, Math.max(1, o.maxPending), o.log);
    const ready = Promise.withResolvers<void>();
    worker.onmessage = (e: MessageEvent<FromTokenizer>) => {
      const m = e.data;
      if (m.type === "loaded") ready.resolve();
      else if (m.type === "load-failed") ready.reject(new Error(m.message));
      else t.#settle(m);
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      ready.reject(new Error(e.message));
      t.#crashed(e.message);
    };
    const load: ToTokenizer = { type: "load", folder, generationEos };
    worker.postMessage(load);
    try {
      await ready.promise;
    } catch (e) {
      worker.terminate();
      throw e;
    }
    return t;
  }

  chat(job: Omit<ChatJob, "kind">, signal?: AbortSignal): Promise<ChatTokens> {
    return this.#submit({ kind: "chat", ...job }, signal).then(asChat);
  }

  texts(texts: string[], signal?: AbortSignal): Promise<number[][]> {
    return this.#submit({ kind: "texts", texts }, signal);
  }

  pending(): number {
    return this.#queue.length + (this.#current ? 1 : 0);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const q of [...(this.#current ? [this.#current] : []), ...this.#queue.splice(0)]) {
      this.#finish(q);
      q.reject(shuttingDown());
    }
    this.#current = null;
    this.worker.terminate();
  }

  #submit(job: TokenizeJob, signal?: AbortSignal): Promise<number[][]> {
    if (this.#closed) return Promise.reject(shuttingDown());
    if (this.#fallback) return this.#inline(job);
    if (signal?.aborted) return Promise.reject(clientClosed());
    if (this.pending() >= this.maxPending) {
      return Promise.reject(
        new ApiError(
          429,
          `the server is busy: ${this.pending()} request(s) are being tokenized; retry later`,
          "rate_limit_error",
          null,
          "queue_full",
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const q: Queued = { job, resolve, reject, signal };
      if (signal) {
        // a job that has not started is dropped; one that has finishes (tokenizing cannot be interrupted)
        q.onAbort = () => {
          const i = this.#queue.indexOf(q);
          if (i < 0) return;
          this.#queue.splice(i, 1);
          reject(clientClosed());
        };
        signal.addEventListener("abort", q.onAbort, { once: true });
      }
      this.#queue.push(q);
      this.#pump();
    });
  }

  #inline(job: TokenizeJob): Promise<number[][]> {
    return job.kind === "texts"
      ? this.#fallback!.texts(job.texts)
      : this.#fallback!.chat(job).then((r) => [r.prompt, ...r.responses]);
  }

  #pump(): void {
    if (this.#current || this.#closed) return;
    const next = this.#queue.shift();
    if (!next) return;
    const id = this.#nextId++;
    this.#current = { ...next, id };
    const m: ToTokenizer = { type: "job", id, job: next.job };
    this.worker.postMessage(m);
  }

  #settle(m: Extract<FromTokenizer, { id: number }>): void {
    const q = this.#current;
    if (!q || q.id !== m.id) return;
    this.#current = null;
    this.#finish(q);
    if (m.type === "result") q.resolve(m.ids);
    else q.reject(new TokenizeError(m.message, m.template));
    this.#pump();
  }

  #finish(q: Queued): void {
    if (q.onAbort) q.signal?.removeEventListener("abort", q.onAbort);
  }

  #crashed(message: string): void {
    if (this.#closed || this.#fallback) return;
    this.log(`error: the tokenizer worker crashed (${message}); tokenizing on the HTTP thread from now on`);
    this.#fallback = new InlineTokenizer(this.codec);
    const all = [...(this.#current ? [this.#current] : []), ...this.#queue.splice(0)];
    this.#current = null;
    for (const q of all) {
      this.#finish(q);
      q.reject(serverError(`the tokenizer worker crashed: ${message}`, "tokenizer_crashed"));
    }
  }
}
