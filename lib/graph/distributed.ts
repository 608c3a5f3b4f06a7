/**
 * The graphs of a data-parallel step (lib/train/distributed.ts): collectives run between session runs
 * (stock ONNX Runtime builds have no collective operators), so the chunk graph's one Loop body is cut in two
 * where the gradient must be reduced across ranks.
 *
 * - The gradient graph: one optimizer step's forward and backward, with the in-graph accumulation of
 *   micro-batches, from the packed parameters `train.params`, flat (the chunk graph's `[rows, C]` layout,
 *   {@link rowLayout}, read in order); it gives the packed gradient `grad.packed` (`[rows, C]`, or flat and
 *   padded for a number of ranks), unclipped, the loss and the metrics. Each micro-batch's float32 loss and gradient are multiplied by the rank's share of it
 *   (`train.share`, one float32 per micro-batch: the rank's part of the global micro-batch's denominator —
 *   its prompts, or its response tokens for SFT — over the whole), so that the ranks' gradients summed are
 *   the global batch's mean gradient however unevenly a batch splits. With a scoring mode, as the chunk
 *   graph has (`train.mode` false: scoring outputs). With loss
 *   scaling (fp16) it takes the scale `train.loss_scale` (float32 scalar), seeds the backward pass with it
 *   and gives the gradient divided by it again, as the chunk graph's step does; the skip on overflow and the
 *   scale's update are the session's (every rank decides alike from the all-reduced norm).
 * - The optimizer graph: AdamW on a contiguous flat slice of the packed state (parameters, gradient, both
 *   moments), with the step count, the learning rate, the clipping factor (from the global norm, which only
 *   the ranks together know) and where weight decay ends in the slice. It is the chunk graph's update, the
 *   same operations in the same order (optim.ts' {@link adamwUpdate}), so that a world of one through these
 *   two graphs ends where the Loop does.
 * @module
 */
import { GraphBuilder, type Value } from "./builder.ts";
import { gradients } from "./autodiff.ts";
import * as op from "./ops.ts";
import { type AdamWOptions, adamwSchedule, adamwUpdate, type OptimizerConfig } from "./optim.ts";
import {
  accumulate,
  type BatchInput,
  FLAT_PARAMS,
  ifElse,
  rowLayout,
  splitRows,
  toRows,
  type TrainingIO,
  type TrainingSpec,
} from "./training.ts";

/** The gradient graph's output: the packed gradient, weighted by the rank's shares. */
export const GRADIENT_OUTPUT = "grad.packed";

/**
 * The gradient graph's input of the rank's share of each micro-batch (float32, `[]` per step, `[accumulation]`
 * when accumulating): what the rank's loss and gradient are weighted by.
 */
export const SHARE_INPUT = "train.share";

/** Names of a built gradient graph's interface. */
export type GradientIO = {
  /**
   * The packed parameters' input, flat (`[n]`): parameter `name` is the `length` elements from `offset`, as in
   * {@link TrainingIO.packed}'s rows read in order.
   */
  packed: { name: string; shape: [number]; members: TrainingIO["packed"]["members"] };
  /** Every parameter, as the spec lists them. */
  params: { name: string; shape: number[] }[];
  /** Batch inputs of one step (`[accumulation, ...]` when accumulating). */
  batch: BatchInput[];
  gradient: string;
  /** Elements of the gradient output: the packed length, or more with zeros after it (built for `ranks`). */
  gradientLength: number;
  loss: string;
  metrics: string[];
  accumulation: number;
  /** Elements of the packed vector that get weight decay: the first ones (decayed parameters come first). */
  decayElements: number;
  /** As {@link TrainingIO.scoring}. */
  scoring?: TrainingIO["scoring"];
  /**
   * With loss scaling: the float32 scalar input of the loss scale, and the spec's growth (PyTorch GradScaler's
   * defaults where the spec leaves them, as the chunk graph's step takes them).
   */
  lossScale?: string;
  lossScaling?: { growthInterval: number; growthFactor: number };
};

/** The gradient graph's loss-scale input (the chunk graph's state of that name, fed each step here). */
const LOSS_SCALE_INPUT = "train.loss_scale";

/**
 * Builds the gradient graph of `spec` (see the module's note). `ranks`: the gradient comes flat and padded
 * with zeros to `ranks` × ⌈n / ranks⌉ elements, so that a reduce-scatter over that many ranks reads and writes
 * it in place (ZeRO-1 on device memory); without it, `[rows, C]` as the parameters.
 */
