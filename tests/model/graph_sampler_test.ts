/**
 * The in-graph sampler (lib/model/graph_sampler.ts) against the host sampler (sampling.ts) on random rows:
 * the same token for the same uniform but within float rounding of a boundary, the same argmax, the
 * model's log-probs, the softmax's frequencies, and never a filtered token.
 */
import assert from "node:assert/strict";
import { GraphSampler, type SampleRowParams } from "../../lib/model/graph_sampler.ts";
import {
  argmax,
  candidates,
  mulberry32,
  sampleToken,
  type SamplingParams,
  tokenLogprob,
} from "../../lib/model/sampling.ts";
import { softmax } from "../../lib/losses/stable.ts";
import type { HostTensor } from "../../lib/runtime/session.ts";

/** `rows` rows of `V` random logits, as one `[rows, 1, V]` decoder output. */
function randomLogits(rows: number, V: number, seed: number, spread = 10): HostTensor {
  const r = mulberry32(seed);
  return {
    dtype: "float32",
    dims: [rows, 1, V],
    data: Float32Array.from({ length: rows * V }, () => (r() - 0.5) * spread),
  };
}

const rowOf = (t: HostTensor, b: number) => {
  const V = t.dims[2];
  return (t.data as Float32Array).subarray(b * V, (b + 1) * V);
};

/** The host sampler's cumulative distribution for a row: its candidates in draw order and their CDF. */
function hostCdf(logits: Float32Array, p: SamplingParams): { tokens: number[]; cdf: number[] } {
  const { tokens, probs } = candidates(logits, p);
  const total = probs.reduce((a, b) => a + b, 0);
  let c = 0;
  return { tokens, cdf: probs.map((q) => (c += q) / total) };
}

/** The same params for every row, with each row's uniform. */
const withU = (p: SamplingParams, us: readonly number[]): SampleRowParams[] => us.map((u) => ({ ...p, u }));

