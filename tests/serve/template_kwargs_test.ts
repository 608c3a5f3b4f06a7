/**
 * A served run's chat template variables (what it trained with, config.json's `chatTemplateKwargs`) are
 * every request's default, so /v1/logprobs scores candidates as the trainer rendered them; a request's own
 * `chat_template_kwargs` win key by key; the variables the server sets are refused with a 400.
 */
import assert from "node:assert/strict";
import type { ServeContext } from "../../lib/serve/context.ts";
import { ApiError } from "../../lib/serve/errors.ts";
import { templateKwargsOf } from "../../lib/serve/request_checks.ts";

const ctxWith = (templateKwargs: Record<string, unknown> | null) =>
  ({ source: { templateKwargs } }) as unknown as ServeContext;

Deno.test("chat_template_kwargs: the run's are the default, the request's win, reserved ones are refused", () => {
  const run = ctxWith({ enable_thinking: false, style: "short" });
  assert.deepEqual(templateKwargsOf(run, undefined), { enable_thinking: false, style: "short" });
  assert.deepEqual(templateKwargsOf(run, { enable_thinking: true }), {
    enable_thinking: true,
    style: "short",
  });
  assert.equal(templateKwargsOf(ctxWith(null), undefined), undefined);
  assert.deepEqual(templateKwargsOf(ctxWith(null), { a: 1 }), { a: 1 });
  assert.throws(
    () => templateKwargsOf(run, { messages: [] }),
    (e) => e instanceof ApiError && e.status === 400 && /may not set messages/.test(e.message),
  );
});
