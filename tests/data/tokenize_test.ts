import assert from "node:assert/strict";
import { relative } from "node:path";
import { PLAIN_CHAT_TEMPLATE, renderChat, renderPlainChat } from "../../lib/data/chat.ts";
import {
  type EncodingTokenizer,
  loadTokenizer,
  sequenceLengths,
  tokenizeExample,
  tokenizeExamples,
  tokenizePrompt,
  truncate,
} from "../../lib/data/tokenize.ts";
import type { Message } from "../../lib/data/types.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";
import { tempDir } from "./helpers.ts";

const user = (content: string): Message => ({ role: "user", content });

async function tiny(chatTemplate: boolean) {
  const tmp = await tempDir();
  const info = await writeTinyTokenizer(tmp.dir, { chatTemplate });
  const tok = await loadTokenizer(tmp.dir);
  const id = (t: string) => {
    const i = info.vocab.indexOf(t);
    if (i < 0) throw new Error(`not in vocab: ${t}`);
    return i;
  };
  return { tmp, info, tok, id, ids: (s: string) => s.split(" ").map(id) };
}

Deno.test("tiny tokenizer fixture: loads offline, stable special ids, digits and words", async () => {
  const { tmp, info, tok, ids } = await tiny(false);
  await using _ = tmp;
  assert.equal(info.padId, 0);
  assert.equal(info.eosId, 1);
  assert.ok(info.vocab.length >= 50 && info.vocab.length <= 200, `vocab ${info.vocab.length}`);
  assert.equal(tok.eos_token_id, info.eosId);
  assert.equal(tok.pad_token_id, info.padId);
  assert.deepEqual(
    tok.encode("Hello world, 12 plus 3!", { add_special_tokens: false }),
    ids("hello world , 1 2 plus 3 !"),
  );
  assert.deepEqual(tok.encode("zap", { add_special_tokens: false }), ids("z ##a ##p"));
  assert.equal(tok.decode(ids("hello world ,")), "hello world,");
});

Deno.test("loadTokenizer: relative paths and a missing folder", async () => {
  const { tmp } = await tiny(true);
  await using _ = tmp;
  const tok = await loadTokenizer(relative(Deno.cwd(), tmp.dir));
  assert.equal(typeof tok.chat_template, "string");
  await assert.rejects(loadTokenizer(tmp.path("nope")), /nope: no tokenizer\.json in this folder/);
});

Deno.test("chat template prompt: generation prompt added, response = tokens + EOS", async () => {
  const { tmp, tok, ids, info } = await tiny(true);
  await using _ = tmp;
  const prompt = [user("what is 2 plus 2?")];
  assert.equal(renderChat(tok, prompt), "<|user|>\nwhat is 2 plus 2?<eos>\n<|assistant|>\n");
  const t = tokenizeExample(tok, {
    prompt,
    responses: [{ content: "four", reward: 1 }, { content: "five .", reward: 0 }],
  });
  assert.deepEqual(t.promptIds, ids("<|user|> what is 2 plus 2 ? <eos> <|assistant|>"));
  assert.deepEqual(t.responseIds, [ids("four <eos>"), ids("five . <eos>")]);
  assert.deepEqual(t.rewards, [1, 0]);
  assert.equal(t.responseIds[0].at(-1), info.eosId);
});

Deno.test("plain fallback template when the tokenizer has none; the Jinja form renders the same", async () => {
  const { tmp, tok, info } = await tiny(false);
  await using _ = tmp;
  const messages: Message[] = [{ role: "system", content: "be good" }, user("hi"), {
    role: "assistant",
    content: "hello",
  }, user("and?")];
  const text = "System:\nbe good\n\nUser:\nhi\n\nAssistant:\nhello\n\nUser:\nand?\n\nAssistant:\n";
  assert.equal(renderPlainChat(messages), text);
  assert.equal(renderChat(tok, messages), text);
  assert.equal(renderChat(tok, messages, { chatTemplate: PLAIN_CHAT_TEMPLATE }), text);
  assert.equal(
    renderChat(tok, messages, { addGenerationPrompt: false }),
    text.slice(0, -"Assistant:\n".length),
  );
  const t = tokenizeExample(tok, { prompt: [user("hi")], completion: "hello" });
  assert.deepEqual(t.promptIds, tok.encode("User:\nhi\n\nAssistant:\n", { add_special_tokens: false }));
  assert.deepEqual(t.responseIds, [[...tok.encode("hello", { add_special_tokens: false }), info.eosId]]);
  assert.equal(t.rewards, undefined);
});