Deno.test("graph sampler", async (t) => {
  const sampler = await GraphSampler.create({ threads: 1 });
  try {
    await t.step("for the same u the host's token, but within 1e-5 of a CDF boundary", async () => {
      // a vocabulary over several of the cumulative sum's blocks and not a multiple of one
      const V = 3001, rows = 24;
      const logits = randomLogits(rows, V, 1);
      const configs: SamplingParams[] = [
        { temperature: 1 },
        { temperature: 0.6 },
        { temperature: 1.7 },
        { temperature: 1, topK: 40 },
        { temperature: 0.8, topP: 0.9 },
        { temperature: 1.2, topK: 300, topP: 0.7 },
        { temperature: 1, topK: V + 5 }, // ≥ V: off
      ];
      const rng = mulberry32(7);
      let draws = 0, same = 0;
      for (const p of configs) {
        const cdfs = Array.from({ length: rows }, (_, b) => hostCdf(rowOf(logits, b), p));
        for (let round = 0; round < 12; round++) {
          // random draws, and draws 1e-4 on either side of a boundary (which must still agree)
          const us = cdfs.map(({ cdf }) => {
            if (round % 3 === 0) return rng();
            const i = Math.floor(rng() * (cdf.length - 1));
            return Math.min(Math.max(cdf[i] + (round % 3 === 1 ? 1e-4 : -1e-4), 0), 1 - 1e-9);
          });
          const { tokens, onHost } = await sampler.sample(logits, withU(p, us));
          assert.equal(onHost, 0, "every row drawn in the graph");
          tokens.forEach((tok, b) => {
            const host = sampleToken(rowOf(logits, b), p, () => us[b]);
            draws++;
            if (tok === host) return void same++;
            const near = Math.min(...cdfs[b].cdf.map((c) => Math.abs(c - us[b])));
            assert.ok(
              near < 1e-5,
              `${JSON.stringify(p)} row ${b} u ${us[b]}: ${tok} vs ${host}, ${near} away`,
            );
          });
        }
      }
      assert.ok(same / draws >= 0.99, `${same} of ${draws} the same`);
    });

    await t.step("temperature 0 is the host's argmax (the first on ties), whatever the filters", async () => {
      const V = 500, rows = 64;
      const logits = randomLogits(rows, V, 2);
      // integer logits: ties everywhere
      const ties: HostTensor = { ...logits, data: (logits.data as Float32Array).map((x) => Math.round(x)) };
      for (const t of [logits, ties]) {
        const us = Array.from({ length: rows }, (_, b) => b / rows);
        const { tokens } = await sampler.sample(t, withU({ temperature: 0, topK: 3, topP: 0.2 }, us));
        tokens.forEach((tok, b) => assert.equal(tok, argmax(rowOf(t, b)), `row ${b}`));
      }
    });

    await t.step("log-probs are the model's own (temperature 1, unfiltered) within 1e-5", async () => {
      const V = 2000, rows = 16;
      const logits = randomLogits(rows, V, 3, 30);
      const r = mulberry32(4);
      for (const p of [{ temperature: 0 }, { temperature: 0.5, topK: 10 }, { temperature: 2, topP: 0.5 }]) {
        const { tokens, logprobs } = await sampler.sample(logits, withU(p, tokens16(r)));
        tokens.forEach((tok, b) => {
          const want = tokenLogprob(rowOf(logits, b), tok);
          assert.ok(Math.abs(logprobs[b] - want) < 1e-5, `${logprobs[b]} vs ${want}`);
        });
      }
    });

    await t.step("draws follow softmax(logits / T), filtered and renormalized (chi-square)", async () => {
      const logits = [0.3, -1, 2, 1.1, 0, -0.5];
      const V = logits.length, rows = 2000, rounds = 10;
      const batch: HostTensor = {
        dtype: "float32",
        dims: [rows, 1, V],
        data: Float32Array.from({ length: rows * V }, (_, i) => logits[i % V]),
      };
      const r = mulberry32(5);
      const configs: SamplingParams[] = [{ temperature: 1 }, { temperature: 0.7, topK: 3 }, {
        temperature: 1.5,
        topP: 0.8,
      }];
      for (const p of configs) {
        const counts = new Array(V).fill(0);
        for (let n = 0; n < rounds; n++) {
          const { tokens } = await sampler.sample(batch, withU(p, Array.from({ length: rows }, () => r())));
          for (const tok of tokens) counts[tok]++;
        }
        const { tokens: kept, probs } = candidates(Float32Array.from(logits), p);
        const total = probs.reduce((a, b) => a + b, 0);
        const N = rows * rounds;
        let chi2 = 0;
        kept.forEach((tok, i) => {
          const expected = (N * probs[i]) / total;
          chi2 += (counts[tok] - expected) ** 2 / expected;
        });
        // every draw among the candidates, and χ² under its 0.1% critical value (5 degrees of freedom: 20.5)
        assert.equal(kept.reduce((s, tok) => s + counts[tok], 0), N, `${JSON.stringify(p)}: ${counts}`);
        assert.ok(chi2 < 20.5, `${JSON.stringify(p)}: χ² ${chi2.toFixed(2)}, counts ${counts}`);
      }
      // unfiltered, the expected frequencies are the softmax itself
      assert.ok(Math.abs(softmax(logits).reduce((a, b) => a + b, 0) - 1) < 1e-12);
    });

    await t.step(
      "top-k and top-p never emit a filtered token; a row draws the same in any batch",
      async () => {
        const V = 777, rows = 12;
        const logits = randomLogits(rows, V, 6, 6);
        const params: SamplingParams[] = [
          { temperature: 1, topK: 5 },
          { temperature: 1.5, topP: 0.3 },
          { temperature: 1, topK: 50, topP: 0.5 },
          { temperature: 1 },
          { temperature: 0 },
          { temperature: 2, topK: 1 },
        ];
        const r = mulberry32(8);
        for (let round = 0; round < 40; round++) {
          // a mixed batch: row b uses params[b % 6]
          const rowParams = Array.from(
            { length: rows },
            (_, b) => ({ ...params[b % params.length], u: r() }),
          );
          const { tokens } = await sampler.sample(logits, rowParams);
          for (let b = 0; b < rows; b++) {
            if (rowParams[b].temperature! > 0) {
              assert.ok(candidates(rowOf(logits, b), rowParams[b]).tokens.includes(tokens[b]), `row ${b}`);
            } else assert.equal(tokens[b], argmax(rowOf(logits, b)));
            if (round < 4) {
              const one: HostTensor = { dtype: "float32", dims: [1, 1, V], data: rowOf(logits, b).slice() };
              assert.equal(
                (await sampler.sample(one, [rowParams[b]])).tokens[0],
                tokens[b],
                `row ${b} alone`,
              );
            }
          }
        }
      },
    );

    await t.step("a nucleus wider than `topPCandidates` is drawn on the host, with the same u", async () => {
      const narrow = await GraphSampler.create({ threads: 1, topPCandidates: 8 });
      try {
        // a flat distribution: the nucleus of 0.9 needs 90 of 100 tokens, that of 0.05 five
        const V = 100, rows = 64;
        const flat: HostTensor = {
          dtype: "float32",
          dims: [rows, 1, V],
          data: Float32Array.from({ length: rows * V }, (_, i) => (i % V) * 1e-3),
        };
        const r = mulberry32(9);
        for (const [topP, onHost] of [[0.9, rows], [0.05, 0]]) {
          const us = tokensOf(r, rows);
          const got = await narrow.sample(flat, withU({ temperature: 1, topP }, us));
          assert.equal(got.onHost, onHost, `top_p ${topP}`);
          got.tokens.forEach((tok, b) => {
            const row = rowOf(flat, b);
            assert.equal(
              tok,
              sampleToken(row, { temperature: 1, topP }, () => us[b]),
              `top_p ${topP} row ${b}`,
            );
            assert.ok(Math.abs(got.logprobs[b] - tokenLogprob(row, tok)) < 1e-5);
          });
          if (topP === 0.9) assert.ok(got.tokens.some((tok) => tok < V - 8), "past the top 8");
        }
      } finally {
        await narrow.release();
      }
    });

    await t.step("parameters are checked as the host checks them", async () => {
      const logits = randomLogits(1, 10, 10);
      await assert.rejects(sampler.sample(logits, [{ temperature: -1, u: 0.5 }]), /temperature/);
      await assert.rejects(sampler.sample(logits, [{ topP: 0, u: 0.5 }]), /top_p/);
      await assert.rejects(sampler.sample(logits, [{ topK: 1.5, u: 0.5 }]), /top_k/);
      await assert.rejects(sampler.sample(logits, [{ u: 1 }]), /u must be/);
      await assert.rejects(sampler.sample(logits, []), /logits for 1 rows, parameters for 0/);
    });
  } finally {
    await sampler.release();
  }
});

const tokensOf = (r: () => number, n: number) => Array.from({ length: n }, () => r());
const tokens16 = (r: () => number) => tokensOf(r, 16);
