import assert from "node:assert/strict";
import { main, USAGE } from "../../bench/train_throughput.ts";
import { main as summarize } from "../../bench/profile_summary.ts";
import { UsageError } from "../../bench/_common.ts";
import { assertPositive, collector, TINY } from "./_helpers.ts";

Deno.test("train_throughput: --help and bad flags", async () => {
  const c = collector();
  assert.deepEqual(await main(["-h"], c.print), []);
  assert.equal(c.lines[0], USAGE);
  await assert.rejects(main(["--cases", "dpo"]), (e) => e instanceof UsageError && /"dpo"/.test(e.message));
  await assert.rejects(main(["--steps", "-1"]), (e) => e instanceof UsageError && /--steps/.test(e.message));
  await assert.rejects(
    main(["--peak-tflops", "0"]),
    (e) => e instanceof UsageError && /--peak-tflops/.test(e.message),
  );
  await assert.rejects(
    main([...TINY, "--batch", "6", "--cases", "nca"]),
    (e) => e instanceof UsageError && /multiple of --k 4/.test(e.message),
  );
  await assert.rejects(
    main([...TINY, "--positions", "8"]),
    (e) => e instanceof UsageError && /--positions 8 is shorter than --seq 16/.test(e.message),
  );
  await assert.rejects(
    main(["--lora-dropout", "1"]),
    (e) => e instanceof UsageError && /--lora-dropout must be in \[0, 1\)/.test(e.message),
  );
  await assert.rejects(
    main(["--backend", "wasm"]),
    (e) => e instanceof UsageError && /"wasm"/.test(e.message),
  );
  await assert.rejects(main(["--layers"]), (e) => e instanceof UsageError && /--layers/.test(e.message));
  await assert.rejects(main(["extra"]), (e) => e instanceof UsageError && /extra/.test(e.message));
});

Deno.test("train_throughput: a tiny CPU run of every case, profiled, and its profile summary", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench_tp_" });
  try {
    const c = collector();
    const recs = await main([
      ...TINY,
      "--batch",
      "4",
      "--steps",
      "2",
      "--steps-per-run",
      "2",
      "--threads",
      "1",
      "--peak-tflops",
      "1",
      "--profile",
      `${dir}/prof`,
    ], c.print);
    assert.deepEqual(recs.map((r) => r.case), ["full", "lora", "nca"]);
    assert.deepEqual(c.lines.map((l) => JSON.parse(l)), recs);
    for (const rec of recs) {
      assert.equal(rec.bench, "train_throughput");
      assert.equal(rec.device, "cpu");
      assert.equal(rec.tokens_per_step, 4 * 16);
      assert.equal(rec.steps, 2);
      assertPositive(rec, [
        "tokens_per_s",
        "step_ms",
        "run_ms",
        "mfu",
        "model_tflops",
        "flops_per_token",
        "params",
        "trainable_params",
        "step_nodes",
      ]);
      // split by subtraction of timings: noise can clamp either part to 0 on a tiny model
      for (const f of ["in_loop_step_ms", "run_overhead_ms"]) {
        assert.ok(Number.isFinite(rec[f]) && (rec[f] as number) >= 0, `${f} = ${rec[f]}`);
      }
      assert.ok(Number.isFinite(rec.last_loss));
      assert.equal(rec.peak_tflops, 1);
      assert.match(rec.mfu_formula as string, rec.mode === "full" ? /^6·N/ : /^4·N/);
      const expected = (rec.flops_per_token as number) * (rec.tokens_per_s as number) / 1e12;
      assert.ok(Math.abs((rec.mfu as number) - expected) < 1e-3, `mfu ${rec.mfu} vs ${expected}`);
      assert.ok(typeof rec.profile === "string" && rec.profile.startsWith(`${dir}/prof-${rec.case}_`));
    }
    const full = recs[0], nca = recs[2];
    assert.equal(full.flops_per_token, 6 * (full.params as number));
    assert.equal(nca.k, 4);
    assert.equal(nca.loss, "nca");

    // the profile of the nca case: its last run is a timed 2-step run
    const out = collector();
    const s = await summarize([nca.profile as string, "--json", "--top", "5"], out.print);
    assert.ok(s);
    assert.deepEqual(JSON.parse(out.lines[0]), s);
    assert.equal(s.steps, 2);
    assert.equal(s.runs, 4, "warmup, 1-step warmup, 1-step timed, timed run");
    assert.equal(s.run, 3);
    assert.ok(s.node_execs_per_step > 100, `${s.node_execs_per_step} nodes per step`);
    assert.ok(s.kernel_ms > 0 && s.kernel_ms <= s.wall_ms, `${s.kernel_ms} of ${s.wall_ms}`);
    assert.equal(s.top_ops.length, 5);
    assert.equal(s.providers.CPUExecutionProvider.count, s.node_execs);
    assert.ok(s.control_flow.Loop.count === 1);
    const text = collector();
    await summarize([nca.profile as string, "--run", "all"], text.print);
    assert.match(text.lines[0], /top operators by total time/);
    assert.match(text.lines[0], /all 4 runs: .* 6 steps \(inferred\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("train_throughput: --lora-dropout keys the masks by the step, and they change the training", async () => {
  const run = async (p: string) =>
    (await main(
      [...TINY, "--cases", "lora", "--steps", "3", "--steps-per-run", "3", "--lora-dropout", p],
      () => {},
    ))[0];
  const [plain, dropped, again] = [await run("0"), await run("0.3"), await run("0.3")];
  assert.equal(plain.lora_dropout, 0);
  assert.equal(dropped.lora_dropout, 0.3);
  assert.ok((dropped.step_nodes as number) > (plain.step_nodes as number), "the masks are nodes of the step");
  assert.notEqual(dropped.last_loss, plain.last_loss);
  assert.equal(again.last_loss, dropped.last_loss, "keyed masks: the same steps draw the same masks");
});

Deno.test("train_throughput: --backend node,ffi runs each case through both, with the same losses", async () => {
  const c = collector();
  const recs = await main(
    [...TINY, "--cases", "full", "--backend", "node,ffi", "--overhead-runs", "0"],
    c.print,
  );
  assert.deepEqual(recs.map((r) => r.backend), ["node", "ffi"]);
  assert.equal(recs[0].last_loss, recs[1].last_loss, "the same computation");
  for (const r of recs) assertPositive(r, ["tokens_per_s", "step_ms"]);
});
