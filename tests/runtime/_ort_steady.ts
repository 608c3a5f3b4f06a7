/**
 * Runs a small graph through the C API `n` times (first argument) after a warm-up, or with `generate` as
 * the second argument `n` generations of 16 tokens for 4 prompts of an exported tiny decoder (KV cache kept in ONNX
 * Runtime), and prints as JSON how much the process's resident memory grew: a process of its own, so the
 * other tests' allocations do not count. Each run makes an input value over a host buffer and an output of
 * 64 KiB, read back and released.
 */
import { GraphBuilder } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { serializeModel } from "../../lib/graph/serialize.ts";
import { processMemory } from "../../lib/runtime/device_memory.ts";
import { OrtSession, OrtValue } from "../../lib/runtime/ort/mod.ts";
import { join } from "node:path";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { exportForServing } from "../../lib/model/export.ts";
import { generate } from "../../lib/model/generate.ts";
import { initWeights } from "../../lib/model/init.ts";
import { type HostTensor, ModelSession } from "../../lib/runtime/session.ts";

const n = Number(Deno.args[0] ?? 10_000);
if (Deno.args[1] === "generate") {
  const dir = await Deno.makeTempDir({ prefix: "ort_steady_" });
  const cfg = tinyConfig("llama");
  const { onnxPath } = await exportForServing(join(dir, "m"), {
    cfg,
    weights: initWeights(cfg, { seed: 1 }),
  });
  const session = await ModelSession.create(onnxPath, { intraOpThreads: 1, backend: "ffi" });
  const prompts = [[3, 14, 15, 9], [2, 6], [7, 1, 8], [5]];
  const once = () => generate(session, prompts, { maxNewTokens: 16, temperature: 0.7, seed: 1 });
  for (let i = 0; i < 100; i++) await once();
  const before = processMemory().rss;
  for (let i = 0; i < n; i++) await once();
  console.log(JSON.stringify({ runs: n, grew: processMemory().rss - before }));
  await session.release();
  await Deno.remove(dir, { recursive: true });
  Deno.exit(0);
}
const g = new GraphBuilder("small");
const x = g.input("x", "float32", [64, 256]);
g.output(op.tanh(op.matmul(x, g.constant(new Array(256 * 256).fill(0.01), [256, 256], "float32"))), "y");
const s = await OrtSession.create(serializeModel(g.build()).model, { intraOpThreads: 1 });
const host: HostTensor = { dtype: "float32", dims: [64, 256], data: new Float32Array(64 * 256).fill(1) };
const once = async () => {
  const v = OrtValue.fromHost(host);
  const out = await s.run({ x: v });
  out.y.toHost();
  out.y.release();
  v.release();
};
for (let i = 0; i < 1000; i++) await once();
const before = processMemory().rss;
for (let i = 0; i < n; i++) await once();
console.log(JSON.stringify({ runs: n, grew: processMemory().rss - before }));
s.release();
