/**
 * A row-wise function computed a block of rows at a time, forward and backward: what keeps the LM head's
 * `[tokens, vocab]` logits from ever existing for a whole batch (Llama 3's vocabulary is 128,256: 4k tokens
 * of fp32 logits are 2 GB, and a log-softmax and its gradient as much again).
 *
 * The forward pass is a Loop over blocks of `chunk` rows whose per-row results are stacked; the backward
 * pass is its own Loop that computes each block's values again and differentiates them (with
 * {@link gradients} inside the block), so at any moment only one block's intermediates exist. Gradients
 * of the values every block reads (the LM head weight, when trained) are summed across blocks.
 * @module
 */
import { type BuiltNode, GraphBuilder, type Value } from "./builder.ts";
import type { Graph } from "./ir.ts";
import { gradients } from "./autodiff.ts";
import * as op from "./ops.ts";

/** What a block function gets: its builder, the block's rows `[chunk, …]`, per-row companions, shared values. */
export type BlockFn = (g: GraphBuilder, rows: Value, perRow: Value[], shared: Value[]) => Value;

/**
 * `f` over `rows` `[R, D]` in blocks of at most `chunk` rows: returns its per-row results `[R]`. `perRow`
 * values (`[R]`, e.g. target ids) are cut into the same blocks; `shared` values are read whole by every
 * block. The ⌈R / chunk⌉ blocks are made equal (⌈R / blocks⌉ rows each) with fewer than `blocks` rows of
 * zero padding (companions 0), whose results are dropped. `f` must map each row on its own (row i's
 * result depends on row i only).
 */
export function chunkedRows(
  rows: Value,
  perRow: Value[],
  shared: Value[],
  chunk: number,
  f: BlockFn,
  name = "chunked",
): Value {
  if (!Number.isInteger(chunk) || chunk < 1) {
    throw new RangeError(`chunk must be a positive integer, got ${chunk}`);
  }
  if (rows.rank !== 2) throw new RangeError(`chunkedRows: rows must be [R, D], got [${rows.shape}]`);
  const g = rows.g;
  const d = rows.shape[1] as number;
  const count = op.shapeOf(rows, 0, 1); // [1]: R
  const ceilDiv = (a: Value, b: Value | number) =>
    op.div(op.add(a, typeof b === "number" ? b - 1 : op.sub(b, 1)), b);
  const blocks = ceilDiv(count, chunk); // [1]: ⌈R / chunk⌉
  const size = ceilDiv(count, blocks); // [1]: rows per block, ≤ chunk
  const extra = op.sub(op.mul(blocks, size), count);
  const stack = (x: Value, tail: number[]): Value => {
    const zeros = op.constantOfShape(op.concat([extra, g.ints(tail)], 0), 0, x.dtype, ["pad", ...tail]);
    const whole = op.concat([x, zeros], 0);
    return op.reshape(whole, op.concat([blocks, size, g.ints(tail)], 0), ["blocks", "block", ...tail]);
  };
  const rows3 = stack(rows, [d]);
  const perRow2 = perRow.map((p) => stack(p, []));
  const trips = op.squeeze(blocks, [0]);

  const { graph, out } = blockLoopBody(g, name, (body, iter) => {
    const block = op.gather(body.capture(rows3), iter);
    const y = f(
      body,
      block,
      perRow2.map((p) => op.gather(body.capture(p), iter)),
      shared.map((s) => body.capture(s)),
    );
    return { scans: [y], carried: [] };
  });
  const [stacked] = g.node("Loop", [trips, g.constant([1], [], "bool")], [{
    dtype: out[0].dtype,
    shape: ["blocks", chunk],
  }], {
    body: { type: "graph", value: graph },
  });
  const node = g.producer.get(stacked)!;
  node.deps = [rows3, ...perRow2, ...shared];
  node.grad = blockLoopGrad(f, name, perRow2.length);
  const flat = op.reshape(stacked, [-1]);
  const [y] = g.node("Slice", [flat, g.ints([0]), count, g.ints([0])], [{
    dtype: flat.dtype,
    shape: [rows.shape[0]],
  }]);
  return y;
}

