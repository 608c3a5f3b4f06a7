/**
 * `--precision`: fp32 graphs are exactly what they were before fp16 existed (canonical fingerprints of
 * the built graphs, taken before the change); fp16 alignment and scoring graphs (loss scaling, float32
 * interface, consistent dtypes, reference = policy at B = 0); the table of ONNX Runtime's CPU fp16 kernels,
 * measured again here with the profiler; and the trainer refusing fp16 on the CPU with the operators named.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { serializeModel } from "../../lib/graph/serialize.ts";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { trainableParamsFor } from "../../lib/model/decoder.ts";
import { initWeights } from "../../lib/model/init.ts";
import { frozenWeights } from "../../lib/model/weights.ts";
import { resolveDevice } from "../../lib/runtime/device.ts";
import {
  CPU_FLOAT16_KERNELS,
  cpuFloat16Gaps,
  float16DeviceError,
  float16Ops,
} from "../../lib/runtime/precision.ts";
import { type HostTensor, ModelSession } from "../../lib/runtime/session.ts";
import { readMetrics } from "../../lib/train/metrics_log.ts";
import { buildAlignmentGraph, FP16_CPU_GAPS } from "../../lib/train/train_graph.ts";
import { buildScoringGraph } from "../../lib/model/scoring_graph.ts";
import { train } from "../../lib/train/trainer.ts";
import { floatDtypeProblems } from "../model/_dtypes.ts";
import { alignmentGraph, fingerprint, fp32Graphs, lora } from "./_fingerprints.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

// ---------------------------------------------------------------------------------------------------------
// fp32 graphs unchanged
// ---------------------------------------------------------------------------------------------------------

/**
 * Fingerprints of the graphs of {@link fp32Graphs}, taken with the code as it was before fp16 (commit
 * 855fd46); the four training graphs retaken after the optimizer's row layout, and the two LoRA ones (with
 * dropout) after dropout masks became keyed by the step; every graph that scores labels or runs GPT-2's MLP
 * retaken when log-probs moved to LogSoftmax and `gelu_new` to FastGelu (both for CUDA speed), and the LoRA
 * training ones when keyed dropout shared its ramps by shape, and the four training graphs when the Loop
 * carried the parameters as one matrix and AdamW folded the clipping into its factors; the graphs that
 * score labels when the LM head moved onto the final hidden rows (the same Gemm and LogSoftmax per row,
 * which can also run in blocks of rows, lib/graph/chunked.ts), and the training graphs when the parameters
 * came in and went out packed in the Loop's `[rows, C]` layout (no concatenation or split around it). A
 * deliberate change to how fp32 graphs are built changes them: update them then (print `fingerprint(g)`
 * for each).
 */
const FP32_FINGERPRINTS: Record<string, string> = {
  "llama/lora/train": "971:6c04be0e",
  "llama/lora/policy": "298:34227e41",
  "llama/full/train": "895:504b6d3e",
  "llama/full/policy": "228:a72a962e",
  "llama/reference": "228:7c754d6e",
  "gpt2/lora/train": "762:59ca1e76",
  "gpt2/lora/policy": "207:c6092313",
  "gpt2/full/train": "874:d65c93b7",
  "gpt2/full/policy": "167:594b8edb",
  "gpt2/reference": "167:1c45e4ae",
  "llama/tie=true/float32/frozen": "227:239f60b3",
  "llama/tie=true/float32/lora": "355:74de68e1",
  "llama/tie=true/float32/full": "227:b2903de2",
  "llama/tie=true/float32/cache": "233:90d06a64",
  "llama/tie=true/float64/frozen": "232:27dd68b7",
  "llama/tie=true/float64/lora": "388:9977271f",
  "llama/tie=true/float64/full": "253:a4465c49",
  "llama/tie=true/float64/cache": "242:2f91b121",
  "llama/tie=false/float32/frozen": "228:3753b3eb",
  "llama/tie=false/float32/lora": "356:5205c45e",
  "llama/tie=false/float32/full": "228:3f3a1cb0",
  "llama/tie=false/float32/cache": "234:bff4958c",
  "llama/tie=false/float64/frozen": "233:d06984a",
  "llama/tie=false/float64/lora": "389:52927234",
  "llama/tie=false/float64/full": "254:32e46f1c",
  "llama/tie=false/float64/cache": "243:b10d5861",
  "gpt2/tie=true/float32/frozen": "167:b53b3019",
  "gpt2/tie=true/float32/lora": "241:91edfec3",
  "gpt2/tie=true/float32/full": "167:ff45d2e5",
  "gpt2/tie=true/float32/cache": "173:542a5e15",
  "gpt2/tie=true/float64/frozen": "225:b618c4ee",
  "gpt2/tie=true/float64/lora": "315:e43793a8",
  "gpt2/tie=true/float64/full": "254:b1fd0867",
  "gpt2/tie=true/float64/cache": "235:3f76f0ca",
  "gpt2/tie=false/float32/frozen": "168:5bb8ad79",
  "gpt2/tie=false/float32/lora": "242:e77d6012",
  "gpt2/tie=false/float32/full": "168:75f1bc30",
  "gpt2/tie=false/float32/cache": "174:77448369",
  "gpt2/tie=false/float64/frozen": "226:e9d263b3",
  "gpt2/tie=false/float64/lora": "316:14a1f8bf",
  "gpt2/tie=false/float64/full": "255:f430fa1e",
  "gpt2/tie=false/float64/cache": "236:a46018d0",
};

