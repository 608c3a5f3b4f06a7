/**
 * Stopping on Ctrl-C or SIGTERM, shared by the entries: a first signal asks for a clean stop at the work's
 * next boundary, the same Ctrl-C seen twice is one, a later one quits at once.
 * @module
 */

/**
 * How long after a first stop signal another one is the same Ctrl-C. One Ctrl-C in a terminal reaches the
 * process twice within milliseconds: the terminal signals the whole foreground process group, and
 * `deno task`'s shell forwards the signal to its child as well. A person pressing Ctrl-C again to quit
 * does so later than this.
 */
export const SAME_STOP_SIGNAL_MS = 1000;

/**
 * What each stop signal means, in the order they come: `"first"` asks for a clean stop; `"repeat"` is the
 * same Ctrl-C delivered twice (within `windowMs` of the first), to be ignored; `"again"` is a deliberate
 * second one: quit at once. `now` (milliseconds) is injectable for tests.
 */
export function stopSignalCounter(
  windowMs = SAME_STOP_SIGNAL_MS,
  now: () => number = () => performance.now(),
): () => "first" | "repeat" | "again" {
  let firstAt: number | undefined;
  return () => {
    const t = now();
    if (firstAt === undefined) {
      firstAt = t;
      return "first";
    }
    return t - firstAt < windowMs ? "repeat" : "again";
  };
}

/**
 * Ctrl-C or SIGTERM (a scheduler's stop, `kill`) aborts the returned signal after printing `message`, so the
 * work can end cleanly at its next boundary (a checkpoint, the rows done); a second signal exits at once
 * with status 130, unless it comes within {@link SAME_STOP_SIGNAL_MS} of the first (the same Ctrl-C, seen
 * twice). `using` (or `dispose()`) removes the listeners.
 */
export function stopOnSignals(
  message: string,
  log: (line: string) => void = (l) => console.error(l),
): { signal: AbortSignal; [Symbol.dispose](): void } {
  const stop = new AbortController();
  const kind = stopSignalCounter();
  const onSignal = () => {
    const k = kind();
    if (k === "again") Deno.exit(130);
    if (k === "repeat") return;
    log(message);
    stop.abort();
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  return {
    signal: stop.signal,
    [Symbol.dispose]: () => {
      for (const s of signals) Deno.removeSignalListener(s, onSignal);
    },
  };
}
