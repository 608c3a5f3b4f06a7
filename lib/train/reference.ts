/**
 * The reference model's log-probs of every response: computed once before training and cached in the run
 * folder, keyed by a fingerprint of the tokenized data, the reference model and the precision, so a resumed
 * run reuses them. By default the reference is the training session's scoring mode on its initial
 * parameters (LoRA: B = 0, so exactly the base model with the adapters off; full fine-tuning: the model's
 * own weights); with `--reference` it is another model folder sharing the tokenizer (iterative rounds:
 * the policy starts from the last round's, the reference stays the SFT model), scored by a session of its
 * own that is released before training starts.
 * @module
 */
import { join, resolve } from "node:path";
import { loadModelFolder, type ModelFolder } from "../model/model_folder.ts";
import { storedWeights } from "../model/stored_weights.ts";
import type { GraphFolder } from "../runtime/graph_folder.ts";
import { type Device, ModelSession } from "../runtime/session.ts";
import type { TrainConfig } from "./option_specs.ts";
import { type RunPaths, writeJsonAtomic } from "./run_folder.ts";
import type { RunInputs } from "./run_inputs.ts";
import { fingerprintExamples, scoreExamples, type Scorer } from "./scoring.ts";
import { buildScoringGraph, type Precision } from "./train_graph.ts";

/** A tokenizer.json's vocabulary: what two tokenizers must share for token ids to mean the same text. */
async function tokenizerVocab(dir: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, "tokenizer.json"));
  } catch {
    return undefined;
  }
  const t = JSON.parse(text);
  const added = (t.added_tokens ?? []).map((a: { id: number; content: string }) => [a.id, a.content]);
  return JSON.stringify([t.model?.vocab ?? null, added]);
}

/**
 * Loads a `--reference` model folder and checks that it scores the policy's token ids: the same vocabulary
 * size and, where both folders have a tokenizer.json, the same vocabulary. Another architecture is allowed
 * (said in the log): log-probs of the same tokens compare whatever computes them.
 */
export async function loadReferenceModel(
  dir: string,
  policy: ModelFolder,
  log: (l: string) => void,
): Promise<ModelFolder> {
  const ref = await loadModelFolder(dir);
  const a = ref.config.vocabSize, b = policy.config.vocabSize;
  if (a !== b) {
    throw new Error(
      `--reference ${dir}: its vocabulary has ${a} tokens, the model's (${policy.dir}) ${b}: the reference ` +
        `must use the policy's tokenizer, as it scores the same token ids`,
    );
  }
  const [refVocab, polVocab] = [await tokenizerVocab(dir), await tokenizerVocab(policy.dir)];
  if (refVocab !== undefined && polVocab !== undefined && refVocab !== polVocab) {
    throw new Error(
      `--reference ${dir}: its tokenizer.json has another vocabulary than the model's (${policy.dir}), ` +
        `though both have ${a} tokens: the reference must use the policy's tokenizer`,
    );
  }
  if (ref.config.modelType !== policy.config.modelType) {
    log(
      `reference ${dir} is a ${ref.config.modelType} model, the policy a ${policy.config.modelType}: ` +
        `they share the vocabulary, so the reference scores the same tokens`,
    );
  }
  return ref;
}

/** A scoring session of a `--reference` model (release it once the reference log-probs are cached). */
export async function referenceModelScorer(
  ref: ModelFolder,
  o: { device: Device; graphs?: GraphFolder; precision?: Precision; chunk?: number },
): Promise<ModelSession> {
  const graph = buildScoringGraph(ref.config, storedWeights(ref.stored), undefined, {
    precision: o.precision,
    chunk: o.chunk,
  }).build();
  return await ModelSession.create(graph, {
    device: o.device,
    graphFolder: o.graphs,
    graphName: "reference",
  });
}

/** A scorer, or how to open one (only when the cache does not hold the log-probs already). */
export type ReferenceSource = Scorer | (() => Promise<Scorer & { release(): Promise<unknown> }>);

/**
 * The reference log-probs of the training and held-out examples, from the cache when it matches, else
 * from `reference`: a training session's scoring mode before any step, or (`--reference`) an opener of the
 * reference model's session, released after scoring.
 */
export async function referenceScores(
  cfg: TrainConfig,
  run: RunPaths,
  p: RunInputs,
  reference: ReferenceSource,
  log: (l: string) => void,
): Promise<{ train: Float32Array[]; eval: Float32Array[] }> {
  const cachePath = join(run.dir, "reference_logps.json");
  const separate = cfg.reference !== undefined && cfg.loss !== "sft";
  const fingerprint = fingerprintExamples(
    [...p.train, ...p.eval],
    `${resolve(cfg.model)}|${p.model.config.modelType}${cfg.precision === "fp16" ? "|fp16" : ""}` +
      (separate ? `|reference=${resolve(cfg.reference!)}` : ""),
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
  const opened = typeof reference === "function" ? await reference() : undefined;
  const scorer = opened ?? (reference as Scorer);
  let train: Float32Array[], evalScores: Float32Array[];
  try {
    train = (await scoreExamples(scorer, p.train, opts)).logps;
    evalScores = (await scoreExamples(scorer, p.eval, opts)).logps;
  } finally {
    await opened?.release();
  }
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
    model: resolve(separate ? cfg.reference! : cfg.model),
    modelType: separate ? undefined : p.model.config.modelType,
    reference: separate
      ? "a separate model folder (--reference)"
      : cfg.full
      ? "the initial weights (full fine-tuning)"
      : "the base weights with the LoRA adapters off",
    fingerprint,
  });
  return { train, eval: evalScores };
}
