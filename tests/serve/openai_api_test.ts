/**
 * The OpenAI-compatible API, driven by the official `openai` client against a real server on a free port:
 * greedy chat equals our own generation on the exported model (tokens, text, log-probs), seeded sampling
 * reproduces, streaming adds up to the same text and ends with usage, stop strings and length end choices
 * as OpenAI's do, and the legacy completions endpoint continues a plain prompt.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import OpenAI from "openai";
import { loadTokenizer, tokenizePrompt } from "../../lib/data/tokenize.ts";
import { generate } from "../../lib/model/generate.ts";
import { ModelSession } from "../../lib/runtime/session.ts";
import { buildFixture, RUN_NAME, serve } from "./_fixture.ts";

const MESSAGES = [{ role: "user" as const, content: "what is two plus two?" }];

Deno.test({
  name: "OpenAI API with the official client",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const fx = await buildFixture();
    const server = await serve({ model: fx.runDir });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const tok = await loadTokenizer(fx.policyDir);
    const session = await ModelSession.create(join(fx.policyDir, "onnx", "model.onnx"), {
      intraOpThreads: 1,
    });
    const promptIds = tokenizePrompt(tok, MESSAGES);
    try {
      await t.step("models.list names the run", async () => {
        const models = await client.models.list();
        assert.deepEqual(models.data.map((m) => m.id), [RUN_NAME]);
        const one = await client.models.retrieve(RUN_NAME);
        assert.equal((one as unknown as { max_model_len: number }).max_model_len, 4096);
      });

      await t.step("greedy chat = our generate() on the exported model, with its log-probs", async () => {
        const res = await client.chat.completions.create({
          model: RUN_NAME,
          messages: MESSAGES,
          max_tokens: 12,
          temperature: 0,
          logprobs: true,
          top_logprobs: 3,
        });
        const direct = await generate(session, [promptIds], {
          maxNewTokens: 12,
          temperature: 0,
          eosTokenIds: [fx.eosId],
          topLogprobs: 3,
        });
        const row = direct.rows[0];
        const textTokens = row.tokens.filter((x) => x !== fx.eosId);
        const choice = res.choices[0];
        assert.equal(res.object, "chat.completion");
        assert.equal(choice.message.role, "assistant");
        assert.equal(choice.message.content, tok.decode(textTokens, { skip_special_tokens: true }));
        assert.equal(choice.finish_reason, row.stopReason === "eos" ? "stop" : "length");
        assert.deepEqual(res.usage, {
          prompt_tokens: promptIds.length,
          completion_tokens: row.tokens.length,
          total_tokens: promptIds.length + row.tokens.length,
        });
        const content = choice.logprobs!.content!;
        assert.equal(content.length, textTokens.length);
        content.forEach((c, i) => {
          assert.ok(Math.abs(c.logprob - row.logprobs[i]) < 1e-6, `token ${i}`);
          assert.equal(c.top_logprobs.length, 3);
          assert.equal(c.top_logprobs[0].logprob, c.logprob, "greedy picks the most likely token");
          assert.ok(c.top_logprobs[0].logprob >= c.top_logprobs[1].logprob);
          assert.deepEqual(c.bytes, [...new TextEncoder().encode(c.token)]);
        });
        assert.equal(content.map((c) => c.token).join(""), choice.message.content);
      });

      await t.step("seeded sampling reproduces; another seed differs; n choices", async () => {
        const ask = (seed: number) =>
          client.chat.completions.create({
            model: RUN_NAME,
            messages: MESSAGES,
            max_tokens: 16,
            temperature: 1,
            top_p: 0.95,
            seed,
            n: 3,
            ignore_eos: true,
          } as OpenAI.ChatCompletionCreateParamsNonStreaming);
        const [a, b, c] = [await ask(7), await ask(7), await ask(8)];
        const texts = (r: OpenAI.ChatCompletion) => r.choices.map((x) => x.message.content);
        assert.equal(a.choices.length, 3);
        assert.deepEqual(a.choices.map((x) => x.index), [0, 1, 2]);
        assert.deepEqual(texts(a), texts(b));
        assert.notDeepEqual(texts(a), texts(c));
        assert.equal(new Set(texts(a)).size, 3, "each choice samples on its own");
        assert.equal(a.usage!.completion_tokens, 48);
      });

      await t.step("streaming: chunks add up to the greedy text and end with finish and usage", async () => {
        const whole = await client.chat.completions.create({
          model: RUN_NAME,
          messages: MESSAGES,
          max_tokens: 10,
          temperature: 0,
          ignore_eos: true,
        } as OpenAI.ChatCompletionCreateParamsNonStreaming);
        const stream = await client.chat.completions.create({
          model: RUN_NAME,
          messages: MESSAGES,
          max_tokens: 10,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
          logprobs: true,
          ignore_eos: true,
        } as OpenAI.ChatCompletionCreateParamsStreaming);
        let text = "", finish: string | null = null, role: string | undefined, usage, tokens = 0;
        for await (const chunk of stream) {
          assert.equal(chunk.object, "chat.completion.chunk");
          if (chunk.usage) usage = chunk.usage;
          for (const ch of chunk.choices) {
            role ??= ch.delta.role;
            text += ch.delta.content ?? "";
            tokens += ch.logprobs?.content?.length ?? 0;
            if (ch.finish_reason) finish = ch.finish_reason;
          }
        }
        assert.equal(role, "assistant");
        assert.equal(text, whole.choices[0].message.content);
        assert.equal(finish, "length");
        assert.equal(tokens, 10);
        assert.deepEqual(usage, whole.usage);
      });

      await t.step("stop strings cut the text (finish 'stop'), streamed or not", async () => {
        const base = await client.chat.completions.create({
          model: RUN_NAME,
          messages: MESSAGES,
          max_tokens: 16,
          temperature: 0,
          ignore_eos: true,
        } as OpenAI.ChatCompletionCreateParamsNonStreaming);
        const full = base.choices[0].message.content!;
        const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 2);
        const expected = full.slice(0, full.indexOf(stop));
        const cut = await client.chat.completions.create({
          model: RUN_NAME,
          messages: MESSAGES,
          max_tokens: 16,
          temperature: 0,
          stop: [stop, "never appears"],
          ignore_eos: true,
        } as OpenAI.ChatCompletionCreateParamsNonStreaming);
        assert.equal(cut.choices[0].message.content, expected);
        assert.equal(cut.choices[0].finish_reason, "stop");
        assert.ok(cut.usage!.completion_tokens < 16);
        const stream = await client.chat.completions.create({
          model: RUN_NAME,
          messages: MESSAGES,
          max_tokens: 16,
          temperature: 0,
          stop,
          stream: true,
          ignore_eos: true,
        } as OpenAI.ChatCompletionCreateParamsStreaming);
        let text = "", finish = null;
        for await (const chunk of stream) {
          for (const ch of chunk.choices) {
            text += ch.delta.content ?? "";
            finish = ch.finish_reason ?? finish;
          }
        }
        assert.equal(text, expected);
        assert.equal(finish, "stop");
      });

      await t.step("completions: a plain prompt continued, legacy log-probs", async () => {
        const res = await client.completions.create({
          model: RUN_NAME,
          prompt: "the answer is",
          max_tokens: 6,
          temperature: 0,
          logprobs: 2,
          ignore_eos: true,
        } as OpenAI.CompletionCreateParamsNonStreaming);
        const ids = tok.encode("the answer is", { add_special_tokens: false });
        const direct = await generate(session, [ids], { maxNewTokens: 6, temperature: 0 });
        const expected = tok.decode([...ids, ...direct.rows[0].tokens], { skip_special_tokens: true })
          .slice(tok.decode(ids).length);
        const ch = res.choices[0];
        assert.equal(res.object, "text_completion");
        assert.equal(ch.text, expected);
        assert.equal(ch.finish_reason, "length");
        const lp = ch.logprobs!;
        assert.equal(lp.tokens!.length, 6);
        assert.equal(lp.tokens!.join(""), ch.text);
        lp.token_logprobs!.forEach((x, i) => assert.ok(Math.abs(x - direct.rows[0].logprobs[i]) < 1e-6));
        assert.ok(lp.top_logprobs!.every((m) => Object.keys(m).length <= 2));
        assert.deepEqual(lp.text_offset!.slice(0, 2), [0, lp.tokens![0].length]);
        assert.equal(res.usage!.prompt_tokens, ids.length);
      });

      await t.step("completions stream", async () => {
        const stream = await client.completions.create({
          model: RUN_NAME,
          prompt: "hello",
          max_tokens: 5,
          temperature: 0,
          stream: true,
          ignore_eos: true,
        } as OpenAI.CompletionCreateParamsStreaming);
        let text = "", finish = null;
        for await (const chunk of stream) {
          text += chunk.choices[0]?.text ?? "";
          finish = chunk.choices[0]?.finish_reason ?? finish;
        }
        assert.ok(text.length > 0);
        assert.equal(finish, "length");
      });

      await t.step("an unknown model is a 404 the client raises", async () => {
        const err = await client.chat.completions.create({ model: "gpt-4o", messages: MESSAGES }).catch((e) =>
          e
        );
        assert.ok(err instanceof OpenAI.NotFoundError, String(err));
        assert.equal(err.code, "model_not_found");
      });
    } finally {
      await session.release();
      await server.close();
      await fx.cleanup();
    }
  },
});
