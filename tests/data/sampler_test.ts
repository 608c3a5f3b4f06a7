import assert from "node:assert/strict";
import { batchIndices } from "../../lib/data/sampler.ts";
import { mulberry32 } from "../../lib/data/random.ts";

const rng = mulberry32(123);
const lengths = Array.from({ length: 103 }, () => 5 + Math.floor(rng() * 500));

function assertPartition(batches: number[][], n: number, size: number) {
  assert.deepEqual(batches.flat().sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
  assert.ok(batches.every((b) => b.length <= size && b.length > 0));
  assert.equal(batches.filter((b) => b.length < size).length, n % size === 0 ? 0 : 1);
}

/** Padding cost: Σ over batches of (size × longest − Σ lengths). */
function padding(batches: number[][]) {
  return batches.reduce(
    (s, b) => s + b.length * Math.max(...b.map((i) => lengths[i])) - b.reduce((t, i) => t + lengths[i], 0),
    0,
  );
}

Deno.test("batchIndices: deterministic for a seed, different across seeds", () => {
  const a = batchIndices(lengths, 8, { seed: 1 });
  assert.deepEqual(a, batchIndices(lengths, 8, { seed: 1 }));
  assert.notDeepEqual(a, batchIndices(lengths, 8, { seed: 2 }));
  assertPartition(a, 103, 8);
});

Deno.test("batchIndices: grouping by length cuts padding", () => {
  const grouped = batchIndices(lengths, 8, { seed: 1 });
  const random = batchIndices(lengths, 8, { seed: 1, groupByLength: false });
  assertPartition(random, 103, 8);
  assert.ok(padding(grouped) < padding(random) / 4, `${padding(grouped)} vs ${padding(random)}`);
  // Within a megabatch window each batch is sorted longest first.
  for (const b of grouped) {
    for (let i = 1; i < b.length; i++) assert.ok(lengths[b[i - 1]] >= lengths[b[i]]);
  }
});

Deno.test("batchIndices: no shuffle keeps order; small windows; dropLast", () => {
  assert.deepEqual(batchIndices([1, 2, 3, 4, 5], 2, { shuffle: false, groupByLength: false }), [[0, 1], [
    2,
    3,
  ], [4]]);
  // Sorted by length (longest first) within windows of 2 × 1 examples, ties by index.
  assert.deepEqual(
    batchIndices([1, 9, 5, 5, 7], 2, { shuffle: false, megabatchMultiplier: 1 }),
    [[1, 0], [2, 3], [4]],
  );
  assert.deepEqual(batchIndices([1, 9, 5, 5, 7], 2, { shuffle: false }), [[1, 4], [2, 3], [0]]);
  assert.deepEqual(
    batchIndices([1, 2, 3, 4, 5], 2, { shuffle: false, groupByLength: false, dropLast: true }),
    [[0, 1], [2, 3]],
  );
  const dropped = batchIndices(lengths, 8, { seed: 5, dropLast: true });
  assert.equal(dropped.length, 12);
  assert.ok(dropped.every((b) => b.length === 8));
  assert.deepEqual(batchIndices([], 4), []);
  assert.throws(() => batchIndices([1], 0), /batchSize must be a positive integer/);
});
