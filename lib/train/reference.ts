/**
 * The reference model's log-probs of every response: computed once before training and cached in the run
 * folder, keyed by a fingerprint of the tokenized data, the reference model and the precision, so a resumed
 * run reuses them. By default the reference is the training session's scoring mode on its initial
 * parameters (LoRA: B = 0, so exactly the base model with the adapters off; full fine-tuning: the model's
 * own weights); with `--reference` it is another model folder sharing the tokenizer (iterative rounds:
 * the policy starts from the last round's, the reference stays the SFT model), scored by a session of its
 * own (lib/model/open.ts' `openScorer`) that is closed before training starts.
 * @module
 */
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import { loadModelFolder, type ModelFolder } from "../model/model_folder.ts";
import type { TrainConfig } from "./option_specs.ts";
import { type RunPaths, writeJsonAtomic } from "./run_folder.ts";
import type { RunInputs } from "./run_inputs.ts";
import { fingerprintExamples, scoreExamples, type Scorer } from "./scoring.ts";

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

/** A scorer, or how to open one (only when the cache does not hold the log-probs already; closed after). */
export type ReferenceSource = Scorer | (() => Promise<Scorer & AsyncDisposable>);

/**
 * The reference log-probs of the training and held-out examples, from the cache when it matches, else
 * from `reference`: a training session's scoring mode before any step, or (`--reference`) an opener of the
 * reference model's session, released after scoring. `identity` is the digest of the reference model's
 * files, so a cache of other weights at the same path is not used.
 */
export async function referenceScores(
  cfg: TrainConfig,
  run: RunPaths,
  p: RunInputs,
  reference: ReferenceSource,
  log: (l: string) => void,
  identity = "",
): Promise<{ train: Float32Array[]; eval: Float32Array[] }> {
  const cachePath = join(run.dir, "reference_logps.json");
  const separate = cfg.reference !== undefined && cfg.loss !== "sft";
  const fingerprint = fingerprintExamples(
    [...p.train, ...p.eval],
    `${resolve(cfg.model)}|${p.model.config.modelType}${cfg.precision === "fp16" ? "|fp16" : ""}` +
      (separate ? `|reference=${resolve(cfg.reference!)}` : "") + (identity ? `|${identity}` : ""),
  );
  const cached = await readReferenceCache(cachePath, fingerprint, p, log);
  if (cached) {
    log(`reference log-probs: cached in ${cachePath}`);
    return cached;
  }
  const t0 = performance.now();
  const opts = { padId: p.padId, batchSize: Math.max(1, cfg.batchSize) };
  let train: Float32Array[], evalScores: Float32Array[];
  {
    await using opened = typeof reference === "function" ? await reference() : undefined;
    const scorer = opened ?? (reference as Scorer);
    train = (await scoreExamples(scorer, p.train, opts)).logps;
    evalScores = (await scoreExamples(scorer, p.eval, opts)).logps;
  }
  const n = p.train.length + p.eval.length;
  log(
    `reference log-probs: ${n} prompt${n === 1 ? "" : "s"} in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
  await writeJsonAtomic(cachePath, {
    fingerprint,
    sha256: checksum([...train, ...evalScores]),
    shape: { train: train.map((x) => x.length), eval: evalScores.map((x) => x.length) },
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

/** SHA-256 of log-prob rows as float32 (what the run uses), in order. */
function checksum(rows: readonly Float32Array[]): string {
  const h = createHash("sha256");
  for (const r of rows) {
    h.update(new Uint8Array(Uint32Array.of(r.length).buffer));
    h.update(new Uint8Array(r.buffer, r.byteOffset, r.byteLength));
  }
  return h.digest("hex");
}

/**
 * The cached log-probs when the cache is of these examples and model (its fingerprint) and whole: one row
 * per example with one finite value per response, and the checksum it was written with. A cache that fails
 * a check is said to, and undefined returned (it is then scored again and rewritten).
 */
async function readReferenceCache(
  path: string,
  fingerprint: string,
  p: RunInputs,
  log: (l: string) => void,
): Promise<{ train: Float32Array[]; eval: Float32Array[] } | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    log(`reference log-probs: ${path} cannot be read (${(e as Error).message}): scoring again`);
    return undefined;
  }
  const redo = (why: string) => {
    log(`reference log-probs: ${path} ${why}: scoring again`);
    return undefined;
  };
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(text);
  } catch (e) {
    return redo(`is not valid JSON (${(e as Error).message})`);
  }
  if (typeof c !== "object" || c === null) return redo("is not a JSON object");
  if (c.fingerprint !== fingerprint) return redo("is of other examples or another reference model");
  const rows = (key: "train" | "eval", want: RunInputs["train"]): Float32Array[] | string => {
    const v = c[key];
    if (!Array.isArray(v)) return `has no "${key}" rows`;
    if (v.length !== want.length) return `has ${v.length} "${key}" rows for ${want.length} prompts`;
    const out: Float32Array[] = [];
    for (const [i, row] of v.entries()) {
      const k = want[i].responseIds.length;
      if (!Array.isArray(row) || row.length !== k) {
        return `"${key}"[${i}] is not ${k} values (one per response)`;
      }
      if (!row.every((x) => typeof x === "number" && Number.isFinite(x))) {
        return `"${key}"[${i}] holds a value that is not a finite number (${JSON.stringify(row)})`;
      }
      out.push(Float32Array.from(row));
    }
    return out;
  };
  const train = rows("train", p.train), held = rows("eval", p.eval);
  if (typeof train === "string") return redo(train);
  if (typeof held === "string") return redo(held);
  if (typeof c.sha256 !== "string") return redo("has no checksum (written by an older version)");
  if (checksum([...train, ...held]) !== c.sha256) return redo("does not match its checksum (values edited)");
  return { train, eval: held };
}
