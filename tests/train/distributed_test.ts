/**
 * Data-parallel training through the in-process world (lib/runtime/comm's localWorld): the gradient and
 * AdamW graphs with a world of one end where the chunk graph's Loop does; 2 ranks × B prompts end where
 * 1 rank × 2B does (LoRA and full, NCA and DPO, with accumulation and LoRA dropout); the ranks' weights are
 * bit-identical; ZeRO-1 equals DDP and holds half the optimizer state per rank; checkpoints move between
 * world sizes; fp16 with dynamic loss scaling skips, halves and grows as one process does, its checkpoint
 * scalars (`loss_scale`, `good_steps`) moving between world sizes too.
 */
import assert from "node:assert/strict";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { frozenWeights } from "../../lib/model/weights.ts";
import { trainableParamsFor, type TrainableSpec } from "../../lib/model/decoder.ts";
import {
  alignmentTrainingSpec,
  buildAlignmentGraph,
  FP16_LOSS_SCALING,
  usesDropoutKey,
} from "../../lib/train/train_graph.ts";
import { buildGradientGraph } from "../../lib/graph/distributed.ts";
import { type ChunkResult, TrainingSession } from "../../lib/runtime/training_session.ts";
import { localWorld } from "../../lib/runtime/comm/local.ts";
import {
  type CommBuffer,
  type Communicator,
  isDeviceBuffer,
  singleCommunicator,
} from "../../lib/runtime/comm/communicator.ts";
import { DistributedSession, type ZeroStage } from "../../lib/train/distributed.ts";
import { assembleRankChunk, rankShares, rankSteps } from "../../lib/train/rank_data.ts";
import { assembleChunk, type ChunkOptions, type PlannedStep } from "../../lib/train/chunks.ts";
import type { PreparedExample } from "../../lib/train/prepare.ts";
import { openTrainWorld, resumedBatch } from "../../lib/train/distributed_run.ts";
import { rankCudaDevice } from "../../lib/runtime/comm/launch.ts";
import { fakes, withNcclEnv } from "../runtime/comm/_nccl_fakes.ts";
import { estimateMemory, rankStateBytes } from "../../lib/train/memory.ts";
import { parseDdpCheckArgs } from "../../bench/gpu/ddp_check.ts";

const cfg = tinyConfig("llama", { numLayers: 1, hiddenSize: 16, vocabSize: 40 });
const W = initWeights(cfg, { seed: 5, std: 0.1 });
const K = 2, STEPS = 5, LR = 2e-2;

// 40 prompts of varied lengths, K = 2 responses each; 5 steps of 8 prompts
const rand = (() => {
  let s = 7;
  return () => ((s = Math.imul(s, 1103515245) + 12345 >>> 0) / 2 ** 32);
})();
const tok = (n: number) => Array.from({ length: n }, () => 1 + Math.floor(rand() * 37));
const examples: PreparedExample[] = Array.from({ length: 40 }, (_, i) => ({
  promptIds: tok(2 + (i % 5)),
  responseIds: [tok(1 + (i % 3)), tok(2 + (i % 4))],
  labels: [0.7, 0.3],
}));
const reference = examples.map(() => Float32Array.from([-20 - rand() * 5, -22 - rand() * 5]));
const order = Array.from({ length: 40 }, (_, i) => (i * 17) % 40);
const steps: PlannedStep[] = Array.from({ length: STEPS }, (_, s) => ({
  epoch: 0,
  indices: order.slice(s * 8, s * 8 + 8),
}));
const lrs = new Array(STEPS).fill(LR);

/**
 * fp16 (mixed precision) with the loss scale starting at `init` (default: the sessions' own default), grown
 * after `growthInterval` good steps.
 */
type Fp16 = { init?: number; growthInterval?: number };
type Case = {
  mode: "lora" | "full";
  loss: "nca" | "dpo" | "sft";
  acc: number;
  dropout?: number;
  fp16?: Fp16;
};

function trainableOf(c: Case) {
  const spec: TrainableSpec = c.mode === "lora"
    ? {
      mode: "lora",
      lora: { r: 2, alpha: 4, dropout: c.dropout ?? 0, targetModules: "all-linear" },
      seed: 3,
    }
    : { mode: "full", weights: W };
  return trainableParamsFor(cfg, spec);
}

function specOf(c: Case, rowOffset = false) {
  const trainable = trainableOf(c);
  return {
    trainable,
    spec: {
      cfg,
      frozen: frozenWeights(W),
      trainable,
      loss: c.loss,
      beta: 0.1,
      k: K,
      ranked: false,
      optimizer: { kind: "adamw" as const, weightDecay: 0.01 },
      maxGradNorm: 1,
      accumulation: c.acc,
      rowOffset,
      precision: c.fp16 ? "fp16" as const : undefined,
      lossScaling: c.fp16 ? { growthInterval: c.fp16.growthInterval } : undefined,
    },
  };
}

function chunkOptions(c: Case, keyed: boolean): ChunkOptions {
  return {
    loss: c.loss,
    k: K,
    padId: 0,
    accumulation: c.acc,
    dropout: keyed ? { seed: 3, fromStep: 0 } : undefined,
  };
}

/** One process, today's chunk graph (a Loop of STEPS steps): the packed parameters after `upTo` steps. */
async function loopRun(c: Case, upTo = STEPS) {
  const { trainable, spec } = specOf(c);
  const ts = await TrainingSession.create(buildAlignmentGraph(spec), trainable.init, {
    intraOpThreads: 1,
    lossScale: c.fp16?.init,
  });
  const tensors = assembleChunk(
    examples,
    steps.slice(0, upTo),
    reference,
    chunkOptions(c, usesDropoutKey(trainable)),
  );
  const res = await ts.run(tensors.feeds, lrs.slice(0, upTo));
  const named = ts.namedState();
  const state = Object.fromEntries(Object.entries(named.tensors).map(([k, v]) => [k, v.data.slice()]));
  return { ts, state, res, scalars: named.scalars };
}

