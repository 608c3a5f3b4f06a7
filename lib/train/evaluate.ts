/**
 * Evaluation on the held-out prompts: the current policy's log-probs from a scoring graph fed with the
 * trainable state, and the loss and metrics from the TypeScript reference losses (lib/losses), so the
 * numbers are exact whatever the training graph computes.
 * @module
 */
import { batchMetrics, lossByName } from "../losses/mod.ts";
import type { Trainable } from "../model/decoder.ts";
import type { WeightSource } from "../model/weights.ts";
import { type HostTensor, ModelSession } from "../runtime/session.ts";
import type { TrainingSession } from "../runtime/training_session.ts";
import type { MetricsRecord } from "./metrics_log.ts";
import type { TrainConfig } from "./options.ts";
import type { RunInputs } from "./run_inputs.ts";
import { scoreExamples, type ScorerPlace } from "./scoring.ts";
import { buildScoringGraph } from "./train_graph.ts";

/** A session scoring sequences under the policy whose parameters are fed by name. */
export async function policyScorer(
  p: RunInputs,
  frozen: WeightSource,
  trainable: Trainable,
  where: ScorerPlace,
  precision: TrainConfig["precision"],
): Promise<ModelSession> {
  const g = buildScoringGraph(p.model.config, frozen, trainable, { precision, chunk: where.chunk });
  return await ModelSession.create(g.build(), {
    device: where.device,
    graphFolder: where.graphFolder,
    graphName: "eval",
    describe: (n) => g.describe(n),
  });
}

/** Loss and metrics of the current policy on the held-out prompts, computed by the TypeScript references. */
export async function evaluatePolicy(
  cfg: TrainConfig,
  p: RunInputs,
  scorer: ModelSession,
  session: TrainingSession,
  reference: Float32Array[] | undefined,
): Promise<Record<string, number>> {
  const extra: Record<string, HostTensor> = {};
  for (const s of session.io.state) {
    if (s.name.startsWith("train.")) continue; // step counter, optimizer moments, loss scale
    extra[s.name] = { dtype: "float32", dims: s.shape, data: session.state.get(s.name)! };
  }
  const scores = await scoreExamples(scorer, p.eval, { padId: p.padId, batchSize: cfg.batchSize, extra });
  if (cfg.loss === "sft") {
    const lp = scores.logps.reduce((a, x) => a + x[0], 0), n = scores.counts.reduce((a, x) => a + x[0], 0);
    return { loss: -lp / n, "logps/chosen": lp / p.eval.length };
  }
  const x = {
    policy: scores.logps.map((r) => [...r]),
    reference: reference!.map((r) => [...r]),
    rewards: p.ranked ? p.eval.map((e) => e.rewards!) : undefined,
  };
  const o = { beta: cfg.beta, alpha: cfg.alpha };
  return { loss: lossByName[cfg.loss](x, o).loss, ...batchMetrics(x, o) };
}

/** Metric names under `eval/`. */
export function prefixed(m: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [`eval/${k}`, v]));
}

/** The last evaluation in a metrics log, without the `eval/` prefix. */
export function finalEvalOf(records: MetricsRecord[]): Record<string, number> | undefined {
  for (let i = records.length - 1; i >= 0; i--) {
    const e = Object.entries(records[i]).filter(([k, v]) => k.startsWith("eval/") && typeof v === "number");
    if (e.length) return Object.fromEntries(e.map(([k, v]) => [k.slice(5), v as number]));
  }
  return undefined;
}
