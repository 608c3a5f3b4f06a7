/**
 * The building blocks of the families, as graph fragments: linear layers (with a hook through which LoRA
 * adds its update), RMSNorm and LayerNorm, rotary embeddings, masked causal attention with grouped-query heads, SwiGLU and GPT-2's MLP.
 *
 * Hidden states are 2-D rows `[batch·seq, hidden]` between blocks (every linear layer is one Gemm, see
 * weights.ts); attention reshapes to heads with the runtime `[batch, seq]` shape of the input ids.
 *
 * In float16 (mixed precision) the weights, hidden states, matmuls and elementwise ops are fp16, and the
 * numerically sensitive parts run in float32 between casts: the norms (statistics, scale and shift, with
 * float32 norm weights), the rotary tables (cast to fp16 once built), and the attention softmax (fp16
 * scores cast to float32, the float32 additive mask added, softmax, probabilities cast back), so the mask
 * value need not fit fp16. Embedding rows are gathered from the weight as stored (a trainable float32
 * parameter stays float32, so its gradient is scattered in float32) and cast after the lookup.
 * @module
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import type { Dim } from "../graph/ir.ts";
import * as op from "../graph/ops.ts";
import type { FloatDType, WeightSource } from "./weights.ts";

/**
 * What {@link linear} calls after computing `y` for the module `path` from its input `x`: the value to use
 * instead (`y` itself for a module it leaves alone). lora.ts installs one that adds the adapter's update,
 * so that this module needs nothing of LoRA's.
 */
export type LinearHook = (ctx: Ctx, path: string, x: Value, y: Value) => Value;

/** What every block needs: the graph, compute dtype, weights, and the hook of adapted linear layers. */
export type Ctx = { g: GraphBuilder; dtype: FloatDType; weights: WeightSource; adapt?: LinearHook | null };

/** The additive bias of masked attention scores: large enough to vanish after softmax, finite. */
export const MASK_VALUE = -1e9;

/** The weight `name` from the context's source, in the compute dtype. */
export function weight(ctx: Ctx, name: string): Value {
  return ctx.weights.get(ctx.g, name, ctx.dtype);
}

/** The dtype norms, rotary tables and the attention mask are computed in: float32 when computing in fp16. */
export function sensitiveDtype(dtype: FloatDType): FloatDType {
  return dtype === "float16" ? "float32" : dtype;
}

/**
 * Embedding rows `[n, hidden]` for ids of any shape (flattened): a Gather from the table `name`. In fp16 the
 * rows are gathered from the weight as its source stores it and then cast (see the module documentation).
 */
export function embedding(ctx: Ctx, name: string, ids: Value): Value {
  if (ctx.dtype !== "float16") return op.gather(weight(ctx, name), op.reshape(ids, [-1]));
  const table = ctx.weights.stored?.(ctx.g, name, ctx.dtype) ?? weight(ctx, name);
  return op.cast(op.gather(table, op.reshape(ids, [-1])), ctx.dtype);
}

/**
 * Inverted dropout from `RandomUniformLike` + `Where`, not ONNX Dropout: ONNX Runtime's optimizer removes
 * a Dropout whose mask output is unused even in training mode, which happens in a training graph wherever
 * the dropped input needs no gradient (e.g. layer 0's LoRA input over frozen embeddings). The mask is
 * seeded per module and redrawn every run (and every Loop iteration).
 */
export function dropout(x: Value, p: number, seed: number): Value {
  const [u] = x.g.node("RandomUniformLike", [x], [{ dtype: x.dtype, shape: x.shape }], {
    seed: op.attr.float(seed),
  });
  return op.where(op.greaterOrEqual(u, p), op.mul(x, 1 / (1 - p)), 0);
}

/**
 * Inverted dropout whose mask is a pure function of a scalar `key` (fed per optimizer step), the module
 * `seed` and the element index: see {@link keyedKeep}. No generator state, so a run resumed from a
 * checkpoint draws the same masks as one that never stopped.
 */