/** `comms.length` ranks of the data-parallel step, all running `from`..`to` of the steps concurrently. */
async function openRanks(c: Case, comms: Communicator[], zero: ZeroStage = 0, hashEvery = 1, padded = false) {
  return await Promise.all(comms.map((comm) => {
    const { trainable, spec } = specOf(c, true);
    // `padded`: the gradient as the trainer builds it for ZeRO-1, flat and padded for the ranks
    const built = buildGradientGraph(alignmentTrainingSpec(spec), {
      ranks: padded ? comms.length : undefined,
    });
    return DistributedSession.create(built, trainable.init, comm, {
      optimizer: spec.optimizer,
      maxGradNorm: spec.maxGradNorm,
      zero,
      hashEvery,
      intraOpThreads: 1,
      lossScale: c.fp16?.init,
    });
  }));
}

async function runRanks(c: Case, sessions: DistributedSession[], from = 0, to = STEPS) {
  const keyed = usesDropoutKey(trainableOf(c));
  const o = { ...chunkOptions(c, keyed), dropout: keyed ? { seed: 3, fromStep: from } : undefined };
  return await Promise.all(sessions.map((s) => {
    const t = assembleRankChunk(examples, steps.slice(from, to), reference, o, s.comm, true);
    return s.run(t.feeds, lrs.slice(from, to));
  }));
}

async function named(s: DistributedSession[]) {
  const all = await Promise.all(s.map((x) => x.namedState()));
  return all.map((n) => Object.fromEntries(Object.entries(n.tensors).map(([k, v]) => [k, v.data.slice()])));
}

/** max |a − b| over max |b|, over every tensor of `b` (parameters and moments). */
function relativeDiff(
  a: Record<string, Float32Array>,
  b: Record<string, Float32Array>,
  only?: RegExp,
): number {
  let diff = 0, scale = 0;
  for (const [k, v] of Object.entries(b)) {
    if (only && !only.test(k)) continue;
    const u = a[k];
    assert.ok(u, `missing ${k}`);
    for (let i = 0; i < v.length; i++) {
      diff = Math.max(diff, Math.abs(u[i] - v[i]));
      scale = Math.max(scale, Math.abs(v[i]));
    }
  }
  return diff / scale;
}

const PARAMS = /^(?!.*\.exp_avg)/; // the parameters, not their moments

async function release(...xs: { release(): Promise<unknown> }[]) {
  for (const x of xs) await x.release();
}

for (
  const c of [
    { mode: "lora", loss: "nca", acc: 2 },
    { mode: "full", loss: "dpo", acc: 2 },
    { mode: "lora", loss: "nca", acc: 2, fp16: { init: 2 ** 22 } },
  ] as Case[]
) {
  Deno.test(
    `distributed: a world of one through the gradient and AdamW graphs equals the Loop (${c.mode}, ${c.loss}, accumulation ${c.acc}${
      c.fp16 ? ", fp16" : ""
    })`,
    async () => {
      const loop = await loopRun(c);
      const [one] = await openRanks(c, [singleCommunicator()]);
      const res = await runRanks(c, [one]);
      // fp16: the same graph operations seeded with the same scale, so the same skips (2 here) and scales
      if (c.fp16) {
        assert.deepEqual([...loop.res.skipped], [1, 1, 0, 0, 0]);
        assertSameScaling(res, loop.res);
      }
      const [state] = await named([one]);
      const d = relativeDiff(state, loop.state);
      assert.ok(d < 1e-6, `world of one vs the Loop: relative difference ${d}`);
      assert.ok(relativeDiff(state, trainableOf(c).init, PARAMS) > 1e-3, "the parameters moved");
      for (let i = 0; i < STEPS; i++) {
        assert.ok(Math.abs(res[0].loss[i] - loop.res.loss[i]) < 1e-5 * Math.abs(loop.res.loss[i]) + 1e-6);
      }
      await release(loop.ts, one);
    },
  );
}

const cases: Case[] = [
  { mode: "lora", loss: "nca", acc: 2, dropout: 0.1 },
  { mode: "lora", loss: "dpo", acc: 1, dropout: 0.1 },
  { mode: "full", loss: "nca", acc: 1 },
  { mode: "full", loss: "dpo", acc: 2 },
];
for (const c of cases) {
  Deno.test(
    `distributed: 2 ranks × B prompts equal 1 rank × 2B after ${STEPS} steps (${c.mode}, ${c.loss}, accumulation ${c.acc}${
      c.dropout ? ", LoRA dropout" : ""
    })`,
    async () => {
      const loop = await loopRun(c);
      const ranks = await openRanks(c, localWorld(2));
      const res = await runRanks(c, ranks);
      const [a, b] = await named(ranks);
      for (const k of Object.keys(a)) {
        assert.deepEqual(a[k], b[k], `${k}: the ranks' values are not bit-identical`);
      }
      const d = relativeDiff(a, loop.state);
      assert.ok(d < 1e-6, `2 ranks vs 1: relative difference ${d}`);
      // the logged loss is the global batch's
      for (let i = 0; i < STEPS; i++) {
        assert.ok(Math.abs(res[0].loss[i] - loop.res.loss[i]) < 1e-5 * Math.abs(loop.res.loss[i]) + 1e-6);
      }
      await release(loop.ts, ...ranks);
    },
  );
}

Deno.test("distributed: keyed dropout masks follow the global position, not the rank's (without the row offset they differ)", async () => {
  // the same run with every rank keying its rows from 0: measurably apart from one process
  const c: Case = { mode: "lora", loss: "nca", acc: 1, dropout: 0.3 };
  const loop = await loopRun(c);
  const ranks = await openRanks(c, localWorld(2));
  await Promise.all(ranks.map((s) => {
    const o = chunkOptions(c, true);
    const t = assembleRankChunk(examples, steps, reference, o, s.comm, true);
    (t.feeds.dropout_row_offset.data as Float32Array).fill(0);
    return s.run(t.feeds, lrs);
  }));
  const [a] = await named(ranks);
  assert.ok(relativeDiff(a, loop.state, PARAMS) > 1e-4, "rows keyed by local position should differ");
  await release(loop.ts, ...ranks);
});

