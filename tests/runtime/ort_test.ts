/**
 * ONNX Runtime's C API from Deno (lib/runtime/ort): the same outputs as onnxruntime-node, bit for bit, on
 * the toolkit's decoder and training graphs; training on state kept in ONNX Runtime between runs equal to
 * the run through JavaScript; every element type in and out; errors with ONNX Runtime's message and the
 * call's name; a run stopped by its run options; steady memory over many runs.
 */
import assert from "node:assert/strict";
import { GraphBuilder } from "../../lib/graph/builder.ts";
import type { DType } from "../../lib/graph/dtype.ts";
import * as op from "../../lib/graph/ops.ts";
import { serializeModel } from "../../lib/graph/serialize.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { trainableParamsFor } from "../../lib/model/decoder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { frozenWeights } from "../../lib/model/weights.ts";
import {
  copyToHost,
  MemoryInfo,
  OrtError,
  OrtSession,
  OrtValue,
  RunOptions,
} from "../../lib/runtime/ort/mod.ts";
import { copyByRun } from "../../lib/runtime/ort/transfer.ts";
import { backendFromEnv, type HostTensor, ModelSession } from "../../lib/runtime/session.ts";
import { TrainingSession } from "../../lib/runtime/training_session.ts";
import { buildScoringGraph } from "../../lib/model/scoring_graph.ts";
import { syntheticChunk } from "../../bench/_common.ts";
import { alignmentGraph, lora } from "../train/_fingerprints.ts";

const cfg = tinyConfig("llama");
const W = initWeights(cfg, { seed: 1 });

function tokens(rows: number, width: number, seed: number): Record<string, HostTensor> {
  const ids = Int32Array.from({ length: rows * width }, (_, i) => (i * 7 + seed * 13) % cfg.vocabSize);
  const mask = Int32Array.from({ length: rows * width }, (_, i) => (i % width < width - (i % 3) ? 1 : 0));
  return {
    input_ids: { dtype: "int32", dims: [rows, width], data: ids },
    attention_mask: { dtype: "int32", dims: [rows, width], data: mask },
    labels: { dtype: "int32", dims: [rows, width], data: ids },
  };
}

Deno.test("ort: a decoder graph gives onnxruntime-node's outputs bit for bit", async () => {
  for (const trainable of [undefined, trainableParamsFor(cfg, { mode: "lora", lora: lora(0), seed: 3 })]) {
    const model = serializeModel(buildScoringGraph(cfg, frozenWeights(W), trainable).build()).model;
    const node = await ModelSession.create(model, { intraOpThreads: 1, backend: "node" });
    const ffi = await ModelSession.create(model, { intraOpThreads: 1, backend: "ffi" });
    assert.deepEqual(ffi.inputNames, node.inputNames);
    assert.deepEqual(ffi.outputNames, node.outputNames);
    const feeds = tokens(4, 12, 5);
    if (trainable) {
      // the LoRA factors' shapes as the C API reads them from the model
      const meta = ffi.inputMetadata;
      for (const [name, v] of Object.entries(trainable.init)) {
        const shape = meta.find((m) => m.name === name)?.shape;
        if (shape) feeds[name] = { dtype: "float32", dims: shape as number[], data: v };
      }
      assert.ok(Object.keys(feeds).length > 3, "the LoRA factors are inputs");
    }
    const [a, b] = [await node.run(feeds), await ffi.run(feeds)];
    for (const name of node.outputNames) {
      assert.deepEqual(b[name].dims, a[name].dims, name);
      assert.equal(b[name].dtype, a[name].dtype, name);
      assert.deepEqual(b[name].data, a[name].data, name);
    }
    await node.release();
    await ffi.release();
  }
});

