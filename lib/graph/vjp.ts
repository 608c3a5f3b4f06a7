/**
 * Vector-Jacobian products, one rule per ONNX operator: given a node and the gradients of its outputs,
 * the gradients of its inputs (null where an input needs none). Broadcast operands get their gradient
 * summed back to their own shape.
 * @module
 */
import type { BuiltNode, GraphBuilder, Value, VjpRule } from "./builder.ts";
import type { Attr } from "./ir.ts";
import * as op from "./ops.ts";
import { broadcastAxes, normAxis } from "./shape.ts";

export type { VjpRule };

/** The value of a constant (initializer) input, if it is one. */
export function constValues(v: Value | null): number[] | undefined {
  if (!v) return undefined;
  for (let b: GraphBuilder | undefined = v.g; b; b = b.parent) {
    const init = b.initializers.get(v.name);
    if (init?.data.data) return Array.from(init.data.data as ArrayLike<number | bigint>, Number);
  }
  return undefined;
}

function constOf(n: BuiltNode, k: number, what: string): number[] {
  const c = constValues(n.inputs[k]);
  if (!c) throw new Error(`gradients: ${n.op} node ${n.name} needs a constant ${what}`);
  return c;
}

function intAttr(n: BuiltNode, name: string, dflt: number): number {
  const a = n.attrs[name] as Attr | undefined;
  return a && a.type === "int" ? a.value : dflt;
}

function isStatic(v: Value): boolean {
  return v.shape.every((d) => typeof d === "number");
}

/** A value shaped like `like`: a constant-target reshape when the shape is static, else a runtime one. */
export function reshapeLike(x: Value, like: Value): Value {
  if (x.shape.length === like.shape.length && x.shape.every((d, i) => d === like.shape[i])) return x;
  if (isStatic(like)) return op.reshape(x, like.shape as number[]);
  return op.reshape(x, op.shapeOf(like), like.shape);
}

/** Sums a broadcast gradient back to the shape of `like`. */
export function sumTo(d: Value, like: Value): Value {
  const axes = broadcastAxes(like.shape, d.shape);
  if (axes.length === 0) return reshapeLike(d, like);
  return reshapeLike(op.reduceSum(d, axes, true), like);
}

const gOnly = (f: (gy: Value, n: BuiltNode) => Value): VjpRule => (n, [gy]) => [f(gy!, n)];

function minMax(isMax: boolean): VjpRule {
  return (n, [gy], want) => {
    const [a, b] = n.inputs as Value[];
    const pickA = isMax ? op.greaterOrEqual(a, b) : op.lessOrEqual(a, b);
    return [
      want[0] ? sumTo(op.where(pickA, gy!, 0), a) : null,
      want[1] ? sumTo(op.where(pickA, 0, gy!), b) : null,
    ];
  };
}

function reduceRule(kind: "sum" | "mean" | "max" | "lse"): VjpRule {
  return (n, [gy]) => {
    const x = n.inputs[0]!;
    const y = n.outputs[0];
    const axes = (n.inputs[1] ? constOf(n, 1, "axes") : x.shape.map((_, i) => i)).map((a) =>
      normAxis(a, x.rank)
    );
    const keep = intAttr(n, "keepdims", 1) === 1;
    const gk = keep ? gy! : op.unsqueeze(gy!, axes);
    switch (kind) {
      case "sum":
        return [op.expand(gk, op.shapeOf(x), x.shape)];
      case "mean": {
        const dims = axes.map((a) => x.shape[a]);
        const count = dims.every((d) => typeof d === "number")
          ? x.g.scalar((dims as number[]).reduce((p, q) => p * q, 1), x.dtype)
          : op.cast(
            x.g.node("ReduceProd", [op.gather(op.shapeOf(x), x.g.ints(axes))], [{
              dtype: "int64",
              shape: [],
            }], {
              keepdims: op.attr.int(0),
            })[0],
            x.dtype,
          );
        return [op.expand(op.div(gk, count), op.shapeOf(x), x.shape)];
      }
      case "max": {
        const yk = keep ? y : op.unsqueeze(y, axes);
        const mask = op.cast(op.equal(x, yk), x.dtype);
        const count = op.reduceSum(mask, axes, true);
        return [op.mul(mask, op.div(gk, count))];
      }
      case "lse": {
        const yk = keep ? y : op.unsqueeze(y, axes);
        return [op.mul(gk, op.exp(op.sub(x, yk)))];
      }
    }
  };
}

