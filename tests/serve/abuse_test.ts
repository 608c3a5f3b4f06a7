/**
 * The server against abuse, on real sockets of 127.0.0.1 (bounded loops, bounded waits):
 *
 * - a storm of clients that open a stream, take its first chunk and disconnect never puts more jobs in the
 *   model worker than --max-concurrent (a request's slot waits for the worker to stop its job), and a normal
 *   request right after is served at once;
 * - tokenizing four ~1 MB bodies at once leaves /health answering (the tokenizer runs in its own worker;
 *   the latencies are printed);
 * - cheap checks before tokenizing: characters per prompt;
 * - the Host header (DNS rebinding), JSON-only bodies (415), the API key (401), paths of the machine kept
 *   out of responses unless --expose-paths;
 * - 400 for an absurd β and for a body cut short, 408 for a body that does not arrive in time, 503 (no
 *   stack in the log) for requests queued or still sending when the server shuts down.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import type { ApiErrorBody } from "../../lib/serve/errors.ts";
import type { RunningServer } from "../../lib/serve/server.ts";
import { buildFixture, type Fixture, RUN_NAME, serve } from "./_fixture.ts";
import { head, RawConnection, rawRequest, type RawResponse } from "./_raw_http.ts";

const JSON_TYPE = { "content-type": "application/json" };
const CHAT = {
  messages: [{ role: "user", content: "hello" }],
  max_tokens: 10,
  temperature: 0,
  ignore_eos: true,
};
/** A chat that would run for seconds. */
const LONG = {
  messages: [{ role: "user", content: "hello" }],
  max_tokens: 4000,
  temperature: 0,
  ignore_eos: true,
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function post(server: RunningServer, path: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(server.url + path, {
    method: "POST",
    headers: JSON_TYPE,
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
}

async function health(server: RunningServer) {
  const t0 = performance.now();
  const res = await fetch(`${server.url}/health`);
  return { ms: performance.now() - t0, status: res.status, body: await res.json() };
}

/** Expects an OpenAI-style error with this status and code. */
function expectError(
  r: { status: number; json: unknown },
  status: number,
  code: string | null,
): ApiErrorBody["error"] {
  const e = (r.json as ApiErrorBody | null)?.error;
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.ok(e && typeof e.message === "string" && e.message.length > 10, JSON.stringify(r.json));
  assert.ok("type" in e && "param" in e && "code" in e, "OpenAI's error shape");
  assert.equal(e.code, code, e.message);
  return e;
}

async function asRaw(res: Response): Promise<{ status: number; json: unknown }> {
  return { status: res.status, json: await res.json() };
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

/** Waits (bounded) until no slot is held and the worker has no job. */
async function idle(server: RunningServer): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const { body } = await health(server);
    if (body.queue.running === 0 && body.queue.waiting === 0 && body.model_jobs === 0) return;
    await sleep(10);
  }
  assert.fail("the server never became idle");
}

Deno.test({
  name: "abuse: disconnect storm, big bodies, Host, Content-Type, API key, paths, status codes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const fx: Fixture = await buildFixture();
    const lines: string[] = [];
    const server = await serve({
      model: fx.runDir,
      log: (l) => lines.push(l),
      limits: { maxConcurrent: 2, maxQueue: 16, bodyTimeoutMs: 400 },
    });
    try {
      await t.step("60 open → first chunk → disconnect cycles: never more jobs than slots", async () => {
        let sampling = true, maxJobs = 0, maxRunning = 0, samples = 0;
        const sampler = (async () => {
          while (sampling) {
            const { body } = await health(server);
            maxJobs = Math.max(maxJobs, body.model_jobs);
            maxRunning = Math.max(maxRunning, body.queue.running);
            samples++;
            await sleep(2);
          }
        })();
        const t0 = performance.now();
        // 6 clients × 10 cycles each
        await Promise.all(Array.from({ length: 6 }, async () => {
          for (let i = 0; i < 10; i++) {
            const abort = new AbortController();
            const res = await post(server, "/v1/chat/completions", { ...LONG, stream: true }, {
              signal: abort.signal,
            });
            assert.equal(res.status, 200);
            const reader = res.body!.getReader();
            await reader.read(); // the first chunk: the job is in the worker
            abort.abort();
            await reader.cancel().catch(() => {});
          }
        }));
        const stormMs = performance.now() - t0;
        await idle(server);
        sampling = false;
        await sampler;
        const t1 = performance.now();
        const res = await post(server, "/v1/chat/completions", CHAT);
        const normal = await res.json();
        const normalMs = performance.now() - t1;
        console.log(
          `  storm: 60 cycles in ${stormMs.toFixed(0)} ms; ${samples} /health samples, at most ` +
            `${maxJobs} job(s) in the worker and ${maxRunning} slot(s) taken; then a 10-token request in ` +
            `${normalMs.toFixed(0)} ms`,
        );
        assert.ok(maxJobs <= 2, `${maxJobs} jobs in the worker with --max-concurrent 2`);
        assert.ok(maxRunning <= 2);
        assert.equal(res.status, 200);
        assert.equal(normal.usage.completion_tokens, 10);
        assert.ok(normalMs < 3000, `a normal request after the storm took ${normalMs.toFixed(0)} ms`);
        assert.equal((await health(server)).body.model_jobs, 0);
      });

      await t.step("four ~1 MB bodies tokenized at once: /health stays responsive", async () => {
        assert.equal(server.context.tokens.where, "worker");
        // 16 candidates of 60k characters: each under --max-prompt-chars (so it is tokenized), each far
        // over the context once tokenized (so the answer is a 400, after the work)
        const words = ["the", "cat", "is", "a", "dog", "answer", "four", "xylo", "yes", "no", "quick"];
        const sentence = words.join(" ") + " ";
        const text = sentence.repeat(Math.ceil(60_000 / sentence.length)).slice(0, 60_000);
        const body = JSON.stringify({ prompt: "hi", candidates: Array.from({ length: 16 }, () => text) });
        assert.ok(
          body.length > 950_000 && body.length < server.context.limits.maxBodyBytes,
          `${body.length}`,
        );
        let busy = true, sawPending = 0;
        const times: number[] = [];
        const prober = (async () => {
          while (busy) {
            const h = await health(server);
            times.push(h.ms);
            sawPending = Math.max(sawPending, h.body.tokenizer.pending);
            await sleep(10);
          }
        })();
        const t0 = performance.now();
        const answers = await Promise.all(
          Array.from({ length: 4 }, async () => asRaw(await post(server, "/v1/logprobs", body))),
        );
        const totalMs = performance.now() - t0;
        busy = false;
        await prober;
        for (const a of answers) expectError(a, 400, "context_length_exceeded");
        const p50 = percentile(times, 0.5), p90 = percentile(times, 0.9), max = Math.max(...times);
        console.log(
          `  4 × ${(body.length / 1e6).toFixed(2)} MB tokenized in ${totalMs.toFixed(0)} ms; /health ` +
            `(${times.length} probes) p50 ${p50.toFixed(1)} ms, p90 ${p90.toFixed(1)} ms, max ${
              max.toFixed(1)
            } ms`,
        );
        assert.ok(sawPending >= 1, "the tokenizer worker had work while /health answered");
        assert.ok(times.length >= 3, `${times.length} probes`);
        assert.ok(p50 < 200, `/health p50 ${p50.toFixed(0)} ms while tokenizing`);
      });

      await t.step("characters are checked before tokenizing", async () => {
        const limit = server.context.limits.maxPromptChars;
        const long = "a ".repeat(limit); // 2 × the limit
        const e = expectError(
          await asRaw(await post(server, "/v1/completions", { prompt: long, max_tokens: 1 })),
          400,
          "context_length_exceeded",
        );
        assert.match(e.message, /--max-prompt-chars/);
        assert.equal(e.param, "prompt");
        const c = expectError(
          await asRaw(await post(server, "/v1/logprobs", { prompt: "hi", candidates: ["ok", long] })),
          400,
          "context_length_exceeded",
        );
        assert.equal(c.param, "candidates[1]");
        const m = expectError(
          await asRaw(
            await post(server, "/v1/chat/completions", { messages: [{ role: "user", content: long }] }),
          ),
          400,
          "context_length_exceeded",
        );
        assert.equal(m.param, "messages");
      });

      await t.step("JSON bodies only: 415 for text/plain or no Content-Type", async () => {
        const plain = await post(server, "/v1/chat/completions", JSON.stringify(CHAT), {
          headers: { "content-type": "text/plain;charset=UTF-8" },
        });
        const e = expectError(await asRaw(plain), 415, "unsupported_media_type");
        assert.equal(e.type, "invalid_request_error");
        const none = await rawRequest(server.port, "POST", "/v1/completions", {
          host: `127.0.0.1:${server.port}`,
        }, JSON.stringify({ prompt: "hi", max_tokens: 1 }));
        expectError(none, 415, "unsupported_media_type");
        const form = await post(server, "/v1/logprobs", "prompt=hi", {
          headers: { "content-type": "application/x-www-form-urlencoded" },
        });
        expectError(await asRaw(form), 415, "unsupported_media_type");
        const ok = await post(server, "/v1/completions", { prompt: "hi", max_tokens: 1 }, {
          headers: { "content-type": "application/json; charset=utf-8" },
        });
        assert.equal(ok.status, 200);
        await ok.body?.cancel();
      });

      await t.step("Host: only the server's own names by default", async () => {
        const get = (host: string) => rawRequest(server.port, "GET", "/v1/models", { host });
        for (const host of [`127.0.0.1:${server.port}`, `localhost:${server.port}`, `[::1]:${server.port}`]) {
          assert.equal((await get(host)).status, 200, host);
        }
        const evil = await get(`evil.example:${server.port}`);
        const e = expectError(evil, 403, "host_not_allowed");
        assert.match(e.message, /--allowed-hosts/);
        expectError(await get("evil.example"), 403, "host_not_allowed");
        expectError(await get("127.0.0.1:1"), 403, "host_not_allowed"); // another port: another origin
        expectError(
          await rawRequest(server.port, "GET", "/health", { host: "evil.example" }),
          403,
          "host_not_allowed",
        );
        const form = await rawRequest(server.port, "POST", "/v1/completions", {
          host: "evil.example",
          ...JSON_TYPE,
        }, JSON.stringify({ prompt: "hi", max_tokens: 1 }));
        expectError(form, 403, "host_not_allowed");
      });

      await t.step("paths of the machine stay out of responses", async () => {
        const models = await (await fetch(`${server.url}/v1/models`)).text();
        const metrics = await (await fetch(`${server.url}/v1/runs/current/metrics`)).text();
        const inspect = await (await post(server, "/v1/logprobs", { prompt: "hi", candidates: ["yes"] }))
          .text();
        for (const [what, text] of [["models", models], ["metrics", metrics], ["logprobs", inspect]]) {
          assert.ok(!text.includes(fx.root), `${what} shows ${fx.root}: ${text.slice(0, 300)}`);
        }
        const m = JSON.parse(models).data[0];
        assert.deepEqual([m.root, m.run, m.reference], ["policy", RUN_NAME, "base"]);
        const run = JSON.parse(metrics);
        assert.equal(run.run.dir, RUN_NAME);
        assert.equal(run.config.model, "base", "absolute paths in the run's config too");
        assert.equal(JSON.parse(inspect).reference_model, "base");
      });

      await t.step("β out of range and a body cut short: 400", async () => {
        for (const beta of [1e308, 1e4]) {
          const e = expectError(
            await asRaw(await post(server, "/v1/logprobs", { prompt: "hi", candidates: ["a", "b"], beta })),
            400,
            "invalid_value",
          );
          assert.equal(e.param, "beta");
        }
        const alpha = expectError(
          await asRaw(await post(server, "/v1/logprobs", { prompt: "hi", candidates: ["a"], alpha: 1e308 })),
          400,
          "invalid_value",
        );
        assert.equal(alpha.param, "alpha");

        // Content-Length says 200 bytes; 30 arrive, then the client ends its side
        const c = await RawConnection.open(server.port);
        try {
          await c.write(
            head("POST", "/v1/chat/completions", {
              host: `127.0.0.1:${server.port}`,
              ...JSON_TYPE,
              "content-length": 200,
            }) + JSON.stringify(CHAT).slice(0, 30),
          );
          await c.closeWrite();
          const partial: RawResponse = await c.response();
          expectError(partial, 400, "incomplete_body");
        } finally {
          c.close();
        }
      });

      await t.step("a body that does not arrive within --body-timeout: 408", async () => {
        const c = await RawConnection.open(server.port);
        try {
          const t0 = performance.now();
          await c.write(
            head("POST", "/v1/logprobs", {
              host: `127.0.0.1:${server.port}`,
              ...JSON_TYPE,
              "content-length": 100,
            }) +
              '{"prompt": "hi", ',
          );
          const res = await c.response(3000);
          const ms = performance.now() - t0;
          expectError(res, 408, "request_timeout");
          assert.equal(res.headers.get("connection"), "close");
          assert.ok(ms >= 350 && ms < 2500, `408 after ${ms.toFixed(0)} ms with a 400 ms deadline`);
        } finally {
          c.close();
        }
        const ok = await health(server);
        assert.equal(ok.status, 200);
      });
    } finally {
      await server.close();
    }

    // a server with a key, one that widens the Host names, one that shows paths
    const keyed = await serve({ model: fx.runDir, apiKey: "sk-test-123", allowedHosts: ["evil.example"] });
    try {
      await t.step(
        "--api-key: 401 without or with a wrong key, 200 with it; /health and / stay open",
        async () => {
          const without = await asRaw(await fetch(`${keyed.url}/v1/models`));
          const e = expectError(without, 401, "invalid_api_key");
          assert.equal(e.type, "invalid_request_error");
          assert.equal(e.param, null);
          const wrong = await fetch(`${keyed.url}/v1/models`, {
            headers: { authorization: "Bearer sk-nope" },
          });
          expectError(await asRaw(wrong), 401, "invalid_api_key");
          assert.match(wrong.headers.get("www-authenticate") ?? "", /^Bearer/);
          const chat = await post(keyed, "/v1/chat/completions", CHAT, {
            headers: { ...JSON_TYPE, authorization: "Basic c2stdGVzdC0xMjM=" },
          });
          expectError(await asRaw(chat), 401, "invalid_api_key");
          const right = await fetch(`${keyed.url}/v1/models`, {
            headers: { authorization: "Bearer sk-test-123" },
          });
          assert.equal(right.status, 200);
          assert.equal((await right.json()).data[0].id, RUN_NAME);
          assert.equal((await health(keyed)).status, 200);
          const page = await fetch(`${keyed.url}/`);
          assert.equal(page.status, 200);
          await page.body?.cancel();

          const client = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "sk-test-123", maxRetries: 0 });
          const res = await client.chat.completions.create(
            { model: RUN_NAME, ...CHAT, max_tokens: 2 } as never,
          );
          assert.equal((res as OpenAI.ChatCompletion).choices.length, 1);
          const bad = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
          const err = await bad.models.list().catch((x) => x);
          assert.ok(err instanceof OpenAI.AuthenticationError, String(err));
          assert.equal(err.code, "invalid_api_key");
        },
      );

      await t.step("--allowed-hosts evil.example: that Host is answered", async () => {
        const res = await rawRequest(keyed.port, "GET", "/health", { host: "evil.example" });
        assert.equal(res.status, 200);
        const other = await rawRequest(keyed.port, "GET", "/health", { host: "other.example" });
        expectError(other, 403, "host_not_allowed");
      });
    } finally {
      await keyed.close();
    }

    const open = await serve({ model: fx.runDir, exposePaths: true, allowedHosts: ["*"] });
    try {
      await t.step("--expose-paths shows them; --allowed-hosts * answers any Host", async () => {
        const m = (await (await fetch(`${open.url}/v1/models`)).json()).data[0];
        assert.deepEqual([m.root, m.run, m.reference], [fx.policyDir, fx.runDir, fx.baseDir]);
        const res = await rawRequest(open.port, "GET", "/health", { host: "anything.example:1234" });
        assert.equal(res.status, 200);
      });
    } finally {
      await open.close();
      await fx.cleanup();
    }
  },
});