export function buildGradientGraph(
  spec: TrainingSpec,
  o: { ranks?: number } = {},
): { graph: GraphBuilder; io: GradientIO } {
  const acc = spec.accumulation ?? 1;
  if (!Number.isInteger(acc) || acc < 1) {
    throw new RangeError(`accumulation must be a positive integer, got ${acc}`);
  }
  const layout = rowLayout(spec.params);
  const { total, width } = layout;
  const n = total * width, ranks = o.ranks ?? 1;
  if (!Number.isInteger(ranks) || ranks < 1) {
    throw new RangeError(`ranks must be a positive integer, got ${ranks}`);
  }
  const padded = Math.ceil(n / ranks) * ranks;
  const c = new GraphBuilder(`${spec.name}.grad`);
  // the parameters come flat (the optimizer's output as it is) and are laid out in rows here
  const flat = op.reshape(c.input(FLAT_PARAMS, "float32", [n]), [total, width]);
  const batchShapes = [...spec.batch, { name: SHARE_INPUT, dtype: "float32" as const, shape: [] }]
    .map((b) => ({ ...b, shape: acc > 1 ? [acc, ...b.shape] : b.shape }));
  const batch = batchShapes.map((b) => c.input(b.name, b.dtype, b.shape));
  const scaling = spec.lossScaling;
  const scaleIn = scaling ? c.input(LOSS_SCALE_INPUT, "float32", []) : undefined;

  // forward + backward (+ accumulation) in builder `s` over (captured) parameters, batch and loss scale;
  // the scale as the chunk graph's step (training.ts' buildStep) uses it: the seed, then divided out
  const compute = (s: GraphBuilder, pFlat: Value, bv: Value[], scale: Value | undefined) => {
    const params: Value[] = new Array(spec.params.length);
    splitRows(pFlat, layout, spec.params, (i, p) => (params[i] = p));
    const share = bv[spec.batch.length];
    let loss: Value, grads: Value[], metrics: Record<string, Value>;
    if (acc === 1) {
      const out = spec.forward(
        s,
        Object.fromEntries(spec.params.map((p, i) => [p.name, params[i]])),
        Object.fromEntries(spec.batch.map((b, i) => [b.name, bv[i]])),
      );
      metrics = out.metrics ?? {};
      grads = gradients(out.loss, params, {
        seed: scale ? op.cast(scale, out.loss.dtype) : undefined,
        segments: spec.segments,
      });
      loss = op.mul(op.cast(out.loss, "float32"), share);
      grads = grads.map((g) => op.mul(op.cast(g, "float32"), share));
    } else {
      ({ loss, grads, metrics } = accumulate(
        s,
        spec,
        acc,
        params,
        bv.slice(0, spec.batch.length),
        scale,
        share,
      ));
    }
    grads = grads.map((g) => op.cast(g, "float32"));
    if (scale) grads = grads.map((g) => op.div(g, scale));
    const names = Object.keys(metrics);
    const rows = toRows(grads, layout);
    const gradient = padded === n ? rows : op.concat([
      op.reshape(rows, [n]),
      op.constantOfShape(s.ints([padded - n]), 0, "float32", [padded - n]),
    ], 0);
    return {
      values: [
        gradient,
        op.cast(loss, "float32"),
        ...names.map((k) => op.cast(metrics[k], "float32")),
      ],
      metrics: names,
    };
  };
  const outNames = (metrics: string[]) => [GRADIENT_OUTPUT, "train.loss", ...metrics];
  let metricNames: string[];
  let scoringIO: GradientIO["scoring"];
  const scoring = spec.scoring;
  if (!scoring) {
    const r = compute(c, flat, batch, scaleIn);
    metricNames = r.metrics;
    r.values.forEach((v, i) => c.output(v, outNames(metricNames)[i]));
  } else {
    const mode = c.input("train.mode", "bool", []);
    const inputs = scoring.inputs.map((b) => c.input(`score.${b.name}`, b.dtype, b.shape));
    const trainBranch = new GraphBuilder(`${spec.name}.grad.train`, c);
    const r = compute(
      trainBranch,
      trainBranch.capture(flat),
      batch.map((b) => trainBranch.capture(b)),
      scaleIn && trainBranch.capture(scaleIn),
    );
    metricNames = r.metrics;
    const scoreBranch = new GraphBuilder(`${spec.name}.grad.score`, c);
    const params: Record<string, Value> = {};
    splitRows(scoreBranch.capture(flat), layout, spec.params, (k, v) => (params[spec.params[k].name] = v));
    const sb = Object.fromEntries(scoring.inputs.map((b, i) => [b.name, scoreBranch.capture(inputs[i])]));
    const scored = scoring.forward(scoreBranch, params, sb);
    const scoreNames = Object.keys(scored);
    const empty = (g: GraphBuilder, v: Value) =>
      op.constantOfShape(g.ints(v.shape.map(() => 0)), 0, v.dtype, v.shape.map(() => 0));
    const outs = ifElse(
      mode,
      trainBranch,
      [...r.values, ...scoreNames.map((n) => empty(trainBranch, scored[n]))],
      scoreBranch,
      [...r.values.map((v) => empty(scoreBranch, v)), ...scoreNames.map((n) => scored[n])],
    );
    const all = [...outNames(metricNames), ...scoreNames.map((n) => `score.${n}`)];
    outs.forEach((v, i) => c.output(v, all[i]));
    scoringIO = {
      mode: mode.name,
      inputs: scoring.inputs.map((b, i) => ({ ...b, graph: inputs[i].name })),
      outputs: Object.fromEntries(scoreNames.map((n) => [n, `score.${n}`])),
    };
  }
  let offset = 0;
  const members = layout.order.map((k, j) => {
    const m = { name: spec.params[k].name, offset, length: layout.rows[j] * width };
    offset += m.length;
    return m;
  });
  return {
    graph: c,
    io: {
      packed: { name: FLAT_PARAMS, shape: [n], members },
      params: spec.params.map((p) => ({ name: p.name, shape: p.shape })),
      batch: batchShapes,
      gradient: GRADIENT_OUTPUT,
      gradientLength: padded,
      loss: "train.loss",
      metrics: metricNames,
      accumulation: acc,
      decayElements: layout.nDecay * width,
      scoring: scoringIO,
      lossScale: scaleIn?.name,
      lossScaling: scaling
        ? { growthInterval: scaling.growthInterval ?? 2000, growthFactor: scaling.growthFactor ?? 2 }
        : undefined,
    },
  };
}

