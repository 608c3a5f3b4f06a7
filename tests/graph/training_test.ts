import assert from "node:assert/strict";
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { buildTrainingGraph, type TrainingSpec } from "../../lib/graph/training.ts";
import { adamwSchedule, adamwUpdate } from "../../lib/graph/optim.ts";
import { ModelSession } from "../../lib/runtime/session.ts";
import { TrainingSession } from "../../lib/runtime/training_session.ts";
import type { HostTensor } from "../../lib/runtime/session.ts";
import { rng } from "./_gradcheck.ts";

const B = 16;

function mlpSpec(over: Partial<TrainingSpec> = {}): TrainingSpec {
  return {
    name: "mlp",
    params: [
      { name: "w1", shape: [4, 8] },
      { name: "b1", shape: [8], decay: false },
      { name: "w2", shape: [8, 1] },
      { name: "b2", shape: [1], decay: false },
    ],
    batch: [{ name: "x", dtype: "float32", shape: [B, 4] }, { name: "y", dtype: "float32", shape: [B, 1] }],
    forward: (_g, p, b) => {
      const h = op.tanh(op.add(op.matmul(b.x, p.w1), p.b1));
      const out = op.add(op.matmul(h, p.w2), p.b2);
      const err = op.sub(out, b.y);
      return { loss: op.meanAll(op.mul(err, err)), metrics: { "mean_out": op.meanAll(out) } };
    },
    optimizer: { kind: "adamw", weightDecay: 0.01 },
    maxGradNorm: 1,
    ...over,
  };
}

function initParams(seed: number): Record<string, Float32Array> {
  const r = rng(seed);
  const init = (n: number, s: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * s);
  return { w1: init(32, 0.5), b1: new Float32Array(8), w2: init(8, 0.5), b2: new Float32Array(1) };
}

/** `steps` batches of a smooth regression target, stacked. */
function data(steps: number, seed: number): Record<string, HostTensor> {
  const r = rng(seed);
  const x = new Float32Array(steps * B * 4), y = new Float32Array(steps * B);
  for (let i = 0; i < steps * B; i++) {
    let s = 0;
    for (let j = 0; j < 4; j++) {
      x[i * 4 + j] = r() * 2 - 1;
      s += x[i * 4 + j] * (j + 1) * 0.3;
    }
    y[i] = Math.sin(s);
  }
  return {
    x: { dtype: "float32", dims: [steps, B, 4], data: x },
    y: { dtype: "float32", dims: [steps, B, 1], data: y },
  };
}

function sliceSteps(d: Record<string, HostTensor>, from: number, to: number): Record<string, HostTensor> {
  return Object.fromEntries(
    Object.entries(d).map(([k, t]) => {
      const per = t.data.length / t.dims[0];
      return [k, {
        ...t,
        dims: [to - from, ...t.dims.slice(1)],
        data: (t.data as Float32Array).slice(from * per, to * per),
      }];
    }),
  );
}

