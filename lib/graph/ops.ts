/**
 * Operators as functions over {@link Value}s, each inferring its output dtype and shape. Numbers given
 * where a tensor is expected become scalar constants of the other operand's dtype. Names follow ONNX's
 * operators (camelCase); see https://onnx.ai/onnx/operators/ for their semantics at opset 18.
 * @module
 */
import { type GraphBuilder, makeArray, Value } from "./builder.ts";
import { type DType, ONNX_DTYPE } from "./dtype.ts";
import type { Attr, Dim, Graph } from "./ir.ts";
import { broadcastShapes, fmt, normAxis, reshapeShape, unknownDim } from "./shape.ts";

/** A tensor or a number to be made a scalar constant. */
export type Operand = Value | number;

// --- attribute helpers -----------------------------------------------------------------------------------
export const attr = {
  int: (value: number): Attr => ({ type: "int", value }),
  float: (value: number): Attr => ({ type: "float", value }),
  string: (value: string): Attr => ({ type: "string", value }),
  ints: (value: number[]): Attr => ({ type: "ints", value }),
  floats: (value: number[]): Attr => ({ type: "floats", value }),
  graph: (value: Graph): Attr => ({ type: "graph", value }),
};

/** The innermost builder among the operands' builders (a Loop body sees its parents' values). */
function builderOf(...xs: (Operand | null | undefined)[]): GraphBuilder {
  let best: GraphBuilder | undefined;
  for (const x of xs) {
    if (!(x instanceof Value)) continue;
    if (!best || depth(x.g) > depth(best)) best = x.g;
  }
  if (!best) throw new TypeError("an operator needs at least one tensor operand");
  return best;
}

function depth(g: GraphBuilder): number {
  let d = 0;
  for (let b = g.parent; b; b = b.parent) d++;
  return d;
}

function lift(x: Operand, like: Value): Value {
  return x instanceof Value ? x : like.g.scalar(x, like.dtype);
}

function pair(a: Operand, b: Operand): [Value, Value] {
  if (a instanceof Value) return [a, lift(b, a)];
  if (b instanceof Value) return [lift(a, b), b];
  throw new TypeError("at least one operand must be a tensor");
}

function one(
  g: GraphBuilder,
  op: string,
  inputs: (Value | null)[],
  dtype: DType,
  shape: readonly Dim[],
  attrs = {},
) {
  return g.node(op, inputs, [{ dtype, shape }], attrs)[0];
}

// --- elementwise -----------------------------------------------------------------------------------------
function binary(op: string, a: Operand, b: Operand, outDtype?: DType): Value {
  const [x, y] = pair(a, b);
  if (x.dtype !== y.dtype) throw new TypeError(`${op}: dtypes differ (${x.dtype} vs ${y.dtype})`);
  const shape = broadcastShapes(x.shape, y.shape);
  return one(builderOf(x, y), op, [x, y], outDtype ?? x.dtype, shape);
}

export const add = (a: Operand, b: Operand): Value => binary("Add", a, b);
export const sub = (a: Operand, b: Operand): Value => binary("Sub", a, b);
export const mul = (a: Operand, b: Operand): Value => binary("Mul", a, b);
export const div = (a: Operand, b: Operand): Value => binary("Div", a, b);
export const pow = (a: Operand, b: Operand): Value => binary("Pow", a, b);
export const max = (a: Operand, b: Operand): Value => binary("Max", a, b);
export const min = (a: Operand, b: Operand): Value => binary("Min", a, b);
export const equal = (a: Operand, b: Operand): Value => binary("Equal", a, b, "bool");
export const less = (a: Operand, b: Operand): Value => binary("Less", a, b, "bool");
export const greater = (a: Operand, b: Operand): Value => binary("Greater", a, b, "bool");
export const lessOrEqual = (a: Operand, b: Operand): Value => binary("LessOrEqual", a, b, "bool");
export const greaterOrEqual = (a: Operand, b: Operand): Value => binary("GreaterOrEqual", a, b, "bool");
export const and = (a: Value, b: Value): Value => binary("And", a, b, "bool");
export const or = (a: Value, b: Value): Value => binary("Or", a, b, "bool");

function unary(op: string, x: Value, attrs: Record<string, Attr> = {}, dtype?: DType): Value {
  return one(x.g, op, [x], dtype ?? x.dtype, x.shape, attrs);
}

