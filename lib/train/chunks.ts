/**
 * Training steps and chunks: which examples each optimizer step sees (length-grouped, seeded, epoch by
 * epoch), and the stacked tensors of a chunk (several consecutive steps that one session run executes).
 * Steps in a chunk share one width (the chunk's longest sequence), so they stack along a leading axis.
 * @module
 */
import { makeBatch } from "../data/batch.ts";
import { batchIndices } from "../data/sampler.ts";
import { sequenceLengths } from "../data/tokenize.ts";
import type { HostTensor } from "../runtime/tensor.ts";
import { SCORING_INPUTS } from "../model/scoring_graph.ts";
import type { TrainLossName } from "./graph_losses.ts";
import type { PreparedExample } from "./prepare.ts";

/** One optimizer step: its epoch and the examples (prompts) it trains on. */
export type PlannedStep = { epoch: number; indices: number[] };

/** The steps of a run: `epochs` passes over the data in seeded, length-grouped batches, cut at `maxSteps`. */
export function planSteps(
  examples: PreparedExample[],
  o: { batchSize: number; epochs: number; seed: number; maxSteps?: number },
): PlannedStep[] {
  const lengths = sequenceLengths(examples);
  const steps: PlannedStep[] = [];
  for (let epoch = 0; steps.length < (o.maxSteps ?? Infinity); epoch++) {
    if (o.maxSteps === undefined && epoch >= o.epochs) break;
    const batches = batchIndices(lengths, o.batchSize, {
      seed: o.seed + epoch,
      shuffle: true,
      groupByLength: true,
    });
    if (batches.length === 0) break;
    for (const indices of batches) steps.push({ epoch, indices });
  }
  return o.maxSteps === undefined ? steps : steps.slice(0, o.maxSteps);
}

/**
 * Optimizer steps per session run when `--steps-per-run` is not given. The trainable state crosses the JS
 * boundary once per run (onnxruntime-node keeps no CUDA tensors between runs): for full fine-tuning on CUDA
 * that is the parameters and both AdamW moments, 1.5 GB for GPT-2 124M and 1.5 s per run on an H200, so
 * 64 steps share it (8 steps: 211 ms per step, 64: 73 ms). LoRA's state is a few MB: 8 steps keep the
 * progress line and the padding of a chunk (its rows share one width) fine-grained. Full fine-tuning of
 * a model of 20M parameters or more on the CPU takes one step per run: a Loop of several steps holds one
 * more copy of the state (SmolLM-135M: 1.5 GiB more at the peak), and passing the state in and out costs
 * a copy, under 2% of such a step.
 */
export function defaultStepsPerRun(
  device: "cpu" | "cuda",
  mode: "lora" | "full",
  trainableParams = 0,
): number {
  if (mode === "full") return device === "cuda" ? 64 : trainableParams >= 2e7 ? 1 : 8;
  return 8;
}

/**
 * The fractional epoch after each of `steps` (HF's convention: 1.0 at the end of the first pass): the step's
 * epoch plus the steps done in it over the steps of the whole epoch in `whole`, the plan before `--max-steps`
 * cut it (same seed and batch size). So a run that `--max-steps` stops at 63% of its first epoch ends at 0.63,
 * not at 1.00.
 */
export function fractionalEpochs(steps: PlannedStep[], whole: PlannedStep[]): number[] {
  const perEpoch = new Map<number, number>();
  for (const st of whole) perEpoch.set(st.epoch, (perEpoch.get(st.epoch) ?? 0) + 1);
  const seen = new Map<number, number>();
  return steps.map((st) => {
    const n = (seen.get(st.epoch) ?? 0) + 1;
    seen.set(st.epoch, n);
    const of = perEpoch.get(st.epoch);
    if (of === undefined || n > of) {
      throw new RangeError(`step ${n} of epoch ${st.epoch} is not in the whole plan (${of ?? 0} steps)`);
    }
    return st.epoch + n / of;
  });
}

/**
 * Consecutive steps grouped into chunks of at most `stepsPerRun` with the same number of prompts. A chunk
 * also ends after each step whose number (1-based) is a multiple of one of `endAt` (`--eval-every`,
 * `--save-every`): the trainer evaluates and saves between session runs only, so that is where they happen.
 */
export function groupChunks(
  steps: PlannedStep[],
  stepsPerRun: number,
  from = 0,
  endAt: readonly (number | undefined)[] = [],
): { from: number; to: number }[] {
  const every = endAt.filter((n): n is number => n !== undefined && n > 0);
  const out: { from: number; to: number }[] = [];
  let start = from;
  for (let i = from + 1; i <= steps.length; i++) {
    if (
      i === steps.length || i - start >= stepsPerRun || every.some((n) => i % n === 0) ||
      steps[i].indices.length !== steps[start].indices.length
    ) {
      out.push({ from: start, to: i });
      start = i;
    }
  }
  return out;
}

/** What a training graph's batch inputs are called. */
export const BATCH_INPUTS = {
  ...SCORING_INPUTS,
  reference: "ref_logps",
  softLabels: "soft_labels",
  tokens: "token_counts",
  dropoutKey: "dropout_key",
  /** Data parallelism: rows of the global micro-batch before a rank's share (keyed dropout's row ids). */
  dropoutRowOffset: "dropout_row_offset",
} as const;

