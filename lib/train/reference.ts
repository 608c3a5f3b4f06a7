/**
 * The reference model's log-probs of every response: computed once before training, by the training
 * session's scoring mode on its initial parameters (LoRA: B = 0, so exactly the base model with the
 * adapters off; full fine-tuning: the model's own weights), and cached in the run folder, keyed by a
 * fingerprint of the tokenized data, the model and the precision, so a resumed run reuses them.
 * @module
 */
import { join, resolve } from "node:path";
import type { TrainConfig } from "./option_specs.ts";
import { type RunPaths, writeJsonAtomic } from "./run_folder.ts";
import type { RunInputs } from "./run_inputs.ts";
import { fingerprintExamples, scoreExamples, type Scorer } from "./scoring.ts";

/**
 * The reference log-probs of the training and held-out examples, from the cache when it matches, else
 * from `reference` (a scorer of the reference model: a training session's scoring mode before any step).
 */
export async function referenceScores(
  cfg: TrainConfig,
  run: RunPaths,
  p: RunInputs,
  reference: Scorer,
  log: (l: string) => void,
): Promise<{ train: Float32Array[]; eval: Float32Array[] }> {
  const cachePath = join(run.dir, "reference_logps.json");
  const fingerprint = fingerprintExamples(
    [...p.train, ...p.eval],
    `${resolve(cfg.model)}|${p.model.config.modelType}${cfg.precision === "fp16" ? "|fp16" : ""}`,
  );
  try {
    const cached = JSON.parse(await Deno.readTextFile(cachePath));
    if (cached.fingerprint === fingerprint) {
      log(`reference log-probs: cached in ${cachePath}`);
      const rows = (xs: number[][]) => xs.map((x) => Float32Array.from(x));
      return { train: rows(cached.train), eval: rows(cached.eval) };
    }
  } catch { /* no cache yet */ }
  const t0 = performance.now();
  const opts = { padId: p.padId, batchSize: Math.max(1, cfg.batchSize) };
  const train = (await scoreExamples(reference, p.train, opts)).logps;
  const evalScores = (await scoreExamples(reference, p.eval, opts)).logps;
  const n = p.train.length + p.eval.length;
  log(
    `reference log-probs: ${n} prompt${n === 1 ? "" : "s"} in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
  await writeJsonAtomic(cachePath, {
    fingerprint,
    train: train.map((x) => [...x]),
    eval: evalScores.map((x) => [...x]),
  });
  await writeJsonAtomic(run.reference, {
    model: resolve(cfg.model),
    modelType: p.model.config.modelType,
    reference: cfg.full
      ? "the initial weights (full fine-tuning)"
      : "the base weights with the LoRA adapters off",
    fingerprint,
  });
  return { train, eval: evalScores };
}