export const neg = (x: Value): Value => unary("Neg", x);
export const exp = (x: Value): Value => unary("Exp", x);
export const log = (x: Value): Value => unary("Log", x);
export const sqrt = (x: Value): Value => unary("Sqrt", x);
export const reciprocal = (x: Value): Value => unary("Reciprocal", x);
export const tanh = (x: Value): Value => unary("Tanh", x);
export const sigmoid = (x: Value): Value => unary("Sigmoid", x);
export const erf = (x: Value): Value => unary("Erf", x);
/**
 * ONNX Runtime's `com.microsoft` FastGelu: the tanh approximation `½x(1 + tanh(√(2/π)(x + 0.044715x³)))` in
 * one kernel (float32 and float16 on CPU and CUDA; no float64).
 */
export const fastGelu = (x: Value): Value =>
  x.g.node("FastGelu", [x], [{ dtype: x.dtype, shape: x.shape }], {}, "com.microsoft")[0];
export const cos = (x: Value): Value => unary("Cos", x);
export const sin = (x: Value): Value => unary("Sin", x);
export const abs = (x: Value): Value => unary("Abs", x);
export const relu = (x: Value): Value => unary("Relu", x);
/** log(1 + e^x), computed stably by ONNX Runtime. */
export const softplus = (x: Value): Value => unary("Softplus", x);
export const not = (x: Value): Value => unary("Not", x);
export const identity = (x: Value): Value => unary("Identity", x);
export const isNaN = (x: Value): Value => unary("IsNaN", x, {}, "bool");
export const isInf = (x: Value): Value => unary("IsInf", x, {}, "bool");

/** Element type conversion. */
export function cast(x: Value, to: DType): Value {
  if (x.dtype === to) return x;
  return unary("Cast", x, { to: attr.int(ONNX_DTYPE[to]) }, to);
}

/** Clamps to [lo, hi] (either may be omitted). */
export function clip(x: Value, lo?: number, hi?: number): Value {
  const g = x.g;
  const l = lo === undefined ? null : g.scalar(lo, x.dtype);
  const h = hi === undefined ? null : g.scalar(hi, x.dtype);
  return one(g, "Clip", [x, l, h], x.dtype, x.shape);
}

/** cond ? a : b, with broadcasting. */
export function where(cond: Value, a: Operand, b: Operand): Value {
  const [x, y] = pair(a, b);
  if (cond.dtype !== "bool") throw new TypeError("where: the condition must be bool");
  const shape = broadcastShapes(cond.shape, x.shape, y.shape);
  return one(builderOf(cond, x, y), "Where", [cond, x, y], x.dtype, shape);
}

// --- linear algebra ---------------------------------------------------------------------------------------
/** Matrix product with batch broadcasting (both operands rank ≥ 2). */
export function matmul(a: Value, b: Value): Value {
  if (a.rank < 2 || b.rank < 2) {
    throw new RangeError(`matmul needs rank ≥ 2: ${fmt(a.shape)} @ ${fmt(b.shape)}`);
  }
  const [m, k1] = a.shape.slice(-2), [k2, n] = b.shape.slice(-2);
  if (typeof k1 === "number" && typeof k2 === "number" && k1 !== k2) {
    throw new RangeError(`matmul: inner dimensions differ: ${fmt(a.shape)} @ ${fmt(b.shape)}`);
  }
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  return one(builderOf(a, b), "MatMul", [a, b], a.dtype, [...batch, m, n]);
}

/** alpha·op(A)·op(B) + beta·C for 2-D A and B. */
export function gemm(
  a: Value,
  b: Value,
  c: Value | null = null,
  o: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {},
): Value {
  if (a.rank !== 2 || b.rank !== 2) throw new RangeError("gemm needs 2-D operands");
  const m = o.transA ? a.shape[1] : a.shape[0];
  const n = o.transB ? b.shape[0] : b.shape[1];
  const attrs: Record<string, Attr> = {};
  if (o.transA) attrs.transA = attr.int(1);
  if (o.transB) attrs.transB = attr.int(1);
  if (o.alpha !== undefined) attrs.alpha = attr.float(o.alpha);
  if (o.beta !== undefined) attrs.beta = attr.float(o.beta);
  return one(builderOf(a, b, c), "Gemm", c ? [a, b, c] : [a, b], a.dtype, [m, n], attrs);
}

// --- normalization and activations ----------------------------------------------------------------------
export function softmax(x: Value, axis = -1): Value {
  return unary("Softmax", x, { axis: attr.int(axis) });
}
export function logSoftmax(x: Value, axis = -1): Value {
  return unary("LogSoftmax", x, { axis: attr.int(axis) });
}

/**
 * ONNX LayerNormalization over the last axis. Returns Y and, for the backward pass, the saved mean and
 * inverse standard deviation (shape [..., 1], float32).
 */
