/**
 * Turning token streams into text: incremental decoding equals decoding the whole sequence (WordPiece's
 * `##` pieces and punctuation clean-up included), stop strings are found across token boundaries, and the
 * text that could still become a stop string is held back while streaming.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TextCodec } from "../../lib/data/codec.ts";
import { IncrementalDetokenizer } from "../../lib/data/detokenizer.ts";
import { StopMatcher } from "../../lib/serve/stop.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";

Deno.test("stop matcher: earliest stop string, across chunks; holdback of a possible prefix", () => {
  const m = new StopMatcher(["END", "\n\n", ""]);
  assert.ok(m.active);
  assert.equal(m.find("abc"), -1);
  assert.equal(m.find("abcEN"), -1);
  assert.equal(m.find("abcEND", 5), 3, "a match that began in text checked before");
  assert.equal(m.find("a\n\nbEND"), 1);
  assert.equal(m.holdback("abcE"), 1);
  assert.equal(m.holdback("abcEN"), 2);
  assert.equal(m.holdback("abc\n"), 1);
  assert.equal(m.holdback("abc"), 0);
  assert.equal(new StopMatcher([]).active, false);
  assert.equal(new StopMatcher([]).holdback("abc"), 0);
});

Deno.test("incremental decoding with a fake byte tokenizer holds back split UTF-8 characters", () => {
  const bytes = [...new TextEncoder().encode("né ✓")];
  const decode = (ids: number[]) => new TextDecoder().decode(new Uint8Array(ids));
  const d = new IncrementalDetokenizer(decode);
  let text = "";
  const deltas: string[] = [];
  for (const b of bytes) {
    const delta = d.push(b);
    deltas.push(delta);
    text += delta;
  }
  text += d.flush();
  assert.equal(text, "né ✓");
  assert.ok(deltas.every((s) => !s.includes("\uFFFD")), "never a replacement character");
  assert.ok(deltas.includes(""), "bytes of a character wait for the rest");
});

Deno.test("incremental decoding with the test tokenizer equals decoding the whole response", async () => {
  const dir = await Deno.makeTempDir({ prefix: "serve_text_" });
  try {
    await writeTinyTokenizer(join(dir, "tok"), { chatTemplate: true });
    const codec = await TextCodec.load(join(dir, "tok"));
    assert.deepEqual(codec.special, { eos: [1], pad: 0, bos: null });
    const text = "The answer is four. Xylo, yes!";
    const ids = codec.responseIds(text);
    assert.equal(ids.at(-1), 1, "EOS appended, as the trainer does");
    const whole = codec.decode(ids);
    const d = codec.detokenizer();
    let streamed = "";
    for (const id of ids) streamed += d.push(id);
    streamed += d.flush();
    assert.equal(streamed, whole);
    assert.equal(whole, "the answer is four. xylo, yes!");

    // after a prompt, the first token's text is its continuation (a space before a new word)
    const prompt = codec.textPromptIds("the answer is");
    const cont = codec.detokenizer(prompt);
    assert.equal(cont.push(codec.textPromptIds("four")[0]), " four");
    // a peek does not commit
    const p = codec.detokenizer(prompt);
    assert.equal(p.peek(ids[3]), " four");
    assert.equal(p.push(ids[0]), " the");

    // chat prompts go through the chat template, as in training
    const chat = codec.chatPromptIds([{ role: "user", content: "hi" }]);
    assert.equal(codec.decode(chat, true), "<|user|> hi <eos> <|assistant|>");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
