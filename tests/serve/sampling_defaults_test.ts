/**
 * Sampling defaults and the repetition penalty: generation_config.json's `temperature`, `top_p`, `top_k`
 * and `repetition_penalty` become the server's defaults (out-of-range values are left out, and said), a
 * request's own values win; the repetition penalty is transformers' (positive logits divided, negative ones
 * multiplied, over the prompt and the output so far), applied by `generate` before a token is chosen.
 */
import assert from "node:assert/strict";
import { generate, type KvLayout } from "../../lib/model/generate.ts";
import { applyRepetitionPenalty } from "../../lib/model/sampling.ts";
import type { HostTensor } from "../../lib/runtime/session.ts";
import { samplingDefaultsOf } from "../../lib/model/sampling.ts";
import { sharedSettings } from "../../lib/serve/request_checks.ts";

Deno.test("generation_config.json's sampling defaults; a request's values win", () => {
  const warnings: string[] = [];
  const defaults = samplingDefaultsOf(
    {
      do_sample: true,
      temperature: 0.7,
      top_p: 0.8,
      top_k: 20,
      repetition_penalty: 1.05,
      eos_token_id: [151645, 151643],
      max_new_tokens: 2048,
    },
    (l) => warnings.push(l),
  );
  assert.deepEqual(defaults, { temperature: 0.7, topP: 0.8, topK: 20, repetitionPenalty: 1.05 });
  assert.equal(warnings.length, 0);
  assert.deepEqual(samplingDefaultsOf(null), {});
  assert.deepEqual(samplingDefaultsOf({ top_k: -1 }), { topK: 0 });
  assert.deepEqual(samplingDefaultsOf({ top_p: 1.5, temperature: "hot" }, (l) => warnings.push(l)), {});
  assert.equal(warnings.length, 2);
  assert.match(warnings[0], /temperature = "hot" is not a valid value/);
  assert.match(warnings[1], /top_p = 1\.5 is not a valid value/);

  const unset = sharedSettings({}, defaults).sampling;
  assert.deepEqual(
    { t: unset.temperature, p: unset.topP, k: unset.topK, r: unset.repetitionPenalty },
    { t: 0.7, p: 0.8, k: 20, r: 1.05 },
  );
  const own =
    sharedSettings({ temperature: 0, top_p: 1, top_k: -1, repetition_penalty: 1 }, defaults).sampling;
  assert.deepEqual(
    { t: own.temperature, p: own.topP, k: own.topK, r: own.repetitionPenalty },
    { t: 0, p: 1, k: 0, r: 1 },
  );
  const none = sharedSettings({}).sampling;
  assert.deepEqual(
    { t: none.temperature, p: none.topP, k: none.topK, r: none.repetitionPenalty },
    { t: 1, p: 1, k: 0, r: 1 },
    "OpenAI's defaults without a generation_config.json",
  );
});

Deno.test("repetition penalty: transformers' rule", () => {
  const logits = Float32Array.from([2, -2, 1, -1, 0.5]);
  assert.deepEqual([...applyRepetitionPenalty(logits, [0, 1, 1], 2)], [1, -4, 1, -1, 0.5]);
  assert.deepEqual([...applyRepetitionPenalty(logits, new Set([2, 3]), 0.5)], [2, -2, 2, -0.5, 0.5]);
  assert.equal(applyRepetitionPenalty(logits, [0], 1), logits, "1: no change, no copy");
  assert.deepEqual([...logits], [2, -2, 1, -1, 0.5], "the input row is not changed");
  assert.throws(() => applyRepetitionPenalty(logits, [0], 0), /repetition_penalty must be > 0/);
});

Deno.test("generate applies the repetition penalty over the prompt and the output", async () => {
  // a "model" that always prefers token 1 a little over token 2, and both over everything else
  const V = 6;
  const row = [-5, 1.0, 0.9, -5, -5, -5];
  const layout: KvLayout = {
    numLayers: 0,
    numKvHeads: 1,
    headDim: 1,
    positionIds: false,
    logitsToKeep: false,
  };
  const session = {
    inputNames: ["input_ids", "attention_mask"],
    run(feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
      const b = feeds.input_ids.dims[0];
      const data = new Float32Array(b * V);
      for (let i = 0; i < b; i++) data.set(row, i * V);
      return Promise.resolve({ logits: { dtype: "float32", dims: [b, 1, V], data } });
    },
  };
  const run = async (prompt: number[], repetitionPenalty?: number) =>
    (await generate(session, [prompt], { maxNewTokens: 4, temperature: 0, layout, repetitionPenalty }))
      .rows[0];
  assert.deepEqual((await run([3])).tokens, [1, 1, 1, 1]);
  // 1 is in the prompt: 1.0 / 2 < 0.9, so 2 first; then both are seen: 0.5 > 0.45
  const penalized = await run([1], 2);
  assert.deepEqual(penalized.tokens, [2, 1, 1, 1]);
  // the reported log-probs stay the model's own
  const lse = Math.log(row.reduce((a, x) => a + Math.exp(x), 0));
  assert.ok(Math.abs(penalized.logprobs[0] - (0.9 - lse)) < 1e-6);
  assert.deepEqual((await run([3], 2)).tokens, [1, 2, 1, 1], "the output counts as seen too");
});
