/**
 * Reverse-mode automatic differentiation over the builder's graphs. From a scalar loss and a list of
 * parameters it appends the backward graph, with standard ONNX operators only (no com.microsoft training
 * operators, which onnxruntime-node's builds lack). Each node is differentiated once, however many paths
 * pass through it; gradients reaching a value along several paths are summed with one Sum node.
 *
 * @example
 * ```ts
 * const g = new GraphBuilder("fit");
 * const w = g.input("w", "float32", [3]);
 * const loss = sumAll(mul(w, w));
 * const [dw] = gradients(loss, [w]); // 2·w
 * ```
 * @module
 */
import { type BuiltNode, makeArray, type Value } from "./builder.ts";
import { isFloat } from "./dtype.ts";
import { VJP } from "./vjp.ts";

/** Gradients of a scalar `loss` with respect to each of `wrt` (zeros where the loss does not depend on one). */
export function gradients(loss: Value, wrt: readonly Value[], seed?: Value): Value[] {
  if (!isFloat(loss.dtype)) {
    throw new TypeError(`gradients: the loss must be floating point, got ${loss.dtype}`);
  }
  if (!seed && loss.rank !== 0) {
    throw new RangeError(`gradients: the loss must be a scalar, got [${loss.shape}]`);
  }
  const g = loss.g;
  const nodes = g.nodes;

  // Forward: which values depend on a parameter (and carry floats).
  const live = new Set<Value>(wrt);
  for (const n of nodes) {
    if (n.inputs.some((v) => v && live.has(v))) {
      for (const o of n.outputs) if (isFloat(o.dtype)) live.add(o);
    }
  }
  // Backward: which of those the loss depends on.
  const needed = new Set<Value>([loss]);
  const onPath = new Set<BuiltNode>();
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (!n.outputs.some((o) => needed.has(o))) continue;
    if (!n.inputs.some((v) => v && live.has(v))) continue;
    onPath.add(n);
    for (const v of n.inputs) if (v && live.has(v)) needed.add(v);
  }

  const contributions = new Map<Value, Value[]>();
  const push = (v: Value, d: Value) => {
    const list = contributions.get(v);
    if (list) list.push(d);
    else contributions.set(v, [d]);
  };
  const total = (v: Value): Value | null => {
    const list = contributions.get(v);
    if (!list || list.length === 0) return null;
    if (list.length === 1) return list[0];
    const [sum] = g.node("Sum", list, [{ dtype: v.dtype, shape: v.shape }]);
    contributions.set(v, [sum]);
    return sum;
  };
  push(loss, seed ?? g.scalar(1, loss.dtype));

  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (!onPath.has(n)) continue;
    const gy = n.outputs.map(total);
    if (gy.every((d) => d === null)) continue;
    const rule = VJP[n.op];
    if (!rule) throw new Error(`gradients: no VJP rule for ${n.op} (node ${n.name})`);
    const want = n.inputs.map((v) => !!v && live.has(v) && needed.has(v));
    const gx = rule(n, gy, want);
    n.inputs.forEach((v, k) => {
      const d = gx[k];
      if (v && want[k] && d) push(v, d);
    });
  }

  return wrt.map((w) => total(w) ?? zerosFor(w));
}

function zerosFor(w: Value): Value {
  const n = w.shape.every((d) => typeof d === "number")
    ? (w.shape as number[]).reduce((a, b) => a * b, 1)
    : -1;
  if (n >= 0 && n <= 1 << 16) return w.g.constant(new Array(n).fill(0), w.shape as number[], w.dtype);
  const [shape] = w.g.node("Shape", [w], [{ dtype: "int64", shape: [w.rank] }]);
  const t = { name: "value", dtype: w.dtype, dims: [1], data: makeArray(w.dtype, [0]) };
  return w.g.node("ConstantOfShape", [shape], [{ dtype: w.dtype, shape: w.shape }], {
    value: { type: "tensor", value: t },
  })[0];
}