/**
 * The backward rule of a block Loop: a Loop over the same blocks that computes each block again, takes
 * its gradients with the block's output gradient as seed, stacks the rows' gradients and sums the shared
 * values' ones. Inputs of the node are `[trips, cond, rows3, ...perRow2, ...shared]` (the last as deps).
 */
function blockLoopGrad(f: BlockFn, name: string, nPerRow: number) {
  return (n: BuiltNode, [gy]: (Value | null)[], want: boolean[]): (Value | null)[] => {
    const [rows3, ...rest] = n.deps!;
    const perRow2 = rest.slice(0, nPerRow), shared = rest.slice(nPerRow);
    const wantRows = want[2], wantShared = shared.map((_, k) => want[3 + nPerRow + k]);
    const outer = gy!.g;
    const trips = op.squeeze(op.shapeOf(rows3, 0, 1), [0]);
    const accInit = shared.filter((_, k) => wantShared[k]).map((s) => op.zerosLike(outer.capture(s)));
    const { graph, out } = blockLoopBody(outer, `${name}.grad`, (body, iter, acc) => {
      const block = op.gather(body.capture(rows3), iter);
      const seed = op.gather(body.capture(gy!), iter);
      const sh = shared.map((s) => body.capture(s));
      const y = f(body, block, perRow2.map((p) => op.gather(body.capture(p), iter)), sh);
      const wrt = [block, ...sh.filter((_, k) => wantShared[k])];
      const [dBlock, ...dShared] = gradients(y, wrt, { seed: op.cast(seed, y.dtype) });
      return {
        scans: wantRows ? [op.cast(dBlock, rows3.dtype)] : [],
        carried: dShared.map((d, k) => op.add(acc[k], op.cast(d, acc[k].dtype))),
      };
    }, accInit);
    const outs = outer.node(
      "Loop",
      [trips, outer.constant([1], [], "bool"), ...accInit],
      out.map((o, k) => ({
        dtype: o.dtype,
        shape: k < accInit.length ? accInit[k].shape : ["blocks", ...o.shape],
      })),
      { body: { type: "graph", value: graph } },
    );
    const sums = outs.slice(0, accInit.length);
    const dRows = wantRows ? outs[accInit.length] : null;
    const grads: (Value | null)[] = [null, null, dRows, ...perRow2.map(() => null)];
    let k = 0;
    for (const w of wantShared) grads.push(w ? sums[k++] : null);
    return grads;
  };
}

/**
 * Builds a Loop body nested in `parent`: inputs (iteration, condition, carried values), outputs
 * (condition, carried values, scans). `build` gets the builder, the iteration number and the carried
 * values, and returns the next carried values and the per-iteration scans.
 */
function blockLoopBody(
  parent: GraphBuilder,
  name: string,
  build: (body: GraphBuilder, iter: Value, carried: Value[]) => { scans: Value[]; carried: Value[] },
  carriedInit: Value[] = [],
): { graph: Graph; out: Value[] } {
  const body = new GraphBuilder(parent.fresh(name), parent);
  const iter = body.input(parent.fresh("iter"), "int64", []);
  const cond = body.input(parent.fresh("cond"), "bool", []);
  const carried = carriedInit.map((c) => body.input(parent.fresh("carried"), c.dtype, c.shape));
  const r = build(body, iter, carried);
  body.output(cond, parent.fresh("cond.out"));
  const out = [...r.carried, ...r.scans].map((v) => body.output(v, parent.fresh(`${name}.out`)));
  parent.children.push(body);
  const graph = body.build();
  const root = parent.root();
  for (const [n, init] of body.initializers) root.initializers.set(n, init);
  graph.initializers = [];
  return { graph, out };
}
