/**
 * Optimizers as graph fragments: the update runs on the device inside the training graph, so parameters
 * and moments never cross the JS boundary between steps. The formulas mirror PyTorch's `torch.optim.AdamW`
 * and `torch.optim.SGD` and `clip_grad_norm_`, so results can be compared with PyTorch step for step.
 * @module
 */
import type { Value } from "./builder.ts";
import * as op from "./ops.ts";

/** AdamW hyper-parameters (PyTorch's defaults, weight decay 0 unless given). */
export type AdamWOptions = { beta1?: number; beta2?: number; eps?: number; weightDecay?: number };
/** SGD hyper-parameters. */
export type SgdOptions = { momentum?: number; weightDecay?: number; nesterov?: boolean };
/** The optimizer of a training graph. */
export type OptimizerConfig = ({ kind: "adamw" } & AdamWOptions) | ({ kind: "sgd" } & SgdOptions);

/** How many state slots (moments) an optimizer keeps per parameter, and their names. */
export function optimizerSlots(o: OptimizerConfig): string[] {
  if (o.kind === "adamw") return ["m", "v"];
  return (o.momentum ?? 0) > 0 ? ["buf"] : [];
}

/**
 * Scales gradients so that their global L2 norm is at most `maxNorm` (PyTorch's clip_grad_norm_:
 * coefficient maxNorm / (norm + 1e-6), capped at 1). Returns the norm before clipping.
 */
export function clipByGlobalNorm(grads: Value[], maxNorm?: number): { grads: Value[]; norm: Value } {
  const squares = grads.map((g) => op.sumAll(op.mul(g, g)));
  const total = squares.length === 1
    ? squares[0]
    : squares[0].g.node("Sum", squares, [{ dtype: squares[0].dtype, shape: [] }])[0];
  const norm = op.sqrt(total);
  const coef = clipCoefficient(norm, maxNorm);
  return { grads: coef ? grads.map((g) => op.mul(g, coef)) : grads, norm };
}

/**
 * The clipping coefficient of one gradient tensor without applying it: `coef` = min(1, maxNorm / (norm +
 * 1e-6)) (undefined without clipping), and `square` = g², which AdamW's second moment reuses. Passing both to
 * {@link adamwUpdate} folds the clipping into its scalar factors: two passes over the gradient fewer than
 * {@link clipByGlobalNorm} followed by the update, which counts when the gradient is every weight of a model.
 */
export function gradientNorm(g: Value, maxNorm?: number): { norm: Value; coef?: Value; square: Value } {
  const square = op.mul(g, g);
  const norm = op.sqrt(op.sumAll(square));
  return { norm, coef: clipCoefficient(norm, maxNorm), square };
}

/** PyTorch's clip_grad_norm_ factor min(1, maxNorm / (norm + 1e-6)); undefined when not clipping. */
function clipCoefficient(norm: Value, maxNorm?: number): Value | undefined {
  if (maxNorm === undefined || !Number.isFinite(maxNorm)) return undefined;
  return op.min(op.div(maxNorm, op.add(norm, 1e-6)), 1);
}

/** Step-dependent factors shared by every parameter's AdamW update. */
export type AdamWSchedule = { stepSize: Value; bc2Sqrt: Value };

/** lr / (1 − β1^t) and √(1 − β2^t) for step t (1-based, float scalar). */
export function adamwSchedule(lr: Value, step: Value, o: AdamWOptions): AdamWSchedule {
  const b1 = o.beta1 ?? 0.9, b2 = o.beta2 ?? 0.999;
  const bc1 = op.sub(1, op.pow(lr.g.scalar(b1, lr.dtype), step));
  const bc2 = op.sub(1, op.pow(lr.g.scalar(b2, lr.dtype), step));
  return { stepSize: op.div(lr, bc1), bc2Sqrt: op.sqrt(bc2) };
}

/**
 * One AdamW update of a parameter. `decay` says which entries get weight decay: all (true), none (false:
 * norms, biases), or a 0/1 mask broadcastable to the parameter (a `[rows, 1]` column for the flat layout).
 * `scaled` takes a {@link gradientNorm}: the gradient is then used as `g · coef`, and `square` as g².
 */
export function adamwUpdate(
  p: Value,
  g: Value,
  m: Value,
  v: Value,
  lr: Value,
  sched: AdamWSchedule,
  o: AdamWOptions,
  decay: boolean | Value = true,
  scaled: { coef?: Value; square?: Value } = {},
): { param: Value; slots: Value[] } {
  const b1 = o.beta1 ?? 0.9, b2 = o.beta2 ?? 0.999, eps = o.eps ?? 1e-8, wd = o.weightDecay ?? 0;
  // p · (1 − lr·wd·mask): the factor is a scalar or a column, so decay is one pass over the parameter
  const decayed = wd <= 0 || decay === false
    ? p
    : op.mul(p, op.sub(1, decay === true ? op.mul(lr, wd) : op.mul(decay, op.mul(lr, wd))));
  const { coef, square } = scaled;
  const gg = square ?? op.mul(g, g);
  const m2 = op.add(op.mul(m, b1), op.mul(g, coef ? op.mul(coef, 1 - b1) : 1 - b1));
  const v2 = op.add(op.mul(v, b2), op.mul(gg, coef ? op.mul(op.mul(coef, coef), 1 - b2) : 1 - b2));
  const denom = op.add(op.mul(op.sqrt(v2), op.reciprocal(sched.bc2Sqrt)), eps);
  const param = op.sub(decayed, op.mul(op.div(m2, denom), sched.stepSize));
  return { param, slots: [m2, v2] };
}

/** One SGD update (with momentum when configured; PyTorch's formulation). `decay` as in {@link adamwUpdate}. */
export function sgdUpdate(
  p: Value,
  g: Value,
  slots: Value[],
  lr: Value,
  o: SgdOptions,
  decay: boolean | Value = true,
) {
  const wd = o.weightDecay ?? 0, mu = o.momentum ?? 0;
  let d = wd <= 0 || decay === false ? g : op.add(g, op.mul(decay === true ? p : op.mul(p, decay), wd));
  const next: Value[] = [];
  if (mu > 0) {
    const buf = op.add(op.mul(slots[0], mu), d);
    next.push(buf);
    d = o.nesterov ? op.add(d, op.mul(buf, mu)) : buf;
  }
  return { param: op.sub(p, op.mul(d, lr)), slots: next };
}
