/** Dtype checks over built graphs (Loop bodies included), shared by the fp16 tests. */
import type { BuiltNode, GraphBuilder, Value } from "../../lib/graph/builder.ts";
import { isFloat, ONNX_DTYPE } from "../../lib/graph/dtype.ts";

/** Every node of `g` and of its Loop bodies, in order. */
export function* allNodes(g: GraphBuilder): Generator<BuiltNode> {
  for (const n of g.nodes) yield n;
  for (const c of g.children) yield* allNodes(c);
}

/** The float dtypes a node reads or writes (LayerNormalization's float32 statistics left out). */
export function floatDtypesOf(n: BuiltNode): Set<string> {
  const outs = n.op === "LayerNormalization" ? n.outputs.slice(0, 1) : n.outputs;
  const vals = [...n.inputs, ...outs].filter((v): v is Value => v !== null && isFloat(v.dtype));
  return new Set(vals.map((v) => v.dtype));
}

/**
 * Nodes whose float operands disagree: ONNX requires one type T across the float inputs and outputs of
 * every operator the graphs use, except Cast (whose output must be its `to`), Loop (state of any type) and
 * LayerNormalization's statistics (their own stash type). Returns descriptions of the offenders.
 */
export function floatDtypeProblems(g: GraphBuilder): string[] {
  const bad: string[] = [];
  const show = (n: BuiltNode) =>
    `${n.op} ${n.name}: ${n.inputs.map((v) => v?.toString() ?? "-").join(", ")} → ${n.outputs.join(", ")}`;
  for (const n of allNodes(g)) {
    if (n.op === "Loop") continue;
    if (n.op === "Cast") {
      const to = n.attrs.to;
      if (to?.type !== "int" || to.value !== ONNX_DTYPE[n.outputs[0].dtype]) bad.push(show(n));
      continue;
    }
    if (floatDtypesOf(n).size > 1) bad.push(show(n));
  }
  return bad;
}

/** Operator types (with the float dtype they run in) of `g`: `"Softmax:float32"`, … */
export function opDtypes(g: GraphBuilder): Set<string> {
  const out = new Set<string>();
  for (const n of allNodes(g)) {
    const d = [...floatDtypesOf(n)];
    if (n.op !== "Cast" && d.length === 1) out.add(`${n.op}:${d[0]}`);
  }
  return out;
}