Deno.test("distributed: --zero 1 equals DDP bit for bit and holds 1/N of the optimizer state per rank", async () => {
  const c: Case = { mode: "full", loss: "nca", acc: 2 };
  const ddp = await openRanks(c, localWorld(2), 0);
  const zero = await openRanks(c, localWorld(2), 1);
  await runRanks(c, ddp);
  await runRanks(c, zero);
  const [d] = await named(ddp), [z0, z1] = await named(zero);
  for (const k of Object.keys(d)) {
    assert.deepEqual(z0[k], d[k], `${k}: ZeRO-1 differs from DDP`);
    assert.deepEqual(z1[k], d[k], `${k}: ZeRO-1's ranks differ`);
  }
  const full = ddp[0].optimizerStateBytes;
  assert.equal(full, 2 * 4 * ddp[0].size);
  for (const s of zero) {
    assert.ok(Math.abs(s.optimizerStateBytes / full - 0.5) < 0.01, `${s.optimizerStateBytes} of ${full}`);
  }
  await release(...ddp, ...zero);
});

Deno.test("distributed: --zero 1 over 3 ranks with the gradient padded for them (in place on a GPU) equals DDP bit for bit", async () => {
  const c: Case = { mode: "lora", loss: "dpo", acc: 1 };
  const ddp = await openRanks(c, localWorld(3), 0);
  const zero = await openRanks(c, localWorld(3), 1, 1, true);
  assert.ok(ddp[0].size % 3 !== 0, `${ddp[0].size} elements: the last rank's block must be short`);
  assert.equal(zero[0].io.gradientLength, 3 * Math.ceil(ddp[0].size / 3));
  await runRanks(c, ddp);
  await runRanks(c, zero);
  const [d] = await named(ddp), z = await named(zero);
  for (const k of Object.keys(d)) {
    for (const r of z) assert.deepEqual(r[k], d[k], `${k}: ZeRO-1 differs from DDP`);
  }
  await release(...ddp, ...zero);
});

/**
 * A communicator that reads device buffers as host memory at their address: with the session's
 * `deviceMemory` option, the CPU runs the device path (NCCL's in-place reduce-scatter into the padded
 * gradient, the gradient reused for the gathered parameters, the norm by a graph). `seen` records, per
 * collective, the device buffers' element offsets from the first buffer of the call.
 */
function deviceView(comm: Communicator, seen: { op: string; offsets: number[] }[]): Communicator {
  const host = (b: CommBuffer): CommBuffer =>
    isDeviceBuffer(b) ? new Float32Array(Deno.UnsafePointerView.getArrayBuffer(b.pointer!, b.length * 4)) : b;
  const note = (op: string, ...bs: CommBuffer[]) => {
    const devs = bs.filter(isDeviceBuffer);
    if (!devs.length) return;
    const base = BigInt(Deno.UnsafePointer.value(devs[0].pointer));
    seen.push({
      op,
      offsets: devs.map((d) => Number(BigInt(Deno.UnsafePointer.value(d.pointer)) - base) / 4),
    });
  };
  return {
    rank: comm.rank,
    size: comm.size,
    localRank: comm.localRank,
    backend: comm.backend,
    allReduce: (b, op) => (note("allReduce", b), comm.allReduce(host(b), op)),
    reduceScatter: (s, r, op) => (note("reduceScatter", s, r), comm.reduceScatter(host(s), host(r), op)),
    allGather: (s, r) => (note("allGather", s, r), comm.allGather(host(s), host(r))),
    broadcast: (b, root) => comm.broadcast(host(b), root),
    barrier: () => comm.barrier(),
    abort: (why) => comm.abort(why),
    [Symbol.asyncDispose]: () => comm[Symbol.asyncDispose](),
  } as Communicator;
}

Deno.test("distributed: the device path (in place, on the CPU's memory): ZeRO-1 equals DDP bit for bit, and the host path to 1e-6", async () => {
  const c: Case = { mode: "full", loss: "nca", acc: 2 };
  const open = async (zero: ZeroStage, device: boolean, seen: { op: string; offsets: number[] }[] = []) =>
    await Promise.all(
      localWorld(3).map((comm) => {
        const { trainable, spec } = specOf(c, true);
        const built = buildGradientGraph(alignmentTrainingSpec(spec), { ranks: zero === 1 ? 3 : undefined });
        return DistributedSession.create(built, trainable.init, device ? deviceView(comm, seen) : comm, {
          optimizer: spec.optimizer,
          maxGradNorm: spec.maxGradNorm,
          zero,
          hashEvery: 1,
          intraOpThreads: 1,
          deviceMemory: device,
        });
      }),
    );
  const seen: { op: string; offsets: number[] }[] = [];
  const host = await open(0, false), ddp = await open(0, true), zero = await open(1, true, seen);
  for (const r of [host, ddp, zero]) await runRanks(c, r);
  const [h] = await named(host), [d] = await named(ddp), z = await named(zero);
  for (const k of Object.keys(d)) {
    for (const r of z) assert.deepEqual(r[k], d[k], `${k}: ZeRO-1 differs from DDP on the device path`);
  }
  const diff = relativeDiff(d, h);
  assert.ok(diff < 1e-6, `the device path vs the host path: ${diff}`);
  // rank r's block of the padded gradient is reduced in place (NCCL's in-place form: recv = send + r·block)
  const block = Math.ceil(zero[0].size / 3);
  const rs = seen.filter((x) => x.op === "reduceScatter");
  assert.equal(rs.length, 3 * STEPS);
  assert.deepEqual(new Set(rs.map((x) => x.offsets[1])), new Set([0, block, 2 * block]));
  assert.ok(seen.some((x) => x.op === "allGather"), "the new parameters gathered from device memory");
  await release(...host, ...ddp, ...zero);
});

