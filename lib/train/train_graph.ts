/**
 * The training graph of an alignment run, built from a model and a loss: policy log-probs → loss →
 * gradients → optimizer, as a Loop over the steps of a chunk (the scoring graph, per-sequence log-probs of
 * the policy or the reference, is lib/model/scoring_graph.ts').
 *
 * Precision `fp16` builds the decoder in float16 (mixed precision, see lib/model/decoder.ts) with dynamic
 * loss scaling ({@link FP16_LOSS_SCALING}); the scoring graphs of an fp16 run must be fp16 too, so that the
 * reference log-probs are the policy's at step 0. Log-probs, losses and optimizer state stay float32.
 * @module
 */
import type { GraphBuilder } from "../graph/builder.ts";
import * as op from "../graph/ops.ts";
import type { SegmentMode } from "../graph/autodiff.ts";
import type { BatchInput, LossScaling } from "../graph/training.ts";
import { buildTrainingGraph, type TrainingIO, type TrainingSpec } from "../graph/training.ts";
import type { OptimizerConfig } from "../graph/optim.ts";
import type { ModelConfig } from "../model/config.ts";
import { policyLogProbs, type Trainable } from "../model/decoder.ts";
import type { WeightSource } from "../model/weights.ts";
import { computeDtype, type Precision } from "../model/scoring_graph.ts";
import { BATCH_INPUTS } from "./chunks.ts";
import { graphLoss, type TrainLossName } from "./graph_losses.ts";

/**
 * Loss scaling of fp16 runs, PyTorch's GradScaler defaults: start at 2^16, halve on a non-finite gradient
 * (the step is skipped), double after 2000 good steps in a row.
 */
export const FP16_LOSS_SCALING = { init: 65536, growthInterval: 2000, growthFactor: 2 } as const;

/**
 * Operators without a float16 kernel on ONNX Runtime's CPU provider that every fp16 alignment graph runs in
 * fp16 (residual adds, products, and the backward pass's sums; both families, LoRA and full): what the
 * trainer names when fp16 is asked for on the CPU (see lib/runtime/precision.ts). Checked by the tests.
 */
export const FP16_CPU_GAPS: readonly string[] = ["Add", "Mul", "Sub", "Sum"];

/** What an alignment training graph is made of. */
export type AlignmentGraphSpec = {
  cfg: ModelConfig;
  frozen: WeightSource;
  trainable: Trainable;
  loss: TrainLossName;
  beta: number;
  /** Responses per prompt (1 for SFT). */
  k: number;
  /** Responses come ranked by rewards: log rewards/A0.. and logps/A0... */
  ranked: boolean;
  optimizer: OptimizerConfig;
  maxGradNorm?: number;
  accumulation?: number;
  /** Compute precision. Default fp32. */
  precision?: Precision;
  /** Loss scaling; default {@link FP16_LOSS_SCALING} in fp16, none in fp32. */
  lossScaling?: LossScaling;
  /** How each layer's backward pass is built (`recompute`: activation checkpointing). Default inline. */
  segments?: SegmentMode;
  /** Rows per block of the LM head and log-softmax (0 or absent: all at once). */
  chunk?: number;
  /**
   * Give the graph a scoring mode (see lib/graph/training.ts): the policy's `logps`, `counts` and
   * `token_logps` of a batch (`input_ids`, `attention_mask`, `labels`), as lib/model/scoring_graph.ts' `buildScoringGraph`
   * computes them, from the session's own weights and current parameters. Default false.
   */
  scoring?: boolean;
};

/**
 * Whether a training graph takes a per-step `dropout_key` (LoRA with dropout): its masks are then keyed by
 * the step, so resumed runs are exact.
 */
export function usesDropoutKey(t: Trainable): boolean {
  return t.mode === "lora" && (t.lora?.dropout ?? 0) > 0;
}

/** Builds the chunked training graph of an alignment run. */
export function buildAlignmentGraph(s: AlignmentGraphSpec): { graph: GraphBuilder; io: TrainingIO } {
  return buildTrainingGraph(alignmentTrainingSpec(s));
}

