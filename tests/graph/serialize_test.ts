import assert from "node:assert/strict";
import { GraphBuilder } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { deserializeModel, serializeModel } from "../../lib/graph/serialize.ts";
import { buildTrainingGraph } from "../../lib/graph/training.ts";
import { f32, ModelSession } from "../../lib/runtime/session.ts";
import { IR_VERSION, OPSET } from "../../lib/graph/ir.ts";

function smallModel(): GraphBuilder {
  const g = new GraphBuilder("small");
  const x = g.input("x", "float32", ["batch", 3]);
  const w = g.initializer("w", Float32Array.from({ length: 192 }, (_, i) => (i - 96) / 97), [3, 64]);
  const b = g.initializer("b", Float32Array.from({ length: 64 }, (_, i) => Math.sin(i)), [64]);
  const h = op.add(op.matmul(x, w), b);
  g.output(op.softmax(op.layerNorm(h, g.constant(new Array(64).fill(1), [64], "float32"), null), -1), "y");
  g.output(op.reduceSum(h, [1]), "s");
  return g;
}

Deno.test("serialize: a model survives encode → decode → encode byte for byte", () => {
  const graph = smallModel().build();
  const bytes = serializeModel(graph).model;
  const decoded = deserializeModel(bytes);
  assert.equal(decoded.irVersion, IR_VERSION);
  assert.equal(decoded.opsets[""], OPSET);
  assert.deepEqual(decoded.graph.nodes.map((n) => n.op), graph.nodes.map((n) => n.op));
  assert.deepEqual(decoded.graph.inputs, graph.inputs);
  assert.deepEqual(decoded.graph.outputs, graph.outputs);
  assert.deepEqual(
    decoded.graph.initializers.map((t) => [t.name, t.dims, [...t.data!]]),
    graph.initializers.map((t) => [t.name, t.dims, [...t.data!]]),
  );
  assert.deepEqual(serializeModel(decoded.graph).model, bytes);
});

Deno.test("serialize: training graphs with nested Loop subgraphs round-trip", () => {
  const built = buildTrainingGraph({
    name: "rt",
    params: [{ name: "w", shape: [2] }],
    batch: [{ name: "c", dtype: "float32", shape: [2] }],
    forward: (_g, p, b) => ({ loss: op.sumAll(op.mul(p.w, b.c)) }),
    optimizer: { kind: "adamw" },
    accumulation: 2,
  });
  const bytes = serializeModel(built.graph.build()).model;
  const decoded = deserializeModel(bytes);
  const loop = decoded.graph.nodes.find((n) => n.op === "Loop")!;
  assert.equal(loop.attrs.body.type, "graph");
  assert.deepEqual(serializeModel(decoded.graph).model, bytes);
});

Deno.test("serialize: a model with external data loads and gives the same outputs", async () => {
  const graph = smallModel().build();
  const inline = serializeModel(graph);
  const external = serializeModel(graph, { externalDataThreshold: 16, externalDataPath: "weights.bin" });
  assert.ok(external.externalData, "large initializers moved out");
  assert.ok(external.model.length < inline.model.length);
  const x = f32([1, 2, 3, -1, 0, 0.5], [2, 3]);
  const a = await (await ModelSession.create(inline)).run({ x });
  const b = await (await ModelSession.create(external)).run({ x });
  assert.deepEqual(a.y.data, b.y.data);
  assert.deepEqual(a.s.data, b.s.data);
  // from files on disk: the model refers to weights.bin beside it
  const dir = await Deno.makeTempDir();
  await Deno.writeFile(`${dir}/model.onnx`, external.model);
  await Deno.writeFile(`${dir}/weights.bin`, external.externalData!.data);
  const c = await (await ModelSession.create(`${dir}/model.onnx`)).run({ x });
  assert.deepEqual(a.y.data, c.y.data);
  // and the decoder resolves external initializers
  const decoded = deserializeModel(external.model, external.externalData!.data);
  assert.deepEqual([...decoded.graph.initializers.find((t) => t.name === "w")!.data!], [
    ...graph.initializers.find((t) => t.name === "w")!.data!,
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runtime: a failing run names the operator and the shapes involved", async () => {
  const g = new GraphBuilder("bad");
  const x = g.input("x", "float32", ["n", "m"]);
  const w = g.initializer("w", new Float32Array(12), [3, 4]);
  g.output(op.matmul(op.reshape(x, [-1, 3]), w), "y");
  const s = await ModelSession.create(serializeModel(g.build()), { describe: (n) => g.describe(n) });
  await assert.rejects(() => s.run({ x: f32([1, 2, 3, 4], [2, 2]) }), (e: Error) => {
    assert.match(e.message, /Reshape/);
    assert.match(e.message, /fed: x: float32\[2, 2\]/);
    assert.match(e.message, /Reshape node n_Reshape_\d+ in graph bad: inputs x: float32\[n, m\]/);
    return true;
  });
});

Deno.test("runtime: a model that cannot load says so", async () => {
  await assert.rejects(
    () => ModelSession.create(new Uint8Array([1, 2, 3])),
    /could not load the model on cpu/,
  );
});
