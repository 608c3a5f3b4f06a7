import assert from "node:assert/strict";
import {
  answerText,
  noisyDemonstration,
  parsePrompt,
  promptText,
  reward,
  samplePrompts,
} from "../../lib/train/demo/task.ts";
import { mulberry32 } from "../../lib/data/random.ts";

Deno.test("demo task: prompts, answers and their parsing", () => {
  const p = { digits: [3, 1, 4, 1] };
  assert.equal(promptText(p), "sort 3 1 4 1");
  assert.equal(answerText(p), "1 1 3 4");
  assert.deepEqual(parsePrompt("sort 3 1 4 1"), p);
  assert.throws(() => parsePrompt("hello"), /not a sort prompt/);
});

Deno.test("demo task: the reward gives partial credit by position", () => {
  const p = { digits: [3, 1, 4, 1] };
  assert.equal(reward(p, "1 1 3 4"), 1);
  assert.equal(reward(p, "1 1 4 3"), 0.5);
  assert.equal(reward(p, "1 1 3"), 0.75);
  assert.equal(reward(p, "1 1 3 4 4"), 0.8);
  assert.equal(reward(p, "x y z w"), 0);
  assert.equal(reward(p, ""), 0);
});

Deno.test("demo task: seeded prompts and noisy demonstrations", () => {
  assert.deepEqual(samplePrompts(5, 1), samplePrompts(5, 1));
  for (const p of samplePrompts(50, 2)) assert.ok(p.digits.length >= 3 && p.digits.length <= 5);
  const r = mulberry32(3);
  const demos = samplePrompts(400, 4).map((p) => reward(p, noisyDemonstration(p, 0.5, r)));
  const perfect = demos.filter((x) => x === 1).length / demos.length;
  assert.ok(perfect > 0.4 && perfect < 0.7, `about half the demonstrations are right: ${perfect}`);
  assert.ok(demos.some((x) => x > 0 && x < 1), "corrupted ones earn partial credit");
});
