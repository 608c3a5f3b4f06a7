/**
 * The logic of the prepared GPU checks (bench/gpu/), run on the CPU: nccl_check's host-array collectives
 * through lib/runtime/comm's in-process world (2 and 3 ranks) and through NCCL's code with fakes of NCCL and
 * the driver (a world of one, default and tiny staging chunks: the real piece-by-piece staging); ddp_check's
 * arguments, and its fp16 cases (world of one, and 2 ranks at accumulation 1 against one process at 2, in
 * process) compared as on the GPU.
 */
import assert from "node:assert/strict";
import { type Communicator, localWorld, openNccl, singleCommunicator } from "../../lib/runtime/comm/mod.ts";
import { hostBandwidth, hostCollectives, TINY_CHUNK_BYTES } from "../../bench/gpu/nccl_check.ts";
import type { CheckSink } from "../../bench/gpu/_checks.ts";
import { fakes, withNcclEnv } from "../runtime/comm/_nccl_fakes.ts";
import {
  type CaseRun,
  caseTolerance,
  compareRanks,
  ddpCases,
  type DdpCheckArgs,
  FP16_CHECK_LOSS_SCALE,
  FP16_CHECK_TOLERANCE,
  parseDdpCheckArgs,
  rankAccumulation,
  rankCases,
  type RankLine,
  runLoop,
  scalingDifferences,
  twoRankCase,
} from "../../bench/gpu/ddp_check.ts";
import { runScript } from "./_helpers.ts";

/** A sink that keeps what a check emits. */
function sink(): CheckSink & { lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { lines, emit: (o) => lines.push(o), failures: [] };
}

/** The names of the host checks of one pass: 5 collectives × 3 types. */
const HOST_CHECKS = ["float32", "float64", "int32"].flatMap((t) =>
  ["allReduce sum", "allReduce max", "reduceScatter sum", "allGather", "broadcast"].map((c) =>
    `host ${c} ${t}`
  )
);

Deno.test("nccl_check: the host-array collectives pass on every rank of in-process worlds of 1, 2 and 3", async () => {
  for (const n of [1, 2, 3]) {
    const comms = n === 1 ? [singleCommunicator()] : localWorld(n);
    const sinks = comms.map(() => sink());
    await Promise.all(comms.map((c, r) => hostCollectives(c, sinks[r])));
    for (const [r, s] of sinks.entries()) {
      assert.deepEqual(s.failures, [], `${n} ranks, rank ${r}`);
      assert.deepEqual(s.lines.map((l) => l.check), HOST_CHECKS);
      assert.ok(s.lines.every((l) => l.ok === true && l.ranks === n && l.memory === "host"));
    }
  }
});

/** `comm` with its all-reduce losing the last element of host arrays (a lost tail piece). */
function losingTail(comm: Communicator): Communicator {
  return {
    rank: comm.rank,
    size: comm.size,
    localRank: comm.localRank,
    backend: comm.backend,
    allReduce: async (buf, op) => {
      await comm.allReduce(buf, op);
      if (ArrayBuffer.isView(buf)) (buf as Float32Array)[buf.length - 1] = 0;
    },
    reduceScatter: (s, r, op) => comm.reduceScatter(s, r, op),
    allGather: (s, r) => comm.allGather(s, r),
    broadcast: (b, root) => comm.broadcast(b, root),
    barrier: () => comm.barrier(),
    abort: (reason) => comm.abort(reason),
    [Symbol.asyncDispose]: () => comm[Symbol.asyncDispose](),
  };
}