export function layerNorm(x: Value, scale: Value, bias: Value | null, epsilon = 1e-5): Value {
  const g = builderOf(x, scale, bias);
  const stat = [...x.shape.slice(0, -1), 1];
  // ONNX Runtime keeps the statistics in float32 whatever the input (its only stash_type kernel)
  const stash: DType = "float32";
  const [y] = g.node(
    "LayerNormalization",
    bias ? [x, scale, bias] : [x, scale],
    [{ dtype: x.dtype, shape: x.shape }, { dtype: stash, shape: stat }, { dtype: stash, shape: stat }],
    { axis: attr.int(-1), epsilon: attr.float(epsilon), stash_type: attr.int(ONNX_DTYPE[stash]) },
  );
  return y;
}

/** Dropout with ratio; in training mode it draws a new mask each run (seeded by `seed`). */
export function dropout(x: Value, ratio: number, seed?: number): Value {
  if (ratio <= 0) return x;
  const g = x.g;
  const attrs: Record<string, Attr> = {};
  if (seed !== undefined) attrs.seed = attr.int(seed);
  const [y] = g.node(
    "Dropout",
    [x, g.scalar(ratio, x.dtype), g.constant([1], [], "bool")],
    [{ dtype: x.dtype, shape: x.shape }, { dtype: "bool", shape: x.shape }],
    attrs,
  );
  return y;
}

// --- reductions -------------------------------------------------------------------------------------------
function reduce(op: string, x: Value, axes: number[], keepdims: boolean): Value {
  const ax = axes.map((a) => normAxis(a, x.rank));
  const shape: Dim[] = [];
  x.shape.forEach((d, i) => {
    if (!ax.includes(i)) shape.push(d);
    else if (keepdims) shape.push(1);
  });
  return one(x.g, op, [x, x.g.ints(ax)], x.dtype, shape, { keepdims: attr.int(keepdims ? 1 : 0) });
}

export const reduceSum = (x: Value, axes: number[], keepdims = false): Value =>
  reduce("ReduceSum", x, axes, keepdims);
export const reduceMean = (x: Value, axes: number[], keepdims = false): Value =>
  reduce("ReduceMean", x, axes, keepdims);
export const reduceMax = (x: Value, axes: number[], keepdims = false): Value =>
  reduce("ReduceMax", x, axes, keepdims);
/** log Σ exp(x) over axes; ONNX Runtime subtracts the maximum first. */
export const reduceLogSumExp = (x: Value, axes: number[], keepdims = false): Value =>
  reduce("ReduceLogSumExp", x, axes, keepdims);

/** Sum of every element, as a scalar. */
export function sumAll(x: Value): Value {
  return x.rank === 0 ? x : reduceSum(x, x.shape.map((_, i) => i), false);
}

/** Mean of every element, as a scalar. */
export function meanAll(x: Value): Value {
  return x.rank === 0 ? x : reduceMean(x, x.shape.map((_, i) => i), false);
}

/** Index of the maximum along an axis (int64). */
export function argMax(x: Value, axis = -1, keepdims = false): Value {
  const a = normAxis(axis, x.rank);
  const shape = x.shape.flatMap((d, i) => (i === a ? (keepdims ? [1] : []) : [d]));
  return one(x.g, "ArgMax", [x], "int64", shape, { axis: attr.int(a), keepdims: attr.int(keepdims ? 1 : 0) });
}

// --- shape manipulation ---------------------------------------------------------------------------------
/** Reshape to a constant target (0 copies the input dim, -1 is inferred) or to a runtime shape tensor. */
export function reshape(x: Value, target: readonly number[] | Value, shapeHint?: readonly Dim[]): Value {
  if (target instanceof Value) {
    const shape = shapeHint ?? (target.shape[0] === x.rank ? [...x.shape] : unknownShape(target));
    return one(builderOf(x, target), "Reshape", [x, target], x.dtype, shape);
  }
  return one(x.g, "Reshape", [x, x.g.ints(target)], x.dtype, reshapeShape(x.shape, target));
}

function unknownShape(shapeTensor: Value): Dim[] {
  const r = shapeTensor.shape[0];
  if (typeof r !== "number") throw new RangeError("reshape: the rank of a runtime shape must be static");
  return Array.from({ length: r }, unknownDim);
}

export function transpose(x: Value, perm?: number[]): Value {
  const p = perm ?? x.shape.map((_, i) => x.rank - 1 - i);
  if (p.length !== x.rank) throw new RangeError(`transpose: perm ${p} for rank ${x.rank}`);
  return one(x.g, "Transpose", [x], x.dtype, p.map((i) => x.shape[i]), { perm: attr.ints(p) });
}

