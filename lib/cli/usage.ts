/**
 * The one usage-error path of every entry: a wrong command line's problems as `error: …` lines, a pointer to
 * `--help`, exit status 2; `--help` prints and exits 0.
 * @module
 */
import { UsageError } from "./spec.ts";

/**
 * Runs `fn`, adding the problems of a {@link UsageError} it throws to `errors` (undefined then), so that a
 * command line's problems are all listed at once.
 */
export function gather<T>(errors: string[], fn: () => T): T | undefined {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    errors.push(...e.errors);
    return undefined;
  }
}

/**
 * Prints a wrong command line's problems, one `error: …` line each, and where the options are, to stderr;
 * returns 2, the exit status of every entry for a wrong command line.
 */
export function usageErrorExit(
  e: UsageError | readonly string[],
  task: string,
  log: (line: string) => void = (l) => console.error(l),
): number {
  for (const line of e instanceof UsageError ? e.errors : e) log(`error: ${line}`);
  log(`(deno task ${task} --help for the options)`);
  return 2;
}

/**
 * Runs an entry's `parse` (null: `--help` was asked for): the parsed arguments, or the exit status after
 * printing `help` (0) or a wrong command line's problems (2; see {@link usageErrorExit}).
 */
export function parsedOrExitCode<T>(parse: () => T | null, help: string, task: string): T | number {
  let args: T | null;
  try {
    args = parse();
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    return usageErrorExit(e, task);
  }
  if (args === null) {
    console.log(help);
    return 0;
  }
  return args;
}
