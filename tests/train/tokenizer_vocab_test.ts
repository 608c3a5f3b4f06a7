/**
 * Where the model meets its tokenizer (issue 20, item 9): a tokenizer whose EOS (or pad, BOS, end of turn)
 * lies past the model's vocabulary is refused by the trainer before any data is read, naming the tokenizer
 * folder, the token, its id and config.json's vocab_size; a tokenizer inside the vocabulary passes.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { checkSpecialIdsInVocab, loadTokenizer } from "../../lib/data/tokenize.ts";
import { writeWordPieceTokenizer } from "../../lib/data/wordpiece.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { saveModelFolder } from "../../lib/model/model_folder.ts";
import { loadRunInputs } from "../../lib/train/run_inputs.ts";
import { inspectModel } from "../../lib/model/open.ts";
import { TextCodec } from "../../lib/data/codec.ts";
import { startServer } from "../../lib/serve/server.ts";
import { exportForServing } from "../../lib/model/export.ts";
import { TINY_CHAT_TEMPLATE, tinyVocab, writeTinyTokenizer } from "../fixtures/tokenizer.ts";
import { tinyConfigFor } from "./_fixtures.ts";

/** A tokenizer of the tiny vocabulary whose `late` special token (`<eos>` or `<pad>`) is its last token. */
async function lateTokenizer(
  dir: string,
  late: "<eos>" | "<pad>",
): Promise<{ eosId: number; padId: number }> {
  const words = tinyVocab().filter((t) => t !== "<eos>" && t !== "<pad>" && t !== "<unk>");
  const early = late === "<eos>" ? "<pad>" : "<eos>";
  return await writeWordPieceTokenizer(dir, {
    specials: [early, "<unk>"],
    tokens: [...words, late],
    eos: "<eos>",
    pad: "<pad>",
    unk: "<unk>",
    chatTemplate: TINY_CHAT_TEMPLATE,
  });
}

Deno.test("trainer: a tokenizer EOS past the model's vocabulary is refused, naming both files", async () => {
  const root = await Deno.makeTempDir({ prefix: "tokenizer_vocab_" });
  try {
    const { eosId } = await lateTokenizer(join(root, "tok"), "<eos>");
    assert.ok(eosId >= 64, `eos ${eosId}`);
    const model = join(root, "model");
    const cfg = tinyConfig("llama", { vocabSize: 64 });
    await saveModelFolder(model, cfg, initWeights(cfg, { seed: 1 }), { tokenizerFrom: join(root, "tok") });
    await Deno.writeTextFile(
      join(root, "reward.jsonl"),
      JSON.stringify({
        prompt: "hi",
        responses: [{ content: "a", reward: 1 }, { content: "b", reward: 0 }],
      }) +
        "\n",
    );
    const run = tinyConfigFor({ dir: root, model }, { k: 2 });
    await assert.rejects(loadRunInputs(run, () => {}), (e: Error) => {
      assert.equal(
        e.message,
        `${model}: the tokenizer's eos_token "<eos>" has id ${eosId}, outside the model's vocabulary ` +
          `(vocab_size 64 in ${model}/config.json)`,
      );
      return true;
    });

    // the same tokenizer against a model that has a row for every id
    const tok = await loadTokenizer(join(root, "tok"));
    checkSpecialIdsInVocab(tok, eosId + 1, "tok", "config.json");
    assert.throws(
      () => checkSpecialIdsInVocab(tok, eosId, "tok", "m/config.json"),
      /tok: the tokenizer's eos_token "<eos>" has id \d+, outside the model's vocabulary \(vocab_size \d+ in m\/config\.json\)/,
    );
    // the pad is checked too
    const { padId } = await lateTokenizer(join(root, "tok2"), "<pad>");
    const padLate = await loadTokenizer(join(root, "tok2"));
    assert.throws(
      () => checkSpecialIdsInVocab(padLate, 64, "tok2", "c"),
      new RegExp(`tok2: the tokenizer's pad_token "<pad>" has id ${padId}, outside the model's vocabulary`),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("sampling and serving: a tokenizer EOS or a generation_config eos past the vocabulary is refused", async () => {
  const root = await Deno.makeTempDir({ prefix: "tokenizer_vocab_" });
  try {
    const { eosId } = await lateTokenizer(join(root, "tok"), "<eos>");
    const model = join(root, "model");
    const cfg = tinyConfig("llama", { vocabSize: 64 });
    await saveModelFolder(model, cfg, initWeights(cfg, { seed: 1 }), { tokenizerFrom: join(root, "tok") });
    await assert.rejects(
      inspectModel(model, { log: () => {} }),
      new RegExp(`eos_token "<eos>" has id ${eosId}, outside the model's vocabulary \\(vocab_size 64`),
    );
    await assert.rejects(
      TextCodec.load(model, [], { log: () => {}, vocabSize: 64 }),
      /outside the model's vocabulary/,
    );
    // the served folder's generation_config.json is checked at start, not at the first request
    const served = join(root, "served");
    const good = tinyConfig("llama", { vocabSize: 128 });
    await writeTinyTokenizer(join(root, "good"), { chatTemplate: true });
    await exportForServing(served, {
      cfg: good,
      weights: initWeights(good, { seed: 1 }),
      tokenizerDir: join(root, "good"),
    });
    await Deno.writeTextFile(
      join(served, "generation_config.json"),
      JSON.stringify({ eos_token_id: [2, 999] }),
    );
    await assert.rejects(
      startServer({ model: served, port: 0, log: () => {} }),
      /generation_config\.json: eos_token_id 999 is outside the vocabulary \(vocab_size 128 in config\.json\)/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