Deno.test("distributed: through onnxruntime-node (state kept in JavaScript) the steps are the C API's, bit for bit", async () => {
  const c: Case = { mode: "lora", loss: "nca", acc: 2, dropout: 0.1 };
  const open = (backend: "node" | "ffi", zero: ZeroStage) =>
    Promise.all(
      localWorld(2).map((comm) => {
        const { trainable, spec } = specOf(c, true);
        const built = buildGradientGraph(alignmentTrainingSpec(spec), { ranks: zero === 1 ? 2 : undefined });
        return DistributedSession.create(built, trainable.init, comm, {
          optimizer: spec.optimizer,
          maxGradNorm: spec.maxGradNorm,
          zero,
          intraOpThreads: 1,
          backend,
        });
      }),
    );
  for (const zero of [0, 1] as const) {
    const node = await open("node", zero), ffi = await open("ffi", zero);
    assert.equal(node[0].gradSession.backend, "node");
    await runRanks(c, node);
    await runRanks(c, ffi);
    const [a] = await named(node), [b] = await named(ffi);
    for (const k of Object.keys(b)) {
      assert.deepEqual(a[k], b[k], `--zero ${zero}, ${k}: node differs from ffi`);
    }
    await release(...node, ...ffi);
  }
});

Deno.test("distributed: the device path with a rank that has no prompts (5 ranks of micro-batches of 4) equals one process", async () => {
  const c: Case = { mode: "lora", loss: "nca", acc: 2, dropout: 0.1 };
  const loop = await loopRun(c);
  const ranks = await Promise.all(
    localWorld(5).map((comm) => {
      const { trainable, spec } = specOf(c, true);
      const built = buildGradientGraph(alignmentTrainingSpec(spec), { ranks: 5 });
      return DistributedSession.create(built, trainable.init, deviceView(comm, []), {
        optimizer: spec.optimizer,
        maxGradNorm: spec.maxGradNorm,
        zero: 1,
        intraOpThreads: 1,
        deviceMemory: true,
      });
    }),
  );
  await runRanks(c, ranks);
  const [a] = await named(ranks);
  const d = relativeDiff(a, loop.state);
  assert.ok(d < 1e-6, `5 ranks on the device path vs 1: relative difference ${d}`);
  await release(loop.ts, ...ranks);
});

Deno.test("distributed: a checkpoint's state comes whole to rank 0 alone, gathered in pieces (ZeRO-1 on 3 ranks)", async () => {
  const c: Case = { mode: "full", loss: "nca", acc: 1 };
  const ranks = await openRanks(c, localWorld(3), 1, 1, true);
  await runRanks(c, ranks, 0, 2);
  const all = await Promise.all(ranks.map((s) => s.namedState()));
  // 64 bytes a call: 5 floats of each rank's block, so the last piece is short and the blocks' padding dropped
  const toRoot = await Promise.all(ranks.map((s) => s.namedState({ root: 0, pieceBytes: 64 })));
  assert.deepEqual(toRoot[0], all[0]);
  for (const r of [1, 2]) {
    assert.deepEqual(Object.keys(toRoot[r].tensors).filter((k) => k.includes(".exp_avg")), [], `rank ${r}`);
    for (const [k, v] of Object.entries(toRoot[r].tensors)) assert.deepEqual(v, all[0].tensors[k]);
  }
  await release(...ranks);
});

Deno.test("distributed: a 2-rank checkpoint resumes on 1 rank, and a 1-rank one on 2, exactly where the run would be", async () => {
  const c: Case = { mode: "lora", loss: "nca", acc: 2, dropout: 0.1 };
  const whole = await loopRun(c);
  // 2 ranks (ZeRO-1) for 3 steps → checkpoint → one process (the Loop) for the last 2
  const ranks = await openRanks(c, localWorld(2), 1);
  await runRanks(c, ranks, 0, 3);
  // namedState is a collective: both ranks call it together (rank 0 would write it)
  const both = await Promise.all(ranks.map((s) => s.namedState()));
  const saved = Object.fromEntries(Object.entries(both[0].tensors).map(([k, v]) => [k, v.data.slice()]));
  const { trainable, spec } = specOf(c);
  const one = await TrainingSession.create(buildAlignmentGraph(spec), trainable.init, { intraOpThreads: 1 });
  one.restoreNamed(saved, both[0].scalars);
  const rest = assembleChunk(examples, steps.slice(3), reference, {
    ...chunkOptions(c, true),
    dropout: { seed: 3, fromStep: 3 },
  });
  await one.run(rest.feeds, lrs.slice(3));
  const after = Object.fromEntries(Object.entries(one.namedState().tensors).map(([k, v]) => [k, v.data]));
  assert.ok(relativeDiff(after, whole.state) < 1e-6, `2 → 1: ${relativeDiff(after, whole.state)}`);

  // one process for 3 steps → checkpoint → 2 ranks (DDP) for the last 2
  const first = await loopRun(c, 3);
  const two = await openRanks(c, localWorld(2), 0);
  for (const s of two) s.restoreNamed(first.state, first.scalars);
  await runRanks(c, two, 3, STEPS);
  const [x] = await named(two);
  assert.ok(relativeDiff(x, whole.state) < 1e-6, `1 → 2: ${relativeDiff(x, whole.state)}`);
  await release(whole.ts, first.ts, one, ...ranks, ...two);
});

