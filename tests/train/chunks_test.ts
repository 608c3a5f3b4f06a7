import assert from "node:assert/strict";
import { defaultStepsPerRun, groupChunks, type PlannedStep } from "../../lib/train/chunks.ts";

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