Deno.test("ort: training on state kept in ONNX Runtime equals the run through JavaScript (LoRA, full)", async () => {
  for (const mode of ["lora", "full"] as const) {
    const results: { losses: number[]; state: Record<string, Float32Array>; scores: HostTensor }[] = [];
    for (const backend of ["node", "ffi"] as const) {
      const trainable = trainableParamsFor(
        cfg,
        mode === "lora" ? { mode, lora: lora(0), seed: 1 } : { mode, weights: W },
      );
      const built = alignmentGraph(cfg, W, trainable, undefined, { scoring: true });
      const ts = await TrainingSession.create(built, trainable.init, { intraOpThreads: 1, backend });
      const losses: number[] = [];
      const accum = mode === "full" ? 2 : 1;
      for (let c = 0; c < 3; c++) {
        const feeds = syntheticChunk({
          steps: 2 * accum,
          rows: 4,
          width: 8,
          k: 2,
          vocab: cfg.vocabSize,
          seed: c,
          loss: "infonca",
        });
        if (accum > 1) {
          for (const t of Object.values(feeds)) {
            (t as { dims: readonly number[] }).dims = [2, accum, ...t.dims.slice(1)];
          }
        }
        losses.push(...(await ts.run(feeds, [1e-2, 2e-2])).loss);
        if (c === 1) {
          // a checkpoint read between runs, and written back, changes nothing
          ts.restore(ts.snapshot());
        }
      }
      results.push({
        losses,
        state: ts.snapshot(),
        scores: (await ts.score(tokens(2, 8, 1), ["logps"])).logps,
      });
      await ts.release();
    }
    const [node, ffi] = results;
    assert.deepEqual(ffi.losses, node.losses, `${mode}: losses`);
    assert.ok(node.losses[0] !== node.losses[5], "the runs trained");
    for (const name of Object.keys(node.state)) {
      assert.deepEqual(ffi.state[name], node.state[name], `${mode}: ${name}`);
    }
    assert.deepEqual(ffi.scores.data, node.scores.data, `${mode}: scoring mode`);
  }
});

Deno.test("ort: every element type goes in and comes out as it was; empty tensors too", async () => {
  const types: [DType, HostTensor][] = [
    ["float32", { dtype: "float32", dims: [2, 3], data: Float32Array.of(1.5, -2, 3e-39, Infinity, NaN, 0) }],
    ["float64", { dtype: "float64", dims: [2], data: Float64Array.of(Math.PI, -1e300) }],
    ["int32", { dtype: "int32", dims: [3], data: Int32Array.of(-5, 0, 2 ** 31 - 1) }],
    ["int64", { dtype: "int64", dims: [2], data: BigInt64Array.of(-(2n ** 62n), 9007199254740993n) }],
    ["bool", { dtype: "bool", dims: [4], data: Uint8Array.of(1, 0, 0, 1) }],
    ["uint8", { dtype: "uint8", dims: [1, 2], data: Uint8Array.of(255, 7) }],
    ["float32", { dtype: "float32", dims: [0, 4], data: new Float32Array(0) }],
  ];
  const g = new GraphBuilder("identity");
  types.forEach(([dtype, t], i) => {
    const x = g.input(`x${i}`, dtype, t.dims);
    g.output(g.node("Identity", [x], [{ dtype, shape: t.dims }])[0], `y${i}`);
  });
  const s = await OrtSession.create(serializeModel(g.build()).model, { intraOpThreads: 1 });
  const inputs = Object.fromEntries(types.map(([, t], i) => [`x${i}`, OrtValue.fromHost(t)]));
  const out = await s.run(inputs);
  types.forEach(([, t], i) => {
    const y = out[`y${i}`];
    assert.deepEqual(y.dims, t.dims);
    assert.deepEqual(y.toHost(), t, `y${i}`);
    y.release();
  });
  for (const v of Object.values(inputs)) v.release();
  assert.throws(() => inputs.x0.pointer, /after release/);
  s.release();
});

Deno.test("ort: failures carry ONNX Runtime's message and the call that failed", async () => {
  await assert.rejects(
    OrtSession.create(new Uint8Array([1, 2, 3, 4]), {}),
    (e: unknown) =>
      e instanceof OrtError && e.call === "CreateSessionFromArray" && /protobuf|parse/i.test(e.message),
  );
  await assert.rejects(OrtSession.create("/nonexistent/model.onnx"), /CreateSession.*|nonexistent/);
  const model = serializeModel(buildScoringGraph(cfg, frozenWeights(W)).build()).model;
  const s = await ModelSession.create(model, { intraOpThreads: 1, backend: "ffi" });
  const feeds = tokens(2, 4, 1);
  feeds.input_ids = { dtype: "int32", dims: [8], data: feeds.input_ids.data };
  await assert.rejects(s.run(feeds), (e: Error) => {
    assert.match(e.message, /ONNX Runtime failed: .*[Ii]nvalid rank.*input_ids/s);
    assert.match(e.message, /\(Run, ONNX Runtime error code \d+\)/);
    assert.match(e.message, /fed: .*input_ids: int32\[8\]/);
    return true;
  });
  // the session still serves after a failed run
  assert.equal((await s.run(tokens(2, 4, 1))).logps.dims[0], 2);
  await s.release();
});