for (const device of [false, true]) {
  Deno.test(`distributed: ranks whose parameters drift apart fail, naming the rank (${device ? "device" : "host"} path)`, async () => {
    const c: Case = { mode: "lora", loss: "dpo", acc: 1 };
    // the device path compares Σx and Σ i·x computed where the parameters are; the host path their bits
    const ranks = device
      ? await Promise.all(
        localWorld(2).map((comm) => {
          const { trainable, spec } = specOf(c, true);
          return DistributedSession.create(
            buildGradientGraph(alignmentTrainingSpec(spec)),
            trainable.init,
            deviceView(comm, []),
            {
              optimizer: spec.optimizer,
              maxGradNorm: spec.maxGradNorm,
              hashEvery: 2,
              intraOpThreads: 1,
              deviceMemory: true,
            },
          );
        }),
      )
      : await openRanks(c, localWorld(2), 0, 2);
    const n = await Promise.all(ranks.map((s) => s.namedState()));
    const state = Object.fromEntries(Object.entries(n[1].tensors).map(([k, v]) => [k, v.data.slice()]));
    const first = Object.keys(state).find((k) => !k.includes(".exp_avg"))!;
    state[first][0] += 1e-3;
    ranks[1].restoreNamed(state, n[1].scalars);
    const outcomes = await Promise.allSettled(ranks.map((s) => {
      const t = assembleRankChunk(
        examples,
        steps.slice(0, 2),
        reference,
        chunkOptions(c, false),
        s.comm,
        true,
      );
      return s.run(t.feeds, lrs.slice(0, 2));
    }));
    outcomes.forEach((o, r) => {
      assert.equal(o.status, "rejected", `rank ${r} should fail`);
      assert.match(
        String((o as PromiseRejectedResult).reason),
        new RegExp(
          `rank ${r}/2: the ranks' parameters differ after step 2: rank 1 holds other values than rank 0`,
        ),
      );
    });
    await release(...ranks);
  });
}

Deno.test("distributed: each rank takes its contiguous part of every micro-batch of a global step, as even as it goes", () => {
  const st: PlannedStep[] = [{ epoch: 0, indices: [10, 11, 12, 13, 14, 15, 16, 17] }];
  // accumulation 2: micro-batches [10..13] and [14..17]; rank 1 of 2 takes 12, 13 and 16, 17
  assert.deepEqual(rankSteps(st, { rank: 0, size: 2 }, 2)[0].indices, [10, 11, 14, 15]);
  assert.deepEqual(rankSteps(st, { rank: 1, size: 2 }, 2)[0].indices, [12, 13, 16, 17]);
  assert.deepEqual(rankSteps(st, { rank: 3, size: 4 }, 1)[0].indices, [16, 17]);
  // 8 over 3 ranks: 3, 3, 2; micro-batches of 4 over 3: 2, 1, 1; of 4 over 5: 1, 1, 1, 1 and none
  assert.deepEqual([0, 1, 2].map((rank) => rankSteps(st, { rank, size: 3 }, 1)[0].indices), [
    [10, 11, 12],
    [13, 14, 15],
    [16, 17],
  ]);
  assert.deepEqual([0, 1, 2].map((rank) => rankSteps(st, { rank, size: 3 }, 2)[0].indices), [
    [10, 11, 14, 15],
    [12, 16],
    [13, 17],
  ]);
  assert.deepEqual(rankSteps(st, { rank: 4, size: 5 }, 2)[0].indices, []);
  assert.throws(
    () => rankSteps(st, { rank: 0, size: 3 }, 3),
    /8 prompts cannot be split into 3 micro-batches/,
  );
});

Deno.test("distributed: a rank's share of a micro-batch is its part of the prompts (of the response tokens for SFT)", () => {
  const st: PlannedStep[] = [{ epoch: 0, indices: [0, 1, 2, 3, 4, 5, 6, 7] }];
  const shares = (size: number, acc: number, loss: "nca" | "sft") =>
    Array.from(
      { length: size },
      (_, rank) => [...rankShares(examples, st, { rank, size }, { accumulation: acc, loss })],
    );
  assert.deepEqual(shares(2, 2, "nca"), [[0.5, 0.5], [0.5, 0.5]]);
  assert.deepEqual(shares(3, 1, "nca"), [[3 / 8], [3 / 8], [2 / 8]].map((r) => r.map(Math.fround)));
  assert.deepEqual(shares(5, 2, "nca").map((r) => r[0]), [0.25, 0.25, 0.25, 0.25, 0]);
  // SFT: response tokens; every micro-batch's shares add up to 1
  const tokens = (i: number) => examples[i].responseIds[0].length + examples[i].responseIds[1].length;
  const sft = shares(2, 1, "sft");
  const first = [0, 1, 2, 3].reduce((n, i) => n + tokens(i), 0),
    all = first + [4, 5, 6, 7].reduce((n, i) => n + tokens(i), 0);
  assert.deepEqual(sft, [[Math.fround(first / all)], [Math.fround((all - first) / all)]]);
  for (const size of [2, 3, 5]) {
    for (const loss of ["nca", "sft"] as const) {
      const s = shares(size, 2, loss);
      for (let a = 0; a < 2; a++) {
        const sum = s.reduce((n, r) => n + r[a], 0);
        assert.ok(Math.abs(sum - 1) < 1e-6, `${size} ranks, ${loss}: shares add up to ${sum}`);
      }
    }
  }
});

