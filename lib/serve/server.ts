/**
 * Starting and stopping the server: resolve the model (model_source.ts), pick the device, load the tokenizer
 * here (for decoding) and in its worker (for request text), the model in its worker, build the app and
 * listen. `close()` is what SIGINT/SIGTERM do, in a bounded time: refuse new work and bodies still arriving
 * (503), answer queued requests 503, cancel running jobs (their streams end with an error event), wait for
 * open responses to go out, then close the listener and every connection left — a client holding a
 * half-sent body or idle keep-alive connection cannot keep the process alive.
 * @module
 */
import { loadConfig } from "../model/config.ts";
import { inspectModel } from "../model/open.ts";
import { resolveDevice } from "../runtime/device.ts";
import { createApp } from "./app.ts";
import { loadAssets } from "./assets.ts";
import type { ResolvedLimits, ServeContext } from "./context.ts";
import { WorkerEngine } from "./engine.ts";
import { shuttingDown } from "./errors.ts";
import { HostPolicy } from "./middleware/host_check.ts";
import { resolveModelSource } from "./model_source.ts";
import type { ServeOptions } from "./options.ts";
import { DEFAULT_LIMITS } from "./options.ts";
import { pathView } from "./paths.ts";
import { AdmissionQueue } from "./queue.ts";
import { InlineTokenizer, type PromptTokenizer, WorkerTokenizer } from "./tokens.ts";
import type { Hono } from "hono";

/** How long `close()` waits for open responses before it closes their connections. */
export const SHUTDOWN_GRACE_MS = 5000;

/** Prompt characters allowed per prompt token by default (see `ServeLimits.maxPromptChars`). */
export const CHARS_PER_TOKEN_BOUND = 32;

/** A listening server. */
export type RunningServer = {
  /** `http://host:port` (what the CLI prints). */
  url: string;
  port: number;
  app: Hono;
  context: ServeContext;
  /**
   * Stops the server (see the module documentation); settles within the grace period, plus a moment to
   * close the connections. Safe to call twice.
   */
  close(): Promise<void>;
  /** Settles when the server has stopped. */
  finished: Promise<void>;
};

/** Partial options: everything but the model has a default. */
export type StartOptions = Partial<Omit<ServeOptions, "limits">> & {
  limits?: Partial<ServeOptions["limits"]>;
  /** Where log lines go (default: console.log unless `quiet`). */
  log?: (line: string) => void;
  /** How long `close()` waits for open responses (default {@link SHUTDOWN_GRACE_MS}). */
  shutdownGraceMs?: number;
};