Deno.test({
  name: "shutdown: queued requests and bodies still arriving get 503, streams end, no stack in the log",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const fx = await buildFixture();
    const lines: string[] = [];
    const server = await serve({
      model: fx.runDir,
      log: (l) => lines.push(l),
      limits: { maxConcurrent: 1, maxQueue: 2 },
    });
    try {
      const stream = await post(server, "/v1/chat/completions", { ...LONG, stream: true });
      const reader = stream.body!.getReader();
      await reader.read();
      const queued = post(server, "/v1/chat/completions", CHAT);
      for (let i = 0; i < 200 && (await health(server)).body.queue.waiting === 0; i++) await sleep(5);
      assert.equal((await health(server)).body.queue.waiting, 1);
      // and a client in the middle of sending its body
      const half = await RawConnection.open(server.port);
      await half.write(
        head("POST", "/v1/completions", {
          host: `127.0.0.1:${server.port}`,
          ...JSON_TYPE,
          "content-length": 100,
        }) +
          '{"prompt": ',
      );
      await sleep(100);

      const t0 = performance.now();
      await server.close();
      const closeMs = performance.now() - t0;

      const q = await queued;
      const e = expectError(await asRaw(q), 503, "server_shutting_down");
      assert.equal(e.type, "server_error");
      let rest = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        rest += new TextDecoder().decode(value);
      }
      assert.match(rest, /server_shutting_down/, "the stream says why it ended");
      assert.match(rest, /data: \[DONE\]\n\n$/);
      const answer = await half.readUntil((t) => t.includes("\r\n\r\n{") && t.endsWith("}"), 3000);
      half.close();
      assert.match(answer.text, /^HTTP\/1\.1 503/);
      console.log(`  close() took ${closeMs.toFixed(0)} ms`);
      assert.ok(closeMs < 3000, `close() took ${closeMs.toFixed(0)} ms`);
      const log = lines.join("\n");
      assert.ok(!/\n\s+at /.test(log), `a stack trace in the log:\n${log}`);
      assert.ok(!/ 500 /.test(log), `a 500 in the log:\n${log}`);
      assert.match(log, /POST \/v1\/chat\/completions 503/);
    } finally {
      await server.close();
      await fx.cleanup();
    }
  },
});
