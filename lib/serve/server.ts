/**
 * Starting and stopping the server: resolve the model (model_source.ts), pick the device, load the tokenizer
 * here and the model in its worker, build the app and listen. `close()` refuses new work, aborts running
 * generations (their streams end), waits for open responses and stops the worker: what SIGINT/SIGTERM do.
 * @module
 */
import { join } from "node:path";
import { loadConfig, maxSupportedLength } from "../model/config.ts";
import { resolveDevice } from "../runtime/device.ts";
import { createApp } from "./app.ts";
import { loadAssets } from "./assets.ts";
import { TextCodec } from "./codec.ts";
import type { ResolvedLimits, ServeContext } from "./context.ts";
import { WorkerEngine } from "./engine.ts";
import { resolveModelSource } from "./model_source.ts";
import type { ServeOptions } from "./options.ts";
import { DEFAULT_LIMITS } from "./options.ts";
import { AdmissionQueue } from "./queue.ts";
import type { Hono } from "hono";

/** A listening server. */
export type RunningServer = {
  /** `http://host:port` (what the CLI prints). */
  url: string;
  port: number;
  app: Hono;
  context: ServeContext;
  /** Stops accepting, ends running generations, stops the worker. Safe to call twice. */
  close(): Promise<void>;
  /** Settles when the server has stopped. */
  finished: Promise<void>;
};

/** Partial options: everything but the model has a default. */
export type StartOptions = Partial<Omit<ServeOptions, "limits">> & {
  limits?: Partial<ServeOptions["limits"]>;
  /** Where log lines go (default: console.log unless `quiet`). */
  log?: (line: string) => void;
};

async function generationEos(dir: string, configEos: number | number[] | null): Promise<number[]> {
  const ids = new Set<number>();
  const add = (v: unknown) => {
    if (typeof v === "number") ids.add(v);
    else if (Array.isArray(v)) v.forEach(add);
  };
  add(configEos);
  try {
    add(JSON.parse(await Deno.readTextFile(join(dir, "generation_config.json"))).eos_token_id);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new Error(`${dir}/generation_config.json: ${(e as Error).message}`);
    }
  }
  return [...ids];
}

/** Loads the model and starts listening. */
export async function startServer(o: StartOptions = {}): Promise<RunningServer> {
  const quiet = o.quiet ?? false;
  const log = o.log ?? ((line: string) => quiet || console.log(line));
  const source = await resolveModelSource({ model: o.model, reference: o.reference, runsDir: o.runsDir });
  for (const n of source.notices) log(`note: ${n}`);
  const cfg = await loadConfig(source.modelDir);
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
  const contextLength = maxSupportedLength(cfg);
  const limits = { ...DEFAULT_LIMITS, ...o.limits };
  const resolved: ResolvedLimits = {
    maxBodyBytes: limits.maxBodyBytes,
    maxPromptTokens: Math.min(limits.maxPromptTokens ?? contextLength - 1, contextLength - 1),
    maxTokensLimit: limits.maxTokensLimit,
  };
  const [codec, assets] = await Promise.all([
    TextCodec.load(source.modelDir, await generationEos(source.modelDir, cfg.eosTokenId)),
    loadAssets(),
  ]);
  const engine = await WorkerEngine.start({
    policyDir: source.modelDir,
    referenceDir: source.referenceDir,
    device,
    threads: o.threads ?? Math.max(1, navigator.hardwareConcurrency - 1),
  });
  const queue = new AdmissionQueue({ maxConcurrent: limits.maxConcurrent, maxQueue: limits.maxQueue });
  const context: ServeContext = {
    source,
    codec,
    engine,
    queue,
    limits: resolved,
    contextLength,
    createdAt: Math.floor(Date.now() / 1000),
    log,
  };
  const app = createApp(context, assets);

  const listening = Promise.withResolvers<Deno.NetAddr>();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: o.host ?? "127.0.0.1",
      port: o.port ?? 8000,
      onListen: (addr) => listening.resolve(addr),
      onError: (e) => {
        log(`error: ${(e as Error).stack ?? e}`);
        return Response.json(
          { error: { message: String(e), type: "server_error", param: null, code: null } },
          {
            status: 500,
          },
        );
      },
    }, app.fetch);
  } catch (e) {
    await engine.close();
    throw new Error(`cannot listen on ${o.host ?? "127.0.0.1"}:${o.port ?? 8000}: ${(e as Error).message}`);
  }
  const addr = await listening.promise;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    app,
    context,
    finished: server.finished,
    close() {
      closing ??= (async () => {
        queue.rejectWaiting(new Error("the server is shutting down"));
        await engine.close(); // running generations end: their streams send an error event and [DONE]
        await server.shutdown(); // graceful: open responses finish first
        await server.finished;
      })();
      return closing;
    },
  };
}