function assertClose(a: Float32Array, b: Float32Array, tol: number, what: string) {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= tol * (1 + Math.abs(b[i])), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

Deno.test("training: an MLP trained with AdamW in Loop chunks lowers its loss", async () => {
  const ts = await TrainingSession.create(buildTrainingGraph(mlpSpec()), initParams(1), {
    intraOpThreads: 1,
  });
  const d = data(60, 2);
  const losses: number[] = [];
  for (let c = 0; c < 6; c++) {
    const r = await ts.run(sliceSteps(d, c * 10, c * 10 + 10), new Array(10).fill(0.03));
    losses.push(...r.loss);
    assert.equal(r.metrics.mean_out.length, 10);
  }
  const first = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
  const last = losses.slice(-5).reduce((a, b) => a + b) / 5;
  assert.ok(last < first * 0.5, `loss ${first} → ${last}`);
  assert.equal(ts.state.get("train.step")![0], 60);
  await ts.release();
});

Deno.test("training: N steps in one run equal N one-step runs (the loop carries the state)", async () => {
  const spec = mlpSpec();
  const d = data(5, 3);
  const lrs = [0.01, 0.02, 0.03, 0.02, 0.01];
  const a = await TrainingSession.create(buildTrainingGraph(spec), initParams(4), { intraOpThreads: 1 });
  const b = await TrainingSession.create(buildTrainingGraph(spec), initParams(4), { intraOpThreads: 1 });
  const ra = await a.run(d, lrs);
  const lossesB: number[] = [];
  for (let i = 0; i < 5; i++) lossesB.push(...(await b.run(sliceSteps(d, i, i + 1), [lrs[i]])).loss);
  assertClose(ra.loss, Float32Array.from(lossesB), 1e-6, "loss");
  for (const name of a.state.keys()) assertClose(a.state.get(name)!, b.state.get(name)!, 1e-6, name);
  await a.release();
  await b.release();
});

Deno.test("training: same seed, same result", async () => {
  const runOnce = async () => {
    const ts = await TrainingSession.create(buildTrainingGraph(mlpSpec()), initParams(9), {
      intraOpThreads: 2,
    });
    await ts.run(data(4, 10), [0.01, 0.01, 0.01, 0.01]);
    const snap = ts.snapshot();
    await ts.release();
    return snap;
  };
  const [s1, s2] = [await runOnce(), await runOnce()];
  for (const k of Object.keys(s1)) assert.deepEqual(s1[k], s2[k], k);
});

/** A TypeScript AdamW (PyTorch's formulas) with global-norm clipping, for comparison with the graph. */
function tsAdamW(
  p: Float64Array,
  grads: Float64Array[],
  lrs: number[],
  o: { b1: number; b2: number; eps: number; wd: number; maxNorm: number },
) {
  const m = new Float64Array(p.length), v = new Float64Array(p.length);
  grads.forEach((g0, t) => {
    const norm = Math.sqrt(g0.reduce((a, x) => a + x * x, 0));
    const coef = Math.min(1, o.maxNorm / (norm + 1e-6));
    const lr = lrs[t], step = t + 1;
    for (let i = 0; i < p.length; i++) {
      const g = g0[i] * coef;
      p[i] *= 1 - lr * o.wd;
      m[i] = o.b1 * m[i] + (1 - o.b1) * g;
      v[i] = o.b2 * v[i] + (1 - o.b2) * g * g;
      const denom = Math.sqrt(v[i]) / Math.sqrt(1 - o.b2 ** step) + o.eps;
      p[i] -= (lr / (1 - o.b1 ** step)) * (m[i] / denom);
    }
  });
  return p;
}

Deno.test("training: the in-graph AdamW equals a TypeScript AdamW on the same gradients", async () => {
  // loss = Σ w·c + ½|w|²·0 → gradient c (fed per step), so the optimizer sees known gradients
  const n = 6, steps = 5;
  const spec: TrainingSpec = {
    name: "adamw",
    params: [{ name: "w", shape: [n] }],
    batch: [{ name: "c", dtype: "float32", shape: [n] }],
    forward: (_g, p, b) => ({ loss: op.sumAll(op.mul(p.w, b.c)) }),
    optimizer: { kind: "adamw", beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1 },
    maxGradNorm: 2,
  };
  const r = rng(11);
  const c = Float32Array.from({ length: n * steps }, () => (r() * 2 - 1) * 3);
  const w0 = Float32Array.from({ length: n }, () => r() * 2 - 1);
  const lrs = [0.1, 0.05, 0.2, 0.1, 0.01];
  const ts = await TrainingSession.create(buildTrainingGraph(spec), { w: w0 }, { intraOpThreads: 1 });
  await ts.run({ c: { dtype: "float32", dims: [steps, n], data: c } }, lrs);
  const grads = Array.from({ length: steps }, (_, t) => Float64Array.from(c.subarray(t * n, t * n + n)));
  const want = tsAdamW(Float64Array.from(w0), grads, lrs, {
    b1: 0.8,
    b2: 0.95,
    eps: 1e-6,
    wd: 0.1,
    maxNorm: 2,
  });
  assertClose(ts.state.get("w")!, Float32Array.from(want), 1e-5, "w");
  await ts.release();
});

Deno.test("training: AdamW with β1 = 0.5, β2 = 0.75, ε = 0.1 takes the hand-computed step (float64)", async () => {
  // the update fragment on float64 values: state after step 1 (m, v), the update of step 2
  const o = { beta1: 0.5, beta2: 0.75, eps: 0.1, weightDecay: 0.1 };
  const g = new GraphBuilder("adamw64");
  const x = (name: string) => g.input(name, "float64", [2]);
  const [p, grad, m, v] = ["p", "g", "m", "v"].map(x);
  const lr = g.input("lr", "float64", []), step = g.input("step", "float64", []);
  const up = adamwUpdate(p, grad, m, v, lr, adamwSchedule(lr, step, o), o);
  g.output(up.param, "param");
  g.output(up.slots[0], "m2");
  g.output(up.slots[1], "v2");
  const session = await ModelSession.create(g.build(), { intraOpThreads: 1 });
  const f64 = (...xs: number[]) => ({
    dtype: "float64" as const,
    dims: [xs.length],
    data: Float64Array.from(xs),
  });
  const out = await session.run({
    p: f64(1, 0.5),
    g: f64(2, -1),
    m: f64(0.4, 0.2),
    v: f64(1, 0.25),
    lr: { dtype: "float64", dims: [], data: Float64Array.of(0.1) },
    step: { dtype: "float64", dims: [], data: Float64Array.of(2) },
  });
  // by hand, t = 2: bias corrections 1 − 0.5² = 0.75 and 1 − 0.75² = 0.4375; decay: p·(1 − 0.1·0.1) = 0.99p
  // [0]: m' = 0.5·0.4 + 0.5·2 = 1.2, v' = 0.75·1 + 0.25·4 = 1.75, √(v'/0.4375) = 2, denominator 2 + ε = 2.1,
  //      p' = 0.99 − (0.1 / 0.75)·1.2 / 2.1 = 0.99 − 8/105
  // [1]: m' = 0.1 − 0.5 = −0.4, v' = 0.1875 + 0.25 = 0.4375, √(v'/0.4375) = 1, denominator 1.1,
  //      p' = 0.495 + (0.1 / 0.75)·0.4 / 1.1 = 0.495 + 0.16/3.3
  const want = { param: [0.99 - 8 / 105, 0.495 + 0.16 / 3.3], m2: [1.2, -0.4], v2: [1.75, 0.4375] };
  for (const [name, values] of Object.entries(want)) {
    const got = out[name].data as Float64Array;
    values.forEach((w, i) => assert.ok(Math.abs(got[i] - w) < 1e-14, `${name}[${i}]: ${got[i]} vs ${w}`));
  }
  // PyTorch's defaults (β1 0.9, β2 0.999, ε 1e-8) take another step: the options reach the math
  const d = { weightDecay: 0.1 };
  const g2 = new GraphBuilder("adamw64-defaults");
  const [p2, grad2, m2, v2] = ["p", "g", "m", "v"].map((n) => g2.input(n, "float64", [2]));
  const lr2 = g2.input("lr", "float64", []), step2 = g2.input("step", "float64", []);
  g2.output(adamwUpdate(p2, grad2, m2, v2, lr2, adamwSchedule(lr2, step2, d), d).param, "param");
  const s2 = await ModelSession.create(g2.build(), { intraOpThreads: 1 });
  const other = (await s2.run({
    p: f64(1, 0.5),
    g: f64(2, -1),
    m: f64(0.4, 0.2),
    v: f64(1, 0.25),
    lr: { dtype: "float64", dims: [], data: Float64Array.of(0.1) },
    step: { dtype: "float64", dims: [], data: Float64Array.of(2) },
  })).param.data as Float64Array;
  assert.ok(Math.abs(other[0] - want.param[0]) > 1e-3);
  await session.release();
  await s2.release();
});

Deno.test("training: SGD with momentum equals PyTorch's formulation", async () => {
  const spec: TrainingSpec = {
    name: "sgd",
    params: [{ name: "w", shape: [2] }],
    batch: [{ name: "c", dtype: "float32", shape: [2] }],
    forward: (_g, p, b) => ({ loss: op.sumAll(op.mul(p.w, b.c)) }),
    optimizer: { kind: "sgd", momentum: 0.9, weightDecay: 0.5 },
  };
  const ts = await TrainingSession.create(buildTrainingGraph(spec), { w: new Float32Array([1, -2]) });
  await ts.run({ c: { dtype: "float32", dims: [2, 2], data: new Float32Array([1, 2, 3, 4]) } }, [0.1, 0.1]);
  // by hand: step 1: d = c + 0.5w = [1.5, 1]; buf = d; w = [0.85, -2.1]
  // step 2: d = [3 + 0.425, 4 - 1.05] = [3.425, 2.95]; buf = 0.9·[1.5, 1] + d = [4.775, 3.85]; w = [0.3725, -2.485]
  assertClose(ts.state.get("w")!, new Float32Array([0.3725, -2.485]), 1e-6, "w");
  await ts.release();
});

Deno.test("training: gradient accumulation over 2 micro-batches equals one step on the whole batch", async () => {
  const half = B / 2;
  const specAcc = mlpSpec({
    batch: [{ name: "x", dtype: "float32", shape: [half, 4] }, {
      name: "y",
      dtype: "float32",
      shape: [half, 1],
    }],
    accumulation: 2,
  });
  const d = data(3, 5);
  const acc = await TrainingSession.create(buildTrainingGraph(specAcc), initParams(6), { intraOpThreads: 1 });
  const whole = await TrainingSession.create(buildTrainingGraph(mlpSpec()), initParams(6), {
    intraOpThreads: 1,
  });
  const split = Object.fromEntries(
    Object.entries(d).map(([k, t]) => [k, { ...t, dims: [3, 2, half, ...t.dims.slice(2)] }]),
  );
  const ra = await acc.run(split, [0.01, 0.01, 0.01]);
  const rw = await whole.run(d, [0.01, 0.01, 0.01]);
  assertClose(ra.loss, rw.loss, 1e-5, "loss");
  assertClose(ra.metrics.mean_out, rw.metrics.mean_out, 1e-5, "metric");
  for (const k of acc.state.keys()) assertClose(acc.state.get(k)!, whole.state.get(k)!, 1e-5, k);
  await acc.release();
  await whole.release();
});

Deno.test("training: dynamic loss scaling skips overflowing steps and lowers the scale", async () => {
  const base = mlpSpec();
  // a loss with large gradients, so that the scaled ones overflow float32 as fp16 ones would overflow fp16
  const spec = mlpSpec({
    lossScaling: { init: 1, growthInterval: 2 },
    forward: (g, p, b) => ({ loss: op.mul(base.forward(g, p, b).loss, 1e6) }),
  });
  const ts = await TrainingSession.create(buildTrainingGraph(spec), initParams(7), {
    intraOpThreads: 1,
    lossScale: 3e38, // the scaled gradients overflow float32
  });
  const before = ts.snapshot();
  const r = await ts.run(data(1, 8), [0.01]);
  assert.equal(r.skipped[0], 1);
  assert.deepEqual(ts.state.get("w1"), before.w1, "a skipped step leaves the weights");
  assert.equal(ts.state.get("train.step")![0], 0);
  assert.ok(Math.abs(ts.state.get("train.loss_scale")![0] - 1.5e38) < 1e33);
  // once the scale is small enough, steps go through and the scale grows every 2 good steps
  ts.restore({ ...ts.snapshot(), "train.loss_scale": new Float32Array([1024]) });
  const r2 = await ts.run(data(4, 9), [0.01, 0.01, 0.01, 0.01]);
  assert.deepEqual([...r2.skipped], [0, 0, 0, 0]);
  assert.equal(ts.state.get("train.loss_scale")![0], 4096);
  assert.equal(ts.state.get("train.step")![0], 4);
  await ts.release();
});

/** One pre-norm transformer block (causal self-attention + tanh-GELU MLP) on a regression target. */
function blockForward(T: number, D: number, H: number) {
  return (_g: GraphBuilder, p: Record<string, Value>, b: Record<string, Value>) => {
    const x = b.x; // [B, T, D]
    const hd = D / H;
    const h1 = op.layerNorm(x, p.ln1_w, p.ln1_b);
    const qkv = op.add(op.matmul(h1, p.w_qkv), p.b_qkv); // [B, T, 3D]
    const [q, k, v] = op.split(qkv, [D, D, D], -1).map((t) =>
      op.transpose(op.reshape(t, [0, 0, H, hd]), [0, 2, 1, 3])
    );
    const scores = op.mul(op.matmul(q, op.transpose(k, [0, 1, 3, 2])), 1 / Math.sqrt(hd)); // [B, H, T, T]
    const mask = x.g.constant(
      Array.from({ length: T * T }, (_, i) => (i % T <= Math.floor(i / T) ? 0 : -1e9)),
      [T, T],
      "float32",
    );
    const att = op.softmax(op.add(scores, mask), -1);
    const y = op.reshape(op.transpose(op.matmul(att, v), [0, 2, 1, 3]), [0, 0, D]);
    const x2 = op.add(x, op.matmul(y, p.w_o));
    const h2 = op.layerNorm(x2, p.ln2_w, p.ln2_b);
    const u = op.matmul(h2, p.w_fc);
    const gelu = op.mul(
      op.mul(u, 0.5),
      op.add(1, op.tanh(op.mul(op.add(u, op.mul(op.pow(u, 3), 0.044715)), Math.sqrt(2 / Math.PI)))),
    );
    const out = op.add(x2, op.matmul(gelu, p.w_proj));
    const err = op.sub(out, b.y);
    return { loss: op.meanAll(op.mul(err, err)) };
  };
}

Deno.test("training: one transformer block trained with AdamW in Loop chunks lowers its loss", async () => {
  const T = 6, D = 8, H = 2, Bt = 4;
  const shapes: Record<string, number[]> = {
    ln1_w: [D],
    ln1_b: [D],
    w_qkv: [D, 3 * D],
    b_qkv: [3 * D],
    w_o: [D, D],
    ln2_w: [D],
    ln2_b: [D],
    w_fc: [D, 4 * D],
    w_proj: [4 * D, D],
  };
  const r = rng(21);
  const init: Record<string, Float32Array> = {};
  for (const [k, s] of Object.entries(shapes)) {
    const n = s.reduce((a, b) => a * b, 1);
    init[k] = k.endsWith("_w") && k.startsWith("ln") ? new Float32Array(n).fill(1) : Float32Array.from(
      { length: n },
      () => (k.startsWith("ln") || k.startsWith("b_") ? 0 : (r() * 2 - 1) * 0.3),
    );
  }
  const spec: TrainingSpec = {
    name: "block",
    params: Object.entries(shapes).map(([name, shape]) => ({ name, shape })),
    batch: [{ name: "x", dtype: "float32", shape: [Bt, T, D] }, {
      name: "y",
      dtype: "float32",
      shape: [Bt, T, D],
    }],
    forward: blockForward(T, D, H),
    optimizer: { kind: "adamw" },
    maxGradNorm: 1,
  };
  const steps = 40;
  const x = Float32Array.from({ length: steps * Bt * T * D }, () => r() * 2 - 1);
  // target: a causal running mean of the inputs (needs attention to fit)
  const y = new Float32Array(x.length);
  for (let s = 0; s < steps * Bt; s++) {
    for (let d = 0; d < D; d++) {
      let acc = 0;
      for (let t = 0; t < T; t++) {
        acc += x[(s * T + t) * D + d];
        y[(s * T + t) * D + d] = acc / (t + 1);
      }
    }
  }
  const ts = await TrainingSession.create(buildTrainingGraph(spec), init, { intraOpThreads: 1 });
  const d = {
    x: { dtype: "float32", dims: [steps, Bt, T, D], data: x },
    y: { dtype: "float32", dims: [steps, Bt, T, D], data: y },
  } as Record<string, HostTensor>;
  const losses: number[] = [];
  for (let c = 0; c < 4; c++) {
    losses.push(...(await ts.run(sliceSteps(d, c * 10, c * 10 + 10), new Array(10).fill(0.01))).loss);
  }
  const first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[37] + losses[38] + losses[39]) / 3;
  assert.ok(last < first * 0.6, `loss ${first} → ${last}`);
  await ts.release();
});

