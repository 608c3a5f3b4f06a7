/**
 * The KV cache contract: prefill then token-by-token decoding with `past` gives the logits of the full
 * sequence; left and right padding give the same log-probs; logits for the last k positions only.
 */
import assert from "node:assert/strict";
import type { ModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { buildDecoder } from "../../lib/model/decoder.ts";
import { frozenWeights } from "../../lib/model/weights.ts";
import { initWeights } from "../../lib/model/init.ts";
import type { HostTensor } from "../../lib/runtime/session.ts";
import {
  assertClose,
  compile,
  decoderRunner,
  floats,
  i64,
  logProbRunner,
  paddedBatch,
  tokens,
} from "./_decoder_helpers.ts";

const ARCHS: [string, ModelConfig][] = [
  ["llama (GQA 4/2)", tinyConfig("llama")],
  ["qwen2 (bias, tied)", tinyConfig("llama", { modelType: "qwen2", tieWordEmbeddings: true })],
  ["gpt2", tinyConfig("gpt2")],
  [
    "qwen3 (q/k norms, window 3 on layer 1)",
    tinyConfig("llama", {
      modelType: "qwen3",
      slidingWindow: 3,
      slidingLayers: [false, true],
    }),
  ],
  [
    "gemma2 (soft caps, window 3 on layer 0)",
    tinyConfig("gemma", {
      attnLogitSoftcap: 2,
      finalLogitSoftcap: 3,
      slidingWindow: 3,
      slidingLayers: [true, false],
    }),
  ],
  [
    "gemma3_text (local rope)",
    tinyConfig("gemma", {
      modelType: "gemma3_text",
      ropeLocalTheta: 50,
      slidingWindow: 4,
      slidingLayers: [true, false],
    }),
  ],
  ["phi3 (partial rotary, window 4)", tinyConfig("phi3", { rotaryDim: 4, slidingWindow: 4 })],
];

/** Columns [from, to) of a row-major [B, T] list. */
function cols(x: number[], B: number, T: number, from: number, to: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < B; b++) out.push(...x.slice(b * T + from, b * T + to));
  return out;
}

for (const [name, cfg] of ARCHS) {
  Deno.test(`kv cache: ${name}: prefill + one token at a time equals the full sequence`, async () => {
    const W = initWeights(cfg, { seed: 11, std: 0.2, biasStd: 0.1, normStd: 0.1 });
    const B = 2, T = 8, P = 3, V = cfg.vocabSize;
    const ids = tokens(B * T, 7, V);
    const mask = [0, 0, 1, 1, 1, 1, 1, 1, /**/ 1, 1, 1, 1, 1, 1, 1, 1]; // row 0 left-padded, as in generation
    const r = await decoderRunner(cfg, W, { cache: true });
    const full = floats((await r.logits(ids, mask, B)).logits);
    let out = await r.logits(cols(ids, B, T, 0, P), cols(mask, B, T, 0, P), B);
    const got: number[][] = Array.from({ length: T }, () => []);
    const take = (o: Record<string, HostTensor>, t0: number, n: number) => {
      const l = floats(o.logits);
      for (let t = 0; t < n; t++) {
        for (let b = 0; b < B; b++) got[t0 + t].push(...l.subarray((b * n + t) * V, (b * n + t + 1) * V));
      }
    };
    take(out, 0, P);
    for (let t = P; t < T; t++) {
      const past: Record<string, HostTensor> = {};
      for (let i = 0; i < cfg.numLayers; i++) {
        past[`past.${i}.key`] = out[`present.${i}.key`];
        past[`past.${i}.value`] = out[`present.${i}.value`];
      }
      assert.deepEqual(past["past.0.key"].dims, [B, cfg.numKvHeads, t, cfg.headDim]);
      out = await r.logits(cols(ids, B, T, t, t + 1), cols(mask, B, T, 0, t + 1), B, past);
      take(out, t, 1);
    }
    await r.release();
    for (let t = 0; t < T; t++) {
      for (let b = 0; b < B; b++) {
        if (!mask[b * T + t]) continue;
        const want = full.subarray((b * T + t) * V, (b * T + t + 1) * V);
        assertClose(got[t].slice(b * V, (b + 1) * V), want, 1e-4, `logits[${b},${t}]`);
      }
    }
  });

  Deno.test(`kv cache: ${name}: left and right padding give the same log-prob sums`, async () => {
    const W = initWeights(cfg, { seed: 12, std: 0.2, biasStd: 0.1 });
    const rows = [
      { prompt: tokens(3, 1, cfg.vocabSize), response: tokens(4, 2, cfg.vocabSize) },
      { prompt: tokens(5, 3, cfg.vocabSize), response: tokens(2, 4, cfg.vocabSize) },
      { prompt: tokens(1, 5, cfg.vocabSize), response: tokens(3, 6, cfg.vocabSize) },
    ];
    const r = await logProbRunner(cfg, W);
    const right = await r.logProbs(paddedBatch(rows, "right", 10), 3);
    const left = await r.logProbs(paddedBatch(rows, "left", 10), 3);
    const alone = await r.logProbs(paddedBatch([rows[2]], "right"), 1);
    await r.release();
    assertClose(left.sums, right.sums, 1e-5, "left vs right");
    assertClose(alone.sums, right.sums.subarray(2), 1e-5, "alone vs batched");
    assert.deepEqual([...right.counts], [4, 2, 3]);
    assert.ok(right.sums.every((s) => s < 0 && Number.isFinite(s)));
  });
}