function matmulRule(): VjpRule {
  return (n, [gy], want) => {
    const [a, b] = n.inputs as Value[];
    const g = gy!;
    const swap = (v: Value) =>
      op.transpose(v, [...v.shape.keys()].map((i) => i < v.rank - 2 ? i : 2 * v.rank - 3 - i));
    let ga: Value | null = null, gb: Value | null = null;
    if (want[0]) ga = sumTo(op.matmul(g, swap(b)), a);
    if (want[1]) {
      if (b.rank === 2 && a.rank > 2) {
        // weight of a batched input: one big product instead of a batched one reduced afterwards
        const k = a.shape[a.rank - 1], nOut = b.shape[1];
        const a2 = op.reshape(a, [-1, typeof k === "number" ? k : 0]);
        const g2 = op.reshape(g, [-1, typeof nOut === "number" ? nOut : 0]);
        gb = op.gemm(a2, g2, null, { transA: true });
      } else gb = sumTo(op.matmul(swap(a), g), b);
    }
    return [ga, gb];
  };
}

function gemmRule(): VjpRule {
  return (n, [gy], want) => {
    const [a, b, c] = n.inputs;
    const g = gy!;
    const tA = intAttr(n, "transA", 0) === 1, tB = intAttr(n, "transB", 0) === 1;
    const alphaA = n.attrs.alpha, betaA = n.attrs.beta;
    const alpha = alphaA?.type === "float" ? alphaA.value : 1;
    const beta = betaA?.type === "float" ? betaA.value : 1;
    const o = (transA: boolean, transB: boolean) => ({ transA, transB, alpha });
    let ga: Value | null = null, gb: Value | null = null, gc: Value | null = null;
    if (want[0]) {
      ga = !tA
        ? (tB ? op.gemm(g, b!, null, o(false, false)) : op.gemm(g, b!, null, o(false, true)))
        : (tB ? op.gemm(b!, g, null, o(true, true)) : op.gemm(b!, g, null, o(false, true)));
    }
    if (want[1]) {
      gb = !tB
        ? (tA ? op.gemm(a!, g, null, o(false, false)) : op.gemm(a!, g, null, o(true, false)))
        : (tA ? op.gemm(g, a!, null, o(true, true)) : op.gemm(g, a!, null, o(true, false)));
    }
    if (want[2] && c) gc = sumTo(beta === 1 ? g : op.mul(g, beta), c);
    return [ga, gb, gc];
  };
}

function sliceRule(): VjpRule {
  return (n, [gy]) => {
    const x = n.inputs[0]!;
    const starts = constOf(n, 1, "starts");
    const axes = (n.inputs[3] ? constOf(n, 3, "axes") : starts.map((_, i) => i)).map((a) =>
      normAxis(a, x.rank)
    );
    const steps = n.inputs[4] ? constOf(n, 4, "steps") : axes.map(() => 1);
    if (steps.some((s) => s !== 1)) throw new Error(`gradients: Slice with steps ≠ 1 (node ${n.name})`);
    const begin = new Array(x.rank).fill(0), negMask = new Array(x.rank).fill(0);
    axes.forEach((a, i) => {
      const d = x.shape[a];
      if (starts[i] >= 0) begin[a] = typeof d === "number" ? Math.min(starts[i], d) : starts[i];
      else if (typeof d === "number") begin[a] = Math.max(0, d + starts[i]);
      else [begin[a], negMask[a]] = [starts[i], 1];
    });
    const g = gy!;
    if (isStatic(x) && isStatic(g)) {
      const xs = x.shape as number[], gs = g.shape as number[];
      const end = xs.map((d, i) => d - gs[i] - begin[i]);
      return [op.pad(g, [...begin, ...end], x.shape)];
    }
    const shapeX = op.shapeOf(x);
    let b = x.g.ints(begin);
    if (negMask.some((m) => m)) b = op.add(b, op.mul(shapeX, x.g.ints(negMask)));
    const end = op.sub(op.sub(shapeX, op.shapeOf(g)), b);
    return [op.pad(g, op.concat([b, end], 0), x.shape)];
  };
}

function layerNormRule(): VjpRule {
  return (n, [gy], want) => {
    const [x, scale, bias] = n.inputs as Value[];
    const mean = op.cast(n.outputs[1], x.dtype), invStd = op.cast(n.outputs[2], x.dtype);
    const g = gy!;
    const xhat = op.mul(op.sub(x, mean), invStd);
    const dxhat = op.mul(g, scale);
    const out: (Value | null)[] = [null, null, null];
    if (want[0]) {
      const m1 = op.reduceMean(dxhat, [-1], true);
      const m2 = op.reduceMean(op.mul(dxhat, xhat), [-1], true);
      out[0] = op.mul(invStd, op.sub(op.sub(dxhat, m1), op.mul(xhat, m2)));
    }
    if (want[1]) out[1] = sumTo(op.mul(g, xhat), scale);
    if (want[2] && bias) out[2] = sumTo(g, bias);
    return out;
  };
}