export function unsqueeze(x: Value, axes: number[]): Value {
  const rank = x.rank + axes.length;
  const ax = axes.map((a) => normAxis(a, rank)).sort((a, b) => a - b);
  const shape: Dim[] = [];
  let k = 0;
  for (let i = 0; i < rank; i++) shape.push(ax.includes(i) ? 1 : x.shape[k++]);
  return one(x.g, "Unsqueeze", [x, x.g.ints(ax)], x.dtype, shape);
}

export function squeeze(x: Value, axes: number[]): Value {
  const ax = axes.map((a) => normAxis(a, x.rank));
  for (const a of ax) {
    if (x.shape[a] !== 1 && typeof x.shape[a] === "number") {
      throw new RangeError(`squeeze: axis ${a} of ${fmt(x.shape)} is not 1`);
    }
  }
  return one(x.g, "Squeeze", [x, x.g.ints(ax)], x.dtype, x.shape.filter((_, i) => !ax.includes(i)));
}

export function concat(xs: Value[], axis: number): Value {
  if (xs.length === 0) throw new RangeError("concat of nothing");
  const a = normAxis(axis, xs[0].rank);
  const shape = [...xs[0].shape];
  const sizes = xs.map((x) => x.shape[a]);
  shape[a] = sizes.every((s) => typeof s === "number")
    ? (sizes as number[]).reduce((p, q) => p + q, 0)
    : sizes.join("+");
  return one(builderOf(...xs), "Concat", xs, xs[0].dtype, shape, { axis: attr.int(a) });
}

/** Splits along an axis into pieces of the given sizes. */
export function split(x: Value, sizes: number[], axis: number): Value[] {
  const a = normAxis(axis, x.rank);
  return x.g.node(
    "Split",
    [x, x.g.ints(sizes)],
    sizes.map((s) => {
      const shape = [...x.shape];
      shape[a] = s;
      return { dtype: x.dtype, shape };
    }),
    { axis: attr.int(a) },
  );
}

/** Static slice along axes (step 1 unless given). Ends may be large positive numbers for "to the end". */
export function slice(x: Value, starts: number[], ends: number[], axes?: number[], steps?: number[]): Value {
  const ax = (axes ?? starts.map((_, i) => i)).map((a) => normAxis(a, x.rank));
  const st = steps ?? ax.map(() => 1);
  const shape = [...x.shape];
  ax.forEach((a, i) => {
    const d = x.shape[a];
    if (typeof d === "number") {
      const clampIdx = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
      const s = clampIdx(starts[i]), e = clampIdx(ends[i]);
      shape[a] = Math.max(0, Math.ceil((e - s) / st[i]));
    } else if (starts[i] >= 0 && ends[i] >= 0 && ends[i] < 2 ** 31 && st[i] === 1) {
      shape[a] = ends[i] - starts[i];
    } else shape[a] = unknownDim();
  });
  const g = x.g;
  return one(g, "Slice", [x, g.ints(starts), g.ints(ends), g.ints(ax), g.ints(st)], x.dtype, shape);
}

/** Broadcasts to a shape (a constant list, or a runtime int64 shape tensor with a hint). */
export function expand(x: Value, target: readonly number[] | Value, shapeHint?: readonly Dim[]): Value {
  if (target instanceof Value) {
    const shape = shapeHint ?? broadcastShapes(x.shape, unknownShape(target));
    return one(builderOf(x, target), "Expand", [x, target], x.dtype, shape);
  }
  return one(x.g, "Expand", [x, x.g.ints(target)], x.dtype, broadcastShapes(x.shape, target));
}

/** The runtime shape of a tensor as int64 [rank] (or a [start, end) part of it). */
export function shapeOf(x: Value, start?: number, end?: number): Value {
  const attrs: Record<string, Attr> = {};
  if (start !== undefined) attrs.start = attr.int(start);
  if (end !== undefined) attrs.end = attr.int(end);
  const s = start === undefined ? 0 : normAxis(start, x.rank);
  const e = end === undefined ? x.rank : end < 0 ? end + x.rank : Math.min(end, x.rank);
  return one(x.g, "Shape", [x], "int64", [e - s], attrs);
}

/** A tensor of the runtime shape `shape` filled with `value`. */
export function constantOfShape(
  shape: Value,
  value: number,
  dtype: DType,
  shapeHint?: readonly Dim[],
): Value {
  const t = { name: "value", dtype, dims: [1], data: makeArray(dtype, [value]) };
  const outShape = shapeHint ?? unknownShape(shape);
  return one(shape.g, "ConstantOfShape", [shape], dtype, outShape, { value: { type: "tensor", value: t } });
}