// an uneven split (3 ranks of steps of 8: 3, 3, 2 prompts; micro-batches of 4: 2, 1, 1) and ranks with nothing
// (5 ranks of micro-batches of 4), and SFT, whose loss is a mean over response tokens: one process's steps
const uneven: (Case & { ranks: number })[] = [
  { mode: "lora", loss: "nca", acc: 1, dropout: 0.1, ranks: 3 },
  { mode: "full", loss: "dpo", acc: 2, ranks: 3 },
  { mode: "lora", loss: "nca", acc: 2, dropout: 0.1, ranks: 5 },
  { mode: "lora", loss: "sft", acc: 2, ranks: 2 },
  { mode: "full", loss: "sft", acc: 1, ranks: 3 },
];
for (const c of uneven) {
  Deno.test(
    `distributed: ${c.ranks} ranks of uneven parts equal one process after ${STEPS} steps (${c.mode}, ${c.loss}, accumulation ${c.acc})`,
    async () => {
      const loop = await loopRun(c);
      const ranks = await openRanks(c, localWorld(c.ranks));
      const res = await runRanks(c, ranks);
      const all = await named(ranks);
      for (const k of Object.keys(all[0])) {
        for (const other of all.slice(1)) assert.deepEqual(other[k], all[0][k], `${k}: the ranks differ`);
      }
      const d = relativeDiff(all[0], loop.state);
      assert.ok(d < 1e-6, `${c.ranks} ranks vs 1: relative difference ${d}`);
      assert.ok(relativeDiff(all[0], trainableOf(c).init, PARAMS) > 1e-3, "the parameters moved");
      for (let i = 0; i < STEPS; i++) {
        assert.ok(
          Math.abs(res[0].loss[i] - loop.res.loss[i]) < 1e-5 * Math.abs(loop.res.loss[i]) + 1e-6,
          `step ${i}: loss ${res[0].loss[i]} vs ${loop.res.loss[i]}`,
        );
        for (const m of Object.keys(loop.res.metrics)) {
          const want = loop.res.metrics[m][i], got = res[0].metrics[m][i];
          assert.ok(Math.abs(got - want) < 1e-5 * Math.abs(want) + 1e-5, `step ${i}: ${m} ${got} vs ${want}`);
        }
      }
      await release(loop.ts, ...ranks);
    },
  );
}

// ---------------------------------------------------------------------------------------------------------
// fp16: dynamic loss scaling on several ranks
// ---------------------------------------------------------------------------------------------------------

/**
 * The fp16 comparisons pair 2 ranks with accumulation A with one process with 2A: the same global batch, and
 * each rank's share of a step is exactly one of the Loop's micro-batches, so both sides run the same fp16
 * forward and backward passes (seeded with the same scale) and only the float32 sum of the micro-batches'
 * gradients is ordered differently. So the tolerance is fp32's, 1e-6 relative. With the same accumulation on
 * both sides the fp16 micro-batches differ in size (2 prompts a rank, 4 in one process): the float16 rounding
 * of the sums over rows differs (about 1e-4 relative in the loss), and AdamW's first steps, whose update is
 * about lr · sign(g), turn that into up to lr on the elements whose gradient is near zero (measured: 0.12 of
 * the largest LoRA weight after 5 steps, 0.018 for full fine-tuning, while fp16 against fp32 in one process
 * is 0.005). That pairing is checked on the loss, the loss scale and the skipped steps instead.
 */
const FP16_TOLERANCE = 1e-6;

/** The fp16 pairing above: one process (accumulation 2) and 2 ranks (accumulation 1). */
function fp16Pair(mode: "lora" | "full", fp16: Fp16): { one: Case; two: Case } {
  return { one: { mode, loss: "nca", acc: 2, fp16 }, two: { mode, loss: "nca", acc: 1, fp16 } };
}

/** The ranks' results agree with one process's on the loss scale, the skipped steps and the norm's finiteness. */
function assertSameScaling(ranks: ChunkResult[], one: ChunkResult) {
  for (const [r, res] of ranks.entries()) {
    assert.deepEqual([...res.lossScale!], [...one.lossScale!], `rank ${r}: the loss scales`);
    assert.deepEqual([...res.skipped], [...one.skipped], `rank ${r}: the skipped steps`);
    res.gradNorm.forEach((g, i) =>
      assert.equal(Number.isFinite(g), !one.skipped[i], `rank ${r}, step ${i + 1}: norm ${g}`)
    );
  }
}

for (const mode of ["lora", "full"] as const) {
  Deno.test(`distributed: fp16 on 2 ranks equals one process with the same global batch: weights, loss scales, skipped steps (${mode})`, async () => {
    const { one, two } = fp16Pair(mode, { init: 2 ** 22 });
    const loop = await loopRun(one);
    const ranks = await openRanks(two, localWorld(2));
    const res = await runRanks(two, ranks);
    // 2^22 and 2^21 overflow the fp16 backward pass: two steps skipped, then three updates at 2^20
    assert.deepEqual([...loop.res.skipped], [1, 1, 0, 0, 0]);
    assert.deepEqual([...loop.res.lossScale!], [2 ** 22, 2 ** 21, 2 ** 20, 2 ** 20, 2 ** 20]);
    assertSameScaling(res, loop.res);
    assert.deepEqual(loop.scalars, { step: 3, loss_scale: 2 ** 20, good_steps: 3 });
    for (const n of await Promise.all(ranks.map((s) => s.namedState()))) {
      assert.deepEqual(n.scalars, loop.scalars);
    }
    const [a, b] = await named(ranks);
    for (const k of Object.keys(a)) {
      assert.deepEqual(a[k], b[k], `${k}: the ranks' values are not bit-identical`);
    }
    const d = relativeDiff(a, loop.state);
    assert.ok(d < FP16_TOLERANCE, `2 ranks vs 1 in fp16: relative difference ${d}`);
    assert.ok(relativeDiff(a, trainableOf(two).init, PARAMS) > 1e-3, "the parameters moved");
    for (let i = 0; i < STEPS; i++) {
      assert.ok(Math.abs(res[0].loss[i] - loop.res.loss[i]) < 1e-5 * Math.abs(loop.res.loss[i]) + 1e-6);
    }
    await release(loop.ts, ...ranks);
  });
}

Deno.test("distributed: fp16 with the same accumulation on 2 ranks as in one process: the default scale, the losses close", async () => {
  // the loss scale left to its default on both sides (FP16_LOSS_SCALING's 2^16)
  const c: Case = { mode: "lora", loss: "nca", acc: 2, fp16: {} };
  const loop = await loopRun(c);
  const ranks = await openRanks(c, localWorld(2));
  const res = await runRanks(c, ranks);
  assert.deepEqual([...loop.res.lossScale!], new Array(STEPS).fill(FP16_LOSS_SCALING.init));
  assertSameScaling(res, loop.res);
  // fp16 micro-batches of 2 prompts against 4: about 1e-4 apart (see FP16_TOLERANCE)
  for (let i = 0; i < STEPS; i++) {
    const rel = Math.abs(res[0].loss[i] - loop.res.loss[i]) / Math.abs(loop.res.loss[i]);
    assert.ok(rel < 1e-3, `step ${i + 1}: loss ${res[0].loss[i]} vs ${loop.res.loss[i]}`);
  }
  await release(loop.ts, ...ranks);
});