export function keyedDropout(x: Value, p: number, key: Value, seed: number): Value {
  return op.where(keyedKeep(x, p, key, seed), op.mul(x, 1 / (1 - p)), 0);
}

/**
 * The keep-mask of {@link keyedDropout} (true where x survives): u = frac(43758.5453 · sin(12.9898 · i +
 * 78.233 · key + seed')) in float64 for element index i, kept where u ≥ p. With `rows` (`[rows, 1]`
 * float64 ids of x's rows, see {@link dropoutRowIds}), i = row id · F + column for x `[rows, F]`, so the
 * mask of a token does not depend on how wide its batch was padded (chunking steps differently pads
 * differently); without, i is the element's flat index. The ramp 12.9898 · i + 78.233 · key depends only
 * on the shape, so every module whose input has the same (symbolic) shape shares one ramp per graph: on a
 * GPU each node costs a launch, and 4 adapted modules per layer would otherwise build 4 ramps of ~9 nodes
 * each. The module's own mask then takes 6 nodes.
 *
 * With `recompute`, ramps are shared within a graph segment (a layer) only, and the ramp, the mask and
 * what uses it are marked for rematerialization (see autodiff.ts): a backward pass built per segment
 * draws them again instead of keeping a float64 ramp alive for the whole step and a masked copy of each
 * adapted module's input (for a 7B model at 16k tokens, 1.9 GB and 0.3–0.9 GB per module).
 */
export function keyedKeep(
  x: Value,
  p: number,
  key: Value,
  seed: number,
  recompute = false,
  rows?: Value,
): Value {
  const g = x.g;
  const cache = keyedRamps.get(g) ?? new Map<string, Value>();
  keyedRamps.set(g, cache);
  const id = `${key.name}|${x.shape.join(",")}${rows ? `|${rows.name}` : ""}${
    recompute ? `|${g.segmentId}` : ""
  }`;
  let base = cache.get(id);
  if (!base) {
    const keyed = op.mul(op.cast(key, "float64"), 78.233);
    if (rows && x.rank === 2 && typeof x.shape[1] === "number") {
      const width = x.shape[1];
      const cols = op.range(
        g.scalar(0, "float64"),
        g.scalar(width, "float64"),
        g.scalar(1, "float64"),
        width,
      );
      base = op.add(op.add(op.mul(cols, 12.9898), op.mul(rows, 12.9898 * width)), keyed);
    } else {
      const shape = op.shapeOf(x);
      const count =
        g.node("ReduceProd", [shape], [{ dtype: "int64", shape: [] }], { keepdims: op.attr.int(0) })[0];
      const index = op.range(g.scalar(0, "float64"), op.cast(count, "float64"), g.scalar(1, "float64"));
      base = op.reshape(op.add(op.mul(index, 12.9898), keyed), shape, x.shape);
    }
    if (recompute) rematChain(base, new Set([x, key, ...(rows ? [rows] : [])]));
    cache.set(id, base);
  }
  const s = op.mul(op.sin(op.add(base, (seed % 100_003) * 0.0371)), 43758.5453);
  const u = op.sub(s, g.node("Floor", [s], [{ dtype: "float64", shape: s.shape }])[0]);
  const keep = op.greaterOrEqual(u, p);
  if (recompute) rematChain(keep, new Set([base]));
  return keep;
}

/**
 * Row ids for keyed dropout, `[B·T, 1]` float64: b · 65536 + t for token t of row b of `ids` `[B, T]`, the
 * same whatever T the batch was padded to.
 */
export function dropoutRowIds(ids: Value): Value {
  const g = ids.g;
  const one = g.scalar(1, "float64"), zero = g.scalar(0, "float64");
  const b = op.range(zero, op.cast(dim(ids, 0), "float64"), one, ids.shape[0]);
  const t = op.range(zero, op.cast(dim(ids, 1), "float64"), one, ids.shape[1]);
  const grid = op.add(op.unsqueeze(op.mul(b, 65536), [1]), op.unsqueeze(t, [0])); // [B, T]
  return op.reshape(grid, [-1, 1]);
}

