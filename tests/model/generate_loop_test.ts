/**
 * The generation loop against a scripted stand-in for a serving model: the "model" keeps the token
 * history in its KV cache and predicts (sum of the unmasked history) mod V, so any mistake in padding,
 * masks, positions, cache plumbing or row dropping changes the tokens.
 */
import assert from "node:assert/strict";
import { generate, type GenerationSession, type KvLayout, SERVING_NAMES } from "../../lib/model/generate.ts";
import type { HostTensor } from "../../lib/runtime/session.ts";

const V = 11;
const LAYOUT: KvLayout = { numLayers: 2, numKvHeads: 1, headDim: 1, positionIds: true, logitsToKeep: false };

/** Next token after `history` in the scripted model. */
const nextOf = (history: readonly number[]) => history.reduce((a, b) => a + b, 0) % V;

class ScriptedModel implements GenerationSession {
  runs: { batch: number; seq: number; past: number }[] = [];
  inputNames = [
    "input_ids",
    "attention_mask",
    "position_ids",
    ...[0, 1].flatMap((i) => [SERVING_NAMES.pastKey(i), SERVING_NAMES.pastValue(i)]),
  ];

  run(feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
    const ids = feeds.input_ids, mask = feeds.attention_mask, pos = feeds.position_ids;
    const [b, s] = ids.dims;
    const past = feeds[SERVING_NAMES.pastKey(0)];
    const P = past.dims[2];
    assert.deepEqual(mask.dims, [b, P + s]);
    assert.deepEqual(past.dims, [b, 1, P, 1]);
    this.runs.push({ batch: b, seq: s, past: P });
    const logits = new Float32Array(b * s * V);
    const outs: Record<string, HostTensor> = {};
    const keys = new Float32Array(b * (P + s)), vals = new Float32Array(b * (P + s));
    for (let r = 0; r < b; r++) {
      // the cache holds the tokens (key) and the mask (value) of every earlier position
      const hist: number[] = [], m: number[] = [];
      for (let t = 0; t < P; t++) {
        hist.push(past.data[r * P + t] as number);
        m.push(feeds[SERVING_NAMES.pastValue(1)].data[r * P + t] as number);
      }
      for (let t = 0; t < s; t++) {
        hist.push(Number(ids.data[r * s + t]));
        m.push(Number(mask.data[r * (P + s) + P + t]));
        // mask agrees with what the cache recorded
        for (let u = 0; u < P; u++) assert.equal(Number(mask.data[r * (P + s) + u]), m[u]);
        const seen = hist.filter((_, u) => m[u] === 1);
        if (m[P + t] === 1) assert.equal(Number(pos.data[r * s + t]), seen.length - 1, "position id");
        logits.fill(0, (r * s + t) * V, (r * s + t + 1) * V);
        logits[(r * s + t) * V + nextOf(seen)] = 10;
        logits[(r * s + t) * V + ((nextOf(seen) + 1) % V)] = 9;
      }
      keys.set(hist, r * (P + s));
      vals.set(m, r * (P + s));
    }
    for (let i = 0; i < 2; i++) {
      outs[SERVING_NAMES.presentKey(i)] = { dtype: "float32", dims: [b, 1, P + s, 1], data: keys };
      outs[SERVING_NAMES.presentValue(i)] = { dtype: "float32", dims: [b, 1, P + s, 1], data: vals };
    }
    outs.logits = { dtype: "float32", dims: [b, s, V], data: logits };
    return Promise.resolve(outs);
  }
}

function greedyReference(prompt: number[], n: number, eos: number[] = []): number[] {
  const hist = [...prompt], out: number[] = [];
  while (out.length < n) {
    const t = nextOf(hist);
    out.push(t);
    hist.push(t);
    if (eos.includes(t)) break;
  }
  return out;
}

