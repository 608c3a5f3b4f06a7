/**
 * Runs a small graph through the C API `n` times (argument) after a warm-up and prints, as JSON, how much
 * the process's resident memory grew: a process of its own, so the other tests' allocations do not count.
 * Each run makes an input value over a host buffer and an output of 64 KiB, read back and released.
 */
import { GraphBuilder } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { serializeModel } from "../../lib/graph/serialize.ts";
import { processMemory } from "../../lib/runtime/device_memory.ts";
import { OrtSession, OrtValue } from "../../lib/runtime/ort/mod.ts";
import type { HostTensor } from "../../lib/runtime/session.ts";

const n = Number(Deno.args[0] ?? 10_000);
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
