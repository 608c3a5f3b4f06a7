/**
 * Reverse-mode automatic differentiation over the builder's graphs. From a scalar loss and a list of
 * parameters it appends the backward graph, with standard ONNX operators only (no com.microsoft training
 * operators, which onnxruntime-node's builds lack). Each node is differentiated once, however many paths
 * pass through it; gradients reaching a value along several paths are summed with one Sum node.
 *
 * ## Segments: where the memory of a backward pass goes
 * A backward pass reads forward values (a product's operands, a softmax's output), so by default every such
 * value stays alive from the forward pass until its gradient is computed: for a 7B model that is tens of
 * GB of activations. Nodes built inside {@link GraphBuilder.segment} (a decoder layer, the LM head) can have
 * their backward pass built as one unit, a one-iteration Loop whose subgraph ONNX Runtime runs only when the
 * segment's output gradients exist and whose intermediates it frees when it ends:
 * - `save`: forward values are read from the forward pass, except nodes marked
 *   {@link GraphBuilder.remat} (casts of stored bf16/fp16 weights, dropout masks), which are computed again
 *   inside: a weight's fp32 copy never outlives one use.
 * - `recompute` (activation checkpointing): every forward value of the segment is computed again inside,
 *   from the segment's inputs, so between the passes only each segment's inputs are kept. The gradients
 *   are the same computation as without it (nodes that draw random numbers are read, not redrawn).
 * - `inline` (the default): segments are ignored; the backward nodes join the main graph.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GraphBuilder } from "./builder.ts";
 * import { mul, sumAll } from "./ops.ts";
 * const g = new GraphBuilder("fit");
 * const w = g.input("w", "float32", [3]);
 * const loss = sumAll(mul(w, w));
 * const [dw] = gradients(loss, [w]); // 2·w, as nodes of the same graph
 * g.output(dw, "dw");
 * assert.deepEqual([dw.dtype, dw.shape], ["float32", [3]]);
 * ```
 * @module
 */
import { type BuiltNode, GraphBuilder, makeArray, Value } from "./builder.ts";
import { isFloat } from "./dtype.ts";
import type { Attr, Graph } from "./ir.ts";
import { renameGraph, runOnce } from "./loop.ts";
import { VJP } from "./vjp.ts";

/** How segments' backward passes are built (see the module documentation). */
export type SegmentMode = "inline" | "save" | "recompute";

/** Options of {@link gradients}. */
export type GradientOptions = {
  /** The gradient of the loss (default 1); lets a non-scalar loss be differentiated, or scales it. */
  seed?: Value;
  segments?: SegmentMode;
};

/** Operators whose output differs from run to run: recomputing them would not give the forward's value. */
const RANDOM_OPS = new Set([
  "RandomUniformLike",
  "RandomNormalLike",
  "RandomUniform",
  "RandomNormal",
  "Dropout",
]);