Deno.test("greedy batch with left padding equals each prompt alone", async () => {
  const prompts = [[3], [1, 2, 3, 4], [7, 7]];
  const model = new ScriptedModel();
  const { rows } = await generate(model, prompts, { maxNewTokens: 6, temperature: 0, layout: LAYOUT });
  prompts.forEach((p, i) => {
    assert.deepEqual(rows[i].tokens, greedyReference(p, 6));
    assert.equal(rows[i].stopReason, "length");
    assert.equal(rows[i].logprobs.length, 6);
  });
  assert.deepEqual(model.runs[0], { batch: 3, seq: 4, past: 0 });
  assert.deepEqual(model.runs.at(-1), { batch: 3, seq: 1, past: 8 });
  assert.equal(model.runs.length, 6);
});

Deno.test("log-probs are the model's, unaffected by temperature; top alternatives in order", async () => {
  const model = new ScriptedModel();
  const { rows } = await generate(model, [[2, 5]], {
    maxNewTokens: 3,
    temperature: 0,
    topLogprobs: 2,
    layout: LAYOUT,
  });
  const lse = Math.log(Math.exp(10) + Math.exp(9) + (V - 2));
  for (const lp of rows[0].logprobs) assert.ok(Math.abs(lp - (10 - lse)) < 1e-9);
  for (const [i, top] of rows[0].topLogprobs!.entries()) {
    assert.equal(top[0].token, rows[0].tokens[i]);
    assert.equal(top[1].token, (rows[0].tokens[i] + 1) % V);
    assert.ok(Math.abs(top[1].logprob - (9 - lse)) < 1e-9);
  }
});

Deno.test("rows stop at EOS (kept, scored), others continue in a smaller batch", async () => {
  const prompts = [[1], [2], [4]];
  // row 0 goes 1 → 1 → 2 → 4: EOS 4 after three tokens
  const eos = [4];
  const model = new ScriptedModel();
  const { rows } = await generate(model, prompts, {
    maxNewTokens: 8,
    temperature: 0,
    eosTokenIds: eos,
    layout: LAYOUT,
  });
  prompts.forEach((p, i) => {
    assert.deepEqual(rows[i].tokens, greedyReference(p, 8, eos), `row ${i}`);
    assert.equal(rows[i].stopReason, rows[i].tokens.at(-1) === 4 ? "eos" : "length");
  });
  assert.equal(rows[0].stopReason, "eos");
  assert.ok(model.runs.some((r) => r.batch < 3), "finished rows leave the batch");
});

Deno.test("stop callback, onToken and abort", async () => {
  const steps: (number | null)[][] = [];
  const { rows } = await generate(new ScriptedModel(), [[1], [3]], {
    maxNewTokens: 10,
    temperature: 0,
    layout: LAYOUT,
    stop: (tokens, row) => row === 1 && tokens.length === 2,
    onToken: (_, tokens) => steps.push([...tokens]),
  });
  assert.equal(rows[1].stopReason, "stop");
  assert.equal(rows[1].tokens.length, 2);
  assert.equal(rows[0].tokens.length, 10);
  assert.deepEqual(steps[0], [rows[0].tokens[0], rows[1].tokens[0]]);
  assert.deepEqual(steps[2], [rows[0].tokens[2], null]);

  const ctl = new AbortController();
  const aborted = await generate(new ScriptedModel(), [[1]], {
    maxNewTokens: 50,
    temperature: 0,
    layout: LAYOUT,
    signal: ctl.signal,
    onToken: (step) => step === 3 && ctl.abort(),
  });
  assert.equal(aborted.rows[0].stopReason, "abort");
  assert.equal(aborted.rows[0].tokens.length, 4);
});

Deno.test("seeded sampling is reproducible; maxNewTokens 0 and empty prompts", async () => {
  const opts = { maxNewTokens: 8, temperature: 3, topP: 0.99, seed: 5, layout: LAYOUT };
  const a = await generate(new ScriptedModel(), [[1], [2, 3]], opts);
  const b = await generate(new ScriptedModel(), [[1], [2, 3]], opts);
  assert.deepEqual(a.rows, b.rows);
  const none = await generate(new ScriptedModel(), [[1]], { ...opts, maxNewTokens: 0 });
  assert.deepEqual(none.rows[0].tokens, []);
  await assert.rejects(() => generate(new ScriptedModel(), [[]], opts), RangeError);
});