/** Whether `p` settled within `ms` (the timer is cleared either way, so it holds nothing open). */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((r) => timer = setTimeout(() => r(false), ms));
  try {
    return await Promise.race([p.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Loads the model and starts listening. */
export async function startServer(o: StartOptions = {}): Promise<RunningServer> {
  const quiet = o.quiet ?? false;
  const log = o.log ?? ((line: string) => quiet || console.log(line));
  const source = await resolveModelSource({ model: o.model, reference: o.reference, runsDir: o.runsDir });
  for (const n of source.notices) log(`note: ${n}`);
  // the model as generation reads it: config, tokenizer and chat template, every id that ends a response
  // (config.json's and generation_config.json's with the tokenizer's), the sampling defaults
  const [info, assets] = await Promise.all([inspectModel(source.location, { log }), loadAssets()]);
  const { config: cfg, codec, generationDefaults: defaults } = info;
  if (source.referenceDir) {
    const ref = await loadConfig(source.referenceDir);
    if (ref.vocabSize !== cfg.vocabSize) {
      throw new Error(
        `the reference model ${source.referenceDir} has a vocabulary of ${ref.vocabSize} tokens, the policy ` +
          `${cfg.vocabSize}: log-prob ratios need the same tokenizer`,
      );
    }
  }
  const { device, notice } = await resolveDevice(o.device ?? "cpu", { log });
  if (notice) log(notice.replace("training on", "serving on"));
  const contextLength = info.contextLength;
  const limits = { ...DEFAULT_LIMITS, ...o.limits };
  const maxPromptTokens = Math.min(limits.maxPromptTokens ?? contextLength - 1, contextLength - 1);
  const resolved: ResolvedLimits = {
    maxBodyBytes: limits.maxBodyBytes,
    bodyTimeoutMs: limits.bodyTimeoutMs,
    maxPromptTokens,
    maxPromptChars: limits.maxPromptChars ?? CHARS_PER_TOKEN_BOUND * maxPromptTokens,
    maxTokensLimit: limits.maxTokensLimit,
  };
  const hosts = new HostPolicy(o.host ?? "127.0.0.1", o.allowedHosts ?? []);
  if (["0.0.0.0", "::", "[::]"].includes(o.host ?? "") && !o.allowedHosts?.length) {
    log(
      "note: listening on every interface; requests must name this machine by one of its addresses or " +
        "localhost (Host header): add DNS names with --allowed-hosts",
    );
  }
  const field = {
    temperature: "temperature",
    topP: "top_p",
    topK: "top_k",
    repetitionPenalty: "repetition_penalty",
  };
  const named = Object.entries(defaults).map(([k, v]) => `${field[k as keyof typeof field]} ${v}`);
  if (named.length) log(`sampling defaults from generation_config.json: ${named.join(", ")}`);
  // request text is tokenized in a worker of its own, so that big bodies never hold the HTTP thread
  const tokens: PromptTokenizer = await WorkerTokenizer.start(source.modelDir, info.eosIds, codec, {
    maxPending: limits.maxConcurrent + limits.maxQueue,
    log,
  }).catch((e) => {
    log(`note: tokenizing on the HTTP thread (the tokenizer worker did not start: ${(e as Error).message})`);
    return new InlineTokenizer(codec);
  });
  let engine: WorkerEngine;
  try {
    engine = await WorkerEngine.start({
      policyDir: source.modelDir,
      referenceDir: source.referenceDir,
      device,
      threads: o.threads ?? Math.max(1, navigator.hardwareConcurrency - 1),
    });
  } catch (e) {
    tokens.close();
    throw e;
  }
  const queue = new AdmissionQueue({ maxConcurrent: limits.maxConcurrent, maxQueue: limits.maxQueue });
  const stopping = new AbortController();
  const context: ServeContext = {
    source,
    codec,
    tokens,
    engine,
    queue,
    limits: resolved,
    contextLength,
    createdAt: Math.floor(Date.now() / 1000),
    log,
    defaults,
    shutdown: stopping.signal,
    apiKey: o.apiKey ?? null,
    hosts,
    paths: pathView(o.exposePaths ?? false, [source.runDir, source.modelDir, source.referenceDir]),
  };
  const app = createApp(context, assets);

  /** Requests whose response has not gone out yet: shutdown waits for them. */
  const open = new Set<Promise<void>>();
  /** Aborting it makes Deno close the listener and every connection at once (unlike `shutdown()`). */
  const closeAll = new AbortController();
  const listening = Promise.withResolvers<Deno.NetAddr>();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: o.host ?? "127.0.0.1",
      port: o.port ?? 8000,
      signal: closeAll.signal,
      onListen: (addr) => listening.resolve(addr),
      onError: (e) => {
        log(`error: ${(e as Error).stack ?? e}`);
        return Response.json(
          { error: { message: "internal server error", type: "server_error", param: null, code: null } },
          { status: 500 },
        );
      },
    }, (req, info) => {
      const sent = info.completed.catch(() => {});
      open.add(sent);
      sent.finally(() => open.delete(sent));
      return app.fetch(req, { info });
    });
  } catch (e) {
    tokens.close();
    await engine.close();
    throw new Error(`cannot listen on ${o.host ?? "127.0.0.1"}:${o.port ?? 8000}: ${(e as Error).message}`);
  }
  const addr = await listening.promise;
  hosts.port = addr.port;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const grace = o.shutdownGraceMs ?? SHUTDOWN_GRACE_MS;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    app,
    context,
    finished: server.finished,
    close() {
      closing ??= (async () => {
        stopping.abort(); // new work and bodies still arriving: 503
        queue.rejectWaiting(shuttingDown());
        tokens.close();
        await engine.close(); // running generations end: their streams send an error event and [DONE]
        if (!(await within(Promise.all([...open]), grace))) {
          log(`shutdown: ${open.size} response(s) still open after ${grace} ms; closing their connections`);
        }
        closeAll.abort(); // the listener, idle keep-alive connections, half-sent bodies: all closed now
        await within(server.finished, 1000);
      })();
      return closing;
    },
  };
}
