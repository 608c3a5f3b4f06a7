import assert from "node:assert/strict";
import {
  allGatherPadded,
  checkCollective,
  CommError,
  type DeviceBuffer,
  localWorld,
  paddedShard,
  reduceScatterPadded,
  shardRange,
  singleCommunicator,
} from "../../../lib/runtime/comm/mod.ts";

const dev = (addr: bigint, length: number, dtype: DeviceBuffer["dtype"] = "float32"): DeviceBuffer => ({
  pointer: Deno.UnsafePointer.create(addr),
  length,
  dtype,
  device: "cuda",
});

Deno.test("shardRange: contiguous shares covering every item once, sizes differing by at most 1", () => {
  for (const [n, size] of [[10, 3], [7, 7], [3, 5], [0, 4], [1, 1], [1001, 8]]) {
    const shares = Array.from({ length: size }, (_, r) => shardRange(n, size, r));
    assert.equal(shares[0].start, 0);
    assert.equal(shares[size - 1].end, n);
    for (let r = 1; r < size; r++) assert.equal(shares[r].start, shares[r - 1].end, `n=${n} size=${size}`);
    const lengths = shares.map((s) => s.end - s.start);
    assert.ok(Math.max(...lengths) - Math.min(...lengths) <= 1, `n=${n} size=${size}: ${lengths}`);
  }
  assert.deepEqual(Array.from({ length: 3 }, (_, r) => shardRange(10, 3, r)), [
    { start: 0, end: 4 },
    { start: 4, end: 7 },
    { start: 7, end: 10 },
  ]);
  assert.throws(() => shardRange(10, 3, 3), /rank must be in \[0, 3\), got 3/);
  assert.throws(() => shardRange(-1, 3, 0), /n must be a whole number ≥ 0, got -1/);
  assert.throws(() => shardRange(4, 0, 0), /size must be a whole number ≥ 1, got 0/);
});

Deno.test("paddedShard: equal blocks of ⌈n/size⌉ with the real range of each, the last ones short or empty", () => {
  assert.deepEqual(Array.from({ length: 3 }, (_, r) => paddedShard(7, 3, r)), [
    { block: 3, padded: 9, start: 0, end: 3 },
    { block: 3, padded: 9, start: 3, end: 6 },
    { block: 3, padded: 9, start: 6, end: 7 },
  ]);
  assert.deepEqual(paddedShard(2, 4, 3), { block: 1, padded: 4, start: 2, end: 2 });
  assert.deepEqual(paddedShard(8, 4, 1), { block: 2, padded: 8, start: 2, end: 4 });
});

Deno.test("reduceScatterPadded and allGatherPadded: a vector whose length the size does not divide goes and comes back", async () => {
  for (const size of [2, 3, 4]) {
    const world = localWorld(size);
    const n = 7;
    const vecs = world.map((c) => Float32Array.from({ length: n }, (_, i) => i + 10 * c.rank));
    const shards = await Promise.all(world.map((c, r) => reduceScatterPadded(c, vecs[r])));
    const sum = Float32Array.from({ length: n }, (_, i) => size * i + 10 * (size * (size - 1)) / 2);
    for (const [r, { shard, start, end }] of shards.entries()) {
      assert.deepEqual({ start, end }, {
        start: paddedShard(n, size, r).start,
        end: paddedShard(n, size, r).end,
      });
      assert.deepEqual(Array.from(shard.subarray(0, end - start)), Array.from(sum.subarray(start, end)));
      assert.ok(shard.subarray(end - start).every((x) => x === 0), "the padding reduces to zeros");
    }
    const back = await Promise.all(world.map((c, r) => allGatherPadded(c, shards[r].shard, n)));
    for (const b of back) assert.deepEqual(Array.from(b), Array.from(sum));
    await assert.rejects(
      allGatherPadded(world[0], new Float32Array(1), n),
      /rank 0\/\d: allGather: a shard of a 7-element vector over \d ranks holds \d elements, got 1/,
    );
  }
});