/** The rules, by ONNX operator name. */
export const VJP: Record<string, VjpRule> = {
  Identity: gOnly((g) => g),
  Add: (n, [g], want) => [want[0] ? sumTo(g!, n.inputs[0]!) : null, want[1] ? sumTo(g!, n.inputs[1]!) : null],
  Sub: (n, [g], want) => [
    want[0] ? sumTo(g!, n.inputs[0]!) : null,
    want[1] ? sumTo(op.neg(g!), n.inputs[1]!) : null,
  ],
  Mul: (n, [g], want) => {
    const [a, b] = n.inputs as Value[];
    return [want[0] ? sumTo(op.mul(g!, b), a) : null, want[1] ? sumTo(op.mul(g!, a), b) : null];
  },
  Div: (n, [g], want) => {
    const [a, b] = n.inputs as Value[];
    const y = n.outputs[0];
    return [
      want[0] ? sumTo(op.div(g!, b), a) : null,
      want[1] ? sumTo(op.neg(op.div(op.mul(g!, y), b)), b) : null,
    ];
  },
  Pow: (n, [g], want) => {
    const [a, e] = n.inputs as Value[];
    const y = n.outputs[0];
    return [
      want[0] ? sumTo(op.mul(g!, op.mul(e, op.pow(a, op.sub(e, 1)))), a) : null,
      want[1] ? sumTo(op.mul(g!, op.mul(y, op.log(a))), e) : null,
    ];
  },
  Max: minMax(true),
  Min: minMax(false),
  Sum: (n, [g], want) => n.inputs.map((v, k) => (want[k] && v ? sumTo(g!, v) : null)),
  Neg: gOnly((g) => op.neg(g)),
  Exp: gOnly((g, n) => op.mul(g, n.outputs[0])),
  Log: gOnly((g, n) => op.div(g, n.inputs[0]!)),
  Sqrt: gOnly((g, n) => op.div(op.mul(g, 0.5), n.outputs[0])),
  Reciprocal: gOnly((g, n) => op.neg(op.mul(g, op.mul(n.outputs[0], n.outputs[0])))),
  Tanh: gOnly((g, n) => op.mul(g, op.sub(1, op.mul(n.outputs[0], n.outputs[0])))),
  Sigmoid: gOnly((g, n) => op.mul(g, op.mul(n.outputs[0], op.sub(1, n.outputs[0])))),
  // gelu(x) = x·σ(z), z = x(2c + 2ck·x²), c = √(2/π), k = 0.044715: gelu' = σ + x·σ(1 − σ)·(2c + 6ck·x²)
  FastGelu: gOnly((g, n) => {
    const x = n.inputs[0]!;
    const c = Math.sqrt(2 / Math.PI), k = 0.044715;
    const u = op.mul(x, x);
    const s = op.sigmoid(op.mul(x, op.add(op.mul(u, 2 * c * k), 2 * c)));
    const xdz = op.mul(x, op.add(op.mul(u, 6 * c * k), 2 * c));
    return op.mul(g, op.add(s, op.mul(xdz, op.sub(s, op.mul(s, s)))));
  }),
  Erf: gOnly((g, n) => {
    const x = n.inputs[0]!;
    return op.mul(g, op.mul(2 / Math.sqrt(Math.PI), op.exp(op.neg(op.mul(x, x)))));
  }),
  Cos: gOnly((g, n) => op.neg(op.mul(g, op.sin(n.inputs[0]!)))),
  Sin: gOnly((g, n) => op.mul(g, op.cos(n.inputs[0]!))),
  Abs: gOnly((g, n) => op.mul(g, g.g.node("Sign", [n.inputs[0]], [{ dtype: g.dtype, shape: g.shape }])[0])),
  Relu: gOnly((g, n) => op.where(op.greater(n.inputs[0]!, 0), g, 0)),
  Softplus: gOnly((g, n) => op.mul(g, op.sigmoid(n.inputs[0]!))),
  Cast: gOnly((g, n) => op.cast(g, n.inputs[0]!.dtype)),
  Clip: gOnly((g, n) => {
    const [x, lo, hi] = n.inputs;
    let keep: Value | null = null;
    if (lo) keep = op.greaterOrEqual(x!, lo);
    if (hi) keep = keep ? op.and(keep, op.lessOrEqual(x!, hi)) : op.lessOrEqual(x!, hi);
    return keep ? op.where(keep, g, 0) : g;
  }),
  Where: (n, [g], want) => {
    const [c, a, b] = n.inputs as Value[];
    return [
      null,
      want[1] ? sumTo(op.where(c, g!, 0), a) : null,
      want[2] ? sumTo(op.where(c, 0, g!), b) : null,
    ];
  },
  MatMul: matmulRule(),
  Gemm: gemmRule(),
  Softmax: gOnly((g, n) => {
    const y = n.outputs[0];
    const axis = intAttr(n, "axis", -1);
    return op.mul(y, op.sub(g, op.reduceSum(op.mul(g, y), [axis], true)));
  }),
  LogSoftmax: gOnly((g, n) => {
    const axis = intAttr(n, "axis", -1);
    return op.sub(g, op.mul(op.exp(n.outputs[0]), op.reduceSum(g, [axis], true)));
  }),
  ReduceSum: reduceRule("sum"),
  ReduceMean: reduceRule("mean"),
  ReduceMax: reduceRule("max"),
  ReduceLogSumExp: reduceRule("lse"),
  Reshape: gOnly((g, n) => reshapeLike(g, n.inputs[0]!)),
  Unsqueeze: gOnly((g, n) => reshapeLike(g, n.inputs[0]!)),
  Squeeze: gOnly((g, n) => reshapeLike(g, n.inputs[0]!)),
  Flatten: gOnly((g, n) => reshapeLike(g, n.inputs[0]!)),
  Expand: gOnly((g, n) => sumTo(g, n.inputs[0]!)),
  Transpose: gOnly((g, n) => {
    const p = n.attrs.perm?.type === "ints" ? n.attrs.perm.value : g.shape.map((_, i) => g.rank - 1 - i);
    const inv = new Array(p.length);
    p.forEach((v, i) => (inv[v] = i));
    return op.transpose(g, inv);
  }),
  Concat: (n, [g], want) => {
    const xs = n.inputs as Value[];
    const axis = normAxis(intAttr(n, "axis", 0), xs[0].rank);
    const sizes = xs.map((x) => x.shape[axis]);
    let parts: Value[];
    if (sizes.every((s) => typeof s === "number")) parts = op.split(g!, sizes as number[], axis);
    else {
      const dyn = op.concat(xs.map((x) => op.shapeOf(x, axis, axis + 1)), 0);
      parts = g!.g.node("Split", [g!, dyn], xs.map((x) => ({ dtype: g!.dtype, shape: x.shape })), {
        axis: op.attr.int(axis),
      });
    }
    return parts.map((p, k) => (want[k] ? p : null));
  },
  Split: (n, gys) => {
    const x = n.inputs[0]!;
    const axis = normAxis(intAttr(n, "axis", 0), x.rank);
    const parts = gys.map((g, k) => g ?? op.zerosLike(n.outputs[k]));
    return [op.concat(parts, axis)];
  },
  Slice: sliceRule(),
  Pad: gOnly((g, n) => {
    const x = n.inputs[0]!;
    const pads = constOf(n, 1, "pads");
    const r = x.rank;
    const starts = pads.slice(0, r);
    const ends = pads.slice(r).map((p) => (p === 0 ? 2 ** 62 : -p));
    return op.slice(g, starts, ends, [...Array(r).keys()]);
  }),
  Gather: (n, [g]) => {
    const [data, idx] = n.inputs as Value[];
    if (intAttr(n, "axis", 0) !== 0) throw new Error(`gradients: Gather on an axis ≠ 0 (node ${n.name})`);
    const i64 = op.unsqueeze(op.cast(idx, "int64"), [-1]);
    return [op.scatterND(op.zerosLike(data), i64, g!, "add"), null];
  },
  GatherElements: (n, [g]) => {
    const [data, idx] = n.inputs as Value[];
    return [op.scatterElements(op.zerosLike(data), idx, g!, intAttr(n, "axis", 0), "add"), null];
  },
  LayerNormalization: layerNormRule(),
  Dropout: (n, [g]) => {
    const ratio = constOf(n, 1, "ratio")[0];
    const mask = op.cast(n.outputs[1], g!.dtype);
    return [op.mul(g!, op.mul(mask, 1 / (1 - ratio))), null, null];
  },
  CumSum: (n, [g]) => {
    const x = n.inputs[0]!;
    const axis = constOf(n, 1, "axis")[0];
    // the gradient of a running sum is the running sum the other way
    const reverse = intAttr(n, "reverse", 0) !== 1;
    return [
      reshapeLike(op.cumSum(g!, axis, { exclusive: intAttr(n, "exclusive", 0) === 1, reverse }), x),
      null,
    ];
  },
  Trilu: (n, [g]) => {
    const k = n.inputs[1] ? constOf(n, 1, "k")[0] : 0;
    return [op.trilu(g!, intAttr(n, "upper", 1) === 1, k), null];
  },
};