/**
 * The training spec of an alignment run (what {@link buildAlignmentGraph} builds; lib/graph/distributed.ts
 * builds the data-parallel graphs from it). `rowOffset`: keyed LoRA dropout also takes a per-micro-batch
 * `dropout_row_offset`, the rows of the global micro-batch before this rank's share.
 */
export function alignmentTrainingSpec(s: AlignmentGraphSpec & { rowOffset?: boolean }): TrainingSpec {
  const batch: BatchInput[] = [
    { name: BATCH_INPUTS.inputIds, dtype: "int32", shape: ["rows", "width"] },
    { name: BATCH_INPUTS.attentionMask, dtype: "int32", shape: ["rows", "width"] },
    { name: BATCH_INPUTS.labels, dtype: "int32", shape: ["rows", "width"] },
    s.loss === "sft"
      ? { name: BATCH_INPUTS.tokens, dtype: "float32", shape: ["prompts", s.k] }
      : { name: BATCH_INPUTS.reference, dtype: "float32", shape: ["prompts", s.k] },
  ];
  if (s.loss === "infonca" || s.loss === "nca") {
    batch.push({ name: BATCH_INPUTS.softLabels, dtype: "float32", shape: ["prompts", s.k] });
  }
  const keyed = usesDropoutKey(s.trainable);
  if (keyed) batch.push({ name: BATCH_INPUTS.dropoutKey, dtype: "float32", shape: [] });
  const offset = keyed && s.rowOffset;
  if (offset) batch.push({ name: BATCH_INPUTS.dropoutRowOffset, dtype: "float32", shape: [] });
  const dtype = computeDtype(s.precision);
  return {
    name: `align-${s.loss}`,
    scoring: s.scoring
      ? {
        inputs: [BATCH_INPUTS.inputIds, BATCH_INPUTS.attentionMask, BATCH_INPUTS.labels].map((name) => ({
          name,
          dtype: "int32" as const,
          shape: ["rows", "width"],
        })),
        forward: (g, params, b) => {
          const lp = policyLogProbs(g, s.cfg, s.trainable, params, s.frozen, {
            inputIds: b[BATCH_INPUTS.inputIds],
            attentionMask: b[BATCH_INPUTS.attentionMask],
            labels: b[BATCH_INPUTS.labels],
          }, { train: false, dtype, chunk: s.chunk });
          return { logps: lp.sums, counts: lp.counts, token_logps: lp.tokenLogps };
        },
      }
      : undefined,
    params: s.trainable.params,
    batch,
    optimizer: s.optimizer,
    maxGradNorm: s.maxGradNorm,
    accumulation: s.accumulation,
    lossScaling: s.lossScaling ?? (s.precision === "fp16" ? FP16_LOSS_SCALING : undefined),
    segments: s.segments,
    forward: (g, params, b) => {
      const lp = policyLogProbs(g, s.cfg, s.trainable, params, s.frozen, {
        inputIds: b[BATCH_INPUTS.inputIds],
        attentionMask: b[BATCH_INPUTS.attentionMask],
        labels: b[BATCH_INPUTS.labels],
      }, {
        dtype,
        dropoutKey: keyed ? b[BATCH_INPUTS.dropoutKey] : undefined,
        dropoutRowOffset: offset ? b[BATCH_INPUTS.dropoutRowOffset] : undefined,
        chunk: s.chunk,
        recomputeDropout: (s.segments ?? "inline") !== "inline",
      });
      const policy = op.reshape(lp.sums, [-1, s.k]);
      const out = graphLoss(s.loss, {
        policy,
        reference: b[BATCH_INPUTS.reference],
        labels: b[BATCH_INPUTS.softLabels],
        tokens: b[BATCH_INPUTS.tokens],
      }, { beta: s.beta, k: s.k, ranked: s.ranked });
      return out;
    },
  };
}