Deno.test("distributed: fp16 overflow on every step: every rank skips, the state stays, the scale halves, as in one process", async () => {
  const { one, two } = fp16Pair("lora", { init: 2 ** 40 });
  const loop = await loopRun(one);
  const ranks = await openRanks(two, localWorld(2), 1);
  const before = await named(ranks);
  const res = await runRanks(two, ranks);
  assert.deepEqual([...loop.res.skipped], [1, 1, 1, 1, 1], "one process skips every step too");
  assert.deepEqual([...loop.res.lossScale!], [40, 39, 38, 37, 36].map((e) => 2 ** e));
  assertSameScaling(res, loop.res);
  const after = await named(ranks);
  for (const r of [0, 1]) {
    for (const k of Object.keys(before[r])) {
      assert.deepEqual(after[r][k], before[r][k], `rank ${r}: ${k} changed`);
    }
  }
  for (const k of Object.keys(before[0])) assert.deepEqual(loop.state[k], before[0][k], `one process: ${k}`);
  const expected = { step: 0, loss_scale: 2 ** 35, good_steps: 0 };
  assert.deepEqual(loop.scalars, expected);
  for (const n of await Promise.all(ranks.map((s) => s.namedState()))) assert.deepEqual(n.scalars, expected);
  await release(loop.ts, ...ranks);
});

Deno.test("distributed: fp16 loss scale grows after growthInterval good steps, a skip restarting the count, as in one process", async () => {
  // growth every 2 good steps from 2^21: good (1), overflow (skipped, halved, the count back to 0), good (1),
  // good (2: doubled, the count 0), good (1); without the restart it would double at step 3
  const { one, two } = fp16Pair("lora", { init: 2 ** 21, growthInterval: 2 });
  const loop = await loopRun(one);
  const ranks = await openRanks(two, localWorld(2));
  const res = await runRanks(two, ranks);
  assert.deepEqual([...loop.res.lossScale!], [2 ** 21, 2 ** 21, 2 ** 20, 2 ** 20, 2 ** 21]);
  assert.deepEqual([...loop.res.skipped], [0, 1, 0, 0, 0]);
  assertSameScaling(res, loop.res);
  const n = await Promise.all(ranks.map((s) => s.namedState()));
  assert.deepEqual(loop.scalars, { step: 4, loss_scale: 2 ** 21, good_steps: 1 });
  for (const x of n) assert.deepEqual(x.scalars, loop.scalars);
  const [a] = await named(ranks);
  assert.ok(relativeDiff(a, loop.state) < FP16_TOLERANCE, `${relativeDiff(a, loop.state)}`);
  await release(loop.ts, ...ranks);
});

Deno.test("distributed: an fp16 checkpoint (loss_scale, good_steps) moves from 2 ranks to one process and back", async () => {
  // growth every 2 good steps: skip, skip, update (good 1) | update (good 2: the scale doubles), skip at 2^21;
  // a resume that lost good_steps would not double at step 4, and would not skip step 5
  const { one, two } = fp16Pair("full", { init: 2 ** 22, growthInterval: 2 });
  const whole = await loopRun(one);
  assert.deepEqual([...whole.res.lossScale!], [2 ** 22, 2 ** 21, 2 ** 20, 2 ** 20, 2 ** 21]);
  assert.deepEqual([...whole.res.skipped], [1, 1, 0, 0, 1]);
  const rest = (c: Case) => assembleChunk(examples, steps.slice(3), reference, chunkOptions(c, false)).feeds;

  // 2 ranks (ZeRO-1) for 3 steps → checkpoint → one process for the last 2
  const ranks = await openRanks(two, localWorld(2), 1);
  await runRanks(two, ranks, 0, 3);
  const both = await Promise.all(ranks.map((s) => s.namedState()));
  assert.deepEqual(both[0].scalars, { step: 1, loss_scale: 2 ** 20, good_steps: 1 });
  const saved = Object.fromEntries(Object.entries(both[0].tensors).map(([k, v]) => [k, v.data.slice()]));
  const { trainable, spec } = specOf(one);
  const ts = await TrainingSession.create(buildAlignmentGraph(spec), trainable.init, { intraOpThreads: 1 });
  ts.restoreNamed(saved, both[0].scalars);
  const res1 = await ts.run(rest(one), lrs.slice(3));
  assert.deepEqual([...res1.lossScale!], [...whole.res.lossScale!.slice(3)]);
  assert.deepEqual([...res1.skipped], [...whole.res.skipped.slice(3)]);
  assert.deepEqual(ts.namedState().scalars, whole.scalars);
  const after = Object.fromEntries(Object.entries(ts.namedState().tensors).map(([k, v]) => [k, v.data]));
  assert.ok(relativeDiff(after, whole.state) < FP16_TOLERANCE, `2 → 1: ${relativeDiff(after, whole.state)}`);

  // one process for 3 steps → checkpoint → 2 ranks (DDP) for the last 2
  const first = await loopRun(one, 3);
  assert.deepEqual(first.scalars, { step: 1, loss_scale: 2 ** 20, good_steps: 1 });
  const back = await openRanks(two, localWorld(2), 0);
  for (const s of back) s.restoreNamed(first.state, first.scalars);
  const res2 = await runRanks(two, back, 3, STEPS);
  assertSameScaling(res2, {
    ...whole.res,
    lossScale: whole.res.lossScale!.slice(3),
    skipped: whole.res.skipped.slice(3),
  });
  for (const n of await Promise.all(back.map((s) => s.namedState()))) {
    assert.deepEqual(n.scalars, whole.scalars);
  }
  const [x] = await named(back);
  assert.ok(relativeDiff(x, whole.state) < FP16_TOLERANCE, `1 → 2: ${relativeDiff(x, whole.state)}`);

  // an fp32 checkpoint (no loss scale) is refused by an fp16 rank, which says what is missing
  assert.throws(
    () => back[1].restoreNamed(first.state, { step: 3 }),
    /^TypeError: rank 1\/2: checkpoint lacks the scalar "loss_scale"/,
  );
  await release(whole.ts, first.ts, ts, ...ranks, ...back);
});

