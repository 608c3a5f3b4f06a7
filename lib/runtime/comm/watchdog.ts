/**
 * The watchdog: a collective that has not completed after `timeoutMs` means a rank died, hangs, or took
 * another path through the program; waiting longer helps nobody. It aborts the communicator (MPI_Abort
 * ends the whole job; ncclCommAbort makes the peers' collectives fail), says which rank gave up in which
 * collective, and ends the process with {@link WATCHDOG_EXIT_CODE}, so that no rank of a broken world
 * waits forever.
 * @module
 */
import type { CollectiveName, CommBuffer, Communicator, ReduceOp } from "./communicator.ts";

/** The exit status of a process the watchdog ends (as timeout(1)'s). */
export const WATCHDOG_EXIT_CODE = 124;

/** The default: ten minutes, room for a slow first collective (NCCL connects its rings then). */
export const DEFAULT_COMM_TIMEOUT_MS = 600_000;

/** Options for {@link withWatchdog}. */
export type WatchdogOptions = {
  /** How long one collective may take, in ms; `Infinity` turns the watchdog off. Default 600 000. */
  timeoutMs?: number;
  /** Where the message goes after the abort (default: stderr). */
  report?: (message: string) => void;
  /** Ends the process (default: `Deno.exit`); tests pass their own. */
  exit?: (code: number) => void;
};

/** Checks a timeout: setTimeout overflows past 2^31 − 1 ms and then fires at once. */
export function checkTimeoutMs(ms: number, what = "timeoutMs"): number {
  if (ms === Infinity) return ms;
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms <= 0 || ms > 2 ** 31 - 1) {
    throw new RangeError(
      `${what} must be > 0 and at most ${2 ** 31 - 1} ms (~24.8 days), or Infinity; got ${ms}`,
    );
  }
  return ms;
}

/** `comm` with every collective timed (see the module's note). */
export function withWatchdog(comm: Communicator, o: WatchdogOptions = {}): Communicator {
  const timeoutMs = checkTimeoutMs(o.timeoutMs ?? DEFAULT_COMM_TIMEOUT_MS);
  const report = o.report ?? ((m: string) => console.error(m));
  const exit = o.exit ?? ((code: number) => Deno.exit(code));
  let fired = false;
  const watch = (op: CollectiveName, run: () => Promise<void>): Promise<void> => {
    if (timeoutMs === Infinity) return run();
    const timer = setTimeout(() => {
      if (fired) return;
      fired = true;
      const seconds = timeoutMs >= 1000 ? `${+(timeoutMs / 1000).toFixed(1)} s` : `${timeoutMs} ms`;
      const reason = `${op} did not complete within ${seconds} (${comm.backend}, ${comm.size} ranks): ` +
        `another rank died, hangs, or made a different collective`;
      const message = `rank ${comm.rank}/${comm.size}: ${reason}; aborting the communicator`;
      comm.abort(reason); // MPI_Abort does not return: it says so itself and ends the job
      report(message);
      exit(WATCHDOG_EXIT_CODE);
    }, timeoutMs);
    let p: Promise<void>;
    try {
      p = run();
    } catch (e) {
      clearTimeout(timer);
      return Promise.reject(e);
    }
    return p.finally(() => clearTimeout(timer));
  };
  return {
    get rank() {
      return comm.rank;
    },
    get size() {
      return comm.size;
    },
    get localRank() {
      return comm.localRank;
    },
    get backend() {
      return comm.backend;
    },
    allReduce: (buf: CommBuffer, op?: ReduceOp) => watch("allReduce", () => comm.allReduce(buf, op)),
    reduceScatter: (send: CommBuffer, recv: CommBuffer, op?: ReduceOp) =>
      watch("reduceScatter", () => comm.reduceScatter(send, recv, op)),
    allGather: (send: CommBuffer, recv: CommBuffer) => watch("allGather", () => comm.allGather(send, recv)),
    broadcast: (buf: CommBuffer, root: number) => watch("broadcast", () => comm.broadcast(buf, root)),
    barrier: () => watch("barrier", () => comm.barrier()),
    abort: (reason: string) => comm.abort(reason),
    [Symbol.asyncDispose]: () => comm[Symbol.asyncDispose](),
  };
}
