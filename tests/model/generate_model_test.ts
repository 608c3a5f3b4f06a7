/**
 * Our generation over a real exported model (tiny Llama with grouped-query attention): batching with
 * left padding changes nothing, reported log-probs are the model's own, seeded sampling reproduces.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type HostTensor, i64, ModelSession } from "../../lib/runtime/session.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { exportForServing } from "../../lib/model/export.ts";
import { generate, type GenerateOptions, kvLayoutOf, SERVING_NAMES } from "../../lib/model/generate.ts";
import { GraphSampler } from "../../lib/model/graph_sampler.ts";
import { initWeights } from "../../lib/model/init.ts";
import { logSoftmax } from "../../lib/losses/stable.ts";

const cfg = tinyConfig("llama", { vocabSize: 96, numHeads: 4, numKvHeads: 2 });
const PROMPTS = [[3, 14, 15, 92, 65], [35], [89, 79, 32]];

async function withModel(fn: (s: ModelSession) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "generate_model_" });
  const weights = initWeights(cfg, { seed: 11, std: 0.35, normStd: 0.1 });
  const { onnxPath } = await exportForServing(join(dir, "m"), { cfg, weights });
  const session = await ModelSession.create(onnxPath, { intraOpThreads: 1 });
  try {
    await fn(session);
  } finally {
    await session.release();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Log-softmax rows of the model on one whole sequence (no cache reuse), position by position. */
async function fullLogprobs(s: ModelSession, seq: number[]): Promise<number[][]> {
  const feeds: Record<string, HostTensor> = {
    input_ids: i64(seq, [1, seq.length]),
    attention_mask: i64(seq.map(() => 1), [1, seq.length]),
    position_ids: i64(seq.map((_, i) => i), [1, seq.length]),
    num_logits_to_keep: i64([0], []),
  };
  for (let i = 0; i < cfg.numLayers; i++) {
    const empty: HostTensor = {
      dtype: "float32",
      dims: [1, cfg.numKvHeads, 0, cfg.headDim],
      data: new Float32Array(0),
    };
    feeds[SERVING_NAMES.pastKey(i)] = empty;
    feeds[SERVING_NAMES.pastValue(i)] = empty;
  }
  const logits = (await s.run(feeds)).logits.data as Float32Array;
  const V = cfg.vocabSize;
  return seq.map((_, p) => logSoftmax(logits.subarray(p * V, (p + 1) * V)));
}

Deno.test("generate on an exported model", async (t) => {
  await withModel(async (session) => {
    await t.step("the session's cache layout", () => {
      assert.deepEqual(kvLayoutOf(session), {
        numLayers: 2,
        numKvHeads: 2,
        headDim: 8,
        positionIds: true,
        logitsToKeep: true,
      });
    });

    await t.step("a left-padded batch gives each prompt's own greedy tokens", async () => {
      const batch = await generate(session, PROMPTS, { maxNewTokens: 10, temperature: 0 });
      for (const [i, p] of PROMPTS.entries()) {
        const alone = await generate(session, [p], { maxNewTokens: 10, temperature: 0 });
        assert.deepEqual(batch.rows[i].tokens, alone.rows[0].tokens, `prompt ${i}`);
        batch.rows[i].logprobs.forEach((lp, k) => assert.ok(Math.abs(lp - alone.rows[0].logprobs[k]) < 1e-4));
      }
      assert.ok(new Set(batch.rows[0].tokens).size > 2, "a varied continuation");
    });

    await t.step("log-probs of sampled tokens are the unmodified model's", async () => {
      const { rows } = await generate(session, PROMPTS, {
        maxNewTokens: 8,
        temperature: 0.7,
        topP: 0.9,
        topK: 20,
        seed: 3,
        topLogprobs: 3,
      });
      for (const [i, p] of PROMPTS.entries()) {
        const seq = [...p, ...rows[i].tokens];
        const lps = await fullLogprobs(session, seq);
        rows[i].tokens.forEach((tok, k) => {
          const ls = lps[p.length - 1 + k];
          assert.ok(Math.abs(rows[i].logprobs[k] - ls[tok]) < 1e-4, `prompt ${i} token ${k}`);
          const top = rows[i].topLogprobs![k];
          const best = Array.from(ls.keys()).sort((a, b) => ls[b] - ls[a]).slice(0, 3);
          assert.deepEqual(top.map((x) => x.token), best);
        });
      }
    });

    await t.step("seeded sampling reproduces; another seed differs", async () => {
      const opts = { maxNewTokens: 12, temperature: 1.2, seed: 42 };
      const a = await generate(session, PROMPTS, opts);
      const b = await generate(session, PROMPTS, opts);
      const c = await generate(session, PROMPTS, { ...opts, seed: 43 });
      assert.deepEqual(a.rows.map((r) => r.tokens), b.rows.map((r) => r.tokens));
      assert.notDeepEqual(a.rows.map((r) => r.tokens), c.rows.map((r) => r.tokens));
    });

    await t.step("EOS ends a row: make the first greedy token the EOS", async () => {
      const first =
        (await generate(session, [PROMPTS[0]], { maxNewTokens: 1, temperature: 0 })).rows[0].tokens[0];
      const { rows } = await generate(session, PROMPTS, {
        maxNewTokens: 6,
        temperature: 0,
        eosTokenIds: [first],
      });
      assert.deepEqual(rows[0].tokens, [first]);
      assert.equal(rows[0].stopReason, "eos");
    });
  });
});

