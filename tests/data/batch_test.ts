import assert from "node:assert/strict";
import { IGNORE_INDEX, makeBatch } from "../../lib/data/batch.ts";
import type { TokenizedExample } from "../../lib/data/tokenize.ts";

const X = IGNORE_INDEX;
const PAD = 0;

// P = 2 prompts × K = 2 responses. Lengths: 2+3=5, 2+1=3, 3+2=5, 3+4=7 → width 7.
const examples: TokenizedExample[] = [
  { promptIds: [11, 12], responseIds: [[21, 22, 1], [23]], rewards: [0.5, -1] },
  { promptIds: [13, 14, 15], responseIds: [[24, 1], [25, 26, 27, 1]], rewards: [2, 3] },
];

const rows = (a: Int32Array, width: number) =>
  Array.from({ length: a.length / width }, (_, r) => [...a.slice(r * width, (r + 1) * width)]);

Deno.test("makeBatch, right padding: exact ids, mask, labels, rewards", () => {
  const b = makeBatch(examples, { padId: PAD });
  assert.deepEqual([b.prompts, b.k, b.width, b.tokens], [2, 2, 7, 20]);
  assert.deepEqual(rows(b.inputIds, 7), [
    [11, 12, 21, 22, 1, PAD, PAD],
    [11, 12, 23, PAD, PAD, PAD, PAD],
    [13, 14, 15, 24, 1, PAD, PAD],
    [13, 14, 15, 25, 26, 27, 1],
  ]);
  assert.deepEqual(rows(b.attentionMask, 7), [
    [1, 1, 1, 1, 1, 0, 0],
    [1, 1, 1, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 1, 1, 1],
  ]);
  assert.deepEqual(rows(b.labels, 7), [
    [X, X, 21, 22, 1, X, X],
    [X, X, 23, X, X, X, X],
    [X, X, X, 24, 1, X, X],
    [X, X, X, 25, 26, 27, 1],
  ]);
  assert.deepEqual([...b.rewards!], [0.5, -1, 2, 3]);
  assert.ok(
    b.inputIds instanceof Int32Array && b.labels instanceof Int32Array && b.rewards instanceof Float32Array,
  );
});

Deno.test("makeBatch, left padding and width rounded up to a multiple", () => {
  const b = makeBatch(examples, { padId: 9, padSide: "left", padToMultipleOf: 4 });
  assert.equal(b.width, 8);
  assert.deepEqual(rows(b.inputIds, 8), [
    [9, 9, 9, 11, 12, 21, 22, 1],
    [9, 9, 9, 9, 9, 11, 12, 23],
    [9, 9, 9, 13, 14, 15, 24, 1],
    [9, 13, 14, 15, 25, 26, 27, 1],
  ]);
  assert.deepEqual(rows(b.attentionMask, 8)[1], [0, 0, 0, 0, 0, 1, 1, 1]);
  assert.deepEqual(rows(b.labels, 8), [
    [X, X, X, X, X, 21, 22, 1],
    [X, X, X, X, X, X, X, 23],
    [X, X, X, X, X, X, 24, 1],
    [X, X, X, X, 25, 26, 27, 1],
  ]);
  assert.equal(b.tokens, 20);
});

Deno.test("makeBatch: no rewards for preference/SFT data; errors", () => {
  const pref: TokenizedExample[] = [{ promptIds: [5], responseIds: [[6, 1], [7, 1]] }];
  const b = makeBatch(pref, { padId: PAD });
  assert.equal(b.rewards, undefined);
  assert.deepEqual([b.prompts, b.k, b.width], [1, 2, 3]);
  assert.throws(() => makeBatch([], { padId: 0 }), /no examples/);
  assert.throws(
    () => makeBatch([examples[0], { promptIds: [1], responseIds: [[1]], rewards: [1] }], { padId: 0 }),
    /same K: example 0 has 2, example 1 has 1/,
  );
  assert.throws(() => makeBatch([examples[0], pref[0]], { padId: 0 }), /example 1 lacks rewards/);
  assert.throws(() => makeBatch(examples, { padId: 0, padToMultipleOf: 0 }), /padToMultipleOf/);
  assert.throws(() => makeBatch(examples, { padId: 0, padSide: "middle" as "left" }), /padSide/);
});

Deno.test("makeBatch: minWidth widens the batch (chunks share one width)", () => {
  const b = makeBatch([{ promptIds: [5, 6], responseIds: [[7, 1]] }], {
    padId: 0,
    minWidth: 6,
    padToMultipleOf: 4,
  });
  assert.equal(b.width, 8);
  assert.deepEqual([...b.inputIds], [5, 6, 7, 1, 0, 0, 0, 0]);
  assert.deepEqual([...b.attentionMask], [1, 1, 1, 1, 0, 0, 0, 0]);
});
