/**
 * Wraps a graph as the body of an ONNX `Loop`: the way one session run executes many optimizer steps (or
 * accumulates gradients over micro-batches) while trainable state stays on the device. Carried values
 * (parameters, optimizer moments) flow from one iteration to the next; stacked inputs supply one slice per
 * iteration along a leading axis; scan outputs (loss, metrics) come back stacked.
 * @module
 */
import type { GraphBuilder, Value } from "./builder.ts";
import type { Attr, Graph } from "./ir.ts";
import * as op from "./ops.ts";

/** How a body graph's inputs and outputs map onto the loop. */
export type LoopSpec = {
  /** Body input → body output pairs whose values flow to the next iteration, with their initial values. */
  carried: { input: string; output: string; init: Value }[];
  /** Body inputs fed, at iteration i, with slice i of a value stacked along axis 0. */
  stacked: { input: string; value: Value }[];
  /** Body outputs stacked along a new leading axis. */
  scans: string[];
  /** Body inputs that read a value of the parent's scope, unchanged across iterations. */
  outer?: Record<string, Value>;
  /** Iterations; by default the leading size of the first stacked value. */
  trips?: Value;
};

/** The loop's results: carried values after the last iteration, and the stacked scan outputs. */
export type LoopResult = { finals: Value[]; scans: Value[] };

/**
 * Adds a Loop node to `parent` whose body is `body` (a graph built by its own, parentless builder).
 * Every body input is carried, stacked or read from the parent's scope (`outer`: an outer-scope reference,
 * no copy). The body's initializers (frozen weights, constants) are hoisted into the parent's root, so a
 * weight used by every iteration is stored once.
 */
export function addLoop(parent: GraphBuilder, body: GraphBuilder, spec: LoopSpec): LoopResult {
  const graph = body.build();
  const root = parent.root();
  for (const [name, init] of body.initializers) {
    root.initializers.set(name, init); // shared weights: one copy, referenced from inside the loop
  }
  graph.initializers = [];

  const rename = new Map<string, string>();
  const byName = new Map(graph.inputs.map((i) => [i.name, i]));
  const outByName = new Map(graph.outputs.map((o) => [o.name, o]));
  const need = (name: string, what: string) => {
    if (!byName.has(name) && what === "input") throw new Error(`loop: the body has no input "${name}"`);
    if (!outByName.has(name) && what === "output") throw new Error(`loop: the body has no output "${name}"`);
  };
  for (const c of spec.carried) {
    need(c.input, "input");
    need(c.output, "output");
    rename.set(c.input, parent.fresh(`${c.input}.cur`));
  }
  for (const s of spec.stacked) {
    need(s.input, "input");
    rename.set(s.input, parent.fresh(`${s.input}.i`));
  }
  for (const [input, value] of Object.entries(spec.outer ?? {})) {
    need(input, "input");
    rename.set(input, value.name);
  }
  const unmapped = graph.inputs.filter((i) => !rename.has(i.name)).map((i) => i.name);
  if (unmapped.length) throw new Error(`loop: body inputs without a source: ${unmapped.join(", ")}`);
  for (const o of graph.outputs) rename.set(o.name, parent.fresh(`${o.name}.out`));
  for (const s of spec.scans) need(s, "output");

  const iter = parent.fresh("iter"), condIn = parent.fresh("cond.in"), condOut = parent.fresh("cond.out");
  const renamed = renameGraph(graph, rename);
  // slices of the stacked inputs for this iteration
  const sliceNodes = spec.stacked.map((s) => ({
    op: "Gather",
    name: parent.fresh("n_LoopSlice"),
    inputs: [s.value.name, iter],
    outputs: [rename.get(s.input)!],
    attrs: { axis: { type: "int", value: 0 } as Attr },
  }));
  const info = (name: string) => byName.get(name)!;
  const outInfo = (name: string) => outByName.get(name)!;
  const loopBody: Graph = {
    name: `${graph.name}.loop`,
    nodes: [
      ...sliceNodes,
      ...renamed.nodes,
      { op: "Identity", name: parent.fresh("n_LoopCond"), inputs: [condIn], outputs: [condOut], attrs: {} },
    ],
    inputs: [
      { name: iter, dtype: "int64", shape: [] },
      { name: condIn, dtype: "bool", shape: [] },
      ...spec.carried.map((c) => ({ ...info(c.input), name: rename.get(c.input)! })),
    ],
    outputs: [
      { name: condOut, dtype: "bool", shape: [] },
      ...spec.carried.map((c) => ({ ...outInfo(c.output), name: rename.get(c.output)! })),
      ...spec.scans.map((s) => ({ ...outInfo(s), name: rename.get(s)! })),
    ],
    initializers: [],
  };

  const trips = spec.trips ?? op.squeeze(op.shapeOf(spec.stacked[0].value, 0, 1), [0]);
  const cond = parent.constant([1], [], "bool");
  const steps = spec.stacked[0]?.value.shape[0] ?? "steps";
  const outs = parent.node(
    "Loop",
    [trips, cond, ...spec.carried.map((c) => c.init)],
    [
      ...spec.carried.map((c) => ({ dtype: c.init.dtype, shape: c.init.shape })),
      ...spec.scans.map((s) => ({ dtype: outInfo(s).dtype, shape: [steps, ...outInfo(s).shape] })),
    ],
    { body: { type: "graph", value: loopBody } },
  );
  parent.children.push(body);
  return { finals: outs.slice(0, spec.carried.length), scans: outs.slice(spec.carried.length) };
}