/** Marks `v` and the nodes it comes from, back to (not including) `stops` or the graph's inputs, rematerializable. */
function rematChain(v: Value, stops: Set<Value>): void {
  const g = v.g;
  const todo = [v];
  while (todo.length) {
    const x = todo.pop()!;
    const n = g.producer.get(x);
    if (!n || n.remat || stops.has(x)) continue;
    n.remat = true;
    for (const i of n.inputs) if (i && !stops.has(i)) todo.push(i);
  }
}

const keyedRamps = new WeakMap<GraphBuilder, Map<string, Value>>();

/**
 * `x W^T + b` for an HF `[out, in]` weight (`conv1d`: `x W + b` for GPT-2's `[in, out]`), passed through the
 * context's hook (`Ctx.adapt`: LoRA's update when the module is adapted). `x` is `[rows, in]`.
 */
export function linear(
  ctx: Ctx,
  path: string,
  x: Value,
  o: { layout: "linear" | "conv1d"; bias: boolean },
): Value {
  const w = weight(ctx, `${path}.weight`);
  const b = o.bias ? weight(ctx, `${path}.bias`) : null;
  const y = op.gemm(x, w, b, { transB: o.layout === "linear" });
  return ctx.adapt ? ctx.adapt(ctx, path, x, y) : y;
}

/**
 * Llama's RMSNorm: `w · x / √(mean(x²) + eps)` over the last axis; Gemma's scales by `(offset + w)` with
 * offset 1 (its weights are stored as w − 1). In fp16: computed in float32 (input cast up, float32 weight)
 * and cast back.
 */
export function rmsNorm(ctx: Ctx, x: Value, weightName: string, eps: number, offset = 0): Value {
  if (ctx.dtype === "float16") {
    const up = { ...ctx, dtype: "float32" as const };
    return op.cast(rmsNorm(up, op.cast(x, "float32"), weightName, eps, offset), ctx.dtype);
  }
  const ms = op.reduceMean(op.mul(x, x), [-1], true);
  const normed = op.mul(x, op.reciprocal(op.sqrt(op.add(ms, eps))));
  const w = weight(ctx, weightName);
  return op.mul(normed, offset === 0 ? w : op.add(w, offset));
}

/** Gemma's soft-capping, `cap · tanh(x / cap)`: a smooth clamp of scores or logits to (−cap, cap). */
export function softcap(x: Value, cap: number | null): Value {
  return cap === null ? x : op.mul(op.tanh(op.mul(x, 1 / cap)), cap);
}

/**
 * LayerNorm with weight and bias (GPT-2). Fused ONNX LayerNormalization in float32; decomposed in float64
 * (ONNX Runtime keeps the fused op's statistics in float32, which would spoil float64 checks). In fp16:
 * the float32 one between casts (so the backward pass is float32 too).
 */
export function layerNorm(ctx: Ctx, x: Value, prefix: string, eps: number): Value {
  if (ctx.dtype === "float16") {
    return op.cast(layerNorm({ ...ctx, dtype: "float32" }, op.cast(x, "float32"), prefix, eps), ctx.dtype);
  }
  const w = weight(ctx, `${prefix}.weight`), b = weight(ctx, `${prefix}.bias`);
  if (ctx.dtype === "float32") return op.layerNorm(x, w, b, eps);
  const centered = op.sub(x, op.reduceMean(x, [-1], true));
  const variance = op.reduceMean(op.mul(centered, centered), [-1], true);
  return op.add(op.mul(op.mul(centered, op.reciprocal(op.sqrt(op.add(variance, eps)))), w), b);
}