Deno.test("precision: fp32 and float64 graphs are node for node what they were before fp16", () => {
  for (const precision of [undefined, "fp32"] as const) {
    const graphs = fp32Graphs(precision);
    assert.deepEqual([...graphs.keys()].sort(), Object.keys(FP32_FINGERPRINTS).sort());
    for (const [name, g] of graphs) {
      assert.equal(
        fingerprint(g),
        FP32_FINGERPRINTS[name],
        `${name} (precision ${precision}) changed; if on purpose, update FP32_FINGERPRINTS`,
      );
      assert.deepEqual(float16Ops(g), [], `${name}: no float16 anywhere`);
    }
  }
});

// ---------------------------------------------------------------------------------------------------------
// fp16 graphs
// ---------------------------------------------------------------------------------------------------------

/** The fp16 alignment graphs of both families, LoRA (with dropout) and full. */
function fp16Graphs() {
  const out: { name: string; built: ReturnType<typeof buildAlignmentGraph>; scoring: GraphBuilder[] }[] = [];
  for (const family of ["llama", "gpt2"] as const) {
    const cfg = tinyConfig(family);
    const W = initWeights(cfg, { seed: 1 });
    for (const mode of ["lora", "full"] as const) {
      const trainable = trainableParamsFor(
        cfg,
        mode === "lora" ? { mode, lora: lora(), seed: 1 } : { mode, weights: W },
      );
      out.push({
        name: `${family} ${mode}`,
        built: alignmentGraph(cfg, W, trainable, "fp16"),
        scoring: [
          buildScoringGraph(cfg, frozenWeights(W), trainable, { precision: "fp16" }),
          buildScoringGraph(cfg, frozenWeights(W), undefined, { precision: "fp16" }),
        ],
      });
    }
  }
  return out;
}

Deno.test("precision: fp16 alignment graphs scale the loss, keep a float32 interface and consistent dtypes", () => {
  const fp32 = alignmentGraph(
    tinyConfig("llama"),
    initWeights(tinyConfig("llama")),
    trainableParamsFor(tinyConfig("llama"), { mode: "lora", lora: lora() }),
  );
  assert.ok(!fp32.io.state.some((s) => s.name === "train.loss_scale"), "fp32: no loss scaling");
  assert.ok(!fp32.io.scans.includes("train.loss_scale.used"));
  for (const { name, built, scoring } of fp16Graphs()) {
    const { graph, io } = built;
    for (const s of ["train.loss_scale", "train.good_steps"]) {
      assert.ok(io.state.some((x) => x.name === s), `${name}: state ${s}`);
    }
    assert.ok(io.scans.includes("train.loss_scale.used"), `${name}: the loss scale is a scan`);
    for (const v of [...graph.inputs, ...graph.outputs.map((o) => o.value)]) {
      assert.ok(["float32", "int32", "int64"].includes(v.dtype), `${name}: interface ${v}`);
    }
    for (const s of io.scans) {
      const o = graph.outputs.find((x) => x.name === s);
      assert.equal(o?.value.dtype, "float32", `${name}: scan ${s}`);
    }
    assert.deepEqual(floatDtypeProblems(graph), [], name);
    assert.ok(float16Ops(graph).includes("Gemm"), `${name}: computes in fp16`);
    for (const g of scoring) {
      for (const o of g.outputs) assert.equal(o.value.dtype, "float32", `${name} scoring: ${o.name}`);
      assert.deepEqual(floatDtypeProblems(g), [], `${name} scoring`);
    }
  }
});

