/**
 * Canonical fingerprints of built graphs, and the recipes of the graphs tests/train/precision_test.ts
 * fingerprints to show that fp32 (and float64) graphs did not change when fp16 came. Imports only modules
 * that existed before fp16 (their extra `precision` arguments are ignored there), so the same recipes can
 * fingerprint an older checkout.
 */
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import type { Graph } from "../../lib/graph/ir.ts";
import type { ModelConfig } from "../../lib/model/config.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import {
  buildDecoder,
  policyLogProbs,
  referenceLogProbs,
  type Trainable,
  trainableParamsFor,
} from "../../lib/model/decoder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { type FloatDType, frozenWeights, type WeightMap } from "../../lib/model/weights.ts";
import { buildAlignmentGraph } from "../../lib/train/train_graph.ts";
import { buildScoringGraph, type Precision } from "../../lib/model/scoring_graph.ts";

/**
 * A canonical text of a graph: every name the global name counter makes is renamed in order of appearance
 * (so the text does not depend on what else the process built), initializer data hashed.
 */
export function canonical(g: Graph, names = new Map<string, string>()): string {
  const nm = (n: string) => {
    if (n === "") return "";
    let c = names.get(n);
    if (!c) names.set(n, c = `v${names.size}`);
    return c;
  };
  // unknown dimensions are counter-named too ("?17"): number them by appearance
  const dims = (shape: readonly (number | string)[]) =>
    shape.map((d) => typeof d === "string" && /^\?\d+$/.test(d) ? `?${nm(d)}` : d);
  const lines: string[] = [];
  // the root graph's inputs and weights keep their names; subgraph inputs (Loop bodies) may be counter-named
  const root = names.size === 0;
  for (const i of g.inputs) {
    if (root) names.set(i.name, i.name);
    lines.push(`in ${nm(i.name)} ${i.dtype} [${dims(i.shape)}]`);
  }
  for (const t of g.initializers) {
    let h = 0x811c9dc5;
    const bytes = t.data
      ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
      : new TextEncoder().encode(`${t.external.offset}+${t.external.length}`);
    for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
    const own = !t.name.startsWith("const_");
    lines.push(`init ${own ? t.name : nm(t.name)} ${t.dtype} [${t.dims}] ${h}`);
    if (own) names.set(t.name, t.name);
  }
  for (const n of g.nodes) {
    const attrs = Object.entries(n.attrs).sort(([a], [b]) => a < b ? -1 : 1).map(([k, a]) =>
      `${k}=${a.type === "graph" ? `{${canonical(a.value, names)}}` : JSON.stringify(a.value)}`
    );
    lines.push(
      `${n.op}${n.domain ? "@" + n.domain : ""}(${n.inputs.map(nm)}) -> ${n.outputs.map(nm)} ${attrs}`,
    );
  }
  for (const o of g.outputs) lines.push(`out ${nm(o.name)} ${o.dtype} [${dims(o.shape)}]`);
  return lines.join("\n");
}

/** Lines and FNV-1a hash of {@link canonical}'s text. */
export function fingerprint(g: GraphBuilder): string {
  const c = canonical(g.build());
  let h = 0x811c9dc5;
  for (let i = 0; i < c.length; i++) h = Math.imul(h ^ c.charCodeAt(i), 0x01000193) >>> 0;
  return `${c.split("\n").length}:${h.toString(16)}`;
}

export const lora = (dropout = 0.1) => ({ r: 4, alpha: 8, dropout, targetModules: "all-linear" as const });

export function alignmentGraph(
  cfg: ModelConfig,
  W: WeightMap,
  trainable: Trainable,
  precision?: Precision,
  extra: { scoring?: boolean } = {},
) {
  return buildAlignmentGraph({
    cfg,
    frozen: frozenWeights(W),
    trainable,
    loss: "infonca",
    beta: 0.1,
    k: 2,
    ranked: true,
    optimizer: { kind: "adamw", weightDecay: 0.01 },
    maxGradNorm: 1,
    accumulation: trainable.mode === "full" ? 2 : 1,
    precision,
    ...extra,
  });
}

/** Every fp32 graph of the recipes, by the name of its fingerprint. */
export function fp32Graphs(precision?: Precision): Map<string, GraphBuilder> {
  const out = new Map<string, GraphBuilder>();
  for (const family of ["llama", "gpt2"] as const) {
    const cfg = tinyConfig(family);
    const W = initWeights(cfg, { seed: 1 });
    for (const mode of ["lora", "full"] as const) {
      const trainable = trainableParamsFor(
        cfg,
        mode === "lora" ? { mode, lora: lora(), seed: 1 } : { mode, weights: W },
      );
      out.set(`${family}/${mode}/train`, alignmentGraph(cfg, W, trainable, precision).graph);
      out.set(`${family}/${mode}/policy`, buildScoringGraph(cfg, frozenWeights(W), trainable, { precision }));
    }
    out.set(`${family}/reference`, buildScoringGraph(cfg, frozenWeights(W), undefined, { precision }));
  }
  // decoder graphs straight from lib/model, float32 and float64
  for (const family of ["llama", "gpt2"] as const) {
    for (const tie of [true, false]) {
      const cfg = tinyConfig(family as "llama", { tieWordEmbeddings: tie });
      const W = initWeights(cfg, { seed: 1 });
      for (const dtype of ["float32", "float64"] as FloatDType[]) {
        for (const mode of ["frozen", "lora", "full", "cache"] as const) {
          const g = new GraphBuilder("t");
          const inputIds = g.input("input_ids", "int32", ["n", "t"]);
          const attentionMask = g.input("attention_mask", "int32", ["n", "s"]);
          const labels = g.input("labels", "int32", ["n", "t"]);
          const frozen = frozenWeights(W);
          if (mode === "cache") {
            const past = Array.from({ length: cfg.numLayers }, (_, i) => ({
              key: g.input(`pk${i}`, "float32", ["n", cfg.numKvHeads, "p", cfg.headDim]),
              value: g.input(`pv${i}`, "float32", ["n", cfg.numKvHeads, "p", cfg.headDim]),
            }));
            const keep = g.input("keep", "int64", [1]);
            const o = buildDecoder(g, cfg, { inputIds, attentionMask, past, logitsToKeep: keep }, {
              dtype,
              weights: frozen,
            });
            g.output(o.logits, "logits");
            o.present.forEach((p, i) => {
              g.output(p.key, `k${i}`);
              g.output(p.value, `v${i}`);
            });
          } else if (mode === "frozen") {
            g.output(
              referenceLogProbs(g, cfg, frozen, { inputIds, attentionMask, labels }, { dtype }).sums,
              "s",
            );
          } else {
            const t = trainableParamsFor(
              cfg,
              mode === "lora"
                ? { mode, lora: { r: 2, alpha: 4, dropout: 0.1, targetModules: "all-linear" } }
                : { mode, weights: W },
            );
            const params: Record<string, Value> = {};
            for (const p of t.params) params[p.name] = g.input(p.name, "float32", p.shape);
            const lp = policyLogProbs(g, cfg, t, params, frozen, { inputIds, attentionMask, labels }, {
              dtype,
            });
            g.output(lp.sums, "s");
          }
          out.set(`${family}/tie=${tie}/${dtype}/${mode}`, g);
        }
      }
    }
  }
  return out;
}
