/**
 * Scoring sequences with a log-prob graph (train_graph.ts' `buildScoringGraph`, or a training graph's
 * scoring mode): the reference model's log-probs, computed once before training and cached in the run
 * folder, and the policy's for evaluation.
 * @module
 */
import { makeBatch } from "../data/batch.ts";
import type { HostTensor } from "../runtime/tensor.ts";
import { BATCH_INPUTS } from "./chunks.ts";
import type { PreparedExample } from "./prepare.ts";

/**
 * What scores batches: a scoring session (`buildScoringGraph` loaded in a `ModelSession`), or a
 * training session's scoring mode (`TrainingSession.scorer`), which reads the training session's weights.
 */
export type Scorer = {
  run(feeds: Record<string, HostTensor>, outputs: readonly string[]): Promise<Record<string, HostTensor>>;
};

/** Per example, the summed log-prob of each response, and the response token counts. */
export type Scores = { logps: Float32Array[]; counts: Float32Array[] };

/**
 * Scores every response of every example: batches of `batchSize` prompts in length order (less padding),
 * results in the examples' order. `extra` feeds the policy's parameters.
 */
export async function scoreExamples(
  session: Scorer,
  examples: PreparedExample[],
  o: {
    padId: number;
    batchSize: number;
    extra?: Record<string, HostTensor>;
    onBatch?: (done: number) => void;
  },
): Promise<Scores> {
  const order = examples.map((_, i) => i).sort((a, b) =>
    exampleLength(examples[a]) - exampleLength(examples[b])
  );
  const logps: Float32Array[] = new Array(examples.length);
  const counts: Float32Array[] = new Array(examples.length);
  for (let at = 0; at < order.length; at += o.batchSize) {
    const idx = order.slice(at, at + o.batchSize);
    const b = makeBatch(idx.map((i) => examples[i]), { padId: o.padId, padToMultipleOf: 8 });
    const dims = [b.prompts * b.k, b.width];
    const out = await session.run({
      ...o.extra,
      [BATCH_INPUTS.inputIds]: { dtype: "int32", dims, data: b.inputIds },
      [BATCH_INPUTS.attentionMask]: { dtype: "int32", dims, data: b.attentionMask },
      [BATCH_INPUTS.labels]: { dtype: "int32", dims, data: b.labels },
    }, ["logps", "counts"]);
    const lp = out.logps.data as Float32Array, ct = out.counts.data as Float32Array;
    idx.forEach((i, p) => {
      logps[i] = lp.slice(p * b.k, (p + 1) * b.k);
      counts[i] = ct.slice(p * b.k, (p + 1) * b.k);
    });
    o.onBatch?.(Math.min(at + o.batchSize, order.length));
  }
  return { logps, counts };
}

/** An example's longest sequence: its prompt and longest response. */
export function exampleLength(ex: PreparedExample): number {
  return ex.promptIds.length + Math.max(...ex.responseIds.map((r) => r.length));
}

/** A short fingerprint of tokenized examples (FNV-1a over their ids), to validate a cached score file. */
export function fingerprintExamples(examples: PreparedExample[], salt = ""): string {
  let h = 0x811c9dc5;
  const mix = (v: number) => {
    h ^= v & 0xffff;
    h = Math.imul(h, 0x01000193) >>> 0;
    h ^= v >>> 16;
    h = Math.imul(h, 0x01000193) >>> 0;
  };
  for (const c of salt) mix(c.charCodeAt(0));
  for (const ex of examples) {
    mix(-1 >>> 0);
    for (const t of ex.promptIds) mix(t);
    for (const r of ex.responseIds) {
      mix(-2 >>> 0);
      for (const t of r) mix(t);
    }
  }
  return h.toString(16).padStart(8, "0") + `-${examples.length}`;
}