Deno.test("precision: fp16 scoring graphs run on the CPU; the reference equals the policy at B = 0", async () => {
  for (const family of ["llama", "gpt2"] as const) {
    const cfg = tinyConfig(family);
    const W = initWeights(cfg, { seed: 4, std: 0.1 });
    const trainable = trainableParamsFor(cfg, { mode: "lora", lora: lora(0), seed: 2 });
    const N = 3, T = 9;
    const ids = Int32Array.from({ length: N * T }, (_, i) => 3 + ((i * 37) % 50));
    const mask = Int32Array.from({ length: N * T }, (_, i) => (i % T < T - (i / T | 0) ? 1 : 0));
    const labels = Int32Array.from(ids, (v, i) => (i % T >= 3 && mask[i] ? v : -100));
    const i32 = (data: Int32Array): HostTensor => ({ dtype: "int32", dims: [N, T], data });
    const batch = { input_ids: i32(ids), attention_mask: i32(mask), labels: i32(labels) };
    const run = async (g: GraphBuilder, extra: Record<string, HostTensor> = {}) => {
      const s = await ModelSession.create(serializeModel(g.build()), { intraOpThreads: 1 });
      const out = await s.run({ ...batch, ...extra });
      await s.release();
      for (const [k, v] of Object.entries(out)) assert.equal(v.dtype, "float32", `${family}: ${k}`);
      return out.logps.data as Float32Array;
    };
    const extra = Object.fromEntries(
      trainable.params.map((p) => [p.name, {
        dtype: "float32" as const,
        dims: p.shape,
        data: trainable.init[p.name],
      }]),
    );
    const ref16 = await run(buildScoringGraph(cfg, frozenWeights(W), undefined, { precision: "fp16" }));
    const pol16 = await run(
      buildScoringGraph(cfg, frozenWeights(W), trainable, { precision: "fp16" }),
      extra,
    );
    const ref32 = await run(buildScoringGraph(cfg, frozenWeights(W)));
    assert.deepEqual([...pol16], [...ref16], `${family}: policy = reference at B = 0, in fp16`);
    ref16.forEach((x, i) =>
      assert.ok(Math.abs(x - ref32[i]) < 0.01 * Math.abs(ref32[i]) + 0.02, `${family}: ${x} vs ${ref32[i]}`)
    );
  }
});

// ---------------------------------------------------------------------------------------------------------
// ONNX Runtime's CPU fp16 kernels, measured
// ---------------------------------------------------------------------------------------------------------

type Case = (x: Value, y: Value, g: GraphBuilder) => Value;
/** One-node fp16 graphs: x, y are fp16 `[4, 8]`. */
const CASES: Record<string, Case> = {
  Add: (x, y) => op.add(x, y),
  Sub: (x, y) => op.sub(x, y),
  Mul: (x, y) => op.mul(x, y),
  Div: (x, y) => op.div(x, y),
  Sum: (x, y, g) => g.node("Sum", [x, y, x], [{ dtype: x.dtype, shape: x.shape }])[0],
  Neg: (x) => op.neg(x),
  Exp: (x) => op.exp(x),
  Sigmoid: (x) => op.sigmoid(x),
  FastGelu: (x) => op.fastGelu(x),
  Tanh: (x) => op.tanh(x),
  Where: (x, y) => op.where(op.greater(x, y), x, y),
  GreaterOrEqual: (x, y) => op.cast(op.greaterOrEqual(x, y), "float32"),
  ReduceSum: (x) => op.reduceSum(x, [-1], true),
  ReduceMean: (x) => op.reduceMean(x, [-1], true),
  Softmax: (x) => op.softmax(x, -1),
  ReduceLogSumExp: (x) => op.reduceLogSumExp(x, [-1], true),
  RandomUniformLike: (x, _y, g) =>
    g.node("RandomUniformLike", [x], [{ dtype: x.dtype, shape: x.shape }], { seed: op.attr.float(1) })[0],
  MatMul: (x, y) => op.matmul(x, op.transpose(y, [1, 0])),
  Gemm: (x, y) => op.gemm(x, y, null, { transB: true }),
  LayerNormalization: (x, _y, g) => {
    const w = op.cast(g.constant(new Array(8).fill(1), [8], "float32"), "float16");
    return op.layerNorm(x, w, w);
  },
  Gather: (x, _y, g) => op.gather(x, g.constant([1, 0, 3], [3], "int64")),
  GatherElements: (x, _y, g) => op.gatherElements(x, g.constant([1, 0, 3, 2], [4, 1], "int64"), 1),
  Cast: (x) => op.cast(x, "float32"),
  Reshape: (x) => op.reshape(x, [8, 4]),
  Transpose: (x) => op.transpose(x, [1, 0]),
  Concat: (x, y) => op.concat([x, y], 1),
  Split: (x) => op.split(x, [4, 4], 1)[1],
  Slice: (x) => op.slice(x, [1], [3], [0]),
  Squeeze: (x) => op.squeeze(op.reshape(x, [1, 4, 8]), [0]),
  Unsqueeze: (x) => op.unsqueeze(x, [0]),
  Expand: (x) => op.expand(op.slice(x, [0], [1], [0]), [4, 8]),
  Shape: (x) => op.cast(op.shapeOf(x), "float32"),
  Identity: (x) => op.identity(x),
  Max: (x, y) => op.max(x, y),
  Min: (x, y) => op.min(x, y),
  Clip: (x) => op.clip(x, -0.5, 0.5),
  Sign: (x, _y, g) => g.node("Sign", [x], [{ dtype: x.dtype, shape: x.shape }])[0],
  IsNaN: (x) => op.cast(op.isNaN(x), "float32"),
};

