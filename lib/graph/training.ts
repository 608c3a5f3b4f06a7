/**
 * Training graphs: forward, backward and optimizer update in one ONNX model, run as a `Loop` over several
 * optimizer steps per session run. Trainable parameters, optimizer moments, the step counter and the loss
 * scale are loop-carried, so they stay on the device for all the steps of a run and cross the JS boundary
 * once per run; per-step loss and metrics come back as scan outputs. Frozen weights are initializers.
 *
 * Input and output names of the chunk graph (what lib/runtime/training_session.ts feeds):
 * - `train.params`: every parameter packed into one `[rows, C]` matrix ({@link TrainingIO.packed} says
 *   where each lies), `train.<slot>` (m, v for AdamW, in the same layout), `train.step` (float, steps
 *   done), `train.loss_scale`, `train.good_steps`: the state, fed in and returned as `<name>.next`. Packed,
 *   the parameters cross the JS boundary without a concatenation or split on either side of a run.
 * - each batch input `<b>` stacked to `[steps, ...]` (`[steps, accumulation, ...]` when accumulating),
 *   and `train.lr` `[steps]`.
 * - scans `train.loss`, `train.grad_norm`, `train.skipped` and each metric `<m>`, all `[steps]`; with loss
 *   scaling also `train.loss_scale.used`, the scale each step ran with.
 * @module
 */
import { GraphBuilder, type Value } from "./builder.ts";
import type { DType } from "./dtype.ts";
import type { Dim } from "./ir.ts";
import { gradients, type SegmentMode } from "./autodiff.ts";
import { addLoop } from "./loop.ts";
import * as op from "./ops.ts";
import {
  adamwSchedule,
  adamwUpdate,
  gradientNorm,
  type OptimizerConfig,
  optimizerSlots,
  sgdUpdate,
} from "./optim.ts";

/** A trainable parameter: its name, shape, and whether weight decay applies. */
export type TrainableParam = { name: string; shape: number[]; decay?: boolean };
/** A per-step batch input (its shape without the stacking axes). */
export type BatchInput = { name: string; dtype: DType; shape: Dim[] };
/** What the model computes from parameters and a (micro-)batch: a scalar loss and scalar metrics. */
export type ForwardFn = (
  g: GraphBuilder,
  params: Record<string, Value>,
  batch: Record<string, Value>,
) => { loss: Value; metrics?: Record<string, Value> };

/** Dynamic loss scaling for fp16 compute: skip a step and halve the scale on overflow. */
export type LossScaling = { init?: number; growthInterval?: number; growthFactor?: number };

/** A training configuration. */
export type TrainingSpec = {
  name: string;
  params: TrainableParam[];
  batch: BatchInput[];
  forward: ForwardFn;
  optimizer: OptimizerConfig;
  /** Global-norm gradient clipping. */
  maxGradNorm?: number;
  /** Micro-batches per optimizer step (gradients summed in an inner Loop, then averaged). Default 1. */
  accumulation?: number;
  lossScaling?: LossScaling;
  /**
   * How the backward passes of the forward's segments are built (see autodiff.ts): `recompute` is
   * activation checkpointing. Default `inline`.
   */
  segments?: SegmentMode;
  /**
   * A second mode of the same graph, run with `train.mode` false: the forward computes named outputs from
   * the current parameters and a batch of its own, so scoring (reference log-probs, evaluation) reads the
   * training session's weights instead of loading a second copy into a session of its own.
   */
  scoring?: ScoringSpec;
};

/** The scoring mode of a training graph (see {@link TrainingSpec.scoring}). */
export type ScoringSpec = {
  /** Its batch inputs, named `score.<name>` in the graph. */
  inputs: BatchInput[];
  /** Its outputs (float32), named `score.<name>` in the graph, from the parameters and the batch. */
  forward: (
    g: GraphBuilder,
    params: Record<string, Value>,
    batch: Record<string, Value>,
  ) => Record<string, Value>;
};

/** Names of a built training graph's interface. */
export type TrainingIO = {
  /** Every parameter (as the spec lists them) and the optimizer's state, by name, with their shapes. */
  state: { name: string; shape: number[]; dtype: "float32" }[];
  /**
   * The graph input that holds the parameters: a `[rows, C]` matrix in which parameter `name` is the
   * `length` elements from `offset` (row-major). The state's parameters are fed and returned through it.
   */
  packed: {
    name: string;
    shape: [number, number];
    members: { name: string; offset: number; length: number }[];
  };
  stacked: BatchInput[];
  scans: string[];
  metrics: string[];
  accumulation: number;
  /**
   * With a scoring mode: the bool input that picks the mode (true: train), the scoring inputs (with their
   * graph names) and outputs by their names in the spec. Every input is fed in either mode: what a mode does
   * not read, empty (see lib/runtime/training_session.ts).
   */
  scoring?: {
    mode: string;
    inputs: (BatchInput & { graph: string })[];
    outputs: Record<string, string>;
  };
};