/** Gradients of a scalar `loss` with respect to each of `wrt` (zeros where the loss does not depend on one). */
export function gradients(loss: Value, wrt: readonly Value[], options?: Value | GradientOptions): Value[] {
  const o: GradientOptions = options instanceof Value ? { seed: options } : options ?? {};
  const seed = o.seed;
  if (!isFloat(loss.dtype)) {
    throw new TypeError(`gradients: the loss must be floating point, got ${loss.dtype}`);
  }
  if (!seed && loss.rank !== 0) {
    throw new RangeError(`gradients: the loss must be a scalar, got [${loss.shape}]`);
  }
  const g = loss.g;
  const nodes = g.nodes;
  const mode = o.segments ?? "inline";

  // Forward: which values depend on a parameter (and carry floats).
  const live = new Set<Value>(wrt);
  for (const n of nodes) {
    if (inputsOf(n).some((v) => v && live.has(v))) {
      for (const o of n.outputs) if (isFloat(o.dtype)) live.add(o);
    }
  }
  // Backward: which of those the loss depends on.
  const needed = new Set<Value>([loss]);
  const onPath = new Set<BuiltNode>();
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (!n.outputs.some((o) => needed.has(o))) continue;
    if (!inputsOf(n).some((v) => v && live.has(v))) continue;
    onPath.add(n);
    for (const v of inputsOf(n)) if (v && live.has(v)) needed.add(v);
  }
  const wants = (n: BuiltNode) => inputsOf(n).map((v) => !!v && live.has(v) && needed.has(v));

  const main = new Contributions(g);
  main.push(loss, seed ?? g.scalar(1, loss.dtype));

  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (!onPath.has(n)) continue;
    if (mode !== "inline" && n.segment) {
      let j = i;
      while (j > 0 && nodes[j - 1].segment === n.segment) j--;
      segmentBackward(g, nodes.slice(j, i + 1), onPath, wants, main, mode);
      i = j;
      continue;
    }
    const gy = n.outputs.map((v) => main.total(v));
    if (gy.every((d) => d === null)) continue;
    const want = wants(n);
    const gx = ruleOf(n)(n, gy, want);
    inputsOf(n).forEach((v, k) => {
      const d = gx[k];
      if (v && want[k] && d) main.push(v, d);
    });
  }

  return wrt.map((w) => main.total(w) ?? zerosFor(w));
}

/** A node's inputs as gradients see them: its ONNX inputs, then the values its subgraphs read. */
function inputsOf(n: BuiltNode): (Value | null)[] {
  return n.deps ? [...n.inputs, ...n.deps] : n.inputs;
}

function ruleOf(n: BuiltNode) {
  const rule = n.grad ?? VJP[n.op];
  if (!rule) throw new Error(`gradients: no VJP rule for ${n.op} (node ${n.name})`);
  return rule;
}

/** Gradient contributions per value, summed (one Sum node in `g`) when asked for. */
class Contributions {
  readonly #lists = new Map<Value, Value[]>();
  constructor(readonly g: GraphBuilder) {}

  push(v: Value, d: Value): void {
    const list = this.#lists.get(v);
    if (list) list.push(d);
    else this.#lists.set(v, [d]);
  }

