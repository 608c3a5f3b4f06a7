/**
 * Finite-difference gradient checks for graphs: builds f(inputs) in float64, reduces it to a scalar
 * loss Σ f·R with fixed random weights R (so every output element matters differently), appends the
 * backward graph, and compares ONNX Runtime's analytic gradients with central differences.
 */
import assert from "node:assert/strict";
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import { gradients } from "../../lib/graph/autodiff.ts";
import * as op from "../../lib/graph/ops.ts";
import { serializeModel } from "../../lib/graph/serialize.ts";
import { type HostTensor, ModelSession } from "../../lib/runtime/session.ts";
import type { DType } from "../../lib/graph/dtype.ts";
import { mulberry32 } from "../../lib/data/random.ts";

/** A seeded uniform generator in [0, 1) (the project's mulberry32). */
export const rng = mulberry32;

export type CheckInput = {
  name: string;
  shape: number[];
  /** Values; random in [lo, hi) by default. */
  data?: number[];
  lo?: number;
  hi?: number;
  /** Integer inputs are fed but not differentiated. */
  dtype?: DType;
};

export type CheckOptions = {
  dtype?: "float64" | "float32";
  h?: number;
  rtol?: number;
  atol?: number;
  seed?: number;
};

/**
 * Checks d loss / d input for every float input of `f` against central differences.
 * Returns the largest relative error seen.
 */
export async function gradCheck(
  inputs: CheckInput[],
  f: (g: GraphBuilder, xs: Value[]) => Value,
  o: CheckOptions = {},
): Promise<number> {
  const dtype = o.dtype ?? "float64";
  const rand = rng(o.seed ?? 7);
  const g = new GraphBuilder("gradcheck");
  const xs = inputs.map((i) => g.input(i.name, i.dtype ?? dtype, i.shape));
  const y = f(g, xs);
  const yShape = y.shape.map((d) => {
    if (typeof d !== "number") throw new Error(`gradCheck: output shape must be static, got ${y.shape}`);
    return d;
  });
  const n = yShape.reduce((a, b) => a * b, 1);
  const weights = Array.from({ length: n }, () => rand() * 2 - 1);
  const w = g.constant(weights, yShape, y.dtype);
  const loss = op.sumAll(op.mul(y, w));
  g.output(loss, "loss");
  const floatIdx = inputs.map((i, k) => (i.dtype && i.dtype.startsWith("int") ? -1 : k)).filter((k) =>
    k >= 0
  );
  const grads = gradients(loss, floatIdx.map((k) => xs[k]));
  grads.forEach((d, j) => g.output(d, `grad_${inputs[floatIdx[j]].name}`));
  const session = await ModelSession.create(serializeModel(g.build()), { intraOpThreads: 1 });

  const values = inputs.map((i) =>
    i.data ? [...i.data] : Array.from({ length: i.shape.reduce((a, b) => a * b, 1) }, () => {
      const lo = i.lo ?? -1, hi = i.hi ?? 1;
      return lo + (hi - lo) * rand();
    })
  );
  const feeds = (vals: number[][]): Record<string, HostTensor> => {
    const out: Record<string, HostTensor> = {};
    inputs.forEach((i, k) => {
      const dt = i.dtype ?? dtype;
      if (dt === "int64") {
        out[i.name] = { dtype: "int64", dims: i.shape, data: BigInt64Array.from(vals[k], BigInt) };
      } else if (dt === "int32") {
        out[i.name] = { dtype: "int32", dims: i.shape, data: Int32Array.from(vals[k]) };
      } else if (dt === "float32") {
        out[i.name] = { dtype: "float32", dims: i.shape, data: Float32Array.from(vals[k]) };
      } else out[i.name] = { dtype: "float64", dims: i.shape, data: Float64Array.from(vals[k]) };
    });
    return out;
  };
  const res = await session.run(feeds(values));
  const lossAt = async (vals: number[][]) => Number((await session.run(feeds(vals), ["loss"])).loss.data[0]);
  const h = o.h ?? (dtype === "float64" ? 1e-6 : 1e-2);
  const rtol = o.rtol ?? (dtype === "float64" ? 1e-6 : 2e-2);
  const atol = o.atol ?? (dtype === "float64" ? 1e-8 : 1e-3);
  let worst = 0;
  for (const k of floatIdx) {
    const analytic = Array.from(res[`grad_${inputs[k].name}`].data as Float64Array, Number);
    assert.equal(analytic.length, values[k].length, `gradient of ${inputs[k].name} has the wrong size`);
    for (let e = 0; e < values[k].length; e++) {
      const plus = values.map((v) => [...v]), minus = values.map((v) => [...v]);
      plus[k][e] += h;
      minus[k][e] -= h;
      const numeric = (await lossAt(plus) - await lossAt(minus)) / (2 * h);
      const err = Math.abs(numeric - analytic[e]);
      const rel = err / Math.max(Math.abs(numeric), Math.abs(analytic[e]), 1e-12);
      if (err > atol + rtol * Math.abs(numeric)) {
        throw new assert.AssertionError({
          message: `d loss/d ${inputs[k].name}[${e}]: analytic ${analytic[e]} vs numeric ${numeric}`,
        });
      }
      worst = Math.max(worst, err < atol ? 0 : rel);
    }
  }
  await session.release();
  return worst;
}
