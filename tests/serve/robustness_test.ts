/**
 * The server under bad input and load, on a real socket with --max-concurrent 1 --max-queue 0: malformed
 * and invalid bodies, limits (body size, prompt tokens, max_tokens, context), unknown routes and models all
 * answer in OpenAI's error shape and leave the server serving; /health stays fast during a long generation;
 * a second request gets 429 while the slot is taken; a client that disconnects (streaming or not) frees the
 * slot, so the next request is admitted.
 */
import assert from "node:assert/strict";
import type { ApiErrorBody } from "../../lib/serve/errors.ts";
import { buildFixture, RUN_NAME, serve } from "./_fixture.ts";

const CHAT = { messages: [{ role: "user", content: "hello" }], max_tokens: 4, temperature: 0 };

/** A chat that runs for seconds (about a millisecond a token): thousands of tokens, EOS ignored. */
const LONG = {
  messages: [{ role: "user", content: "hello" }],
  max_tokens: 4000,
  temperature: 0,
  ignore_eos: true,
};

Deno.test({
  name: "server robustness: errors, limits, queue, disconnects, health under load",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const fx = await buildFixture();
    const server = await serve({
      model: fx.runDir,
      limits: {
        maxConcurrent: 1,
        maxQueue: 0,
        maxBodyBytes: 4000,
        maxPromptTokens: 200,
        maxTokensLimit: 4000,
      },
    });
    const url = server.url;
    const post = (path: string, body: unknown, init: RequestInit = {}) =>
      fetch(url + path, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" || body instanceof ReadableStream ? body : JSON.stringify(body),
        ...init,
      });
    /** Expects an OpenAI-style error with this status (and param / code when given). */
    const expectError = async (
      res: Response,
      status: number,
      want: { param?: string | null; code?: string | null; type?: string } = {},
    ) => {
      const body = await res.json() as ApiErrorBody;
      assert.equal(res.status, status, JSON.stringify(body));
      assert.match(res.headers.get("content-type") ?? "", /application\/json/);
      assert.equal(typeof body.error.message, "string");
      assert.ok(body.error.message.length > 10, body.error.message);
      for (const k of ["param", "code", "type"] as const) {
        if (want[k] !== undefined) assert.equal(body.error[k], want[k], `${k}: ${body.error.message}`);
      }
      return body.error;
    };
    const health = async () => {
      const t0 = performance.now();
      const res = await fetch(`${url}/health`);
      const body = await res.json();
      return { ms: performance.now() - t0, body };
    };
    /**
     * Waits until no request holds a slot and the worker has ended every job: the server noticed the
     * disconnect and stopped the generation (unstopped, it would run for seconds).
     */
    const idle = async () => {
      for (let i = 0; i < 100; i++) {
        const { body } = await health();
        if (body.queue.running === 0 && body.model_jobs === 0) return;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.fail("the slot was never freed, or the generation never stopped");
    };

    try {
      await t.step("bad JSON, missing and mistyped fields: 400 naming the field", async () => {
        await expectError(await post("/v1/chat/completions", "{not json"), 400, { code: "invalid_json" });
        await expectError(await post("/v1/chat/completions", ""), 400, { code: "invalid_json" });
        await expectError(await post("/v1/chat/completions", "[1, 2]"), 400, { code: "invalid_json" });
        await expectError(await post("/v1/chat/completions", {}), 400, { param: "messages" });
        await expectError(
          await post("/v1/chat/completions", { messages: [{ role: "user", content: 5 }] }),
          400,
          { param: "messages[0].content", type: "invalid_request_error" },
        );
        await expectError(await post("/v1/chat/completions", { ...CHAT, temperature: 3 }), 400, {
          param: "temperature",
        });
        await expectError(await post("/v1/chat/completions", { ...CHAT, n: 0 }), 400, { param: "n" });
        await expectError(await post("/v1/chat/completions", { ...CHAT, top_logprobs: 2 }), 400, {
          param: "top_logprobs",
        });
        await expectError(await post("/v1/completions", { max_tokens: 3 }), 400, { param: "prompt" });
        await expectError(await post("/v1/chat/completions", { ...CHAT, frequency_penalty: 1 }), 400, {
          param: "frequency_penalty",
          code: "unsupported_parameter",
        });
      });

      await t.step("token limits: max_tokens, prompt length, context", async () => {
        await expectError(await post("/v1/chat/completions", { ...CHAT, max_tokens: 4001 }), 400, {
          param: "max_tokens",
        });
        await expectError(await post("/v1/chat/completions", { ...CHAT, max_completion_tokens: 5000 }), 400, {
          param: "max_completion_tokens",
        });
        const long = Array.from({ length: 250 }, () => "cat").join(" ");
        const e = await expectError(
          await post("/v1/chat/completions", { messages: [{ role: "user", content: long }] }),
          400,
          { param: "messages", code: "context_length_exceeded" },
        );
        assert.match(e.message, /at most 200/);
        await expectError(await post("/v1/completions", { prompt: long }), 400, {
          code: "context_length_exceeded",
        });
        await expectError(await post("/v1/completions", { prompt: "" }), 400, { param: "prompt" });
        await expectError(await post("/v1/completions", { prompt: ["a", "b", "c", "d", "e"], n: 16 }), 400, {
          param: "prompt",
        });
      });

      await t.step("a body over --max-body-bytes: 413", async () => {
        const big = { ...CHAT, messages: [{ role: "user", content: "a ".repeat(3000) }] };
        await expectError(await post("/v1/chat/completions", big), 413, { code: "request_too_large" });
        // without a Content-Length too (a streamed body is counted as it arrives)
        const chunks = new ReadableStream({
          start(c) {
            c.enqueue(new TextEncoder().encode(JSON.stringify(big)));
            c.close();
          },
        });
        await expectError(await post("/v1/chat/completions", chunks), 413, { code: "request_too_large" });
      });

      await t.step("unknown routes and models: 404 JSON", async () => {
        await expectError(await fetch(`${url}/v1/nothing`), 404, {
          code: "not_found",
          type: "not_found_error",
        });
        await expectError(await fetch(`${url}/v1/chat/completions`), 404, { code: "not_found" });
        await expectError(await post("/v1/models", {}), 404);
        await expectError(await fetch(`${url}/v1/models/other`), 404, { code: "model_not_found" });
        await expectError(await post("/v1/chat/completions", { ...CHAT, model: "gpt-4o" }), 404, {
          code: "model_not_found",
        });
        await expectError(await fetch(`${url}/static/nothing.js`), 404);
      });

      await t.step("still serving after all of that", async () => {
        const res = await post("/v1/chat/completions", { ...CHAT, model: RUN_NAME });
        assert.equal(res.status, 200);
        const body = await res.json();
        assert.equal(body.choices.length, 1);
        // and through the app without a socket
        const viaApp = await server.app.request("/health");
        assert.equal((await viaApp.json()).status, "ok");
      });

      await t.step("during a long generation: /health is fast, a second request gets 429", async () => {
        const abort = new AbortController();
        const res = await post("/v1/chat/completions", { ...LONG, stream: true }, { signal: abort.signal });
        assert.equal(res.status, 200);
        const reader = res.body!.getReader();
        await reader.read(); // generation is under way
        await reader.read();
        const times: number[] = [];
        for (let i = 0; i < 5; i++) {
          const h = await health();
          times.push(h.ms);
          assert.equal(h.body.queue.running, 1);
          assert.equal(h.body.model_jobs, 1);
          await new Promise((r) => setTimeout(r, 30));
        }
        assert.ok(Math.max(...times) < 200, `health took ${times.map((x) => x.toFixed(1)).join(", ")} ms`);
        await expectError(await post("/v1/chat/completions", CHAT), 429, {
          code: "queue_full",
          type: "rate_limit_error",
        });
        await expectError(await post("/v1/logprobs", { prompt: "hi", candidates: ["yes"] }), 429);
        const first = await reader.read(); // still streaming: the 429 did not disturb it
        assert.equal(first.done, false);

        // the client disconnects: the slot is freed and the next request is admitted
        abort.abort();
        await reader.cancel().catch(() => {});
        await idle();
        const next = await post("/v1/chat/completions", CHAT);
        assert.equal(next.status, 200);
        assert.equal((await next.json()).object, "chat.completion");
      });

      await t.step("a non-streaming client that disconnects frees its slot too", async () => {
        const abort = new AbortController();
        const pending = post("/v1/chat/completions", LONG, { signal: abort.signal }).catch((e) => e);
        for (let i = 0; i < 100 && (await health()).body.queue.running === 0; i++) {
          await new Promise((r) => setTimeout(r, 10));
        }
        await new Promise((r) => setTimeout(r, 100));
        abort.abort();
        assert.ok((await pending) instanceof DOMException);
        await idle();
        const next = await post("/v1/completions", { prompt: "hi", max_tokens: 2 });
        assert.equal(next.status, 200);
        await next.body?.cancel();
      });
    } finally {
      await server.close();
      await fx.cleanup();
    }
  },
});
