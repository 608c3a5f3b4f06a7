import assert from "node:assert/strict";
import { CommError, type DeviceBuffer, localWorld } from "../../../lib/runtime/comm/mod.ts";

Deno.test("localWorld: ranks, sizes, local ranks", () => {
  const w = localWorld(4, { localSize: 2 });
  assert.deepEqual(w.map((c) => [c.rank, c.size, c.localRank, c.backend]), [
    [0, 4, 0, "local"],
    [1, 4, 1, "local"],
    [2, 4, 0, "local"],
    [3, 4, 1, "local"],
  ]);
  assert.throws(() => localWorld(0), /n must be a whole number ≥ 1, got 0/);
});

Deno.test("localWorld: allReduce sums and maxes in place on every rank, in each type", async () => {
  const w = localWorld(3);
  const f32 = w.map((c) => Float32Array.of(c.rank, 1.5 * c.rank, -c.rank));
  await Promise.all(w.map((c, r) => c.allReduce(f32[r])));
  for (const b of f32) assert.deepEqual(Array.from(b), [3, 4.5, -3]);
  const i32 = w.map((c) => Int32Array.of(c.rank, 2 - c.rank, 2 ** 31 - 1));
  await Promise.all(w.map((c, r) => c.allReduce(i32[r], "max")));
  for (const b of i32) assert.deepEqual(Array.from(b), [2, 2, 2 ** 31 - 1]);
  const wrap = w.map(() => Int32Array.of(2 ** 31 - 1));
  await Promise.all(w.map((c, r) => c.allReduce(wrap[r])));
  assert.equal(wrap[0][0], 2 ** 31 - 3, "int32 sums wrap as two's complement");
  const i64 = w.map((c) => BigInt64Array.of(2n ** 62n, BigInt(c.rank)));
  await Promise.all(w.map((c, r) => c.allReduce(i64[r])));
  assert.deepEqual(Array.from(i64[2]), [BigInt.asIntN(64, 3n * 2n ** 62n), 3n]);
  const u8 = w.map(() => Uint8Array.of(100, 1));
  await Promise.all(w.map((c, r) => c.allReduce(u8[r])));
  assert.deepEqual(Array.from(u8[1]), [44, 3], "uint8 sums wrap mod 256");
  const f64 = w.map((c) => Float64Array.of(0.1 * (c.rank + 1)));
  await Promise.all(w.map((c, r) => c.allReduce(f64[r])));
  assert.equal(f64[0][0], 0.1 + 0.2 + 0.30000000000000004);
});

Deno.test("localWorld: float32 sums run in rank order in float32, the same every time", async () => {
  // (1e8 + 1) rounds back to 1e8 in float32, so rank order gives 0 where another order would give 1
  const w = localWorld(3);
  const bufs = [Float32Array.of(1e8), Float32Array.of(1), Float32Array.of(-1e8)];
  await Promise.all(w.map((c, r) => c.allReduce(bufs[r])));
  for (const b of bufs) assert.equal(b[0], 0);
  // and each addition is float32's: 16777216 + 1 + 1 = 16777216 (the exact sum 16777218 is a float32)
  const v = localWorld(3);
  const big = [Float32Array.of(16777216), Float32Array.of(1), Float32Array.of(1)];
  await Promise.all(v.map((c, r) => c.allReduce(big[r])));
  assert.equal(big[0][0], 16777216);
});

Deno.test("localWorld: reduceScatter gives rank r block r of the reduction", async () => {
  const w = localWorld(2);
  const sends = w.map((c) => Float32Array.from({ length: 6 }, (_, i) => i + 10 * c.rank));
  const recvs = w.map(() => new Float32Array(3));
  await Promise.all(w.map((c, r) => c.reduceScatter(sends[r], recvs[r])));
  assert.deepEqual(recvs.map((b) => Array.from(b)), [[10, 12, 14], [16, 18, 20]]);
  const maxes = w.map(() => new Int32Array(2));
  const ins = [Int32Array.of(5, 0, 0, 9), Int32Array.of(1, 7, 8, 2)];
  await Promise.all(w.map((c, r) => c.reduceScatter(ins[r], maxes[r], "max")));
  assert.deepEqual(maxes.map((b) => Array.from(b)), [[5, 7], [8, 9]]);
});

Deno.test("localWorld: allGather concatenates in rank order; broadcast copies the root's", async () => {
  const w = localWorld(3);
  const sends = w.map((c) => BigInt64Array.of(BigInt(c.rank), -BigInt(c.rank)));
  const recvs = w.map(() => new BigInt64Array(6));
  await Promise.all(w.map((c, r) => c.allGather(sends[r], recvs[r])));
  for (const b of recvs) assert.deepEqual(Array.from(b), [0n, 0n, 1n, -1n, 2n, -2n]);
  const bufs = w.map((c) => Float64Array.of(c.rank, c.rank * 2));
  await Promise.all(w.map((c, r) => c.broadcast(bufs[r], 2)));
  for (const b of bufs) assert.deepEqual(Array.from(b), [2, 4]);
  await Promise.all(w.map((c) => c.barrier()));
});