  has(v: Value): boolean {
    return (this.#lists.get(v)?.length ?? 0) > 0;
  }

  total(v: Value): Value | null {
    const list = this.#lists.get(v);
    if (!list || list.length === 0) return null;
    if (list.length === 1) return list[0];
    const [sum] = this.g.node("Sum", list, [{ dtype: list[0].dtype, shape: v.shape }]);
    this.#lists.set(v, [sum]);
    return sum;
  }

  values(): Value[] {
    return [...this.#lists.keys()];
  }
}

/**
 * The backward pass of one segment (`segNodes`, consecutive nodes of `g`) as a one-iteration Loop: its
 * output gradients come in from `main`, the gradients of the values it reads from outside go back there.
 */
function segmentBackward(
  g: GraphBuilder,
  segNodes: BuiltNode[],
  onPath: Set<BuiltNode>,
  wants: (n: BuiltNode) => boolean[],
  main: Contributions,
  mode: "save" | "recompute",
): void {
  const inSeg = new Set(segNodes);
  const producedHere = (v: Value) => {
    const p = g.producer.get(v);
    return p !== undefined && inSeg.has(p);
  };
  const b = new GraphBuilder(`${g.name}.grad.${segNodes[0].segment!.name}`, g);
  const local = new Contributions(b);
  const outer = new Contributions(b);
  for (const n of segNodes) {
    for (const v of n.outputs) {
      const d = main.total(v);
      if (d) local.push(v, b.capture(d));
    }
  }
  if (local.values().length === 0) return;

  // forward values as the subgraph reads them: from the forward pass, or computed again in it
  const byName = new Map<string, Value>();
  for (const n of segNodes) for (const v of n.outputs) byName.set(v.name, v);
  const fetched = new Map<Value, Value>();
  const fetch = (v: Value | null): Value | null => {
    if (!v) return null;
    if (!producedHere(v)) return b.capture(v);
    const hit = fetched.get(v);
    if (hit) return hit;
    const p = g.producer.get(v)!;
    if (!(p.remat || (mode === "recompute" && !RANDOM_OPS.has(p.op)))) return b.capture(v);
    const outs = b.node(
      p.op,
      p.inputs.map(fetch),
      p.outputs.map((o) => ({ dtype: o.dtype, shape: o.shape })),
      cloneAttrs(p.attrs, (name) => {
        const w = byName.get(name);
        return w ? fetch(w)!.name : name;
      }),
      p.domain,
    );
    const copy = b.producer.get(outs[0])!;
    copy.remat = p.remat;
    copy.grad = p.grad;
    p.outputs.forEach((o, k) => fetched.set(o, outs[k]));
    copy.deps = p.deps?.map((v) => fetch(v)!);
    return fetched.get(v)!;
  };

  for (let i = segNodes.length - 1; i >= 0; i--) {
    const n = segNodes[i];
    if (!onPath.has(n)) continue;
    const gy = n.outputs.map((v) => local.total(v));
    if (gy.every((d) => d === null)) continue;
    const want = wants(n);
    const view: BuiltNode = {
      ...n,
      inputs: n.inputs.map(fetch),
      outputs: n.outputs.map((v) => fetch(v)!),
      deps: n.deps?.map((v) => fetch(v)!),
    };
    const gx = ruleOf(n)(view, gy, want);
    inputsOf(n).forEach((v, k) => {
      const d = gx[k];
      if (!v || !want[k] || !d) return;
      (producedHere(v) ? local : outer).push(v, d);
    });
  }

  const targets = outer.values();
  if (targets.length === 0) return;
  const sums = targets.map((v) => outer.total(v)!);
  pruneDead(b, sums);
  runOnce(g, b, sums).forEach((d, k) => main.push(targets[k], d));
}

/** A node's attributes for a copy of it, subgraphs' outer-scope names mapped through `rename`. */
function cloneAttrs(attrs: Record<string, Attr>, rename: (name: string) => string): Record<string, Attr> {
  const out: Record<string, Attr> = {};
  for (const [k, a] of Object.entries(attrs)) {
    if (a.type !== "graph") {
      out[k] = a;
      continue;
    }
    const map = new Map<string, string>();
    for (const name of freeNames(a.value)) {
      const to = rename(name);
      if (to !== name) map.set(name, to);
    }
    out[k] = map.size ? { type: "graph", value: renameGraph(a.value, map) } : a;
  }
  return out;
}

/** Names a graph (and its subgraphs) reads from enclosing scopes. */
export function freeNames(graph: Graph): Set<string> {
  const defined = new Set<string>([
    ...graph.inputs.map((i) => i.name),
    ...graph.initializers.map((t) => t.name),
  ]);
  for (const n of graph.nodes) for (const o of n.outputs) defined.add(o);
  const free = new Set<string>();
  for (const n of graph.nodes) {
    for (const i of n.inputs) if (i && !defined.has(i)) free.add(i);
    for (const a of Object.values(n.attrs)) {
      if (a.type === "graph") { for (const f of freeNames(a.value)) if (!defined.has(f)) free.add(f); }
    }
  }
  return free;
}

/** Removes nodes of `b` none of whose outputs reach `keep` (values computed again but never read). */
function pruneDead(b: GraphBuilder, keep: readonly Value[]): void {
  const used = new Set<string>(keep.map((v) => v.name));
  const alive: BuiltNode[] = [];
  for (let i = b.nodes.length - 1; i >= 0; i--) {
    const n = b.nodes[i];
    if (!n.outputs.some((o) => used.has(o.name))) continue;
    alive.push(n);
    for (const v of n.inputs) if (v) used.add(v.name);
    for (const a of Object.values(n.attrs)) {
      if (a.type === "graph") { for (const f of freeNames(a.value)) used.add(f); }
    }
  }
  alive.reverse();
  b.nodes.splice(0, b.nodes.length, ...alive);
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