Deno.test("training: weight decay applies to decayed parameters only (the flat optimizer's mask)", async () => {
  const steps = 3;
  const spec: TrainingSpec = {
    name: "mask",
    params: [{ name: "b", shape: [2], decay: false }, { name: "w", shape: [3] }],
    batch: [{ name: "c", dtype: "float32", shape: [5] }],
    forward: (g, p, b) => {
      const [cb, cw] = op.split(b.c, [2, 3], 0);
      void g;
      return { loss: op.add(op.sumAll(op.mul(p.b, cb)), op.sumAll(op.mul(p.w, cw))) };
    },
    optimizer: { kind: "adamw", weightDecay: 0.3 },
  };
  const r = rng(5);
  const c = Float32Array.from({ length: 5 * steps }, () => r() * 2 - 1);
  const b0 = new Float32Array([0.5, -1]), w0 = new Float32Array([1, 2, -3]);
  const lrs = [0.1, 0.2, 0.05];
  const ts = await TrainingSession.create(buildTrainingGraph(spec), { b: b0, w: w0 }, { intraOpThreads: 1 });
  await ts.run({ c: { dtype: "float32", dims: [steps, 5], data: c } }, lrs);
  const o = { b1: 0.9, b2: 0.999, eps: 1e-8, maxNorm: Infinity };
  const gb = Array.from({ length: steps }, (_, t) => Float64Array.from(c.subarray(t * 5, t * 5 + 2)));
  const gw = Array.from({ length: steps }, (_, t) => Float64Array.from(c.subarray(t * 5 + 2, t * 5 + 5)));
  assertClose(
    ts.state.get("b")!,
    Float32Array.from(tsAdamW(Float64Array.from(b0), gb, lrs, { ...o, wd: 0 })),
    1e-5,
    "b",
  );
  assertClose(
    ts.state.get("w")!,
    Float32Array.from(tsAdamW(Float64Array.from(w0), gw, lrs, { ...o, wd: 0.3 })),
    1e-5,
    "w",
  );
  assert.equal(ts.state.get("train.m")!.length, 5, "one flat first moment over both parameters");
  await ts.release();
});