/**
 * SiLU, `x · σ(x)`. In float64 written as `x / (1 + e^−x)`: ONNX Runtime fuses `x · σ(x)` into its
 * QuickGelu kernel, which exists for float32 only.
 */
export function silu(x: Value): Value {
  if (x.dtype === "float64") return op.div(x, op.add(op.exp(op.neg(x)), 1));
  return op.mul(x, op.sigmoid(x));
}

/**
 * GPT-2's `gelu_new`, `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`: ONNX Runtime's FastGelu kernel, which is
 * exactly this formula, with a hand-written gradient (13 nodes instead of the 14 autodiff gives the 9-node
 * decomposition). Each node is a pass over a `[B·T, 4·D]` tensor, the widest activations of the model, so
 * on a GPU they cost time although they are elementwise. In float64 (FastGelu has no float64 kernel) the
 * same function as `x · σ(x(2c + 2c·0.044715·x²))`, c = √(2/π), since ½(1 + tanh a) = σ(2a).
 */
export function geluNew(x: Value): Value {
  if (x.dtype !== "float64") return op.fastGelu(x);
  const c = Math.sqrt(2 / Math.PI);
  return op.mul(x, op.sigmoid(op.mul(x, op.add(op.mul(op.mul(x, x), 2 * c * 0.044715), 2 * c))));
}

// ---------------------------------------------------------------------------------------------------------
// Positions and masks
// ---------------------------------------------------------------------------------------------------------

/** A runtime int64 scalar: dimension `axis` of `x`. */
function dim(x: Value, axis: number): Value {
  return op.squeeze(op.shapeOf(x, axis, axis + 1), [0]);
}

/** `x[:, -n:]` along `axis` for a runtime n (an int64 scalar or [1]); n = 0 keeps everything. */
function lastColumns(x: Value, n: Value, axis: number, hint: Dim): Value {
  const start = op.neg(op.reshape(op.cast(n, "int64"), [1]));
  const g = x.g;
  const shape: Dim[] = [...x.shape];
  shape[axis] = hint;
  return g.node("Slice", [x, start, g.ints([2 ** 53]), g.ints([axis])], [{ dtype: x.dtype, shape }])[0];
}

/**
 * Position ids from the attention mask, as HF's `generate` computes them: `cumsum(mask) − 1`, 1 where the
 * mask is 0, the last T columns (T = the number of new tokens). `ids` `[B, T]` int64, `mask` `[B, S]`.
 */
export function positionsFromMask(ids: Value, mask: Value): Value {
  const m = op.cast(op.cast(mask, "bool"), "int64");
  const pos = op.where(op.equal(m, 0), 1, op.sub(op.cumSum(m, 1), 1));
  if (ids.shape[1] === mask.shape[1]) return pos;
  return lastColumns(pos, op.shapeOf(ids, 1, 2), 1, ids.shape[1]);
}

/**
 * The additive attention bias `[B, 1, 1, T, S]` (broadcast over kv heads and the heads sharing them):
 * 0 where query t (absolute index S − T + t) may attend key j — j ≤ S − T + t and mask[j] ≠ 0 — else
 * {@link MASK_VALUE}. With a sliding `window` w, keys must also be less than w positions back
 * (j > S − T + t − w, transformers' `sliding_window_overlay`). `dtype` is the dtype scores are masked in:
 * float32 for an fp16 model ({@link sensitiveDtype}), as −1e9 does not fit fp16.
 */
export function attentionBias(
  ids: Value,
  mask: Value,
  dtype: FloatDType,
  window: number | null = null,
): Value {
  const g = ids.g;
  const s = dim(mask, 1), t = dim(ids, 1);
  const one = g.scalar(1, "int64");
  const keys = op.unsqueeze(op.range(g.scalar(0, "int64"), s, one, mask.shape[1]), [0]);
  const queries = op.unsqueeze(op.range(op.sub(s, t), s, one, ids.shape[1]), [1]);
  let causal = op.lessOrEqual(keys, queries); // [T, S]
  if (window !== null) causal = op.and(causal, op.greater(keys, op.sub(queries, window)));
  const keyOk = op.unsqueeze(op.cast(mask, "bool"), [1, 2, 3]); // [B, 1, 1, 1, S]
  const allowed = op.and(keyOk, causal); // [B, 1, 1, T, S]
  return op.where(allowed, g.scalar(0, dtype), g.scalar(MASK_VALUE, dtype));
}