/**
 * Runs `body`, a builder nested in `parent` that reads parent values by name (see
 * {@link GraphBuilder.capture}), once: a Loop of one iteration. ONNX Runtime runs a subgraph's nodes only
 * when its Loop node runs, frees their intermediates when it ends, and does not merge them with the
 * parent's nodes, which is what lets a backward pass recompute forward values just in time. Returns
 * `outputs` as values of `parent`.
 */
export function runOnce(parent: GraphBuilder, body: GraphBuilder, outputs: readonly Value[]): Value[] {
  const outs = outputs.map((v) => body.output(v, parent.fresh(`${v.name}.once`)));
  const graph = body.build();
  const root = parent.root();
  for (const [name, init] of body.initializers) root.initializers.set(name, init);
  const iter = parent.fresh("iter"), condIn = parent.fresh("cond.in"), condOut = parent.fresh("cond.out");
  const loopBody: Graph = {
    name: graph.name,
    nodes: [
      ...graph.nodes,
      { op: "Identity", name: parent.fresh("n_LoopCond"), inputs: [condIn], outputs: [condOut], attrs: {} },
    ],
    inputs: [{ name: iter, dtype: "int64", shape: [] }, { name: condIn, dtype: "bool", shape: [] }],
    outputs: [{ name: condOut, dtype: "bool", shape: [] }, ...graph.outputs],
    initializers: [],
  };
  const stacked = parent.node(
    "Loop",
    [parent.constant([1], [], "int64"), parent.constant([1], [], "bool")],
    outs.map((o) => ({ dtype: o.dtype, shape: [1, ...o.shape] })),
    { body: { type: "graph", value: loopBody } },
  );
  parent.children.push(body);
  return stacked.map((v) => op.squeeze(v, [0]));
}

/** Renames values throughout a graph and its nested subgraphs (names are unique across scopes). */
export function renameGraph(g: Graph, map: ReadonlyMap<string, string>): Graph {
  const r = (n: string) => map.get(n) ?? n;
  return {
    ...g,
    nodes: g.nodes.map((n) => ({
      ...n,
      inputs: n.inputs.map(r),
      outputs: n.outputs.map(r),
      attrs: Object.fromEntries(
        Object.entries(n.attrs).map((
          [k, a],
        ) => [k, a.type === "graph" ? { type: "graph", value: renameGraph(a.value, map) } : a]),
      ),
    })),
    inputs: g.inputs.map((i) => ({ ...i, name: r(i.name) })),
    outputs: g.outputs.map((o) => ({ ...o, name: r(o.name) })),
  };
}