Deno.test("nccl_check: a wrong result fails the check, naming the collective, the type and where", async () => {
  const comms = localWorld(2).map(losingTail);
  const sinks = comms.map(() => sink());
  await Promise.all(comms.map((c, r) => hostCollectives(c, sinks[r], 4096)));
  assert.deepEqual(sinks[0].failures, [
    "host allReduce sum float32 (chunk 4096 B)",
    "host allReduce max float32 (chunk 4096 B)",
    "host allReduce sum float64 (chunk 4096 B)",
    "host allReduce max float64 (chunk 4096 B)",
    "host allReduce sum int32 (chunk 4096 B)",
    "host allReduce max int32 (chunk 4096 B)",
  ]);
  const bad = sinks[1].lines.find((l) => l.check === "host allReduce sum float64")!;
  assert.equal(bad.ok, false);
  assert.equal(bad.first_difference, 1000);
  assert.deepEqual([bad.got, bad.want], [["0"], [String(3 * (1000 % 1000 - 500))]]);

  const s = sink();
  await hostBandwidth(losingTail(singleCommunicator()), s, [1 / 64], { warmup: 0, iters: 1 });
  assert.deepEqual(s.failures, ["host allReduce of 0.015625 MiB: wrong from element 4095"]);
});

Deno.test("nccl_check: through NCCL's code (fakes), host arrays staged whole and in tiny pieces, the staging buffer within the chunk", async () => {
  await withNcclEnv(async () => {
    for (const chunk of [undefined, TINY_CHUNK_BYTES]) {
      const f = fakes({ rank: 0, size: 1 });
      const c = await openNccl({ rank: 0, size: 1, commId: "h:2", apis: f, stagingChunkBytes: chunk });
      const s = sink();
      await hostCollectives(c, s, c.stagingChunkBytes);
      assert.deepEqual(s.failures, [], `chunk ${chunk}`);
      const staging = s.lines.at(-1)!;
      assert.equal(staging.check, "host staging");
      assert.equal(staging.ok, true);
      assert.equal(staging.collectives, 15);
      // the largest array: a float64 all-gather of 1003 elements
      assert.equal(staging.largestArrayBytes, 1003 * 8);
      if (chunk === undefined) {
        assert.equal(staging.stagingBytes, 1003 * 8, "the default chunk stages each array whole");
        assert.equal(staging.ncclCalls, 15);
      } else {
        assert.ok((staging.stagingBytes as number) <= chunk, `${staging.stagingBytes} bytes staged`);
        // pieces of 64 bytes (16 floats or ints, 8 doubles), the last of each array shorter: all-reduce (sum
        // and max) and reduce-scatter 1001 elements, all-gather 1003, broadcast 999
        const pieces = [16, 8, 16].reduce(
          (t, per) => t + [1001, 1001, 1001, 1003, 999].reduce((u, len) => u + Math.ceil(len / per), 0),
          0,
        );
        assert.equal(pieces, 1259);
        assert.equal(staging.ncclCalls, pieces);
      }
      // the host all-reduce timing: its result checked, the staging bound reported
      const b = sink();
      await hostBandwidth(c, b, [1 / 16], { chunkBytes: c.stagingChunkBytes, warmup: 0, iters: 1 });
      assert.deepEqual(b.failures, []);
      assert.equal(b.lines[0].check, "host allReduce bandwidth");
      assert.equal(b.lines[0].ok, true);
      assert.ok((b.lines[0].stagingBytes as number) <= c.stagingChunkBytes);
      await c[Symbol.asyncDispose]();
    }
  });
});

Deno.test("nccl_check: a staging buffer over the chunk, or arrays over the chunk in one call each, fail", async () => {
  // what an NCCL communicator reports, on top of a world of one that computes right
  const liar = (stagingBytes: number, calls: number): Communicator =>
    ({ ...singleCommunicator(), stagingBytes, stats: { calls } }) as Communicator;
  const over = sink();
  await hostCollectives(liar(100, 0), over, 64);
  assert.deepEqual(over.failures, [
    "host staging: 100 bytes staged with a 64-byte chunk",
    "host staging: 15 collectives on arrays of up to 8024 bytes made only 0 NCCL calls with a 64-byte chunk: not split into pieces",
  ]);
  const b = sink();
  await hostBandwidth(liar(1 << 20, 0), b, [1 / 64], { chunkBytes: 4096, warmup: 0, iters: 1 });
  assert.deepEqual(b.failures, [
    "host allReduce of 0.015625 MiB: 1048576 bytes staged with a 4096-byte chunk",
  ]);
});

