/**
 * The process a reward function runs in (see reward_fn_process.ts): `deno run reward_fn_child.ts <parent pid>`
 * reads messages on stdin and answers on stdout, imports the module it is told to, and runs the calls it
 * receives one at a time, in order. A function stuck in a loop blocks only this process, which the scorer
 * kills. The module's console output goes to stderr, so that stdout carries the messages only.
 *
 * Messages in: `{type: "load", url, path}` once, then `{type: "call", id, prompt, response, row}`, several
 * at once. Messages out: `loaded` (the export's name) or `load-failed`, then one `result` (a finite number)
 * or `failed` (why, ready to print) per call; `uncaught` reports an error thrown outside a call (a timer's
 * callback, a rejection no one awaited), which fails the call in progress.
 * @module
 */
import { asReward, findRewardFunction, type RewardFunction } from "./reward_fn.ts";
import { encodeFrame, type FromChild, readFrames, type ToChild } from "./reward_fn_process.ts";

/** An error's message, or the thrown value shown, for a message that must not throw itself. */
function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === "object" && e !== null && typeof (e as { message?: unknown }).message === "string") {
    return (e as { message: string }).message;
  }
  try {
    return String(e);
  } catch {
    return Object.prototype.toString.call(e);
  }
}

/** Linux: be killed with the scorer's process (PR_SET_PDEATHSIG), even when it is killed with SIGKILL. */
function dieWithParent(): void {
  if (Deno.build.os !== "linux" || Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return;
  try {
    const libc = Deno.dlopen("libc.so.6", {
      prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
      getppid: { parameters: [], result: "i32" },
    });
    const parent = Number(Deno.args[0] ?? 0);
    libc.symbols.prctl(1, 9n, 0n, 0n, 0n); // PR_SET_PDEATHSIG, SIGKILL
    // the parent may have died before the call: then we were adopted by another
    if (parent && libc.symbols.getppid() !== parent) Deno.exit(1);
  } catch { /* not glibc: the scorer's kill still ends this process */ }
}

dieWithParent();
// stdout is the channel: what the module prints goes to stderr
for (const k of ["log", "info", "debug", "dir", "table", "trace"] as const) {
  (console as unknown as Record<string, unknown>)[k] = console.error;
}
const out = Deno.stdout.writable.getWriter();
let writes: Promise<void> = Promise.resolve();
const post = (m: FromChild) => {
  const frame = encodeFrame(m);
  writes = writes.then(() => out.write(frame));
};
let fn: RewardFunction | undefined;

// an error outside a call would end this process (and print it): it fails the call in progress instead
globalThis.addEventListener("error", (e) => {
  e.preventDefault();
  post({ type: "uncaught", reason: `an uncaught error: ${messageOf(e.error ?? e.message)}` });
});
globalThis.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  post({ type: "uncaught", reason: `a promise rejected with no handler: ${messageOf(e.reason)}` });
});

/** Imports the module and finds its function; says which, or why not. */
async function load(m: Extract<ToChild, { type: "load" }>): Promise<void> {
  let mod: Record<string, unknown>;
  try {
    mod = await import(m.url);
  } catch (err) {
    post({
      type: "load-failed",
      message: `${m.path}: could not import the reward module: ${messageOf(err)}`,
    });
    return;
  }
  try {
    const found = findRewardFunction(mod, m.path);
    fn = found.fn;
    post({ type: "loaded", exportName: found.exportName });
  } catch (err) {
    post({ type: "load-failed", message: messageOf(err) });
  }
}

/** One call, answered with its reward or why there is none; never throws. */
async function call(m: Extract<ToChild, { type: "call" }>): Promise<void> {
  if (!fn) {
    post({ type: "failed", id: m.id, reason: "the reward module is not loaded" });
    return;
  }
  let v: unknown;
  try {
    v = await fn(m.prompt, m.response, m.row);
  } catch (err) {
    const stack = err instanceof Error ? err.stack : undefined;
    post({ type: "failed", id: m.id, reason: `the reward function threw: ${messageOf(err)}`, stack });
    return;
  }
  const r = asReward(v);
  post(
    typeof r === "number" ? { type: "result", id: m.id, reward: r } : { type: "failed", id: m.id, reason: r },
  );
}

// calls come several at a time: they run one after the other, in order
const queue: Extract<ToChild, { type: "call" }>[] = [];
let draining = false;
let loading: Promise<void> = Promise.resolve();
async function drain(): Promise<void> {
  draining = true;
  await loading; // calls sent right after the load wait for it
  for (let m = queue.shift(); m; m = queue.shift()) await call(m);
  draining = false;
}

await readFrames(Deno.stdin.readable, (data) => {
  const m = data as ToChild;
  if (m.type === "load") {
    loading = load(m);
    return;
  }
  queue.push(m);
  if (!draining) void drain();
});
// the scorer closed the channel: it is done with this process
Deno.exit(0);
