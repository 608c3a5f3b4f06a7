/**
 * Evaluation on the held-out prompts: the current policy's log-probs (the training session's scoring
 * mode, on its current parameters), and the loss and metrics from the TypeScript reference losses
 * (lib/losses), so the numbers are exact whatever the training graph computes.
 * @module
 */
import { batchMetrics, lossByName } from "../losses/mod.ts";
import type { MetricsRecord } from "./metrics_log.ts";
import type { TrainConfig } from "./option_specs.ts";
import type { RunInputs } from "./run_inputs.ts";
import { scoreExamples, type Scorer } from "./scoring.ts";

/** Loss and metrics of the current policy on the held-out prompts, computed by the TypeScript references. */
export async function evaluatePolicy(
  cfg: TrainConfig,
  p: RunInputs,
  policy: Scorer,
  reference: Float32Array[] | undefined,
): Promise<Record<string, number>> {
  const scores = await scoreExamples(policy, p.eval, { padId: p.padId, batchSize: cfg.batchSize });
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
