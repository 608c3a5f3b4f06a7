/**
 * `deno task serve` as a process: SIGTERM (and SIGINT) end it within the shutdown bound and with status 0
 * while clients hold it open — one in the middle of sending a body (the long --body-timeout does not
 * matter), one streaming a long generation, one on an idle keep-alive connection. Before, a half-sent body
 * kept the process alive through SIGTERM and SIGINT alike.
 */
import assert from "node:assert/strict";
import { buildFixture } from "./_fixture.ts";
import { head, RawConnection } from "./_raw_http.ts";
import { type Served, startServeProcess } from "./_process.ts";

/** The grace period (5 s) and start-up slack: a process still alive after this has hung. */
const EXIT_BOUND_MS = 9000;

/** Starts serve/main.ts on the fixture's run and waits (bounded) for its "listening on" line. */
function startProcess(runDir: string): Promise<Served> {
  return startServeProcess([
    "run",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-ffi",
    "--allow-sys",
    "--allow-net=127.0.0.1",
    "serve/main.ts",
    "--model",
    runDir,
    "--port",
    "0",
    "--threads",
    "1",
    "--body-timeout",
    "120",
  ], 60_000);
}

/** Sends `signal` and waits (bounded) for the exit: its status and how long it took. */
async function stopWith(s: Served, signal: Deno.Signal): Promise<{ code: number; ms: number }> {
  const t0 = performance.now();
  s.child.kill(signal);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([
    s.child.status,
    new Promise<null>((r) => timer = setTimeout(() => r(null), EXIT_BOUND_MS)),
  ]);
  clearTimeout(timer);
  if (status === null) {
    s.child.kill("SIGKILL");
    await s.child.status;
    assert.fail(`still running ${EXIT_BOUND_MS} ms after ${signal}:\n${s.output()}`);
  }
  return { code: status.code, ms: performance.now() - t0 };
}

/** A client that sent its headers and part of a body, and sends nothing more. */
async function halfSentBody(port: number): Promise<RawConnection> {
  const c = await RawConnection.open(port);
  await c.write(
    head("POST", "/v1/chat/completions", {
      host: `127.0.0.1:${port}`,
      "content-type": "application/json",
      "content-length": 500,
    }) + '{"messages": [{"role": "user", ',
  );
  return c;
}

Deno.test({
  name: "the serve process exits 0 in bounded time on SIGTERM / SIGINT while clients hold it open",
  ignore: Deno.build.os === "windows",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const fx = await buildFixture();
    try {
      await t.step("SIGTERM with a half-sent body, a long stream and an idle connection", async () => {
        const s = await startProcess(fx.runDir);
        const url = `http://127.0.0.1:${s.port}`;
        const half = await halfSentBody(s.port);
        const stream = await fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            messages: [{ role: "user", content: "hi" }],
            max_tokens: 4000,
            ignore_eos: true,
            stream: true,
          }),
        });
        const reader = stream.body!.getReader();
        await reader.read();
        const idle = await RawConnection.open(s.port);
        await idle.write(head("GET", "/health", { host: `127.0.0.1:${s.port}` }));
        await idle.readUntil((text) => text.includes('"status":"ok"'));
        await new Promise((r) => setTimeout(r, 100));

        const { code, ms } = await stopWith(s, "SIGTERM");
        console.log(`  exited ${code} ${ms.toFixed(0)} ms after SIGTERM`);
        assert.equal(code, 0, s.output());
        assert.match(s.output(), /SIGTERM: shutting down/);
        // the half-sent body was answered 503 (or its connection closed), not left hanging
        const answer = await half.readUntil(() => false, 2000).catch((e) => ({
          text: String(e),
          closed: false,
        }));
        half.close();
        idle.close();
        assert.ok(answer.closed, `the connection stayed open: ${answer.text}`);
        assert.ok(answer.text === "" || /^HTTP\/1\.1 503/.test(answer.text), answer.text);
        await reader.cancel().catch(() => {});
      });

      await t.step("SIGINT with a half-sent body", async () => {
        const s = await startProcess(fx.runDir);
        const half = await halfSentBody(s.port);
        await new Promise((r) => setTimeout(r, 100));
        const { code, ms } = await stopWith(s, "SIGINT");
        console.log(`  exited ${code} ${ms.toFixed(0)} ms after SIGINT`);
        assert.equal(code, 0, s.output());
        half.close();
      });
    } finally {
      await fx.cleanup();
    }
  },
});