Deno.test("localWorld: a collective completes only when every rank made it; several may be in flight", async () => {
  const w = localWorld(2);
  const a = [Float32Array.of(1), Float32Array.of(2)];
  const b = [Float32Array.of(10), Float32Array.of(20)];
  let done = false;
  const first = w[0].allReduce(a[0]).then(() => (done = true));
  const second = w[0].allReduce(b[0]);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(done, false, "rank 1 has not joined yet");
  await Promise.all([w[1].allReduce(a[1]), w[1].allReduce(b[1]), first, second]);
  assert.deepEqual([a[0][0], b[0][0], a[1][0], b[1][0]], [3, 30, 3, 30]);
});

Deno.test("localWorld: collectives that differ across ranks fail on every rank, naming who called what", async () => {
  const w = localWorld(3);
  const results = await Promise.allSettled([
    w[0].allReduce(new Float32Array(4)),
    w[1].allReduce(new Float32Array(5)),
    w[2].allReduce(new Float32Array(4)),
  ]);
  for (const [r, res] of results.entries()) {
    assert.equal(res.status, "rejected");
    const e = (res as PromiseRejectedResult).reason;
    assert.ok(e instanceof CommError);
    assert.equal(
      e.message,
      `rank ${r}/3: allReduce: collective #0 does not match across ranks: ` +
        "ranks 0, 2 called allReduce(sum, float32[4]); rank 1 called allReduce(sum, float32[5])",
    );
  }
  const v = localWorld(2);
  const kinds = await Promise.allSettled([v[0].allReduce(new Float32Array(2), "max"), v[1].barrier()]);
  assert.match(
    String((kinds[1] as PromiseRejectedResult).reason),
    /rank 1\/2: barrier: collective #0 does not match across ranks: rank 0 called allReduce\(max, float32\[2\]\); rank 1 called barrier\(\)/,
  );
  const roots = await Promise.allSettled([
    v[0].broadcast(new Int32Array(1), 0),
    v[1].broadcast(new Int32Array(1), 1),
  ]);
  assert.match(
    String((roots[0] as PromiseRejectedResult).reason),
    /rank 0 called broadcast\(int32\[1\], root 0\); rank 1 called broadcast\(int32\[1\], root 1\)/,
  );
});

Deno.test("localWorld: a call refused on one rank fails its peers naming it, instead of leaving them waiting", async () => {
  const w = localWorld(2);
  const res = await Promise.allSettled([
    w[0].allGather(new Float32Array(2), new Float32Array(4)),
    w[1].allGather(new Float32Array(2), new Float32Array(3)),
  ]);
  assert.match(
    String((res[1] as PromiseRejectedResult).reason),
    /^CommError: rank 1\/2: allGather: recv must hold send.length × size = 2 × 2 = 4 elements, got 3$/,
  );
  assert.match(
    String((res[0] as PromiseRejectedResult).reason),
    /rank 0\/2: allGather: collective #0 does not match across ranks: .*rank 1 called allGather with invalid arguments \(recv must hold/,
  );
  const dev: DeviceBuffer = { pointer: null, length: 2, dtype: "float32", device: "cuda" };
  await assert.rejects(
    Promise.all([w[0].allReduce(dev), w[1].allReduce(new Float32Array(2))]),
    /rank 0\/2: allReduce: the in-process simulation works on host arrays, got cuda:float32\[2\]/,
  );
});

Deno.test("localWorld: abort fails pending and later collectives on every rank, naming who aborted and why", async () => {
  const w = localWorld(3);
  const pending = [w[0].allReduce(new Float32Array(1)), w[1].allReduce(new Float32Array(1))];
  w[2].abort("rank 2 saw NaN");
  for (const [r, p] of pending.entries()) {
    await assert.rejects(
      p,
      new RegExp(`^CommError: rank ${r}/3: allReduce: aborted by rank 2: rank 2 saw NaN$`),
    );
  }
  await assert.rejects(w[1].barrier(), /rank 1\/3: barrier: aborted by rank 2: rank 2 saw NaN/);
  await assert.rejects(w[2].broadcast(new Float32Array(1), 0), /rank 2\/3: broadcast: aborted by rank 2/);
});

Deno.test("localWorld: a rank that closes fails the collectives the others wait for it in", async () => {
  const w = localWorld(2);
  await Promise.all(w.map((c) => c.barrier()));
  const waiting = w[0].allReduce(new Float32Array(1));
  await w[1][Symbol.asyncDispose]();
  await assert.rejects(waiting, /rank 0\/2: allReduce: rank 1 closed the communicator without joining it/);
  await assert.rejects(
    w[0].barrier(),
    /rank 0\/2: barrier: rank 1 closed the communicator without joining it/,
  );
  await assert.rejects(w[1].barrier(), /rank 1\/2: barrier: the communicator is closed/);
});
