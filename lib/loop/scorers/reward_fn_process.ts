/**
 * The process a reward function runs in, seen from the scorer: messages both ways over its stdin and stdout,
 * each a length-prefixed structured clone (node:v8's serializer: a row's BigInts and dates pass as they are, and
 * every call gets its own copy of the row).
 *
 * Why a process and not a Worker: a Worker stuck in a synchronous loop (`while (true) {}`) goes on spinning
 * after `terminate()` in Deno 2.9 (measured: its thread keeps a core busy until the process ends), so every
 * timed-out item would leave a core busy. A process is gone when it is killed. It gets the permissions this
 * process has (those granted whole), its stdout and stderr are this process's, and on Linux it is killed
 * with its parent (PR_SET_PDEATHSIG), so even a parent killed with SIGKILL leaves no reward function behind.
 * @module
 */
import { deserialize, serialize } from "node:v8";

/** What the scorer sends. */
export type ToChild =
  | { type: "load"; url: string; path: string }
  | { type: "call"; id: number; prompt: string; response: string; row: Record<string, unknown> };

/** What the child answers. */
export type FromChild =
  | { type: "loaded"; exportName: string }
  | { type: "load-failed"; message: string }
  | { type: "result"; id: number; reward: number }
  | { type: "failed"; id: number; reason: string; stack?: string }
  | { type: "uncaught"; reason: string };

const MAGIC = 0x3141434e; // "NCA1", little-endian: what is not a message is noticed, not misread

/** One frame: a magic number and the payload's length (4 bytes each, little-endian), then `m` cloned. */
export function encodeFrame(m: unknown): Uint8Array {
  const body = serialize(m);
  const frame = new Uint8Array(8 + body.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint32(4, body.length, true);
  frame.set(body, 8);
  return frame;
}

/**
 * Reads frames from `stream` and hands each message to `onMessage`; resolves when the stream ends, and
 * throws on bytes that are not a frame (something else wrote to the stream).
 */
export async function readFrames(
  stream: ReadableStream<Uint8Array>,
  onMessage: (m: unknown) => void,
): Promise<void> {
  let buf = new Uint8Array(0);
  for await (const chunk of stream) {
    const joined = new Uint8Array(buf.length + chunk.length);
    joined.set(buf);
    joined.set(chunk, buf.length);
    buf = joined;
    while (buf.length >= 8) {
      const view = new DataView(buf.buffer, buf.byteOffset);
      if (view.getUint32(0, true) !== MAGIC) {
        throw new Error(`it wrote ${JSON.stringify(new TextDecoder().decode(buf.subarray(0, 40)))}…`);
      }
      const len = view.getUint32(4, true);
      if (buf.length < 8 + len) break;
      onMessage(deserialize(buf.subarray(8, 8 + len)));
      buf = buf.slice(8 + len);
    }
  }
}

/** The `--allow-*` flags of the permissions this process holds whole, for the child. */
function permissionFlags(): string[] {
  const names = ["read", "write", "env", "net", "run", "ffi", "sys", "import"] as const;
  return names.filter((name) => Deno.permissions.querySync({ name }).state === "granted").map((n) =>
    `--allow-${n}`
  );
}

/**
 * A running child process of the reward function: messages go to its stdin and come from its stdout (its
 * console writes to stderr, see reward_fn_child.ts).
 */
export class RewardProcess {
  /** Each message from the child. */
  onmessage: ((m: FromChild) => void) | null = null;
  /** The child ended or wrote what is not a message (not after {@link terminate}). */
  onexit: ((reason: string) => void) | null = null;
  #writes: Promise<void> = Promise.resolve();
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  #ended = false;
  /** The child's process id. */
  readonly pid: number;
  /** Resolves when the child has ended (and been reaped). */
  readonly exited: Promise<Deno.CommandStatus>;

  private constructor(private readonly child: Deno.ChildProcess) {
    this.pid = child.pid;
    this.exited = child.status;
    this.#writer = child.stdin.getWriter();
    readFrames(child.stdout, (m) => this.#ended || this.onmessage?.(m as FromChild)).then(
      () => this.#exit("its output ended"),
      (e) =>
        this.#exit(`it wrote what is not a message (does the module write to Deno.stdout?): ${e.message}`),
    );
    void child.status.then((s) => this.#exit(`its process exited (${describeStatus(s)})`));
  }

  /** Starts the child (it imports nothing until told to). */
  static start(): RewardProcess {
    const entry = new URL("./reward_fn_child.ts", import.meta.url);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", ...permissionFlags(), entry.href, String(Deno.pid)],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    return new RewardProcess(child);
  }

  /** Sends a message; throws at once for one that cannot be cloned (a function in a row). */
  postMessage(m: ToChild): void {
    const frame = encodeFrame(m);
    this.#writes = this.#writes.then(() => this.#writer.write(frame)).catch(() => {});
  }

  /** Kills the child (SIGKILL: a function stuck in a loop cannot refuse). */
  terminate(): void {
    if (this.#ended) return;
    this.#ended = true;
    try {
      this.child.kill("SIGKILL");
    } catch { /* gone already */ }
    this.#writer.close().catch(() => {});
  }

  #exit(reason: string): void {
    if (this.#ended) return;
    this.terminate();
    this.onexit?.(`the reward function's process failed: ${reason}`);
  }
}

function describeStatus(s: Deno.CommandStatus): string {
  return s.signal ? `signal ${s.signal}` : `status ${s.code}`;
}