Deno.test("distributed: several CUDA ranks open NCCL on the local rank's device, where host arrays go through", async () => {
  await withNcclEnv(async () => {
    const f = fakes({ rank: 1, size: 2 });
    const env = { RANK: "1", WORLD_SIZE: "2", LOCAL_RANK: "1", MASTER_ADDR: "127.0.0.1", MASTER_PORT: "1" };
    const world = await openTrainWorld({ rank: 1, size: 2, localRank: 1 }, "cuda", {
      open: { env, nccl: { apis: f } },
    });
    await using _ = world.comm!;
    const c = world.comm!;
    assert.deepEqual([c.backend, c.rank, c.size, world.deviceId], ["nccl", 1, 2, 1]);
    assert.deepEqual(f.calls.find((x) => x.fn === "cuDeviceGet")!.args, [1], "NCCL on device 1");
    // the step's host arrays go through: staged, reduced, copied back
    const grad = Float32Array.of(1, 2);
    await world.comm!.allReduce(grad);
    assert.deepEqual([...grad], [101, 103]);
  });
  // one device visible per process (SLURM's --gpus-per-task): device 0 whatever the local rank
  assert.equal(rankCudaDevice({ localRank: 3 }, "5"), 0);
  assert.equal(rankCudaDevice({ localRank: 3 }, "0,1,2,3"), 3);
  assert.equal(rankCudaDevice({ localRank: 3 }, undefined), 3);
});

Deno.test("distributed: a resume with another world size keeps the global batch, split unevenly where it must be", () => {
  const lines: string[] = [];
  const log = (l: string) => lines.push(l);
  assert.deepEqual(resumedBatch({ batchSize: 2, worldSize: 2 }, 1, log), { batchSize: 4, globalBatch: 4 });
  assert.deepEqual(resumedBatch({ batchSize: 4 }, 2, log), { batchSize: 2, globalBatch: 4 });
  assert.deepEqual(resumedBatch({ batchSize: 3 }, 2, log), { batchSize: 2, globalBatch: 3 });
  assert.deepEqual(resumedBatch({ batchSize: 2, worldSize: 2 }, 3, log), { batchSize: 2, globalBatch: 4 });
  // a run resumed unevenly before keeps its own global batch again
  assert.deepEqual(resumedBatch({ batchSize: 2, worldSize: 3, globalBatch: 4 }, 2, log), {
    batchSize: 2,
    globalBatch: 4,
  });
  assert.deepEqual(resumedBatch({ batchSize: 5, worldSize: 2 }, 2, log), { batchSize: 5, globalBatch: 10 });
  assert.equal(lines.length, 5, "nothing said where the world size stays");
  assert.match(lines[0], /resuming a run of 2 ranks on 1: --batch-size 4 per device, the global batch of 4/);
  assert.match(lines[2], /on 2: 2 prompts on the first device, 1 on the others, the global batch of 3/);
});

Deno.test("distributed: memory per rank — ZeRO-1 holds 1/N of AdamW's moments; 7B full fine-tuning on 8 GPUs", () => {
  const P = 7.24e9; // Mistral-7B
  const ddp = rankStateBytes(P, { size: 8, zero: 0 }), zero = rankStateBytes(P, { size: 8, zero: 1 });
  assert.equal(ddp.moments, P * 8);
  assert.equal(zero.moments, Math.ceil(P / 8) * 8);
  assert.equal(zero.params, ddp.params); // parameters and gradient stay whole on every rank
  // on CUDA the state of a ZeRO-1 rank fits a 141 GB H200, DDP's does not (the gradient's staging copy
  // counted: the step hands the collectives host arrays)
  const onCuda = (z: 0 | 1) => rankStateBytes(P, { size: 8, zero: z, device: "cuda" }).total;
  assert.ok(onCuda(0) > 141e9, `DDP: ${onCuda(0) / 1e9} GB`);
  assert.ok(onCuda(1) < 141e9, `ZeRO-1: ${onCuda(1) / 1e9} GB`);
  // the estimate takes the world: one process's trainable state vs a rank's
  const base = {
    cfg: tinyConfig("llama"),
    weightBytes: 0,
    headElementBytes: 4,
    trainableParams: 1000,
    rows: 2,
    width: 8,
    computeBytes: 4,
    lora: null,
    checkpointing: false,
    chunk: 0,
  };
  assert.equal(estimateMemory(base).trainable, 1000 * 40);
  assert.equal(
    estimateMemory({ ...base, world: { size: 4, zero: 1 } }).trainable,
    rankStateBytes(1000, { size: 4, zero: 1 }).total,
  );
});

Deno.test("bench/gpu/ddp_check.ts: its arguments, and what is wrong with them", () => {
  assert.deepEqual(parseDdpCheckArgs([]), {
    steps: 5,
    mode: ["lora", "full"],
    tolerance: 1e-5,
    device: "cuda",
  });
  assert.deepEqual(parseDdpCheckArgs(["--steps", "3", "--mode", "full", "--device", "cpu"]), {
    steps: 3,
    mode: ["full"],
    tolerance: 1e-5,
    device: "cpu",
  });
  assert.throws(() => parseDdpCheckArgs(["--steps", "0"]), /--steps must be a whole number ≥ 1, got 0/);
  assert.throws(() => parseDdpCheckArgs(["--mode", "half"]), /--mode must be lora, full or both, got half/);
  assert.throws(() => parseDdpCheckArgs(["--steps"]), /--steps needs a value/);
  assert.throws(() => parseDdpCheckArgs(["--nproc", "2"]), /unknown argument --nproc/);
});
