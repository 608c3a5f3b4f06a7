import assert from "node:assert/strict";
import { main, USAGE } from "../../bench/block_step.ts";
import { UsageError } from "../../bench/_common.ts";
import { assertPositive, collector, runScript, TINY } from "./_helpers.ts";

Deno.test("block_step: --help prints the usage and runs nothing", async () => {
  const c = collector();
  assert.deepEqual(await main(["--help"], c.print), []);
  assert.equal(c.lines.join("\n"), USAGE);
  assert.match(USAGE, /--steps-per-run/);
});

Deno.test("block_step: bad flags are usage errors that name the flag", async () => {
  await assert.rejects(main(["--bogus"]), (e) => e instanceof UsageError && /--bogus/.test(e.message));
  await assert.rejects(main(["--batch", "0"]), (e) => e instanceof UsageError && /--batch/.test(e.message));
  await assert.rejects(
    main(["--seq", "ten"]),
    (e) => e instanceof UsageError && /--seq.*"ten"/.test(e.message),
  );
  await assert.rejects(
    main(["--cases", "full,half"]),
    (e) => e instanceof UsageError && /"half"/.test(e.message),
  );
  await assert.rejects(
    main(["--device", "tpu"]),
    (e) => e instanceof UsageError && /--device/.test(e.message),
  );
  await assert.rejects(
    main(["--steps-per-run", "1"]),
    (e) => e instanceof UsageError && /--steps-per-run.*≥ 2/.test(e.message),
  );
  await assert.rejects(
    main([...TINY, "--hidden", "30"]),
    (e) => e instanceof UsageError && /multiple of --heads/.test(e.message),
  );
});

Deno.test("block_step: the CLI exits 2 on a bad flag with the message and the usage on stderr", async () => {
  const r = await runScript("bench/block_step.ts", ["--steps", "3"]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /Unknown option '--steps'/);
  assert.match(r.stderr, /Usage: deno run -A bench\/block_step.ts/);
});

Deno.test("block_step: a tiny CPU run prints one JSON line per case with the step time and node count", async () => {
  const c = collector();
  const recs = await main([...TINY, "--steps-per-run", "2", "--runs", "1", "--threads", "1"], c.print);
  assert.equal(recs.length, 2);
  assert.equal(c.lines.length, 2);
  for (const [i, rec] of recs.entries()) {
    assert.deepEqual(JSON.parse(c.lines[i]), rec);
    assert.equal(rec.bench, "block_step");
    assert.equal(rec.case, ["full", "lora"][i]);
    assert.equal(rec.device, "cpu");
    assert.equal(rec.ort, "1.29.0");
    assertPositive(rec, [
      "wall_step_ms",
      "run_ms",
      "one_step_run_ms",
      "tokens_per_s",
      "step_nodes",
      "graph_nodes",
      "launch_floor_ms",
      "params",
      "trainable_params",
      "loss",
    ]);
    assert.ok(Number.isFinite(rec.step_ms) && rec.step_ms >= 0);
    assert.ok((rec.graph_nodes as number) > rec.step_nodes, "the Loop body is part of the graph");
    const ops = rec.step_ops as Record<string, number>;
    assert.ok(ops.Gemm > 0 && ops.Mul > 0, JSON.stringify(ops));
  }
  assert.equal(recs[0].trainable_params, recs[0].params, "full: everything trains");
  assert.ok((recs[1].trainable_params as number) < (recs[1].params as number), "lora: adapters only");
});
