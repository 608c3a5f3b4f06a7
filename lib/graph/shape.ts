/**
 * Static shape reasoning over possibly symbolic dimensions. A symbolic dimension is a name; two equal
 * names are the same size. Unknown sizes get fresh names ("?n"), which never count as 1: broadcasting
 * along a dimension is only recognized when that dimension is statically 1.
 * @module
 */
import type { Dim } from "./ir.ts";

let unknowns = 0;
/** A fresh unknown dimension. */
export function unknownDim(): Dim {
  return `?${++unknowns}`;
}

/** Numpy-style broadcast of shapes, as ONNX's multidirectional broadcasting defines it. */
export function broadcastShapes(...shapes: (readonly Dim[])[]): Dim[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const k = s.length - rank + i;
      if (k < 0) continue;
      const e = s[k];
      if (e === 1) continue;
      if (d === 1) d = e;
      else if (d !== e) {
        if (typeof d === "number" && typeof e === "number") {
          throw new RangeError(`cannot broadcast shapes ${shapes.map(fmt).join(" and ")}`);
        }
        if (typeof e === "number") d = e; // a known size wins over a symbolic one
      }
    }
    out.push(d);
  }
  return out;
}

/** Axes of `out` along which `inShape` (right-aligned) was broadcast: the ones to sum a gradient over. */
export function broadcastAxes(inShape: readonly Dim[], outShape: readonly Dim[]): number[] {
  const axes: number[] = [];
  const lead = outShape.length - inShape.length;
  for (let i = 0; i < outShape.length; i++) {
    if (i < lead) axes.push(i);
    else if (inShape[i - lead] === 1 && outShape[i] !== 1) axes.push(i);
  }
  return axes;
}

/** Normalizes a possibly negative axis against a rank. */
export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new RangeError(`axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** Product of static dims, or undefined when any is symbolic. */
export function staticSize(shape: readonly Dim[]): number | undefined {
  let n = 1;
  for (const d of shape) {
    if (typeof d !== "number") return undefined;
    n *= d;
  }
  return n;
}

/** Output shape of ONNX Reshape with a constant target (0 copies a dim, -1 is inferred). */
export function reshapeShape(input: readonly Dim[], target: readonly number[]): Dim[] {
  const out: Dim[] = target.map((t, i) => (t === 0 ? input[i] : t));
  const hole = out.indexOf(-1);
  if (hole >= 0) {
    const total = staticSize(input);
    const rest = staticSize(out.filter((_, i) => i !== hole));
    if (total !== undefined && rest !== undefined) out[hole] = total / rest;
    else {
      // symbolic: the hole is the one input dim left after cancelling the known ones, when that is clear
      const others = out.filter((_, i) => i !== hole);
      const remaining = [...input];
      for (const d of others) {
        const k = remaining.indexOf(d);
        if (k >= 0) remaining.splice(k, 1);
      }
      out[hole] = remaining.length === 0 ? 1 : remaining.length === 1 ? remaining[0] : remaining.join("*");
    }
  }
  return out;
}

/** Formats a shape for messages. */
export function fmt(shape: readonly Dim[]): string {
  return `[${shape.join(", ")}]`;
}