Deno.test("checkCollective: says what is wrong, naming the rank", () => {
  const who = { rank: 1, size: 2 };
  const f = new Float32Array(4);
  assert.throws(
    () => checkCollective(who, "reduceScatter", { send: f, recv: new Float32Array(3) }),
    /^CommError: rank 1\/2: reduceScatter: send must hold recv.length × size = 3 × 2 = 6 elements, got 4 \(pad it: see paddedShard\)$/,
  );
  assert.throws(
    () => checkCollective(who, "allGather", { send: f, recv: new Float32Array(9) }),
    /rank 1\/2: allGather: recv must hold send.length × size = 4 × 2 = 8 elements, got 9/,
  );
  assert.throws(
    () => checkCollective(who, "allGather", { send: f, recv: new Float64Array(8) }),
    /one element type, got float32\[4\] and float64\[8\]/,
  );
  assert.throws(
    () => checkCollective(who, "broadcast", { buf: f, root: 2 }),
    /root must be a rank in \[0, 2\), got 2/,
  );
  assert.throws(
    () => checkCollective(who, "allReduce", { buf: f, reduce: "mean" as "sum" }),
    /the reduction must be "sum" or "max", got "mean"/,
  );
  assert.throws(
    () => checkCollective(who, "allReduce", { buf: [1, 2] as unknown as Float32Array }),
    /buffer: not a buffer a collective carries: \[object Array\]/,
  );
  const big = new Float32Array(8);
  assert.throws(
    () => checkCollective(who, "allGather", { send: big.subarray(2, 6), recv: big }),
    /send and recv overlap in memory/,
  );
  assert.throws(
    () => checkCollective(who, "allGather", { send: f, recv: dev(0x1000n, 8) }),
    /both be on the host or both on the device/,
  );
  // NCCL's in-place forms are allowed: this rank's block of the big buffer
  checkCollective(who, "allGather", { send: dev(0x1000n + 16n, 4), recv: dev(0x1000n, 8) });
  checkCollective(who, "reduceScatter", { send: dev(0x1000n, 8), recv: dev(0x1000n + 16n, 4) });
  assert.throws(
    () => checkCollective(who, "reduceScatter", { send: dev(0x1000n, 8), recv: dev(0x1000n + 4n, 4) }),
    /overlap/,
  );
  const e = (() => {
    try {
      checkCollective(who, "barrier", {});
      checkCollective(who, "broadcast", { buf: f, root: -1 });
    } catch (e) {
      return e;
    }
  })();
  assert.ok(e instanceof CommError && e.rank === 1 && e.op === "broadcast");
});

Deno.test("singleCommunicator: the identity, with the same checks, and closed or aborted refuses", async () => {
  const c = singleCommunicator();
  assert.deepEqual([c.rank, c.size, c.localRank, c.backend], [0, 1, 0, "single"]);
  const f = Float32Array.of(1, 2, 3);
  await c.allReduce(f, "max");
  assert.deepEqual(Array.from(f), [1, 2, 3]);
  const out = new Float32Array(3);
  await c.reduceScatter(f, out);
  assert.deepEqual(Array.from(out), [1, 2, 3]);
  const g = new Float32Array(3);
  await c.allGather(f, g);
  assert.deepEqual(Array.from(g), [1, 2, 3]);
  await c.broadcast(f, 0);
  await c.barrier();
  await assert.rejects(c.broadcast(f, 1), /rank 0\/1: broadcast: root must be a rank in \[0, 1\), got 1/);
  await assert.rejects(c.reduceScatter(f, new Float32Array(2)), /send must hold recv.length × size = 2 × 1/);
  await c.allReduce(dev(0x2000n, 4)); // in place on the device: nothing to do
  await assert.rejects(
    c.allGather(dev(0x2000n, 4), dev(0x3000n, 4)),
    /copying between two device buffers needs CUDA/,
  );
  c.abort("test");
  await assert.rejects(c.barrier(), /rank 0\/1: barrier: the communicator was aborted: test/);
  const d = singleCommunicator();
  await d[Symbol.asyncDispose]();
  await assert.rejects(d.allReduce(f), /rank 0\/1: allReduce: the communicator is closed/);
});