/**
 * The LM head: final rows `[B·T, D]` → logits `[B, T, V]` (`x W^T` with W `[V, D]`, HF layout: the
 * embedding when tied). With `keep` (k), only the last k positions are projected (k = 0: all).
 */
export function lmHead(
  ctx: Ctx,
  rows: Value,
  weightName: string,
  ids: Value,
  keep?: Value,
  cap: number | null = null,
): Value {
  const w = weight(ctx, weightName);
  const v = w.shape[0] as number, d = rows.shape[1] as number;
  const bt = op.shapeOf(ids);
  let x = rows;
  let seq: Dim = ids.shape[1];
  if (keep) {
    const x3 = op.reshape(rows, op.concat([bt, ctx.g.ints([d])], 0), [ids.shape[0], ids.shape[1], d]);
    seq = `${ids.shape[1]}.kept`;
    x = op.reshape(lastColumns(x3, keep, 1, seq), [-1, d]);
  }
  const logits = softcap(op.gemm(x, w, null, { transB: true }), cap);
  const out = op.concat([op.slice(bt, [0], [1]), ctx.g.ints([-1, v])], 0);
  return op.reshape(logits, out, [ids.shape[0], seq, v]);
}

// ---------------------------------------------------------------------------------------------------------
// Rotary embeddings
// ---------------------------------------------------------------------------------------------------------

/** cos and signed sin tables `[B, T, 1, headDim]` for HF's rotate-half convention. */
export type Rotary = { cos: Value; sin: Value };

/**
 * Rotary tables for positions `[B, T]` (int64): angles `pos · invFreq` (`[B, T, d/2]`, d the rotary
 * dimension), repeated over both halves as HF's `cat((freqs, freqs), -1)`, times `scale` (longrope's
 * attention factor). The sin table carries rotate_half's sign (−sin on the first half), so applying is
 * `x·cos + swapHalves(x)·sin`.
 */
export function rotaryTables(ctx: Ctx, positions: Value, invFreq: Float64Array, scale = 1): Rotary {
  const g = ctx.g;
  const half = invFreq.length;
  const dt = sensitiveDtype(ctx.dtype); // fp16: angles and cos/sin in float32, the tables cast once built
  const inv = g.constant(Array.from(invFreq), [half], dt);
  const angles = op.mul(op.unsqueeze(op.cast(positions, dt), [-1]), inv); // [B, T, d/2]
  let c = op.cos(angles), s = op.sin(angles);
  if (scale !== 1) [c, s] = [op.mul(c, scale), op.mul(s, scale)];
  return {
    cos: op.cast(op.unsqueeze(op.concat([c, c], -1), [2]), ctx.dtype),
    sin: op.cast(op.unsqueeze(op.concat([op.neg(s), s], -1), [2]), ctx.dtype),
  };
}

/**
 * Applies rotary embeddings to `[B, T, heads, hd]`: HF's `x·cos + rotate_half(x)·sin`, where
 * rotate_half(x) = cat(−x2, x1) over the two halves (not interleaved pairs). When the tables are narrower
 * than the head (Phi-3's partial rotary), only the first dimensions rotate and the rest pass through.
 */
export function applyRotary(x: Value, r: Rotary): Value {
  const hd = x.shape[3] as number, d = r.cos.shape[3] as number;
  if (d < hd) {
    const [rot, pass] = op.split(x, [d, hd - d], -1);
    return op.concat([applyRotary(rot, r), pass], -1);
  }
  const [x1, x2] = op.split(x, [hd / 2, hd / 2], -1);
  return op.add(op.mul(x, r.cos), op.mul(op.concat([x2, x1], -1), r.sin));
}