Deno.test("ort: a run stops when its run options are terminated", async () => {
  // a Loop of many iterations of a matmul chain: seconds of work, unless stopped
  const g = new GraphBuilder("long");
  const x = g.input("x", "float32", [64, 64]);
  const n = g.input("n", "int64", []);
  const body = new GraphBuilder("body", g);
  body.input("i", "int64", []);
  const cond = body.input("cond", "bool", []);
  let h = body.input("h", "float32", [64, 64]);
  for (let i = 0; i < 8; i++) h = op.tanh(op.matmul(h, h));
  body.output(cond, "cond_out");
  body.output(h, "h_out");
  const graph = body.build();
  for (const [name, init] of body.initializers) g.initializers.set(name, init);
  graph.initializers = [];
  const [out] = g.node("Loop", [n, g.constant([1], [], "bool"), x], [{ dtype: "float32", shape: [64, 64] }], {
    body: { type: "graph", value: graph },
  });
  g.output(out, "y");
  const s = await OrtSession.create(serializeModel(g.build()).model, { intraOpThreads: 1 });
  const feeds = {
    x: OrtValue.fromHost({ dtype: "float32", dims: [64, 64], data: new Float32Array(64 * 64).fill(0.01) }),
    n: OrtValue.fromHost({ dtype: "int64", dims: [], data: BigInt64Array.of(1_000_000n) }),
  };
  const options = new RunOptions();
  const t0 = performance.now();
  const run = s.run(feeds, ["y"], options);
  setTimeout(() => options.terminate(), 50);
  await assert.rejects(run, (e: unknown) => e instanceof OrtError && /terminat/i.test(e.message));
  const took = performance.now() - t0;
  assert.ok(took < 5000, `stopped after ${took.toFixed(0)} ms`);
  // reset, the options run again
  options.reset();
  feeds.n.release();
  const short = { ...feeds, n: OrtValue.fromHost({ dtype: "int64", dims: [], data: BigInt64Array.of(2n) }) };
  const done = await s.run(short, ["y"], options);
  assert.deepEqual(done.y.dims, [64, 64]);
  done.y.release();
  for (const v of Object.values(short)) v.release();
  options.release();
  s.release();
});

async function steady(args: string[]): Promise<{ runs: number; grew: number }> {
  const script = new URL("./_ort_steady.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stderr: "inherit",
  })
    .output();
  assert.ok(out.success, "the run loop failed");
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("ort: 10,000 runs keep resident memory steady", async () => {
  const { runs, grew } = await steady(["10000"]);
  assert.equal(runs, 10_000);
  // one leaked output would be 64 KiB a run, 640 MiB over the loop; the allocators' own drift stays far under
  assert.ok(grew < 96 * 2 ** 20, `resident memory grew ${(grew / 2 ** 20).toFixed(1)} MiB over 10,000 runs`);
});

Deno.test("ort: 1,000 generations with the cache in ONNX Runtime keep resident memory steady", async () => {
  const { runs, grew } = await steady(["1000", "generate"]);
  assert.equal(runs, 1000);
  // with each step's cache leaked (its release and the finalizer taken out) it grew 274 MiB
  assert.ok(
    grew < 64 * 2 ** 20,
    `resident memory grew ${(grew / 2 ** 20).toFixed(1)} MiB over 1,000 generations`,
  );
});

