/**
 * `deno task serve` (or serve/main.ts) as a process of a test: started, its output collected, and waited for
 * (bounded) until it prints the port it listens on.
 */
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** A started server process: the child, its port, and everything it printed so far. */
export type Served = {
  child: Deno.ChildProcess;
  port: number;
  output: () => string;
  pumped: Promise<unknown>;
};

/**
 * Runs Deno with `args` in the project root and waits until it prints "listening on …:port", at most
 * `timeoutMs`; kills it and throws with its output otherwise.
 */
export async function startServeProcess(args: string[], timeoutMs: number): Promise<Served> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let out = "";
  const decoder = new TextDecoder();
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) out += decoder.decode(chunk, { stream: true });
  };
  const pumped = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
    if (m) return { child, port: Number(m[1]), output: () => out, pumped };
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await child.status;
      throw new Error(`the server did not start:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