// ---------------------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------------------

/** Rows `[B·T, heads·hd]` → `[B, T, heads, hd]`, with `bt` the runtime `[B, T]`. */
export function toHeads(rows: Value, bt: Value, heads: number, hd: number, hint: readonly Dim[]): Value {
  const shape = op.concat([bt, rows.g.ints([heads, hd])], 0);
  return op.reshape(rows, shape, [hint[0], hint[1], heads, hd]);
}

/**
 * Scaled dot-product attention with grouped-query heads. `q` `[B, H, T, hd]`, `k`/`v` `[B, kvH, S, hd]`,
 * `bias` `[B, 1, 1, T, S]`. Query head h uses kv head ⌊h / (H / kvH)⌋ — HF's `repeat_kv`, done by
 * broadcasting a `[B, kvH, H/kvH, T, hd]` view of q against `[B, kvH, 1, S, hd]` keys rather than copying
 * the keys. Returns rows `[B·T, H·hd]`. With fp16 q/k/v and a float32 `bias`, the scores are masked and
 * softmaxed in float32 (HF's `softmax(..., dtype=float32)`) and the probabilities cast back to fp16; the
 * backward pass keeps only those (see {@link softmaxGradFrom}). `scale` replaces 1/√hd (Gemma's
 * query_pre_attn_scalar^-½); `softcap` caps the scores before the mask (Gemma 2).
 */
export function attention(
  q: Value,
  k: Value,
  v: Value,
  bias: Value,
  heads: number,
  kvHeads: number,
  o: { scale?: number; softcap?: number | null } = {},
): Value {
  const hd = q.shape[3] as number;
  const rep = heads / kvHeads;
  const q5 = op.reshape(op.mul(q, o.scale ?? 1 / Math.sqrt(hd)), [0, kvHeads, rep, -1, hd]);
  const kT = op.unsqueeze(op.transpose(k, [0, 1, 3, 2]), [2]); // [B, kvH, 1, hd, S]
  const raw = softcap(op.cast(op.matmul(q5, kT), bias.dtype), o.softcap ?? null);
  const scores = op.add(raw, bias); // [B, kvH, rep, T, S]
  const exact = op.softmax(scores, -1);
  const probs = op.cast(exact, q.dtype);
  if (probs !== exact) softmaxGradFrom(exact, probs);
  const out = op.matmul(probs, op.unsqueeze(v, [2])); // [B, kvH, rep, T, hd]
  const perHead = op.transpose(op.reshape(out, [0, heads, -1, hd]), [0, 2, 1, 3]); // [B, T, H, hd]
  return op.reshape(perHead, [-1, heads * hd]);
}

/**
 * The softmax producing `exact` (float32) differentiated from its fp16 copy `rounded` (which the product
 * with v keeps for the backward pass anyway), so the float32 probabilities die with the forward pass
 * instead of living until the backward one (`[B, heads, T, S]` floats per layer). The gradient is then
 * the one of the fp16-rounded probabilities, as fp16 attention kernels compute it.
 */
function softmaxGradFrom(exact: Value, rounded: Value): void {
  const n = exact.g.producer.get(exact)!;
  n.deps = [rounded];
  n.grad = (node, [gy]) => {
    const y = op.cast(node.deps![0], gy!.dtype);
    return [op.mul(y, op.sub(gy!, op.reduceSum(op.mul(gy!, y), [-1], true))), null];
  };
}

/** `[B, T, heads, hd]` → `[B, heads, T, hd]`, appended to the cached `[B, heads, P, hd]` when given. */
export function withPast(x: Value, past: Value | undefined, dtype: FloatDType): Value {
  const t = op.transpose(x, [0, 2, 1, 3]);
  return past ? op.concat([op.cast(past, dtype), t], 2) : t;
}
