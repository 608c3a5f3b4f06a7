import assert from "node:assert/strict";
import {
  batchIndices,
  IGNORE_INDEX,
  loadDataset,
  loadTokenizer,
  makeBatch,
  preferenceToReward,
  sequenceLengths,
  tokenizeExamples,
} from "../../lib/data/mod.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";
import { MESSAGES, tempDir, writeParquet } from "./helpers.ts";

Deno.test("pipeline: Parquet preference data → reward K = 2 → tokens → batches", async () => {
  await using tmp = await tempDir();
  const { padId, eosId } = await writeTinyTokenizer(tmp.path("tok"), { chatTemplate: true });
  const rows = Array.from({ length: 10 }, (_, i) => ({
    prompt: `what is ${i} plus ${i}?`,
    chosen: [{ role: "user", content: `what is ${i} plus ${i}?` }, {
      role: "assistant",
      content: `${2 * i}`,
    }],
    rejected: [{ role: "user", content: `what is ${i} plus ${i}?` }, {
      role: "assistant",
      content: "no idea",
    }],
  }));
  const path = await writeParquet(tmp.path("prefs.parquet"), rows, {
    prompt: "string",
    chosen: MESSAGES,
    rejected: MESSAGES,
  }, {
    rowGroupSize: 3,
  });
  const ds = await loadDataset(path);
  assert.equal(ds.kind, "preference");
  if (ds.kind !== "preference") return;
  const tok = await loadTokenizer(tmp.path("tok"));
  const tokenized = tokenizeExamples(tok, preferenceToReward(ds.examples), {
    maxLength: 64,
    maxPromptLength: 32,
  });
  const batches = batchIndices(sequenceLengths(tokenized), 4, { seed: 0 });
  assert.deepEqual(batches.map((b) => b.length).sort(), [2, 4, 4]);
  for (const idx of batches) {
    const b = makeBatch(idx.map((i) => tokenized[i]), { padId });
    assert.equal(b.k, 2);
    assert.deepEqual([...b.rewards!], idx.flatMap(() => [1, 0]));
    for (let row = 0; row < b.prompts * b.k; row++) {
      const labels = b.labels.slice(row * b.width, (row + 1) * b.width).filter((x) => x !== IGNORE_INDEX);
      assert.equal(labels.at(-1), eosId); // EOS scored in every response
    }
  }
});