Deno.test("ddp_check: --fp16 and --fp16-tolerance, set only where given; what is wrong with them", () => {
  // without them the arguments are what they were (tests/train/distributed_test.ts compares the whole object)
  assert.deepEqual(parseDdpCheckArgs([]), {
    steps: 5,
    mode: ["lora", "full"],
    tolerance: 1e-5,
    device: "cuda",
  });
  assert.deepEqual(ddpCases(parseDdpCheckArgs([])).map((c) => c.name), ["lora", "full", "lora-fp16"]);
  const a = parseDdpCheckArgs(["--fp16", "both", "--fp16-tolerance", "1e-4", "--mode", "full"]);
  assert.deepEqual(a.fp16, ["lora", "full"]);
  assert.equal(a.fp16Tolerance, 1e-4);
  assert.deepEqual(ddpCases(a).map((c) => [c.name, c.fp16]), [["full", false], [
    "lora-fp16",
    true,
  ], ["full-fp16", true]]);
  assert.equal(caseTolerance(a, ddpCases(a)[0]), 1e-5);
  assert.equal(caseTolerance(a, ddpCases(a)[1]), 1e-4);
  assert.equal(
    caseTolerance(parseDdpCheckArgs([]), ddpCases(parseDdpCheckArgs([]))[2]),
    FP16_CHECK_TOLERANCE,
  );
  assert.deepEqual(ddpCases(parseDdpCheckArgs(["--fp16", "none"])).map((c) => c.name), ["lora", "full"]);
  assert.throws(
    () => parseDdpCheckArgs(["--fp16", "bf16"]),
    /--fp16 must be lora, full, both or none, got bf16/,
  );
  assert.throws(() => parseDdpCheckArgs(["--fp16-tolerance", "0"]), /--fp16-tolerance must be > 0, got 0/);
  assert.throws(() => parseDdpCheckArgs(["--fp16"]), /--fp16 needs a value/);
  // each rank's part of a step is one of the Loop's 2 micro-batches; LoRA's keyed dropout does not pair
  assert.deepEqual([1, 2].map((n) => rankAccumulation(n)), [2, 1]);
  assert.throws(() => rankAccumulation(3), /3 ranks do not/);
  const both = ddpCases(parseDdpCheckArgs(["--fp16", "both"]));
  assert.deepEqual(both.map((c) => [c.name, c.dropout]), [
    ["lora", true],
    ["full", false],
    ["lora-fp16", false],
    ["full-fp16", false],
  ]);
  assert.ok(both.map(twoRankCase).every((c, i) => !c.dropout && c.name === both[i].name));
});

