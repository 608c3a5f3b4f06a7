/**
 * Row blocks (lib/graph/chunked.ts) and segment backward passes (lib/graph/autodiff.ts): the same values
 * and gradients as the plain graph, in float64, whatever the block size and segment mode.
 */
import assert from "node:assert/strict";
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import { gradients, type SegmentMode } from "../../lib/graph/autodiff.ts";
import { chunkedRows } from "../../lib/graph/chunked.ts";
import * as op from "../../lib/graph/ops.ts";
import { type HostTensor, ModelSession } from "../../lib/runtime/session.ts";
import { rng } from "./_gradcheck.ts";

const f64 = (data: number[], dims: number[]): HostTensor => ({
  dtype: "float64",
  dims,
  data: Float64Array.from(data),
});
const randoms = (n: number, seed: number) => {
  const r = rng(seed);
  return Array.from({ length: n }, () => r() * 2 - 1);
};

/** Log-softmax of `rows · Wᵀ` picked at `targets`: the LM head's per-token log-prob. */
function pickLogProb(_g: GraphBuilder, rows: Value, [targets]: Value[], [w]: Value[]): Value {
  const logp = op.logSoftmax(op.gemm(rows, w, null, { transB: true }), 1);
  return op.squeeze(op.gatherElements(logp, op.unsqueeze(targets, [1]), 1), [1]);
}

async function run(
  build: (g: GraphBuilder) => Record<string, Value>,
  feeds: Record<string, HostTensor>,
): Promise<Record<string, Float64Array>> {
  const g = new GraphBuilder("t");
  for (const [name, v] of Object.entries(build(g))) g.output(v, name);
  const s = await ModelSession.create(g.build(), { intraOpThreads: 1, describe: (n) => g.describe(n) });
  try {
    const out = await s.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float64Array]));
  } finally {
    await s.release();
  }
}

function near(a: Float64Array, b: Float64Array, tol: number, what: string) {
  assert.equal(a.length, b.length, `${what}: lengths`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(
      Math.abs(a[i] - b[i]) <= tol * Math.max(1, Math.abs(b[i])),
      `${what}[${i}]: ${a[i]} vs ${b[i]}`,
    );
  }
}

for (const [R, chunk] of [[7, 3], [6, 3], [5, 8], [1, 1]]) {
  Deno.test(`chunkedRows: ${R} rows in blocks of ${chunk} equal the whole, values and gradients`, async () => {
    const D = 4, V = 6;
    const feeds = {
      rows: f64(randoms(R * D, 1), [R, D]),
      w: f64(randoms(V * D, 2), [V, D]),
      targets: {
        dtype: "int64" as const,
        dims: [R],
        data: BigInt64Array.from({ length: R }, (_, i) => BigInt((i * 5) % V)),
      },
      weights: f64(randoms(R, 3), [R]),
    };
    const build = (chunked: boolean) => (g: GraphBuilder) => {
      const rows = g.input("rows", "float64", ["r", D]);
      const w = g.input("w", "float64", [V, D]);
      const targets = g.input("targets", "int64", ["r"]);
      const weights = g.input("weights", "float64", ["r"]);
      const y = chunked
        ? chunkedRows(rows, [targets], [w], chunk, pickLogProb)
        : pickLogProb(g, rows, [targets], [w]);
      const loss = op.sumAll(op.mul(y, weights));
      const [drows, dw] = gradients(loss, [rows, w]);
      return { y, drows, dw };
    };
    const whole = await run(build(false), feeds);
    const blocks = await run(build(true), feeds);
    near(blocks.y, whole.y, 1e-14, "y");
    near(blocks.drows, whole.drows, 1e-13, "d rows");
    near(blocks.dw, whole.dw, 1e-13, "d W");
  });
}

/** A two-layer residual MLP, each layer a segment, whose weights are float32 "stored" and cast for use. */
function twoLayers(g: GraphBuilder, x: Value, ws: Value[], stored: Value[]): Value {
  let h = x;
  ws.forEach((w, i) => {
    h = g.segment(`layer${i}`, () => {
      const frozen = g.remat(
        g.node("Cast", [stored[i]], [{ dtype: "float64", shape: stored[i].shape }], {
          to: op.attr.int(11),
        })[0],
      );
      const a = op.tanh(op.gemm(h, w, null, { transB: true }));
      return op.add(h, op.mul(op.sigmoid(op.gemm(a, frozen, null, { transB: true })), a));
    });
  });
  return h;
}

for (const mode of ["save", "recompute"] as SegmentMode[]) {
  Deno.test(`segments (${mode}): gradients equal the inline backward pass`, async () => {
    const D = 5, R = 3;
    const feeds: Record<string, HostTensor> = {
      x: f64(randoms(R * D, 4), [R, D]),
      w0: f64(randoms(D * D, 5), [D, D]),
      w1: f64(randoms(D * D, 6), [D, D]),
      s0: { dtype: "float32", dims: [D, D], data: Float32Array.from(randoms(D * D, 7)) },
      s1: { dtype: "float32", dims: [D, D], data: Float32Array.from(randoms(D * D, 8)) },
    };
    const build = (segments: SegmentMode) => (g: GraphBuilder) => {
      const x = g.input("x", "float64", ["r", D]);
      const ws = [g.input("w0", "float64", [D, D]), g.input("w1", "float64", [D, D])];
      const stored = [g.input("s0", "float32", [D, D]), g.input("s1", "float32", [D, D])];
      const loss = op.sumAll(op.mul(twoLayers(g, x, ws, stored), 0.5));
      const [dx, dw0, dw1] = gradients(loss, [x, ...ws], { segments });
      return { dx, dw0, dw1 };
    };
    const inline = await run(build("inline"), feeds);
    const seg = await run(build(mode), feeds);
    for (const k of ["dx", "dw0", "dw1"]) near(seg[k], inline[k], 1e-15, k);
  });
}

Deno.test("segments: the backward pass of each segment is one Loop that recomputes what it must", () => {
  const g = new GraphBuilder("t");
  const D = 3;
  const x = g.input("x", "float64", ["r", D]);
  const ws = [g.input("w0", "float64", [D, D]), g.input("w1", "float64", [D, D])];
  const stored = [g.input("s0", "float32", [D, D]), g.input("s1", "float32", [D, D])];
  const loss = op.sumAll(twoLayers(g, x, ws, stored));
  const before = g.nodes.length;
  gradients(loss, [x, ...ws], { segments: "save" });
  const loops = g.nodes.slice(before).filter((n) => n.op === "Loop");
  assert.equal(loops.length, 2, "one Loop per segment");
  // save mode computes again only the rematerializable casts: each body has exactly one Cast of a stored weight
  for (const l of loops) {
    const body = l.attrs.body.type === "graph" ? l.attrs.body.value : undefined;
    const casts = body!.nodes.filter((n) =>
      n.op === "Cast" && (n.inputs[0] === "s0" || n.inputs[0] === "s1")
    );
    assert.equal(casts.length, 1);
    assert.ok(!body!.nodes.some((n) => n.op === "Tanh"), "save mode reads the forward's tanh");
  }
});
