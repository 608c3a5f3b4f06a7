// deno-lint-ignore-file
import { initWeights } from "../lib/model/init.ts";
import { gpt2Config, graphStats, benchLora } from "./_common.ts";
import { buildAlignmentGraph } from "../lib/train/train_graph.ts";
import { trainableParamsFor } from "../lib/model/decoder.ts";
import { frozenWeights } from "../lib/model/weights.ts";
const cfg = gpt2Config({ layers: Number(Deno.args[0] ?? 12), hidden: 768, heads: 12, vocab: 50257, positions: 1024 });
const weights = initWeights(cfg, { seed: 0 });
for (const mode of ["lora", "full"] as const) {
  const trainable = mode === "full" ? trainableParamsFor(cfg, { mode: "full", weights }) : trainableParamsFor(cfg, { mode: "lora", lora: benchLora(16), seed: 0 });
  const built = buildAlignmentGraph({ cfg, frozen: frozenWeights(weights), trainable, loss: "sft", beta: 0.1, k: 1, ranked: false, optimizer: { kind: "adamw", weightDecay: 0.01 }, maxGradNorm: 1 });
  const s = graphStats(built.graph.build(), 40);
  console.log(mode, s.stepNodes, JSON.stringify(s.stepOps.slice(0, 14)));
}