/** Zeros shaped like `x` (runtime shape). */
export function zerosLike(x: Value): Value {
  return constantOfShape(shapeOf(x), 0, x.dtype, x.shape);
}

/** Pads with a runtime or constant pads vector ([begins..., ends...]). */
export function pad(x: Value, pads: Value | number[], shapeHint?: readonly Dim[]): Value {
  const p = pads instanceof Value ? pads : x.g.ints(pads);
  let shape: Dim[];
  if (shapeHint) shape = [...shapeHint];
  else if (!(pads instanceof Value)) {
    shape = x.shape.map((d, i) =>
      typeof d === "number"
        ? d + pads[i] + pads[i + x.rank]
        : pads[i] + pads[i + x.rank] === 0
        ? d
        : unknownDim()
    );
  } else shape = x.shape.map(() => unknownDim());
  return one(builderOf(x, p), "Pad", [x, p], x.dtype, shape);
}

// --- indexing -------------------------------------------------------------------------------------------
/** Gathers slices along an axis (embedding lookup with axis 0). */
export function gather(data: Value, indices: Value, axis = 0): Value {
  const a = normAxis(axis, data.rank);
  const shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
  return one(builderOf(data, indices), "Gather", [data, indices], data.dtype, shape, { axis: attr.int(a) });
}

/** Element-wise gather along an axis: out[i][j] = data[i][indices[i][j]] for axis 1. */
export function gatherElements(data: Value, indices: Value, axis: number): Value {
  const a = normAxis(axis, data.rank);
  return one(builderOf(data, indices), "GatherElements", [data, indices], data.dtype, indices.shape, {
    axis: attr.int(a),
  });
}

/** ScatterElements with an optional reduction ("add" accumulates duplicates). */
export function scatterElements(
  data: Value,
  indices: Value,
  updates: Value,
  axis: number,
  reduction?: "add",
): Value {
  const attrs: Record<string, Attr> = { axis: attr.int(normAxis(axis, data.rank)) };
  if (reduction) attrs.reduction = attr.string(reduction);
  return one(
    builderOf(data, indices, updates),
    "ScatterElements",
    [data, indices, updates],
    data.dtype,
    data.shape,
    attrs,
  );
}

/** ScatterND with an optional reduction ("add" accumulates duplicates: the embedding gradient). */
export function scatterND(data: Value, indices: Value, updates: Value, reduction?: "add"): Value {
  const attrs: Record<string, Attr> = {};
  if (reduction) attrs.reduction = attr.string(reduction);
  return one(
    builderOf(data, indices, updates),
    "ScatterND",
    [data, indices, updates],
    data.dtype,
    data.shape,
    attrs,
  );
}

/** Cumulative sum along an axis. */
export function cumSum(x: Value, axis: number, o: { exclusive?: boolean; reverse?: boolean } = {}): Value {
  const axisT = x.g.constant([normAxis(axis, x.rank)], [], "int64");
  const attrs: Record<string, Attr> = {};
  if (o.exclusive) attrs.exclusive = attr.int(1);
  if (o.reverse) attrs.reverse = attr.int(1);
  return one(x.g, "CumSum", [x, axisT], x.dtype, x.shape, attrs);
}

/** start, start+delta, ... below limit (scalars of one dtype). */
export function range(start: Value, limit: Value, delta: Value, lengthHint?: Dim): Value {
  return one(builderOf(start, limit, delta), "Range", [start, limit, delta], start.dtype, [
    lengthHint ?? unknownDim(),
  ]);
}

/** Upper (or lower) triangular part of the last two axes, offset by k. */
export function trilu(x: Value, upper: boolean, k = 0): Value {
  const kk = x.g.constant([k], [], "int64");
  return one(x.g, "Trilu", [x, kk], x.dtype, x.shape, { upper: attr.int(upper ? 1 : 0) });
}

/**
 * The k largest (or smallest) values along the last axis and their indices, sorted (the lower index first
 * on ties). `k` is a number or a runtime int64 `[1]` tensor.
 */
export function topK(x: Value, k: number | Value, largest = true): [Value, Value] {
  const shape = [...x.shape.slice(0, -1), typeof k === "number" ? k : unknownDim()];
  const [v, i] = builderOf(x, k).node(
    "TopK",
    [x, typeof k === "number" ? x.g.ints([k]) : k],
    [{ dtype: x.dtype, shape }, { dtype: "int64", shape }],
    {
      axis: attr.int(-1),
      largest: attr.int(largest ? 1 : 0),
    },
  );
  return [v, i];
}