/** Whether ONNX Runtime's CPU provider ran `name` with a float16 input (read from its profiler). */
async function runsInFloat16(name: string, dir: string): Promise<boolean> {
  const g = new GraphBuilder(`cpu-fp16-${name}`);
  const x = op.cast(g.input("x", "float32", [4, 8]), "float16");
  const y = op.cast(g.input("y", "float32", [4, 8]), "float16");
  g.output(op.cast(CASES[name](x, y, g), "float32"), "out");
  const prefix = join(dir, name);
  // no graph optimizations: what runs is what was built, plus the casts ONNX Runtime inserts
  const s = await ModelSession.create(serializeModel(g.build()), {
    intraOpThreads: 1,
    optimization: "disabled",
    profilePrefix: prefix,
  });
  const data = Float32Array.from({ length: 32 }, (_, i) => Math.sin(i + 1));
  await s.run({ x: { dtype: "float32", dims: [4, 8], data }, y: { dtype: "float32", dims: [4, 8], data } });
  await s.release();
  const file = [...Deno.readDirSync(dir)].find((e) =>
    e.name.startsWith(`${name}_`) && e.name.endsWith(".json")
  );
  assert.ok(file, `a profile of ${name}`);
  const events = JSON.parse(await Deno.readTextFile(join(dir, file.name))) as {
    cat: string;
    args?: { op_name?: string; input_type_shape?: Record<string, unknown>[] };
  }[];
  // the Cast case: the node under test is the one reading fp16 and writing float32 (the last Cast)
  return events.some((e) =>
    e.cat === "Node" && e.args?.op_name === name &&
    (e.args.input_type_shape ?? []).some((t) => "float16" in t)
  );
}

