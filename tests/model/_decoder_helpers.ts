/**
 * Helpers shared by the model tests: compile a graph built by a callback and run it, decoder graphs with
 * (optionally) a KV cache, tiny configs and batches.
 */
import assert from "node:assert/strict";
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { type HostTensor, ModelSession } from "../../lib/runtime/session.ts";
import type { ModelConfig } from "../../lib/model/config.ts";
import { buildDecoder, type KvPair } from "../../lib/model/decoder.ts";
import type { LoraRuntime } from "../../lib/model/lora.ts";
import { sequenceLogProbs } from "../../lib/model/logprobs.ts";
import {
  type FloatDType,
  frozenWeights,
  type WeightMap,
  type WeightSource,
} from "../../lib/model/weights.ts";

/** A compiled graph: feed host tensors, get host tensors. */
export type Compiled = {
  run(feeds: Record<string, HostTensor>, outputs?: string[]): Promise<Record<string, HostTensor>>;
  release(): Promise<void>;
};

/** Builds a graph with `build` (which declares inputs and returns named outputs) and loads it. */
export async function compile(build: (g: GraphBuilder) => Record<string, Value>): Promise<Compiled> {
  const g = new GraphBuilder("test");
  const outs = build(g);
  for (const [name, v] of Object.entries(outs)) {
    g.output(v.dtype === "float64" || v.dtype === "float32" ? v : op.cast(v, "float32"), name);
  }
  const session = await ModelSession.create(g.build(), {
    intraOpThreads: 1,
    describe: (n) => g.describe(n),
  });
  return {
    run: (feeds, outputs) => session.run(feeds, outputs),
    release: async () => void (await session.release()),
  };
}

/** int64 host tensor. */
export function i64(data: ArrayLike<number>, dims: number[]): HostTensor {
  return { dtype: "int64", dims, data: BigInt64Array.from(Array.from(data), (v) => BigInt(v)) };
}

/** Options of {@link decoderRunner}. */
export type RunnerOptions = {
  dtype?: FloatDType;
  /** Declare past inputs (`past.{i}.key/value`) and present outputs. */
  cache?: boolean;
  lora?: (g: GraphBuilder) => LoraRuntime | null;
  weights?: WeightSource;
};

/** A decoder graph with inputs `input_ids`, `attention_mask` (and the cache), output `logits`. */
export async function decoderRunner(cfg: ModelConfig, weights: WeightMap, o: RunnerOptions = {}) {
  const dtype = o.dtype ?? "float32";
  const c = await compile((g) => {
    const inputIds = g.input("input_ids", "int64", ["batch", "seq"]);
    const attentionMask = g.input("attention_mask", "int64", ["batch", "total"]);
    let past: KvPair[] | undefined;
    if (o.cache) {
      past = Array.from({ length: cfg.numLayers }, (_, i) => ({
        key: g.input(`past.${i}.key`, "float32", ["batch", cfg.numKvHeads, "past", cfg.headDim]),
        value: g.input(`past.${i}.value`, "float32", ["batch", cfg.numKvHeads, "past", cfg.headDim]),
      }));
    }
    const out = buildDecoder(g, cfg, { inputIds, attentionMask, past }, {
      dtype,
      weights: o.weights ?? frozenWeights(weights),
      lora: o.lora?.(g) ?? null,
    });
    const named: Record<string, Value> = { logits: out.logits };
    if (o.cache) {
      out.present.forEach((p, i) => {
        named[`present.${i}.key`] = op.cast(p.key, "float32");
        named[`present.${i}.value`] = op.cast(p.value, "float32");
      });
    }
    return named;
  });
  return {
    ...c,
    /** Logits `[B, T, V]` (and presents) for ids/mask given row-major. */
    async logits(ids: number[], mask: number[], batch: number, past?: Record<string, HostTensor>) {
      const t = ids.length / batch;
      const feeds: Record<string, HostTensor> = {
        input_ids: i64(ids, [batch, t]),
        attention_mask: i64(mask, [batch, mask.length / batch]),
        ...past,
      };
      if (o.cache && !past) {
        for (let i = 0; i < cfg.numLayers; i++) {
          const empty = {
            dtype: "float32" as const,
            dims: [batch, cfg.numKvHeads, 0, cfg.headDim],
            data: new Float32Array(0),
          };
          feeds[`past.${i}.key`] = empty;
          feeds[`past.${i}.value`] = empty;
        }
      }
      return await c.run(feeds);
    },
  };
}

