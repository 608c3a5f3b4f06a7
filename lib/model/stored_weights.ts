/**
 * Frozen weights read by ONNX Runtime straight from a model folder's safetensors files: each is an
 * initializer in its stored dtype (bf16, fp16 or fp32) whose bytes are an external-data range of the file,
 * and a graph computing in another dtype casts it where it is used. So JavaScript never holds the base
 * weights, no protobuf carries them (no 2 GB limit), and the device holds them at their stored size.
 *
 * Each cast is made in the builder that uses it (a Loop body casts per iteration), so its full-precision
 * result is a short-lived activation, never a second copy of the weights; casts are marked for
 * rematerialization, so a backward pass casts again instead of keeping the forward's copy alive.
 * @module
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import { type DType, ONNX_DTYPE } from "../graph/dtype.ts";
import * as op from "../graph/ops.ts";
import type { StoredTensor } from "./weight_files.ts";
import type { FloatDType, WeightSource } from "./weights.ts";

/** Stored tensors by canonical HF name (what a model folder's headers say, no data). */
export type StoredWeights = Map<string, StoredTensor>;

/** The graph dtype of each safetensors dtype a frozen weight may have. */
const GRAPH_DTYPE: Partial<Record<StoredTensor["dtype"], DType>> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
  F64: "float64",
};

/** The graph dtype a stored tensor is read in; throws for dtypes a weight cannot have here (int8, fp8). */
export function storedGraphDtype(name: string, t: StoredTensor): DType {
  const dt = GRAPH_DTYPE[t.dtype];
  if (!dt) {
    throw new Error(`${t.file}: tensor "${name}" is ${t.dtype}; weights must be F32, F16, BF16 or F64`);
  }
  return dt;
}

/**
 * A weight source over stored tensors: one external initializer per weight and root graph (named
 * `prefix + name`, default prefix "frozen."), cast to the compute dtype in the builder that reads it.
 * `stored` gives the initializer uncast (an embedding gathers its rows first and casts only those).
 */
export function storedWeights(stored: StoredWeights, opts: { prefix?: string } = {}): WeightSource {
  const prefix = opts.prefix ?? "frozen.";
  const made = new WeakMap<GraphBuilder, Map<string, Value>>();
  const initializer = (g: GraphBuilder, name: string): Value => {
    const root = g.root();
    let cache = made.get(root);
    if (!cache) made.set(root, cache = new Map());
    const hit = cache.get(name);
    if (hit) return hit;
    const t = stored.get(name);
    if (!t) throw new Error(`weight "${name}" is missing`);
    const v = root.externalInitializer(`${prefix}${name}`, storedGraphDtype(name, t), t.shape, {
      file: t.file,
      offset: t.begin,
      length: t.end - t.begin,
    });
    cache.set(name, v);
    return v;
  };
  return {
    has: (name) => stored.has(name),
    stored: (g, name) => initializer(g, name),
    get(g, name, dtype) {
      const w = initializer(g, name);
      return w.dtype === dtype ? w : castIn(g, w, dtype);
    },
  };
}

/** `x` cast to `dtype` by a node of builder `g` (not of the builder that owns `x`), marked rematerializable. */
export function castIn(g: GraphBuilder, x: Value, dtype: FloatDType): Value {
  const [y] = g.node("Cast", [x], [{ dtype, shape: x.shape }], { to: op.attr.int(ONNX_DTYPE[dtype]) });
  g.remat(y);
  return y;
}

/** How many weights are stored in bf16 or fp16 (what casting to fp32 once at load would widen). */
export function narrowElements(stored: StoredWeights): number {
  let n = 0;
  for (const t of stored.values()) {
    if (t.dtype === "BF16" || t.dtype === "F16") n += t.shape.reduce((a, b) => a * b, 1);
  }
  return n;
}
