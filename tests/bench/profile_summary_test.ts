import assert from "node:assert/strict";
import {
  formatSummary,
  main,
  type ProfileEvent,
  summarizeProfile,
  USAGE,
} from "../../bench/profile_summary.ts";
import { UsageError } from "../../bench/_common.ts";
import { collector } from "./_helpers.ts";

/** A made-up profile: two runs; the second runs a Loop of 3 steps over a Gemm (CUDA) and a Mul (CPU). */
function profile(): ProfileEvent[] {
  const node = (name: string, op: string, ts: number, dur: number, provider = "CUDAExecutionProvider") => ({
    cat: "Node",
    name: `${name}_kernel_time`,
    ph: "X",
    ts,
    dur,
    args: { op_name: op, provider },
  });
  const ev: ProfileEvent[] = [
    { cat: "Session", name: "session_initialization", ts: 0, dur: 500 },
    { cat: "Session", name: "model_run", ts: 1000, dur: 100 },
    node("a", "Gemm", 1010, 50),
    { cat: "Session", name: "model_run", ts: 2000, dur: 1000 },
    node("shape", "Shape", 2001, 2, "CPUExecutionProvider"),
  ];
  for (let i = 0; i < 3; i++) {
    ev.push(node("g", "Gemm", 2100 + 200 * i, 100));
    ev.push(node("m", "Mul", 2200 + 200 * i, 20, "CPUExecutionProvider"));
    ev.push({ cat: "Node", name: "g_fence_before", ts: 2100 + 200 * i, dur: 1, args: { op_name: "Gemm" } });
  }
  ev.push(node("loop", "Loop", 2050, 900, "CUDAExecutionProvider"));
  return ev;
}

Deno.test("profile_summary: totals of the last run, control flow apart, steps inferred", () => {
  const s = summarizeProfile(profile(), { top: 2 });
  assert.equal(s.runs, 2);
  assert.equal(s.run, 1);
  assert.equal(s.wall_ms, 1);
  assert.equal(s.node_execs, 7);
  assert.equal(s.kernel_ms, 0.362); // 3·100 + 3·20 + 2 µs; the Loop's 900 µs is not added
  assert.equal(s.steps, 3);
  assert.equal(s.steps_inferred, true);
  assert.equal(s.node_execs_per_step, 2.3);
  assert.deepEqual(s.control_flow, { Loop: { ms: 0.9, count: 1 } });
  assert.deepEqual(s.providers, {
    CPUExecutionProvider: { ms: 0.062, count: 4 },
    CUDAExecutionProvider: { ms: 0.3, count: 3 },
  });
  assert.deepEqual(s.top_ops.map((t) => [t.op, t.ms, t.count, t.per_step, t.mean_us]), [
    ["Gemm", 0.3, 3, 1, 100],
    ["Mul", 0.06, 3, 1, 20],
  ]);
  assert.deepEqual(s.top_nodes[0], { node: "g", op: "Gemm", ms: 0.3, count: 3 });
  const text = formatSummary(s);
  assert.match(text, /run 1 of 2/);
  assert.match(text, /node executions: 7 \(2\.3 per step/);
  assert.match(text, /host-side/);
});

Deno.test("profile_summary: run choice, given steps, and errors", () => {
  const first = summarizeProfile(profile(), { run: 0 });
  assert.equal(first.node_execs, 1);
  assert.equal(first.kernel_ms, 0.05);
  const all = summarizeProfile(profile(), { run: "all", steps: 4 });
  assert.equal(all.node_execs, 8);
  assert.equal(all.steps, 4);
  assert.equal(all.steps_inferred, false);
  assert.equal(all.wall_ms, 1.1);
  assert.throws(() => summarizeProfile(profile(), { run: 2 }), /2 runs \(0 to 1\)/);
  assert.throws(
    () => summarizeProfile([{ cat: "Session", name: "model_run", ts: 0, dur: 1 }]),
    /no node events/,
  );
  assert.throws(() => summarizeProfile({} as unknown as ProfileEvent[]), /JSON array/);
});

Deno.test("profile_summary: the command line", async () => {
  const c = collector();
  assert.equal(await main(["--help"], c.print), null);
  assert.equal(c.lines[0], USAGE);
  await assert.rejects(main([]), (e) => e instanceof UsageError && /exactly one profile/.test(e.message));
  await assert.rejects(
    main(["a.json", "--run", "x"]),
    (e) => e instanceof UsageError && /--run/.test(e.message),
  );
  await assert.rejects(
    main(["a.json", "--nope"]),
    (e) => e instanceof UsageError && /--nope/.test(e.message),
  );
  await assert.rejects(main(["/nonexistent/p.json"]), /p\.json: not found/);
  const file = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(file, JSON.stringify(profile()));
    const out = collector();
    const s = await main([file, "--json", "--steps", "3"], out.print);
    assert.equal(JSON.parse(out.lines[0]).node_execs, 7);
    assert.equal(s?.file, file);
  } finally {
    await Deno.remove(file);
  }
});
