import assert from "node:assert/strict";
import {
  defaultStepsPerRun,
  fractionalEpochs,
  groupChunks,
  type PlannedStep,
} from "../../lib/train/chunks.ts";

const step = (prompts: number): PlannedStep => ({
  epoch: 0,
  indices: Array.from({ length: prompts }, (_, i) => i),
});

Deno.test("chunks: steps group into runs of at most stepsPerRun with the same number of prompts", () => {
  const steps = [4, 4, 4, 4, 4, 2, 4, 4].map(step);
  assert.deepEqual(groupChunks(steps, 2), [
    { from: 0, to: 2 },
    { from: 2, to: 4 },
    { from: 4, to: 5 },
    { from: 5, to: 6 },
    { from: 6, to: 8 },
  ]);
  assert.deepEqual(groupChunks(steps, 64, 3), [{ from: 3, to: 5 }, { from: 5, to: 6 }, { from: 6, to: 8 }]);
});

Deno.test("chunks: 64 steps per run by default only where the state is large and crosses to a GPU", () => {
  assert.equal(defaultStepsPerRun("cuda", "full"), 64);
  assert.equal(defaultStepsPerRun("cuda", "lora"), 8);
  assert.equal(defaultStepsPerRun("cpu", "full"), 8);
  assert.equal(defaultStepsPerRun("cpu", "lora"), 8);
});

Deno.test("chunks: a chunk ends at each multiple of --eval-every and --save-every, from any step", () => {
  const steps = Array.from({ length: 12 }, () => step(4));
  const ends = (from: number, endAt: (number | undefined)[]) =>
    groupChunks(steps, 3, from, endAt).map((c) => c.to);
  assert.deepEqual(ends(0, []), [3, 6, 9, 12]);
  assert.deepEqual(ends(0, [2, 5]), [2, 4, 5, 6, 8, 10, 12]);
  assert.deepEqual(ends(0, [undefined, 0, 4]), [3, 4, 7, 8, 11, 12]);
  assert.deepEqual(ends(5, [2]), [6, 8, 10, 12]); // a resumed run: the multiples stay those of the step
  // the chunks still cover every step once, and no chunk is longer than stepsPerRun
  const chunks = groupChunks(steps, 3, 0, [2, 5]);
  chunks.forEach((c, i) => {
    assert.equal(c.from, i === 0 ? 0 : chunks[i - 1].to);
    assert.ok(c.to - c.from >= 1 && c.to - c.from <= 3);
  });
});

Deno.test("chunks: the fractional epoch counts the steps of whole epochs, not those --max-steps keeps", () => {
  const at = (epoch: number) => ({ epoch, indices: [0] });
  const whole = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1].map(at);
  assert.deepEqual(fractionalEpochs(whole, whole), [0.2, 0.4, 0.6, 0.8, 1, 1.2, 1.4, 1.6, 1.8, 2]);
  // --max-steps 3 stops at 60% of the first epoch, 7 at 40% of the second
  assert.deepEqual(fractionalEpochs(whole.slice(0, 3), whole), [0.2, 0.4, 0.6]);
  assert.deepEqual(fractionalEpochs(whole.slice(0, 7), whole).slice(-2), [1.2, 1.4]);
  assert.throws(() => fractionalEpochs([at(2)], whole), /epoch 2 is not in the whole plan/);
});
