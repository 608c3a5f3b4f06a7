import assert from "node:assert/strict";
import * as op from "../../lib/graph/ops.ts";
import { sequenceLogProbs } from "../../lib/model/logprobs.ts";
import { gradCheck, rng } from "../graph/_gradcheck.ts";
import { compile, floats, i64 } from "./_decoder_helpers.ts";

const N = 2, T = 5, V = 7;
const LABELS = [-100, -100, 3, 6, 0, /**/ -100, 2, 2, -100, -100];

/** log softmax in plain TypeScript, HF's shift: logits at t score the label at t + 1. */
function reference(logits: number[], labels: number[]) {
  const tok: number[] = [], sums: number[] = [], counts: number[] = [];
  for (let n = 0; n < N; n++) {
    let s = 0, c = 0;
    for (let t = 0; t < T - 1; t++) {
      const y = labels[n * T + t + 1];
      if (y === -100) {
        tok.push(0);
        continue;
      }
      const row = logits.slice((n * T + t) * V, (n * T + t + 1) * V);
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
      tok.push(row[y] - lse);
      s += row[y] - lse;
      c++;
    }
    sums.push(s);
    counts.push(c);
  }
  return { tok, sums, counts };
}

Deno.test("logprobs: shifted, masked label log-probs equal a plain log-softmax", async () => {
  const r = rng(3);
  const logits = Array.from({ length: N * T * V }, () => (r() * 2 - 1) * 4);
  const c = await compile((g) => {
    const lp = sequenceLogProbs(g.input("logits", "float64", [N, T, V]), g.input("labels", "int64", [N, T]));
    assert.deepEqual(lp.tokenLogps.shape.length, 2);
    return { tok: lp.tokenLogps, sums: lp.sums, counts: lp.counts };
  });
  const out = await c.run({
    logits: { dtype: "float64", dims: [N, T, V], data: Float64Array.from(logits) },
    labels: i64(LABELS, [N, T]),
  });
  await c.release();
  const want = reference(logits, LABELS);
  assert.deepEqual(out.tok.dims, [N, T - 1]);
  const close = (a: ArrayLike<number>, b: number[]) =>
    b.forEach((x, i) => assert.ok(Math.abs(a[i] - x) < 1e-12, `${a[i]} vs ${x}`));
  close(floats(out.tok), want.tok);
  close(floats(out.sums), want.sums);
  assert.deepEqual([...floats(out.counts)], [3, 2]);
  assert.deepEqual([...floats(out.counts)], want.counts);
});

Deno.test("logprobs: the gradient with respect to the logits passes a float64 finite-difference check", async () => {
  await gradCheck(
    [{ name: "logits", shape: [N, T, V], lo: -3, hi: 3 }, {
      name: "labels",
      shape: [N, T],
      dtype: "int64",
      data: LABELS,
    }],
    (_g, [logits, labels]) => op.add(sequenceLogProbs(logits, labels).sums, 0),
  );
});