Deno.test("ddp_check: LoRA in fp32 and fp16 on 2 in-process ranks at accumulation 1 against the Loop at 2 pass as the GPU check compares them", async () => {
  const args: DdpCheckArgs = parseDdpCheckArgs(["--device", "cpu", "--mode", "lora"]);
  const cases = ddpCases(args).map(twoRankCase);
  assert.deepEqual(cases.map((c) => c.name), ["lora", "lora-fp16"]);
  const loops: Record<string, CaseRun> = {};
  for (const c of cases) loops[c.name] = await runLoop(args, c);
  // the loss scale starts at 2^22: skipped, halved, then updates (skips are compared, not only updates)
  const fp16 = loops["lora-fp16"];
  assert.ok(fp16.scaling.skipped.includes(1) && fp16.scaling.skipped.includes(0), `${fp16.scaling.skipped}`);
  assert.equal(fp16.scaling.lossScale![0], FP16_CHECK_LOSS_SCALE);
  assert.equal(fp16.scalars.loss_scale, FP16_CHECK_LOSS_SCALE / 2);

  // what the two processes print and write, through JSON as between the processes
  const ranks = await Promise.all(localWorld(2).map((comm) => rankCases(args, comm)));
  const lines = JSON.parse(JSON.stringify(ranks.flatMap((r) => r.lines))) as RankLine[];
  const weights = JSON.parse(JSON.stringify(ranks[0].weights));
  const s = sink();
  compareRanks(s, args, loops, lines, weights, { gpus: 2 });
  assert.deepEqual(s.failures, []);
  const out = s.lines.filter((l) => l.check === "two-gpus");
  assert.deepEqual(out.map((l) => [l.case, l.rank, l.accumulation, l.tolerance, l.ok]), [
    ["lora", 0, 1, 1e-5, true],
    ["lora", 1, 1, 1e-5, true],
    ["lora-fp16", 0, 1, 1e-6, true],
    ["lora-fp16", 1, 1, 1e-6, true],
  ]);
  assert.ok((out[0].relative as number) < 1e-5 && (out[2].relative as number) < 1e-6);
  assert.equal(out[3].relative, null, "rank 1's scaling is compared, rank 0's weights stand for both");
  assert.deepEqual(out[2].skipped, fp16.scaling.skipped);

  // a rank whose loss scaling or weights differ fails, naming the case, the rank and what
  const bad = lines.map((l) =>
    l.case === "lora-fp16" && l.rank === 1 ? { ...l, skipped: l.skipped.map(() => 0) } : l
  );
  const w = structuredClone(weights);
  const first = Object.keys(w["lora-fp16"])[0];
  w["lora-fp16"][first][0] += 1;
  const f = sink();
  compareRanks(f, args, loops, bad, w);
  assert.equal(f.failures.length, 2, f.failures.join("\n"));
  assert.match(f.failures[0], /^lora-fp16: two-gpus rank 0: weights: relative difference .* ≥ 0\.000001$/);
  assert.match(f.failures[1], /^lora-fp16: two-gpus rank 1: skipped steps \[0,0,0,0,0\], one process \[1,/);
  const m = sink();
  compareRanks(m, args, loops, lines.filter((l) => l.rank === 0), weights);
  assert.deepEqual(m.failures, [
    "lora: two-gpus: rank 0's weights and both ranks' lines expected, got the lines of ranks [0]",
    "lora-fp16: two-gpus: rank 0's weights and both ranks' lines expected, got the lines of ranks [0]",
  ]);
  const n = sink();
  compareRanks(n, args, { lora: loops.lora }, lines, weights);
  assert.deepEqual(n.failures, ["lora-fp16: two-gpus: the Loop did not run (see world-of-one)"]);
});

Deno.test("ddp_check: loss scaling that differs from one process's is named", () => {
  const one = { lossScale: [4, 2, 2], skipped: [1, 0, 0], finiteNorm: [false, true, true] };
  assert.deepEqual(scalingDifferences(one, structuredClone(one)), []);
  assert.deepEqual(scalingDifferences(one, { ...one, lossScale: [4, 4, 4] }), [
    "loss scales [4,4,4], one process [4,2,2]",
  ]);
  assert.deepEqual(scalingDifferences(one, { ...one, finiteNorm: [true, true, true] }), [
    "step 1: the norm is finite where one process skipped it",
  ]);
  const none = { lossScale: [4, 2], skipped: [1, 1], finiteNorm: [false, false] };
  assert.deepEqual(scalingDifferences(none, none), ["every step skipped: no update to compare"]);
  // fp32: no loss scale on either side
  const fp32 = { lossScale: null, skipped: [0], finiteNorm: [true] };
  assert.deepEqual(scalingDifferences(fp32, fp32), []);
});

Deno.test("ddp_check: the script on the CPU: the world of one for every case, its lines with their tolerance, exit 0", async () => {
  const out = await runScript("bench/gpu/ddp_check.ts", [
    "--device",
    "cpu",
    "--steps",
    "2",
    "--mode",
    "full",
  ]);
  assert.equal(out.code, 0, out.stderr);
  const lines = out.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => [l.check, l.case, l.precision, l.tolerance, l.ok]), [
    ["world-of-one", "full", "fp32", 1e-5, true],
    ["world-of-one", "lora-fp16", "fp16", 1e-6, true],
    ["two-gpus", undefined, undefined, undefined, undefined],
    ["summary", undefined, undefined, undefined, true],
  ]);
  assert.deepEqual(lines[1].lossScale, [FP16_CHECK_LOSS_SCALE, FP16_CHECK_LOSS_SCALE / 2]);
  const bad = await runScript("bench/gpu/ddp_check.ts", ["--fp16", "half"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /ddp_check: --fp16 must be lora, full, both or none, got half/);
});