Deno.test("ort: an IO binding chains a run's outputs into the next run's inputs", async () => {
  // y = tanh(x·w): three runs, each reading the last one's output where ONNX Runtime left it
  const g = new GraphBuilder("step");
  const x = g.input("x", "float32", [4, 4]);
  const w = g.constant(Array.from({ length: 16 }, (_, i) => ((i * 5) % 7 - 3) / 4), [4, 4], "float32");
  g.output(op.tanh(op.matmul(x, w)), "y");
  const s = await OrtSession.create(serializeModel(g.build()).model, { intraOpThreads: 1 });
  const start: HostTensor = {
    dtype: "float32",
    dims: [4, 4],
    data: Float32Array.from({ length: 16 }, (_, i) => i / 8),
  };
  // the same three steps through plain runs
  let expected = OrtValue.fromHost(start);
  for (let i = 0; i < 3; i++) {
    const next = (await s.run({ x: expected })).y;
    expected.release();
    expected = next;
  }
  const memory = MemoryInfo.cpu();
  const binding = s.binding();
  let value = OrtValue.fromHost(start);
  for (let i = 0; i < 3; i++) {
    binding.bindInput("x", value);
    binding.bindOutputToDevice("y", memory);
    await s.runBinding(binding);
    const { y } = binding.outputs();
    binding.clear();
    value.release();
    value = y;
  }
  assert.deepEqual(value.toHost(), expected.toHost());
  assert.notDeepEqual(value.toHost().data, start.data);
  for (const v of [value, expected]) v.release();
  binding.release();
  memory.release();
  s.release();
});

Deno.test("ort: a value's location, and the copy to the host by a run (the path device tensors take)", () => {
  const t: HostTensor = { dtype: "float32", dims: [2, 3], data: Float32Array.of(1, -2, 3.5, 0, 1e-30, 7) };
  const v = OrtValue.fromHost(t);
  assert.equal(v.location, "Cpu");
  assert.equal(v.onHost, true);
  assert.deepEqual(copyByRun(v, { device: "cpu" }), t);
  const ids: HostTensor = { dtype: "int64", dims: [3], data: BigInt64Array.of(1n, -2n, 3n) };
  const w = OrtValue.fromHost(ids);
  assert.deepEqual(copyByRun(w, { device: "cpu" }), ids, "another type and rank: its own copy session");
  assert.deepEqual(copyToHost(w), ids);
  v.release();
  w.release();
});

Deno.test("NCA_ORT_BACKEND picks the backend where a session does not ask for one; other values are refused", () => {
  const env = (v?: string) => (name: string) => (name === "NCA_ORT_BACKEND" ? v : undefined);
  assert.equal(backendFromEnv(env()), undefined);
  assert.equal(backendFromEnv(env("ffi")), "ffi");
  assert.equal(backendFromEnv(env(" node ")), "node");
  assert.throws(() => backendFromEnv(env("cuda")), /NCA_ORT_BACKEND must be "ffi" or "node", got "cuda"/);
});

Deno.test("held memory: a collective's writes into a held tensor are what the next run reads; views slice without a copy (C API and onnxruntime-node)", async () => {
  // y = 2·x over a flat [6]: the output held, written in place, and read again through a view
  const g = new GraphBuilder("double");
  const x = g.input("x", "float32", ["n"]);
  g.output(op.mul(x, 2), "y");
  for (const backend of ["ffi", "node"] as const) {
    const s = await ModelSession.create(g.build(), { intraOpThreads: 1, backend });
    const { y } = await s.run(
      { x: { dtype: "float32", dims: [6], data: Float32Array.of(0, 1, 2, 3, 4, 5) } },
      {
        y: "device",
      },
    );
    const mem = s.memoryOf(y) as Float32Array;
    assert.deepEqual([...mem], [0, 2, 4, 6, 8, 10], backend);
    mem[4] = -1; // as an in-place all-reduce would
    const part = s.viewOf(y, 2, [3]);
    assert.deepEqual(part.dims, [3]);
    const again = await s.run({ x: part }, ["y"]);
    assert.deepEqual([...again.y.data as Float32Array], [8, 12, -2], `${backend}: the view reads the write`);
    assert.deepEqual([...s.memoryOf(part) as Float32Array], [4, 6, -1], `${backend}: no copy`);
    assert.throws(() => s.viewOf(y, 4, [3]), /a view of \[4, 7\) in a tensor of 6 elements/);
    part.release();
    y.release();
    await s.release();
  }
});