/** The dropout key of step `step` (0-based) and micro-batch `micro` of a run seeded `seed`: in [0, 1e5). */
export function dropoutKey(seed: number, step: number, micro: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (const v of [step, micro]) {
    h = Math.imul(h ^ (v & 0xffff), 0x01000193);
    h = Math.imul(h ^ (v >>> 16), 0x01000193);
  }
  return ((h >>> 0) % 100_000) + 0.5;
}

/** Options for {@link assembleChunk}. */
export type ChunkOptions = {
  loss: TrainLossName;
  k: number;
  padId: number;
  accumulation: number;
  padToMultipleOf?: number;
  /** Pad to at least this width (data parallelism: the global batch's, see lib/train/distributed.ts). */
  minWidth?: number;
  /** Feed LoRA dropout keys: the run's seed and the global index of the chunk's first step. */
  dropout?: { seed: number; fromStep: number };
};

/** A chunk's feeds, and its real token count per step (for tokens/s). */
export type ChunkTensors = {
  feeds: Record<string, HostTensor>;
  tokens: number[];
  prompts: number;
  width: number;
};

/**
 * Stacks the batches of `steps` into `[steps, (accumulation,) rows, width]` tensors, with the reference
 * log-probs `[.., prompts, K]` (cached per example), the soft labels for reward losses and the response
 * token counts for SFT.
 */
export function assembleChunk(
  examples: PreparedExample[],
  steps: PlannedStep[],
  reference: Float32Array[] | undefined,
  o: ChunkOptions,
): ChunkTensors {
  const prompts = steps[0].indices.length;
  if (steps.some((s) => s.indices.length !== prompts)) {
    throw new RangeError("steps of a chunk must have equal sizes");
  }
  if (prompts % o.accumulation !== 0) {
    throw new RangeError(
      `the batch size (${prompts} prompts) must be a multiple of --grad-accum (${o.accumulation})`,
    );
  }
  // a rank's share of a global batch pads to the whole batch's width (o.minWidth), as one process would
  let width = o.minWidth ?? 0;
  for (const s of steps) {
    for (const i of s.indices) {
      const ex = examples[i];
      for (const r of ex.responseIds) width = Math.max(width, ex.promptIds.length + r.length);
    }
  }
  const mult = o.padToMultipleOf ?? 8;
  width = Math.ceil(width / mult) * mult;
  const S = steps.length, K = o.k, rows = prompts * K, A = o.accumulation;
  const ids = new Int32Array(S * rows * width), mask = new Int32Array(S * rows * width);
  const labels = new Int32Array(S * rows * width);
  const ref = new Float32Array(S * prompts * K), soft = new Float32Array(S * prompts * K);
  const counts = new Float32Array(S * prompts * K);
  const tokens: number[] = [];
  steps.forEach((s, si) => {
    const exs = s.indices.map((i) => examples[i]);
    for (const ex of exs) {
      if (ex.responseIds.length !== K) {
        throw new RangeError(`an example has ${ex.responseIds.length} responses, the run trains on K = ${K}`);
      }
    }
    const b = makeBatch(exs, { padId: o.padId, minWidth: width, padToMultipleOf: mult });
    ids.set(b.inputIds, si * rows * width);
    mask.set(b.attentionMask, si * rows * width);
    labels.set(b.labels, si * rows * width);
    tokens.push(b.tokens);
    s.indices.forEach((i, p) => {
      const at = (si * prompts + p) * K;
      for (let k = 0; k < K; k++) {
        if (reference) ref[at + k] = reference[i][k];
        if (examples[i].labels) soft[at + k] = examples[i].labels![k];
        counts[at + k] = examples[i].responseIds[k].length;
      }
    });
  });
  const lead = A > 1 ? [S, A] : [S];
  const per = rows / A, perP = prompts / A;
  const feeds: Record<string, HostTensor> = {
    [BATCH_INPUTS.inputIds]: { dtype: "int32", dims: [...lead, per, width], data: ids },
    [BATCH_INPUTS.attentionMask]: { dtype: "int32", dims: [...lead, per, width], data: mask },
    [BATCH_INPUTS.labels]: { dtype: "int32", dims: [...lead, per, width], data: labels },
  };
  if (o.loss === "sft") {
    feeds[BATCH_INPUTS.tokens] = { dtype: "float32", dims: [...lead, perP, K], data: counts };
  } else feeds[BATCH_INPUTS.reference] = { dtype: "float32", dims: [...lead, perP, K], data: ref };
  if (o.loss === "infonca" || o.loss === "nca") {
    feeds[BATCH_INPUTS.softLabels] = { dtype: "float32", dims: [...lead, perP, K], data: soft };
  }
  if (o.dropout) {
    const keys = new Float32Array(S * A);
    for (let i = 0; i < S; i++) {
      for (let a = 0; a < A; a++) keys[i * A + a] = dropoutKey(o.dropout.seed, o.dropout.fromStep + i, a);
    }
    feeds[BATCH_INPUTS.dropoutKey] = { dtype: "float32", dims: lead, data: keys };
  }
  return { feeds, tokens, prompts, width };
}