Deno.test("kv cache: logitsToKeep projects the last k positions only (0 = all); explicit position ids", async () => {
  const cfg = tinyConfig("llama");
  const W = initWeights(cfg, { seed: 2, std: 0.2 });
  const c = await compile((g) => {
    const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
    const attentionMask = g.input("attention_mask", "int64", ["batch", "seq"]);
    const positionIds = g.input("position_ids", "int64", ["batch", "seq"]);
    const keep = g.input("keep", "int64", []);
    const weights = frozenWeights(W);
    const all = buildDecoder(g, cfg, { inputIds, attentionMask }, { weights }).logits;
    const kept = buildDecoder(g, cfg, { inputIds, attentionMask, logitsToKeep: keep }, { weights }).logits;
    const explicit = buildDecoder(g, cfg, { inputIds, attentionMask, positionIds }, { weights }).logits;
    return { all, kept, explicit };
  });
  const ids = tokens(10, 3, cfg.vocabSize), mask = [1, 1, 1, 1, 1, 0, 1, 1, 1, 1];
  const pos = [0, 1, 2, 3, 4, 1, 0, 1, 2, 3];
  const feeds = (k: number) => ({
    input_ids: i64(ids, [2, 5]),
    attention_mask: i64(mask.map((m, i) => (i === 5 ? 0 : m)), [2, 5]),
    position_ids: i64(pos, [2, 5]),
    keep: i64([k], []),
  });
  // row 1 is left-padded by one: derived positions are [1, 0, 1, 2, 3]
  const o1 = await c.run(feeds(1));
  const all = floats(o1.all), V = cfg.vocabSize;
  assert.deepEqual(o1.kept.dims, [2, 1, V]);
  assertClose(floats(o1.kept).subarray(0, V), all.subarray(4 * V, 5 * V), 1e-6, "row 0 last");
  assertClose(floats(o1.kept).subarray(V), all.subarray(9 * V), 1e-6, "row 1 last");
  assertClose(floats(o1.explicit), all, 1e-6, "explicit positions");
  const o0 = await c.run(feeds(0));
  assert.deepEqual(o0.kept.dims, [2, 5, V]);
  assertClose(floats(o0.kept), all, 1e-6, "keep 0");
  await c.release();
});
