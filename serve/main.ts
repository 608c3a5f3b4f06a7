/**
 * `deno task serve`: serve a trained run (default: the latest demo run) with an OpenAI-compatible API, the
 * log-prob inspector and a dashboard. The CLI only parses flags, starts lib/serve and stops it on
 * SIGINT/SIGTERM — in a bounded time, then exits 0; a second signal exits at once, unless it comes within a
 * second of the first (one Ctrl-C in a terminal under `deno task` arrives twice) — everything else lives in
 * lib/serve.
 * @module
 */
import { parsedOrExitCode, stopSignalCounter } from "../lib/cli/mod.ts";
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
  const opts = parsedOrExitCode(() => parseServeArgs(args), SERVE_USAGE, "serve");
  if (typeof opts === "number") return opts;
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
  const kind = stopSignalCounter();
  const stop = (signal: Deno.Signal) => {
    const k = kind();
    if (k === "repeat") return;
    if (k === "again") {
      console.log(`${signal} again: exiting now`);
      Deno.exit(1);
    }
    console.log(`${signal}: shutting down`);
    server.close().then(stopped.resolve, stopped.resolve);
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  // the listeners stay until the exit: a repeat of the same Ctrl-C arriving after a quick shutdown would
  // otherwise meet the default action and end the process with status 130
  for (const s of signals) Deno.addSignalListener(s, () => stop(s));
  await Promise.race([server.finished, stopped.promise]);
  console.log("stopped");
  return 0; // Deno.exit: whatever a client still holds open ends with the process
}

if (import.meta.main) Deno.exit(await main(Deno.args));