Deno.test("preference examples give [chosen, rejected]; SFT gives [completion]", async () => {
  const { tmp, tok, ids } = await tiny(true);
  await using _ = tmp;
  const pref = tokenizeExample(tok, { prompt: [user("hi")], chosen: "hello", rejected: "no" });
  assert.deepEqual(pref.responseIds, [ids("hello <eos>"), ids("no <eos>")]);
  assert.equal(pref.rewards, undefined);
  const [sft] = tokenizeExamples(tok, [{ prompt: [user("hi")], completion: "" }]);
  assert.deepEqual(sft.responseIds, [ids("<eos>")]); // an empty response still scores EOS
});

Deno.test("truncation through tokenizeExample: prompt keeps its end, response cut at its end", async () => {
  const { tmp, tok, ids } = await tiny(true);
  await using _ = tmp;
  const ex = { prompt: [user("one two three four five")], chosen: "red blue cat dog", rejected: "no" };
  // prompt: <|user|> one two three four five <eos> <|assistant|>  (8 tokens)
  const t = tokenizeExample(tok, ex, { maxPromptLength: 4, maxLength: 7 });
  assert.deepEqual(t.promptIds, ids("four five <eos> <|assistant|>"));
  assert.deepEqual(t.responseIds, [ids("red blue cat"), ids("no <eos>")]); // 4 + 3: EOS cut off
  const untouched = tokenizeExample(tok, ex, { maxPromptLength: 8, maxLength: 13 });
  assert.deepEqual(untouched.promptIds.length, 8);
  assert.deepEqual(untouched.responseIds[0], ids("red blue cat dog <eos>"));
});

Deno.test("truncate: exact rule", () => {
  const p = [1, 2, 3, 4, 5, 6];
  const r = [[10, 11, 12, 13], [20]];
  assert.deepEqual(truncate(p, r, {}), { promptIds: p, responseIds: r });
  assert.deepEqual(truncate(p, r, { maxPromptLength: 4 }), { promptIds: [3, 4, 5, 6], responseIds: r });
  assert.deepEqual(truncate(p, r, { maxLength: 8 }), { promptIds: p, responseIds: [[10, 11], [20]] });
  assert.deepEqual(truncate(p, r, { maxPromptLength: 3, maxLength: 5 }), {
    promptIds: [4, 5, 6],
    responseIds: [[10, 11], [20]],
  });
  // The prompt alone would fill maxLength: it keeps maxLength − 1 so one response token remains.
  assert.deepEqual(truncate(p, r, { maxLength: 4 }), { promptIds: [4, 5, 6], responseIds: [[10], [20]] });
  assert.deepEqual(truncate(p, r, { maxPromptLength: 10, maxLength: 3 }), {
    promptIds: [5, 6],
    responseIds: [[10], [20]],
  });
  assert.throws(() => truncate(p, r, { maxLength: 1 }), /maxLength must be at least 2/);
  assert.throws(() => truncate(p, r, { maxPromptLength: 0 }), /maxPromptLength must be a positive integer/);
  assert.throws(() => truncate(p, r, { maxLength: 2.5 }), /maxLength must be a positive integer/);
});

Deno.test("BOS: prepended when the tokenizer has one and the prompt lacks it", () => {
  const vocab = ["<s>", "</s>", "a", "b"];
  const fake = (bos: number | null): EncodingTokenizer => ({
    chat_template: null,
    apply_chat_template: () => "",
    encode: (text: string) => text.split(/\s+/).filter(Boolean).map((w) => vocab.indexOf(w)),
    bos_token_id: bos,
    eos_token_id: 1,
  });
  // Plain template text "User:\na\n\nAssistant:\n" → unknown words map to -1 in this fake.
  const withBos = tokenizePrompt(fake(0), [user("a")]);
  assert.equal(withBos[0], 0);
  assert.equal(tokenizePrompt(fake(0), [user("a")], { addBos: false })[0], -1);
  assert.notEqual(tokenizePrompt(fake(null), [user("a")])[0], 0);
  // A template that already renders BOS is not given a second one.
  const rendersBos = { ...fake(0), chat_template: "x", apply_chat_template: () => "<s> a" };
  assert.deepEqual(tokenizePrompt(rendersBos, [user("a")]), [0, 2]);
  const noEos = { ...fake(0), eos_token_id: null };
  assert.throws(() => tokenizeExample(noEos, { prompt: [user("a")], completion: "b" }), /no EOS token/);
});

Deno.test("sequenceLengths: prompt + longest response", () => {
  assert.deepEqual(
    sequenceLengths([{ promptIds: [1, 2], responseIds: [[1], [1, 2, 3]] }, {
      promptIds: [1],
      responseIds: [[1]],
    }]),
    [5, 2],
  );
});
