/**
 * Weights → graph values. A {@link WeightSource} answers "the tensor named X" (canonical HF name, HF
 * layout) with a value of the graph being built: a frozen initializer, a trainable input, or a mix.
 *
 * ## Layout decision
 * Weights keep their Hugging Face layout everywhere: `nn.Linear` `[out, in]` (Llama family, LM heads),
 * GPT-2 `Conv1D` `[in, out]`, embeddings `[vocab, hidden]`. The model keeps hidden states as 2-D rows
 * `[batch·seq, hidden]` and applies every linear layer as one ONNX `Gemm` with `transB = 1` for `[out, in]`
 * weights (`transB = 0` for Conv1D): the transposition is an attribute the kernel reads the weight through,
 * so no Transpose node ever runs, not once at load and not per step, and the gradient of a trainable
 * weight comes out in the same HF layout (Gemm's VJP is again a Gemm). Checkpoints load without any
 * reordering, trainable parameters save back under their own names, and the tied LM head reads the
 * embedding matrix as it is.
 * @module
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import * as op from "../graph/ops.ts";
import { f32ToF16Bits } from "./float_codec.ts";

/**
 * Compute dtypes the decoder supports. float16 is mixed precision: fp16 weights, activations and matmuls,
 * with norms, attention softmax and log-probs in float32 (see decoder.ts).
 */
export type FloatDType = "float32" | "float64" | "float16";

/** A tensor in host memory, fp32, HF layout (what checkpoint.ts loads). */
export type HostWeight = { shape: number[]; data: Float32Array };

/** Weights by canonical HF name (GPT-2 names without the `transformer.` prefix). */
export type WeightMap = Map<string, HostWeight>;

/** Where the graph gets each weight. */
export interface WeightSource {
  /** The tensor `name` as a value usable in builder `g`, in `dtype`. Throws when unknown. */
  get(g: GraphBuilder, name: string, dtype: FloatDType): Value;
  /** Whether the source knows `name`. */
  has(name: string): boolean;
  /**
   * The tensor `name` as the source holds it for a graph computing in `dtype`, before any cast: a trainable
   * float32 parameter stays float32; a frozen initializer is already `dtype`. Lets an embedding lookup
   * gather rows first and cast only those (and keep its gradient's scatter in float32). Optional: sources
   * without it are read through {@link WeightSource.get}.
   */
  stored?(g: GraphBuilder, name: string, dtype: FloatDType): Value;
}

/**
 * Frozen weights as initializers, created once per root graph and dtype (on first use, so a graph only
 * carries the weights it reads) and shared by every forward pass built into that graph, Loop bodies
 * included (they refer to the root's initializers). Initializers are named `prefix + name` (default prefix
 * "frozen.", so a trainable input of the same HF name never collides), with a `.float64` / `.float16`
 * suffix in those dtypes. float16 initializers hold the fp32 weights rounded to nearest even (half the
 * memory); a float16 graph still reads its norm weights as float32 ones (small vectors).
 */
export function frozenWeights(weights: WeightMap, opts: { prefix?: string } = {}): WeightSource {
  const prefix = opts.prefix ?? "frozen.";
  const made = new WeakMap<GraphBuilder, Map<string, Value>>();
  const source: WeightSource = {
    has: (name) => weights.has(name),
    stored: (g, name, dtype) => source.get(g, name, dtype),
    get(g, name, dtype) {
      const root = g.root();
      let cache = made.get(root);
      if (!cache) made.set(root, cache = new Map());
      const key = `${dtype}|${name}`;
      const hit = cache.get(key);
      if (hit) return hit;
      const t = weights.get(name);
      if (!t) throw new Error(`weight "${name}" is missing`);
      const data = dtype === "float64"
        ? Float64Array.from(t.data)
        : dtype === "float16"
        ? Uint16Array.from(t.data, f32ToF16Bits)
        : t.data;
      const v = root.initializer(`${prefix}${name}${dtype === "float32" ? "" : `.${dtype}`}`, data, t.shape);
      cache.set(key, v);
      return v;
    },
  };
  return source;
}

/**
 * Values given by name (trainable parameters, graph inputs) over a base source for the rest. Values of
 * another dtype are cast (a float32 parameter in a float64 graph).
 */
export function overlayWeights(values: Record<string, Value>, base?: WeightSource): WeightSource {
  return {
    has: (name) => name in values || (base?.has(name) ?? false),
    get(g, name, dtype) {
      const v = values[name];
      if (v) return op.cast(v, dtype);
      if (!base) throw new Error(`weight "${name}" is missing`);
      return base.get(g, name, dtype);
    },
    stored(g, name, dtype) {
      const v = values[name];
      if (v) return v;
      if (!base) throw new Error(`weight "${name}" is missing`);
      return base.stored ? base.stored(g, name, dtype) : base.get(g, name, dtype);
    },
  };
}

/** Every element count of a weight map (for reports). */
export function countParameters(weights: WeightMap): number {
  let n = 0;
  for (const t of weights.values()) n += t.data.length;
  return n;
}
