/**
 * `deno task serve`: serve a trained run (default: the latest demo run) with an OpenAI-compatible API, the
 * log-prob inspector and a dashboard. The CLI only parses flags, starts lib/serve and stops it on
 * SIGINT/SIGTERM — in a bounded time, then exits 0; a second signal exits at once — everything else lives
 * in lib/serve.
 * @module
 */
import { parseServeArgs, SERVE_USAGE, startServer } from "../lib/serve/mod.ts";

/**
 * Deno.serve warns once that `request.signal` also aborts after a successful response (its legacy
 * behaviour). The server reads the signal only to stop the generation of a client that disconnects, and
 * removes its listeners before answering, so the warning says nothing to an operator: drop exactly it.
 */
function silenceLegacyAbortWarning(): void {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === "string" && args[0].startsWith("Deno.serve: request.signal aborts")) return;
    warn(...args);
  };
}

async function main(args: string[]): Promise<number> {
  let opts;
  try {
    opts = parseServeArgs(args);
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n\n${SERVE_USAGE}`);
    return 2;
  }
  if (opts === null) {
    console.log(SERVE_USAGE);
    return 0;
  }
  silenceLegacyAbortWarning();
  let server;
  try {
    server = await startServer(opts);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  const { source } = server.context;
  console.log(`serving ${source.id} (${source.modelDir})`);
  if (source.referenceDir) console.log(`reference ${source.referenceDir} (from ${source.referenceFrom})`);
  if (opts.apiKey) console.log("the API (/v1/*) needs the key: Authorization: Bearer <--api-key>");
  console.log(`listening on ${server.url}  (dashboard: ${server.url}/, API: ${server.url}/v1)`);

  const stopped = Promise.withResolvers<void>();
  let stopping = false;
  const stop = (signal: Deno.Signal) => {
    if (stopping) {
      console.log(`${signal} again: exiting now`);
      Deno.exit(1);
    }
    stopping = true;
    console.log(`${signal}: shutting down`);
    server.close().then(stopped.resolve, stopped.resolve);
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const handlers = signals.map((s) => [s, () => stop(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  await Promise.race([server.finished, stopped.promise]);
  for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  console.log("stopped");
  return 0; // Deno.exit: whatever a client still holds open ends with the process
}

if (import.meta.main) Deno.exit(await main(Deno.args));