Deno.test("precision: the CPU fp16 kernel table matches ONNX Runtime, for every operator fp16 graphs use", async () => {
  const used = new Set<string>();
  for (const { built, scoring } of fp16Graphs()) {
    for (const g of [built.graph, ...scoring]) for (const o of float16Ops(g)) used.add(o);
  }
  const dir = await Deno.makeTempDir({ prefix: "cpu-fp16-" });
  try {
    const wrong: string[] = [];
    for (const name of new Set([...used, ...CPU_FLOAT16_KERNELS, ...Object.keys(CASES)])) {
      assert.ok(CASES[name], `fp16 graphs use ${name}: add a case for it to measure`);
      const native = await runsInFloat16(name, dir);
      if (native !== CPU_FLOAT16_KERNELS.has(name)) {
        wrong.push(`${name}: ${native ? "has" : "no"} fp16 kernel`);
      }
    }
    assert.deepEqual(wrong, [], "lib/runtime/precision.ts's CPU_FLOAT16_KERNELS is out of date");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("precision: the CPU fails fp16 scatter-adds, which is why fp16 graphs gather in float32", async () => {
  const g = new GraphBuilder("scatter");
  const x = op.cast(g.input("x", "float32", [4, 8]), "float16");
  const upd = op.slice(x, [0], [3], [0]);
  g.output(op.cast(op.scatterND(x, g.constant([1, 0, 1], [3, 1], "int64"), upd, "add"), "float32"), "out");
  const s = await ModelSession.create(serializeModel(g.build()), { intraOpThreads: 1 });
  await assert.rejects(
    s.run({ x: { dtype: "float32", dims: [4, 8], data: new Float32Array(32) } }),
    /MLFloat16 data type is not supported with ScatterND/,
  );
  await s.release();
  for (const { name, built } of fp16Graphs()) {
    const ops = float16Ops(built.graph);
    for (const o of ["ScatterND", "ScatterElements", "Softmax", "LogSoftmax"]) {
      assert.ok(!ops.includes(o), `${name}: ${o} stays float32`);
    }
  }
});

Deno.test("precision: every fp16 alignment graph needs the operators the trainer names as CPU gaps", () => {
  const union = new Set<string>();
  for (const { name, built } of fp16Graphs()) {
    const gaps = cpuFloat16Gaps(built.graph);
    for (const o of FP16_CPU_GAPS) assert.ok(gaps.includes(o), `${name}: ${o} in ${gaps}`);
    gaps.forEach((o) => union.add(o));
  }
  // what the CPU would run in float32 for fp16 training, any family or mode
  assert.deepEqual([...union].sort(), [
    "Add",
    "FastGelu",
    "Mul",
    "ReduceSum",
    "Sigmoid",
    "Sub",
    "Sum",
    "Where",
  ]);
});

// ---------------------------------------------------------------------------------------------------------
// the trainer
// ---------------------------------------------------------------------------------------------------------

Deno.test("precision: the fp16 error names the operators and the auto fallback", () => {
  const msg = float16DeviceError(["Add", "Mul"], "CUDA is not available (no libcudart); running on the CPU")
    .message;
  assert.match(
    msg,
    /^--precision fp16 needs --device cuda: ONNX Runtime's CPU provider has no float16 kernel for Add or Mul,/,
  );
  assert.match(msg, /--precision fp32/);
  assert.match(msg, /\n--device auto chose the CPU: CUDA is not available \(no libcudart\)$/);
  assert.doesNotMatch(float16DeviceError(["Add"]).message, /auto/);
});

Deno.test("precision: --precision fp16 on the CPU fails before a run folder is made or data is read", async () => {
  const s = await tinySetup();
  try {
    const out = `${s.dir}/run16`;
    const logs: string[] = [];
    await assert.rejects(
      train(tinyConfigFor(s, { precision: "fp16", device: "cpu", out }), { log: (l) => logs.push(l) }),
      (e: Error) => {
        assert.match(
          e.message,
          /^--precision fp16 needs --device cuda: ONNX Runtime's CPU provider has no float16 kernel for Add, Mul, Sub or Sum/,
        );
        return true;
      },
    );
    await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
    assert.deepEqual(logs, []);
    // --device auto where CUDA is missing says that it fell back
    if ((await resolveDevice("auto")).device === "cpu") {
      await assert.rejects(
        train(tinyConfigFor(s, { precision: "fp16", device: "auto", out }), { log: () => {} }),
        /no float16 kernel for Add[^]*\n--device auto chose the CPU: CUDA is not available/,
      );
    }
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("precision: an fp16 run (allowed on the CPU for the test) logs loss_scale and skipped steps", async () => {
  const s = await tinySetup();
  try {
    const logs: string[] = [];
    const res = await train(
      tinyConfigFor(s, { precision: "fp16", maxSteps: 4, evalEvery: 2 }),
      { log: (l) => logs.push(l), allowFloat16OnCpu: true },
    );
    assert.equal(res.steps, 4);
    const records = (await readMetrics(res.run.metrics)).filter((r) => r.loss !== undefined);
    assert.equal(records.length, 4);
    // NCA at step 1, policy = reference (both fp16): 2·log 2
    assert.ok(Math.abs(records[0].loss! - 2 * Math.log(2)) < 1e-5, `first loss ${records[0].loss}`);
    let skips = 0;
    records.forEach((r, i) => {
      assert.ok(r.loss_scale! >= 1 && (r.skipped === 0 || r.skipped === 1), `step ${r.step}`);
      if (i > 0 && records[i - 1].skipped) assert.equal(r.loss_scale, records[i - 1].loss_scale! / 2);
      skips += r.skipped!;
    });
    assert.equal(records[0].loss_scale, 65536);
    assert.equal(logs.filter((l) => /update skipped, loss scale now/.test(l)).length, skips);
    assert.ok(logs.some((l) => l.includes("fp16 (mixed precision, loss scaling)")));
    assert.ok(Number.isFinite(res.eval?.loss), "evaluated with the fp16 scorer");
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