/** Asserts |a − b| ≤ tol · max(1, |b|) elementwise. */
export function assertClose(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  tol: number,
  what = "values",
): number {
  assert.equal(a.length, b.length, `${what}: lengths differ`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i]));
    worst = Math.max(worst, err);
    if (!(err <= tol)) assert.fail(`${what}[${i}]: ${a[i]} vs ${b[i]} (tolerance ${tol})`);
  }
  return worst;
}

/** Deterministic pseudo-random token ids in [lo, hi). */
export function tokens(n: number, seed: number, hi: number, lo = 3): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + (s % (hi - lo));
  });
}

/** The data of a float host tensor, as numbers. */
export function floats(t: HostTensor): Float32Array | Float64Array {
  if (t.dtype !== "float32" && t.dtype !== "float64") throw new TypeError(`expected floats, got ${t.dtype}`);
  return t.data as Float32Array | Float64Array;
}

/** A graph computing sequence log-probs: inputs `input_ids`, `attention_mask`, `labels` (int32 `[N, T]`). */
export async function logProbRunner(
  cfg: ModelConfig,
  weights: WeightMap,
  o: { dtype?: FloatDType; lora?: (g: GraphBuilder) => LoraRuntime | null; weights?: WeightSource } = {},
) {
  const c = await compile((g) => {
    const inputIds = g.input("input_ids", "int32", ["n", "t"]);
    const attentionMask = g.input("attention_mask", "int32", ["n", "t"]);
    const labels = g.input("labels", "int32", ["n", "t"]);
    const { logits } = buildDecoder(g, cfg, { inputIds, attentionMask }, {
      dtype: o.dtype,
      weights: o.weights ?? frozenWeights(weights),
      lora: o.lora?.(g) ?? null,
    });
    const lp = sequenceLogProbs(logits, labels);
    return { sums: lp.sums, counts: lp.counts, token_logps: lp.tokenLogps, logits };
  });
  return {
    ...c,
    async logProbs(b: { inputIds: Int32Array; attentionMask: Int32Array; labels: Int32Array }, n: number) {
      const t = b.inputIds.length / n;
      const i32 = (data: Int32Array): HostTensor => ({ dtype: "int32", dims: [n, t], data });
      const out = await c.run({
        input_ids: i32(b.inputIds),
        attention_mask: i32(b.attentionMask),
        labels: i32(b.labels),
      });
      return {
        sums: floats(out.sums),
        counts: floats(out.counts),
        tokenLogps: floats(out.token_logps),
        logits: floats(out.logits),
      };
    },
  };
}

/** Prompt + response rows padded on one side, labels −100 on prompt and padding (lib/data's layout). */
export function paddedBatch(
  rows: { prompt: number[]; response: number[] }[],
  side: "left" | "right",
  width?: number,
  padId = 0,
) {
  const T = width ?? Math.max(...rows.map((r) => r.prompt.length + r.response.length));
  const n = rows.length;
  const inputIds = new Int32Array(n * T).fill(padId);
  const attentionMask = new Int32Array(n * T);
  const labels = new Int32Array(n * T).fill(-100);
  rows.forEach((r, i) => {
    const len = r.prompt.length + r.response.length;
    let at = i * T + (side === "left" ? T - len : 0);
    for (const id of r.prompt) [inputIds[at], attentionMask[at++]] = [id, 1];
    for (const id of r.response) [inputIds[at], labels[at], attentionMask[at++]] = [id, id, 1];
  });
  return { inputIds, attentionMask, labels, width: T };
}
