/**
 * A model folder served as transformers reads it. The source folder keeps its chat template only in
 * `chat_template.jinja` (Llama 3's template: turns end with `<|eot_id|>`, the tokenizer's EOS is
 * `<|end_of_text|>`) and has a `generation_config.json` with two stop ids and sampling defaults. The export
 * carries all of it into the served folder; the server renders prompts with that template, stops on every
 * stop id (config.json's, generation_config.json's second one, the tokenizer's EOS, the template's
 * `<|eot_id|>`), takes the sampling defaults where a request sets nothing (a request's own values win),
 * scores candidates ending with `<|eot_id|>`, and passes `chat_template_kwargs` to the template.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadTokenizer, tokenizePrompt } from "../../lib/data/tokenize.ts";
import type { Message } from "../../lib/data/types.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { exportForServing } from "../../lib/model/export.ts";
import { generate, type GenerateOptions } from "../../lib/model/generate.ts";
import { initWeights } from "../../lib/model/init.ts";
import { ModelSession } from "../../lib/runtime/session.ts";
import { writeLlama3StyleTokenizer } from "../data/_chat_fixtures.ts";
import { serve } from "./_fixture.ts";

const MESSAGES: Message[] = [{ role: "user", content: "what is two plus two?" }];

Deno.test({
  name: "a model folder's chat_template.jinja and generation_config.json, exported and served",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const root = await Deno.makeTempDir({ prefix: "serve_model_folder_" });
    const src = join(root, "source");
    const info = await writeLlama3StyleTokenizer(src, "jinja");
    const EOS = info.eosId, EOT = info.eotId;
    const cfg = tinyConfig("llama", {
      vocabSize: info.vocab.length,
      maxPositions: 512,
      bosTokenId: info.bosId,
      eosTokenId: EOS,
    });
    const weights = initWeights(cfg, { seed: 3, std: 0.3, normStd: 0.1 });
    const tok = await loadTokenizer(src);
    const promptIds = tokenizePrompt(tok, MESSAGES);
    const text = (ids: number[]) => tok.decode(ids, { skip_special_tokens: true });

    // the greedy continuation without any extra stop id; the stop id to add is a token it makes
    const probe = await exportForServing(join(root, "probe"), { cfg, weights, tokenizerDir: src });
    const probeSession = await ModelSession.create(probe.onnxPath, { intraOpThreads: 1 });
    const greedy = (await generate(probeSession, [promptIds], {
      maxNewTokens: 16,
      temperature: 0,
      eosTokenIds: [EOS, EOT],
    })).rows[0].tokens;
    await probeSession.release();
    assert.ok(![EOS, EOT].includes(greedy[0]), `the probe ends at once: ${greedy}`);
    const STOP = greedy.find((x) => x !== greedy[0] && x !== EOS && x !== EOT) ?? greedy[0];
    const stopAt = greedy.indexOf(STOP);

    await Deno.writeTextFile(
      join(src, "generation_config.json"),
      JSON.stringify({
        bos_token_id: info.bosId,
        do_sample: true,
        eos_token_id: [EOS, STOP],
        temperature: 0.6,
        top_k: 5,
        top_p: 0.9,
        repetition_penalty: 1.3,
        transformers_version: "4.46.0",
      }),
    );
    const exported = await exportForServing(join(root, "policy"), { cfg, weights, tokenizerDir: src });
    const policy = exported.folder;
    const lines: string[] = [];
    const server = await serve({ model: policy, log: (l) => lines.push(l) });
    const session = await ModelSession.create(exported.onnxPath, { intraOpThreads: 1 });
    const chat = async (body: Record<string, unknown>) => {
      const res = await fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ messages: MESSAGES, ...body }),
      });
      return { status: res.status, json: await res.json() };
    };
    const direct = async (o: Partial<GenerateOptions>) =>
      (await generate(session, [promptIds], { maxNewTokens: 10, eosTokenIds: [], ...o })).rows[0].tokens;

    try {
      await t.step(
        "policy/ carries the template file, the tokenizer and generation_config.json",
        async () => {
          assert.equal(
            await Deno.readTextFile(join(policy, "chat_template.jinja")),
            await Deno.readTextFile(join(src, "chat_template.jinja")),
          );
          const tokConfig = JSON.parse(await Deno.readTextFile(join(policy, "tokenizer_config.json")));
          assert.equal(tokConfig.chat_template, undefined, "kept where the source had it");
          const gen = JSON.parse(await Deno.readTextFile(join(policy, "generation_config.json")));
          assert.deepEqual(gen, {
            bos_token_id: info.bosId,
            do_sample: true,
            eos_token_id: [EOS, STOP, EOT], // the source's two, then the template's end of turn
            temperature: 0.6,
            top_k: 5,
            top_p: 0.9,
            repetition_penalty: 1.3,
            transformers_version: "4.46.0",
          });
        },
      );

      await t.step("the server's stop ids and sampling defaults", () => {
        assert.deepEqual(new Set(server.context.codec.special.eos), new Set([EOS, STOP, EOT]));
        assert.deepEqual(server.context.defaults, {
          temperature: 0.6,
          topP: 0.9,
          topK: 5,
          repetitionPenalty: 1.3,
        });
        assert.ok(
          lines.some((l) => l.includes("sampling defaults from generation_config.json")),
          lines.join("\n"),
        );
        assert.ok(!lines.some((l) => l.includes("no chat template")));
      });

      await t.step("greedy chat stops on generation_config.json's second eos id", async () => {
        const { status, json } = await chat({ temperature: 0, repetition_penalty: 1, max_tokens: 16 });
        assert.equal(status, 200, JSON.stringify(json));
        assert.equal(json.choices[0].finish_reason, "stop");
        assert.equal(json.usage.prompt_tokens, promptIds.length, "the prompt of chat_template.jinja");
        assert.equal(json.usage.completion_tokens, stopAt + 1, `stops at ${STOP} in ${greedy}`);
        assert.equal(json.choices[0].message.content, text(greedy.slice(0, stopAt)));
      });

      await t.step("generation_config.json's sampling defaults, unless the request sets them", async () => {
        const defaults = { temperature: 0.6, topP: 0.9, topK: 5, repetitionPenalty: 1.3 };
        const byDefault = await chat({ seed: 11, max_tokens: 10, ignore_eos: true });
        const expected = await direct({ ...defaults, seeds: [11] });
        assert.equal(byDefault.json.choices[0].message.content, text(expected));
        const plain = await direct({ temperature: 1, topP: 1, topK: 0, seeds: [11] });
        assert.notEqual(text(plain), text(expected), "the defaults change what is sampled");
        const own = await chat({
          seed: 11,
          max_tokens: 10,
          ignore_eos: true,
          temperature: 1,
          top_p: 1,
          top_k: -1,
          repetition_penalty: 1,
        });
        assert.equal(own.json.choices[0].message.content, text(plain));
      });

      await t.step("chat_template_kwargs reach the template; reserved names are refused", async () => {
        const off = await chat({ max_tokens: 1, chat_template_kwargs: { enable_thinking: false } });
        assert.equal(off.status, 200, JSON.stringify(off.json));
        assert.equal(off.json.usage.prompt_tokens, promptIds.length + 2, "<think></think> added");
        const on = await chat({ max_tokens: 1, chat_template_kwargs: { enable_thinking: true } });
        assert.equal(on.json.usage.prompt_tokens, promptIds.length);
        const bad = await chat({ max_tokens: 1, chat_template_kwargs: { add_generation_prompt: false } });
        assert.equal(bad.status, 400);
        assert.equal(bad.json.error.param, "chat_template_kwargs");
      });

      await t.step("/v1/logprobs scores a candidate ending with <|eot_id|>", async () => {
        const res = await fetch(`${server.url}/v1/logprobs`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ messages: MESSAGES, candidates: ["four"] }),
        });
        const json = await res.json();
        assert.equal(res.status, 200, JSON.stringify(json));
        assert.equal(json.prompt_tokens, promptIds.length);
        const ids = json.candidates[0].tokens.map((x: { id: number }) => x.id);
        assert.deepEqual(ids, [...tok.encode("four", { add_special_tokens: false }), EOT]);
      });
    } finally {
      await session.release();
      await server.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
