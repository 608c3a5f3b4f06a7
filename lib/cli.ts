/**
 * What the command-line entries (train/, sample/, score/, eval/ main.ts) share: the error for a wrong
 * command line, flag value parsers that name the flag, and stopping on Ctrl-C or SIGTERM.
 * @module
 */

/** A wrong command line: printed with a pointer to `--help`, exit status 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A whole-number flag ≥ `min`, or undefined when not given. */
export function intFlag(flag: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\s*\d+\s*$/.test(v) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${flag} must be a whole number ≥ ${min}, got "${v}"`);
  }
  return n;
}

/** A number flag, or undefined when not given. */
export function numberFlag(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n)) throw new UsageError(`--${flag} must be a number, got "${v}"`);
  return n;
}

/**
 * Ctrl-C or SIGTERM (a scheduler's stop, `kill`) aborts the returned signal after printing `message`, so the
 * work can end cleanly at its next boundary (a checkpoint, the rows done); a second signal exits at once
 * with status 130. `using` (or `dispose()`) removes the listeners.
 */
export function stopOnSignals(
  message: string,
  log: (line: string) => void = (l) => console.error(l),
): { signal: AbortSignal; [Symbol.dispose](): void } {
  const stop = new AbortController();
  const onSignal = () => {
    if (stop.signal.aborted) Deno.exit(130);
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

/**
 * Runs an entry's `parse` (null: `--help` was asked for): the parsed arguments, or the exit status after
 * printing the usage (0) or a wrong command line's error with a pointer to `deno task <task> --help` (2).
 */
export function parsedOrExitCode<T>(parse: () => T | null, usage: string, task: string): T | number {
  let args: T | null;
  try {
    args = parse();
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`error: ${e.message}\n(see deno task ${task} --help)`);
    return 2;
  }
  if (args === null) {
    console.log(usage);
    return 0;
  }
  return args;
}