/** 1 where weight decay applies to `p`, else 0 (the packed layout puts decayed parameters first). */
export function decays(p: TrainableParam): number {
  return p.decay ?? true ? 1 : 0;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Builds the chunk graph: a Loop over optimizer steps. */
export function buildTrainingGraph(spec: TrainingSpec): { graph: GraphBuilder; io: TrainingIO } {
  const acc = spec.accumulation ?? 1;
  if (!Number.isInteger(acc) || acc < 1) {
    throw new RangeError(`accumulation must be a positive integer, got ${acc}`);
  }
  const step = buildStep(spec, acc);
  const c = new GraphBuilder(spec.name);
  // the parameters are fed, carried through the Loop and returned as one [rows, C] matrix; with a scoring
  // mode, the optimizer's moments may come empty (a scoring run does not read them: `state` rows)
  const scoring = spec.scoring;
  const stateInputs = step.state.map((s) =>
    c.input(
      s.name,
      "float32",
      scoring && s.name !== FLAT_PARAMS && s.shape.length ? ["state", ...s.shape.slice(1)] : s.shape,
    )
  );
  const stacked = spec.batch.map((b) =>
    c.input(b.name, b.dtype, acc > 1 ? ["steps", acc, ...b.shape] : ["steps", ...b.shape])
  );
  const lr = c.input("train.lr", "float32", ["steps"]);
  const train = (g: GraphBuilder) =>
    addLoop(g, step.graph, {
      carried: step.state.map((s, i) => ({ input: s.bodyIn, output: s.bodyOut, init: stateInputs[i] })),
      stacked: [
        ...spec.batch.map((_b, i) => ({ input: step.batchIn[i], value: stacked[i] })),
        { input: step.lrIn, value: lr },
      ],
      scans: step.scans.map((s) => s.bodyOut),
    });
  const names = [...step.state.map((st) => `${st.name}.next`), ...step.scans.map((st) => st.name)];
  let scoringIO: TrainingIO["scoring"];
  if (!scoring) {
    const { finals, scans } = train(c);
    [...finals, ...scans].forEach((v, i) => c.output(v, names[i]));
  } else {
    const mode = c.input("train.mode", "bool", []);
    const inputs = scoring.inputs.map((b) => c.input(`score.${b.name}`, b.dtype, b.shape));
    const trainBranch = new GraphBuilder(`${spec.name}.train`, c);
    const { finals, scans } = train(trainBranch);
    const scoreBranch = new GraphBuilder(`${spec.name}.score`, c);
    const params: Record<string, Value> = {};
    splitRows(
      scoreBranch.capture(stateInputs[0]),
      step.layout,
      spec.params,
      (k, v) => (params[spec.params[k].name] = v),
    );
    const batch = Object.fromEntries(scoring.inputs.map((b, i) => [b.name, scoreBranch.capture(inputs[i])]));
    const scored = scoring.forward(scoreBranch, params, batch);
    const scoreNames = Object.keys(scored);
    const empty = (g: GraphBuilder, dtype: DType) => op.constantOfShape(g.ints([0]), 0, dtype, [0]);
    const outs = ifElse(
      mode,
      trainBranch,
      [...finals, ...scans, ...scoreNames.map((n) => empty(trainBranch, scored[n].dtype))],
      scoreBranch,
      [...[...finals, ...scans].map((v) => empty(scoreBranch, v.dtype)), ...scoreNames.map((n) => scored[n])],
    );
    const all = [...names, ...scoreNames.map((n) => `score.${n}`)];
    outs.forEach((v, i) => c.output(v, all[i]));
    scoringIO = {
      mode: mode.name,
      inputs: scoring.inputs.map((b, i) => ({ ...b, graph: inputs[i].name })),
      outputs: Object.fromEntries(scoreNames.map((n) => [n, `score.${n}`])),
    };
  }
  const { order, rows, width } = step.layout;
  let offset = 0;
  const members = order.map((k, j) => {
    const m = { name: spec.params[k].name, offset, length: rows[j] * width };
    offset += m.length;
    return m;
  });
  return {
    graph: c,
    io: {
      packed: { name: FLAT_PARAMS, shape: [offset / width, width], members },
      state: [...spec.params, ...step.state.filter((st) => st.name !== FLAT_PARAMS)].map((
        { name, shape },
      ) => ({
        name,
        shape,
        dtype: "float32" as const,
      })),
      stacked: [
        ...spec.batch.map((b) => ({ ...b, shape: acc > 1 ? [acc, ...b.shape] : b.shape })),
        { name: "train.lr", dtype: "float32", shape: [] },
      ],
      scans: step.scans.map((s) => s.name),
      metrics: step.metrics,
      accumulation: acc,
      scoring: scoringIO,
    },
  };
}

/**
 * An ONNX `If` on `cond` (a bool scalar): the branches are builders nested in `cond`'s, each with its
 * outputs (same count and element types; shapes may differ). Returns the outputs, in `cond`'s builder.
 */
export function ifElse(
  cond: Value,
  then: GraphBuilder,
  thenOuts: Value[],
  otherwise: GraphBuilder,
  elseOuts: Value[],
): Value[] {
  const g = cond.g;
  const branch = (b: GraphBuilder, outs: Value[]) => {
    outs.forEach((v) => b.output(v, g.fresh(`${b.name}.out`)));
    g.children.push(b);
    const graph = b.build();
    const root = g.root();
    for (const [n, init] of b.initializers) root.initializers.set(n, init);
    graph.initializers = [];
    return graph;
  };
  // each output's dims get names of their own: the branches give different shapes
  const outSpecs = thenOuts.map((v) => ({ dtype: v.dtype, shape: v.shape.map(() => g.fresh("if")) }));
  return g.node(
    "If",
    [cond],
    outSpecs,
    {
      then_branch: op.attr.graph(branch(then, thenOuts)),
      else_branch: op.attr.graph(branch(otherwise, elseOuts)),
    },
  );
}

/** The body's name for the parameters carried as one `[rows, C]` matrix. */
export const FLAT_PARAMS = "train.params";

/** How the parameters sit in the `[rows, C]` matrix: spec indices in row order, their rows, and C. */
export type RowLayout = { order: number[]; rows: number[]; width: number };

/**
 * The packed layout of `params` (see buildStep): spec indices in row order (decayed first), their rows, the
 * width C (the gcd of the sizes), the total rows and how many of the first rows get weight decay. Shared by
 * the chunk graph and the distributed graphs (lib/graph/distributed.ts), so both pack alike.
 */
export function rowLayout(
  params: readonly TrainableParam[],
): RowLayout & { total: number; nDecay: number } {
  const order = [...params.keys()].sort((a, b) => decays(params[b]) - decays(params[a]));
  const sizes = order.map((i) => params[i].shape.reduce((x, y) => x * y, 1));
  const width = sizes.reduce(gcd);
  const rows = sizes.map((n) => n / width);
  const total = rows.reduce((x, y) => x + y, 0);
  const nDecay = order.reduce((n, i, j) => n + (decays(params[i]) ? rows[j] : 0), 0);
  return { order, rows, width, total, nDecay };
}

/** One tensor per parameter (in spec order) → the `[rows, C]` matrix (the gradients, each step). */
export function toRows(values: readonly Value[], l: RowLayout): Value {
  return op.concat(l.order.map((i, j) => op.reshape(values[i], [l.rows[j], l.width])), 0);
}

/** Splits the `[rows, C]` matrix back into parameter tensors: `use(i, tensor)` for spec index i, in row order. */
export function splitRows(
  flat: Value,
  l: RowLayout,
  params: readonly TrainableParam[],
  use: (i: number, tensor: Value) => void,
): void {
  op.split(flat, l.rows, 0).forEach((piece, j) =>
    use(l.order[j], op.reshape(piece, params[l.order[j]].shape))
  );
}

type StepGraph = {
  graph: GraphBuilder;
  layout: RowLayout;
  state: { name: string; shape: number[]; bodyIn: string; bodyOut: string }[];
  batchIn: string[];
  lrIn: string;
  scans: { name: string; bodyOut: string }[];
  metrics: string[];
};

/** One optimizer step as a standalone graph (the Loop body). */
function buildStep(spec: TrainingSpec, acc: number): StepGraph {
  const s = new GraphBuilder(`${spec.name}.step`);
  const state: StepGraph["state"] = [];
  const addState = (name: string, shape: number[]) => {
    const v = s.input(`${name}.in`, "float32", shape);
    state.push({ name, shape, bodyIn: v.name, bodyOut: `${name}.out` });
    return v;
  };
  // The optimizer works on all parameters at once, decayed ones first: a few nodes per step instead of ~15
  // per parameter tensor (on CUDA each node costs a kernel launch). They are laid out as rows of C = the gcd
  // of their sizes, [total / C, C], and concatenated along the rows: ONNX Runtime's CUDA Concat and Split
  // build a host-side table as long as the concatenated axis on every call, so a 1-D concat of 124M
  // parameters would cost seconds, while 124M / 768 rows cost microseconds. The moments share the layout.
  // The Loop carries the parameters in that layout too (split into tensors at the start of each step, the
  // gradients concatenated, the update applied to the whole), so a step reshapes each parameter once.
  const slotNames = optimizerSlots(spec.optimizer);
  const { order, rows, width, total, nDecay } = rowLayout(spec.params);
  const layout: RowLayout = { order, rows, width };
  const pFlat = addState(FLAT_PARAMS, [total, width]);
  const params: Value[] = new Array(spec.params.length);
  splitRows(pFlat, layout, spec.params, (i, p) => (params[i] = p));
  const slots = slotNames.map((k) => addState(`train.${k}`, [total, width]));
  const stepIn = addState("train.step", []);
  const scaling = spec.lossScaling;
  const scaleIn = scaling ? addState("train.loss_scale", []) : undefined;
  const goodIn = scaling ? addState("train.good_steps", []) : undefined;
  const batch = spec.batch.map((b) =>
    s.input(`${b.name}.in`, b.dtype, acc > 1 ? [acc, ...b.shape] : b.shape)
  );
  const lr = s.input("train.lr.in", "float32", []);

  // loss and gradients (summed over micro-batches in an inner loop when accumulating)
  const byName = (vs: Value[]) => Object.fromEntries(spec.params.map((p, i) => [p.name, vs[i]]));
  let loss: Value, grads: Value[], metrics: Record<string, Value>;
  if (acc === 1) {
    const out = spec.forward(
      s,
      byName(params),
      Object.fromEntries(spec.batch.map((b, i) => [b.name, batch[i]])),
    );
    loss = out.loss;
    metrics = out.metrics ?? {};
    grads = gradients(loss, params, {
      seed: scaleIn ? op.cast(scaleIn, loss.dtype) : undefined,
      segments: spec.segments,
    });
  } else ({ loss, grads, metrics } = accumulate(s, spec, acc, params, batch, scaleIn));
  grads = grads.map((g) => op.cast(g, "float32"));
  if (scaleIn) grads = grads.map((g) => op.div(g, scaleIn));

  const gRows = toRows(grads, layout);
  const { norm, coef, square } = gradientNorm(gRows, spec.maxGradNorm);
  const step = op.add(stepIn, 1);
  const o = spec.optimizer;
  // weight decay on the first nDecay rows (norms and biases are exempt)
  const decay: boolean | Value = nDecay === total ? true : nDecay === 0 ? false : op.concat([
    op.constantOfShape(s.ints([nDecay, 1]), 1, "float32", [nDecay, 1]),
    op.constantOfShape(s.ints([total - nDecay, 1]), 0, "float32", [total - nDecay, 1]),
  ], 0);
  const update = o.kind === "adamw"
    ? adamwUpdate(pFlat, gRows, slots[0], slots[1], lr, adamwSchedule(lr, step, o), o, decay, {
      coef,
      square,
    })
    : sgdUpdate(pFlat, coef ? op.mul(gRows, coef) : gRows, slots, lr, o, decay);

  // overflow handling: keep the old state when the gradient norm is not finite
  const finite = op.not(op.or(op.isNaN(norm), op.isInf(norm)));
  const keep = (next: Value, prev: Value) => (scaling ? op.where(finite, next, prev) : next);
  const outs = new Map<string, Value>();
  outs.set(FLAT_PARAMS, keep(update.param, pFlat));
  slotNames.forEach((k, j) => outs.set(`train.${k}`, keep(update.slots[j], slots[j])));
  outs.set("train.step", keep(step, stepIn));
  if (scaling && scaleIn && goodIn) {
    const interval = scaling.growthInterval ?? 2000, factor = scaling.growthFactor ?? 2;
    const good = op.where(finite, op.add(goodIn, 1), 0);
    const grow = op.greaterOrEqual(good, interval);
    outs.set(
      "train.loss_scale",
      op.where(finite, op.where(grow, op.mul(scaleIn, factor), scaleIn), op.div(scaleIn, 2)),
    );
    outs.set("train.good_steps", op.where(grow, 0, good));
  }
  for (const st of state) s.output(outs.get(st.name)!, st.bodyOut);

  const scans: StepGraph["scans"] = [];
  const scan = (name: string, v: Value) => {
    s.output(op.cast(v, "float32"), `${name}.scan`);
    scans.push({ name, bodyOut: `${name}.scan` });
  };
  scan("train.loss", loss);
  scan("train.grad_norm", norm);
  scan("train.skipped", op.cast(op.not(finite), "float32"));
  if (scaleIn) scan("train.loss_scale.used", scaleIn);
  for (const [k, v] of Object.entries(metrics)) scan(k, v);
  return {
    graph: s,
    layout,
    state,
    batchIn: batch.map((b) => b.name),
    lrIn: lr.name,
    scans,
    metrics: Object.keys(metrics),
  };
}

/**
 * Gradient accumulation: an inner Loop over micro-batches summing loss, gradients and metrics. `weights`
 * (float32 `[acc]`, data parallelism): each micro-batch's float32 loss and gradients are multiplied by its
 * weight before they are summed (a rank's share of the global micro-batch, see lib/graph/distributed.ts).
 */
export function accumulate(
  s: GraphBuilder,
  spec: TrainingSpec,
  acc: number,
  params: Value[],
  batch: Value[],
  scale: Value | undefined,
  weights?: Value,
): { loss: Value; grads: Value[]; metrics: Record<string, Value> } {
  const m = new GraphBuilder(`${spec.name}.micro`);
  const mp = spec.params.map((p) => m.input(`${p.name}.micro`, "float32", p.shape));
  const mb = spec.batch.map((b) => m.input(`${b.name}.micro`, b.dtype, b.shape));
  const mScale = scale ? m.input("train.loss_scale.micro", "float32", []) : undefined;
  const mWeight = weights ? m.input("train.share.micro", "float32", []) : undefined;
  const weigh = (v: Value) => (mWeight ? op.mul(v, mWeight) : v);
  const out = spec.forward(
    m,
    Object.fromEntries(spec.params.map((p, i) => [p.name, mp[i]])),
    Object.fromEntries(spec.batch.map((b, i) => [b.name, mb[i]])),
  );
  const grads = gradients(out.loss, mp, {
    seed: mScale ? op.cast(mScale, out.loss.dtype) : undefined,
    segments: spec.segments,
  });
  const sums = spec.params.map((p) => m.input(`${p.name}.gsum`, "float32", p.shape));
  const lossSum = m.input("train.loss.sum", "float32", []);
  sums.forEach((sum, i) =>
    m.output(op.add(sum, weigh(op.cast(grads[i], "float32"))), `${spec.params[i].name}.gsum.out`)
  );
  m.output(op.add(lossSum, weigh(op.cast(out.loss, "float32"))), "train.loss.sum.out");
  const metricNames = Object.keys(out.metrics ?? {});
  metricNames.forEach((k) => m.output(op.cast(out.metrics![k], "float32"), `${k}.micro.scan`));

  const outer: Record<string, Value> = Object.fromEntries(
    spec.params.map((p, i) => [`${p.name}.micro`, params[i]]),
  );
  if (mScale && scale) outer[mScale.name] = scale;
  const zeros = spec.params.map((p) => op.constantOfShape(s.ints(p.shape), 0, "float32", p.shape));
  const { finals, scans } = addLoop(s, m, {
    carried: [
      ...spec.params.map((p, i) => ({ input: sums[i].name, output: `${p.name}.gsum.out`, init: zeros[i] })),
      { input: lossSum.name, output: "train.loss.sum.out", init: s.scalar(0, "float32") },
    ],
    stacked: [
      ...spec.batch.map((_, i) => ({ input: mb[i].name, value: batch[i] })),
      ...(mWeight && weights ? [{ input: mWeight.name, value: weights }] : []),
    ],
    scans: metricNames.map((k) => `${k}.micro.scan`),
    outer,
  });
  const inv = 1 / acc;
  return {
    loss: op.mul(finals[spec.params.length], inv),
    grads: finals.slice(0, spec.params.length).map((g) => op.mul(g, inv)),
    metrics: Object.fromEntries(metricNames.map((k, i) => [k, op.reduceMean(scans[i], [0])])),
  };
}