/** The optimizer graph's inputs and outputs (all flat float32 `[n]` but the scalars). */
export const SHARD_OPTIMIZER = {
  params: "opt.params",
  grad: "opt.grad",
  m: "opt.m",
  v: "opt.v",
  /** Optimizer steps done before this one (float32 scalar, as the chunk graph's `train.step`). */
  step: "opt.step",
  lr: "opt.lr",
  /** The clipping factor min(1, maxNorm / (‖g‖ + 1e-6)) of the global norm (graphs built with `clip`). */
  coef: "opt.coef",
  /** Elements of the slice, from its start, that get weight decay (int64 scalar). */
  decayUntil: "opt.decay_until",
  nextParams: "opt.params.next",
  nextM: "opt.m.next",
  nextV: "opt.v.next",
} as const;

/**
 * AdamW on a flat slice (see the module's note). `clip`: the gradient is scaled by `opt.coef` (the chunk graph
 * with `maxGradNorm`), folded into the moments' factors as there; without it the update is the unclipped one.
 */
export function buildShardOptimizerGraph(o: OptimizerConfig, clip: boolean): GraphBuilder {
  if (o.kind !== "adamw") {
    throw new RangeError(
      `the data-parallel step runs AdamW; the optimizer "${o.kind}" is not supported there`,
    );
  }
  const a: AdamWOptions = o;
  const s = new GraphBuilder("adamw.shard");
  const n = "n";
  const p = s.input(SHARD_OPTIMIZER.params, "float32", [n]);
  const g = s.input(SHARD_OPTIMIZER.grad, "float32", [n]);
  const m = s.input(SHARD_OPTIMIZER.m, "float32", [n]);
  const v = s.input(SHARD_OPTIMIZER.v, "float32", [n]);
  const stepIn = s.input(SHARD_OPTIMIZER.step, "float32", []);
  const lr = s.input(SHARD_OPTIMIZER.lr, "float32", []);
  const coef = clip ? s.input(SHARD_OPTIMIZER.coef, "float32", []) : undefined;
  const until = s.input(SHARD_OPTIMIZER.decayUntil, "int64", []);
  const step = op.add(stepIn, 1);
  // 1 for the elements with weight decay, 0 after them: the chunk graph's [rows, 1] column, per element
  const length = op.reshape(op.shapeOf(p, 0, 1), []);
  const index = op.range(s.scalar(0, "int64"), length, s.scalar(1, "int64"), n);
  const mask = op.cast(op.less(index, until), "float32");
  const decay = (a.weightDecay ?? 0) > 0 ? mask : false;
  const update = adamwUpdate(p, g, m, v, lr, adamwSchedule(lr, step, a), a, decay, {
    coef,
    square: op.mul(g, g),
  });
  s.output(update.param, SHARD_OPTIMIZER.nextParams);
  s.output(update.slots[0], SHARD_OPTIMIZER.nextM);
  s.output(update.slots[1], SHARD_OPTIMIZER.nextV);
  return s;
}