Deno.test("generate: the KV cache kept in ONNX Runtime (ffi backend) gives onnxruntime-node's tokens and log-probs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "generate_ffi_" });
  const weights = initWeights(cfg, { seed: 11, std: 0.35, normStd: 0.1 });
  const { onnxPath } = await exportForServing(join(dir, "m"), { cfg, weights });
  const node = await ModelSession.create(onnxPath, { intraOpThreads: 1 });
  const ffi = await ModelSession.create(onnxPath, { intraOpThreads: 1, backend: "ffi" });
  try {
    assert.equal(ffi.backend, "ffi");
    assert.deepEqual(kvLayoutOf(ffi), kvLayoutOf(node));
    // prompt 1 stops after 3 tokens: the batch shrinks mid-way, and the cache with it
    const opts = {
      maxNewTokens: 12,
      temperature: 0.8,
      seed: 5,
      topLogprobs: 2,
      stop: (tokens: readonly number[], row: number) => row === 1 && tokens.length === 3,
    };
    const [a, b] = [await generate(node, PROMPTS, opts), await generate(ffi, PROMPTS, opts)];
    assert.equal(b.steps, a.steps);
    assert.equal(a.rows[1].stopReason, "stop");
    assert.deepEqual(b.rows, a.rows);
    // a cancelled generation stops at the next step, its cache released
    const ctl = new AbortController();
    const cut = await generate(ffi, PROMPTS, {
      maxNewTokens: 12,
      temperature: 0,
      signal: ctl.signal,
      onToken: (step) => step === 2 && ctl.abort(),
    });
    assert.deepEqual(cut.rows.map((r) => [r.tokens.length, r.stopReason]), [[3, "abort"], [3, "abort"], [
      3,
      "abort",
    ]]);
  } finally {
    await node.release();
    await ffi.release();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("generate: with a seed per row each row samples what it samples alone; rows report their end", async () => {
  await withModel(async (session) => {
    const opts = { maxNewTokens: 8, temperature: 1, eosTokenIds: [7] };
    const seeds = [11, 12, 13];
    const finishedAt: (string | null)[][] = [];
    const batch = await generate(session, PROMPTS, {
      ...opts,
      seeds,
      onToken: (_step, _tokens, _choices, finished) => finishedAt.push([...finished]),
    });
    for (const [i, p] of PROMPTS.entries()) {
      const alone = await generate(session, [p], { ...opts, seeds: [seeds[i]] });
      assert.deepEqual(batch.rows[i].tokens, alone.rows[0].tokens, `prompt ${i}`);
      // each row's end is reported once, at the step of its last token
      const ends = finishedAt.map((f) => f[i]).filter((f) => f !== null);
      assert.deepEqual(ends, [batch.rows[i].stopReason]);
      assert.equal(finishedAt.findIndex((f) => f[i] !== null), batch.rows[i].tokens.length - 1);
    }
    assert.notDeepEqual(batch.rows[0].tokens, batch.rows[1].tokens);
    await assert.rejects(generate(session, PROMPTS, { ...opts, seeds: [1] }), /1 seeds for 3 prompts/);
  });
});

Deno.test("generate: sampling in the graph gives the host's tokens and log-probs; seeds reproduce", async () => {
  const dir = await Deno.makeTempDir({ prefix: "generate_sampler_" });
  const weights = initWeights(cfg, { seed: 11, std: 0.35, normStd: 0.1 });
  const { onnxPath } = await exportForServing(join(dir, "m"), { cfg, weights });
  const node = await ModelSession.create(onnxPath, { intraOpThreads: 1, backend: "node" });
  const ffi = await ModelSession.create(onnxPath, { intraOpThreads: 1, backend: "ffi" });
  const sampler = await GraphSampler.beside(ffi, { threads: 1 });
  const close = (a: number[], b: number[]) =>
    a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) < 1e-5, `${x} ${b[i]}`));
  try {
    const cases: GenerateOptions[] = [
      { maxNewTokens: 10, temperature: 0 },
      { maxNewTokens: 12, temperature: 1, seed: 42 },
      // row 1 stops after 3 tokens: the batch (and the logits the sampler gets) shrinks mid-way
      {
        maxNewTokens: 12,
        temperature: 0.7,
        topK: 20,
        topP: 0.9,
        seeds: [11, 12, 13],
        stop: (tokens, row) => row === 1 && tokens.length === 3,
      },
      { maxNewTokens: 8, temperature: 1.3, topP: 0.8, seeds: [1, 2, 3], eosTokenIds: [7] },
    ];
    for (const session of [ffi, node]) {
      for (const opts of cases) {
        const host = await generate(session, PROMPTS, opts);
        const graph = await generate(session, PROMPTS, { ...opts, sampler });
        // the same draws: the same tokens (a float32 boundary aside, which these draws do not meet)
        assert.deepEqual(graph.rows.map((r) => r.tokens), host.rows.map((r) => r.tokens), session.backend);
        assert.deepEqual(graph.rows.map((r) => r.stopReason), host.rows.map((r) => r.stopReason));
        assert.equal(graph.steps, host.steps);
        graph.rows.forEach((r, i) => close(r.logprobs, host.rows[i].logprobs));
      }
    }
    // per-row seeds: a row samples alone what it samples in the batch, and again the same
    const opts = { maxNewTokens: 8, temperature: 1, topK: 30, sampler };
    const batch = await generate(ffi, PROMPTS, { ...opts, seeds: [5, 6, 7] });
    for (const [i, p] of PROMPTS.entries()) {
      const alone = await generate(ffi, [p], { ...opts, seeds: [5 + i] });
      assert.deepEqual(alone.rows[0].tokens, batch.rows[i].tokens, `prompt ${i}`);
    }
    assert.notDeepEqual(batch.rows[0].tokens, batch.rows[1].tokens);
    // a repetition penalty or top_logprobs need the logits: the host samples, exactly as without a sampler
    for (const extra of [{ repetitionPenalty: 1.3 }, { topLogprobs: 2 }]) {
      const o = { maxNewTokens: 6, temperature: 0.9, seed: 3, ...extra };
      assert.deepEqual(await generate(ffi, PROMPTS, { ...o, sampler }), await generate(ffi, PROMPTS, o));
    }
  } finally {
    await sampler.release();
    await node.release();
    await ffi.release();
    await Deno.remove(dir, { recursive: true });
  }
});
