/**
 * NCCL without a GPU: the library search and its error, the choice of device, and the calls made through
 * fakes of NCCL and the CUDA driver (arguments, polling, errors, abort). bench/gpu/nccl_check.ts runs the
 * real thing on a lent GPU.
 */
import assert from "node:assert/strict";
import {
  findNcclLibrary,
  NCCL_DTYPES,
  ncclSearchDirs,
  NcclUnavailableError,
  openCommunicator,
  openNccl,
  pickCudaDevice,
} from "../../../lib/runtime/comm/mod.ts";
import { addr, type Call, dev, fakes, withNcclEnv } from "./_nccl_fakes.ts";

Deno.test("nccl: libnccl.so.2 is found on the given folders, in Python's NVIDIA wheels, or at NCCL_LIBRARY", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/libnccl.so.2`, "");
    assert.equal(findNcclLibrary(["/nowhere", dir], {}), `${dir}/libnccl.so.2`);
    const venv = await Deno.makeTempDir();
    const wheel = `${venv}/lib/python3.12/site-packages/nvidia/nccl/lib`;
    await Deno.mkdir(wheel, { recursive: true });
    await Deno.writeTextFile(`${wheel}/libnccl.so.2`, "");
    assert.ok(
      ncclSearchDirs({ VIRTUAL_ENV: venv }).includes(wheel),
      "a virtualenv's nvidia-nccl wheel is searched",
    );
    assert.equal(findNcclLibrary(undefined, { VIRTUAL_ENV: venv }), `${wheel}/libnccl.so.2`);
    await Deno.remove(venv, { recursive: true });
    assert.equal(findNcclLibrary([], { NCCL_LIBRARY: `${dir}/libnccl.so.2` }), `${dir}/libnccl.so.2`);
    assert.throws(
      () => findNcclLibrary([], { NCCL_LIBRARY: `${dir}/nope.so` }),
      (e) => e instanceof NcclUnavailableError && /NCCL_LIBRARY=.*nope.so is not a file/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nccl: a missing libnccl.so.2 is named, with where it was looked for and how to get it", () => {
  assert.throws(
    () => findNcclLibrary(["/no/such/dir", "/nor/this"], {}),
    (e) =>
      e instanceof NcclUnavailableError &&
      e.message.startsWith("libnccl.so.2 (NCCL 2) was not found in /no/such/dir, /nor/this.") &&
      e.message.includes("pip install nvidia-nccl-cu13") && e.message.includes("LD_LIBRARY_PATH"),
  );
});

Deno.test("nccl: a rank's device is its local rank, or the one device a launcher left visible", () => {
  assert.equal(pickCudaDevice(3, 8), 3);
  assert.equal(pickCudaDevice(3, 1), 0);
  assert.throws(
    () => pickCudaDevice(2, 2, "0,1"),
    /local rank 2 has no CUDA device of its own: 2 are visible \(CUDA_VISIBLE_DEVICES=0,1\)/,
  );
  assert.throws(() => pickCudaDevice(0, 0), /no CUDA device is visible/);
});

Deno.test("nccl: opening sets NCCL_COMM_ID and non-blocking mode, makes the rank's device current, and waits for the others", async () => {
  await withNcclEnv(async () => {
    const f = fakes({ pending: 3 });
    const stream = Deno.UnsafePointer.create(0x57n);
    await using c = await openNccl({ rank: 1, size: 2, commId: "node0:29501", stream, apis: f });
    assert.equal(Deno.env.get("NCCL_COMM_ID"), "node0:29501");
    assert.equal(Deno.env.get("NCCL_COMM_BLOCKING"), "0");
    assert.deepEqual([c.rank, c.size, c.localRank, c.device, c.backend], [1, 2, 1, 1, "nccl"]);
    const names = f.calls.map((x) => x.fn);
    assert.deepEqual(names.slice(0, 7), [
      "cuInit",
      "cuDeviceGetCount",
      "cuDeviceGet",
      "cuDevicePrimaryCtxRetain",
      "cuCtxSetCurrent",
      "ncclGetUniqueId",
      "ncclCommInitRank",
    ]);
    assert.deepEqual(f.calls.find((x) => x.fn === "cuDeviceGet")!.args, [1], "local rank 1 → device 1");
    assert.deepEqual(f.calls.find((x) => x.fn === "ncclCommInitRank")!.args, [2, 128, 1]);
    // a second communicator in this process gets its own address; a user's NCCL_COMM_ID wins
    await using d = await openNccl({ rank: 0, size: 2, commId: "node1:30001", apis: fakes() });
    assert.equal(Deno.env.get("NCCL_COMM_ID"), "node1:30001");
    Deno.env.set("NCCL_COMM_ID", "mine:4000");
    await using e = await openNccl({ rank: 0, size: 2, commId: "node2:30001", apis: fakes() });
    assert.equal(Deno.env.get("NCCL_COMM_ID"), "mine:4000");
    assert.deepEqual([d.rank, e.rank], [0, 0]);
  });
});

Deno.test("nccl: collectives pass device pointers, counts, types and ops on the stream, and wait for it", async () => {
  await withNcclEnv(async () => {
    const f = fakes({ pending: 1, busy: 2 });
    const stream = Deno.UnsafePointer.create(0x57n);
    const c = await openNccl({ rank: 0, size: 2, commId: "127.0.0.1:29501", stream, apis: f });
    f.calls.length = 0;
    await c.allReduce(dev(0x1000n, 10), "max");
    const ar = f.calls[0];
    assert.equal(ar.fn, "ncclAllReduce");
    assert.deepEqual(
      [
        addr(ar.args[0]),
        addr(ar.args[1]),
        ar.args[2],
        ar.args[3],
        ar.args[4],
        addr(ar.args[5]),
        addr(ar.args[6]),
      ],
      [0x1000n, 0x1000n, 10n, NCCL_DTYPES.float32, 2, 0xc0ffeen, 0x57n],
    );
    assert.equal(f.calls.filter((x) => x.fn === "cuStreamQuery").length, 3, "busy twice, then done");
    f.calls.length = 0;
    await c.reduceScatter(dev(0x2000n, 8, "bfloat16"), dev(0x3000n, 4, "bfloat16"));
    assert.deepEqual(f.calls[0].args.slice(2, 5), [4n, NCCL_DTYPES.bfloat16, 0], "the count is recv's");
    f.calls.length = 0;
    await c.allGather(dev(0x4000n, 3, "int64"), dev(0x5000n, 6, "int64"));
    assert.deepEqual([f.calls[0].fn, ...f.calls[0].args.slice(2, 4)], [
      "ncclAllGather",
      3n,
      NCCL_DTYPES.int64,
    ]);
    f.calls.length = 0;
    await c.broadcast(dev(0x6000n, 5, "float64"), 1);
    assert.deepEqual([f.calls[0].fn, ...f.calls[0].args.slice(2, 5)], [
      "ncclBroadcast",
      5n,
      NCCL_DTYPES.float64,
      1,
    ]);
    f.calls.length = 0;
    await c.barrier();
    assert.deepEqual([f.calls[0].fn, addr(f.calls[0].args[0]), f.calls[0].args[2]], [
      "ncclAllReduce",
      0x5c7a7cn,
      1n,
    ]);
    f.calls.length = 0;
    await c.allReduce(dev(0x1000n, 0));
    assert.equal(f.calls.length, 0, "nothing to reduce: no call");
    assert.equal(c.stats.calls, 5);
    await c[Symbol.asyncDispose]();
    assert.deepEqual(f.calls.map((x) => x.fn), ["cuMemFree_v2", "ncclCommFinalize", "ncclCommDestroy"]);
  });
});

Deno.test("nccl: host and device buffers mixed, failed calls and asynchronous errors are refused naming the rank and NCCL's words", async () => {
  await withNcclEnv(async () => {
    const f = fakes({ rc: { ncclAllGather: 2 } });
    await using c = await openNccl({ rank: 1, size: 2, commId: "h:2", apis: f });
    await assert.rejects(
      c.allGather(new Float32Array(2), dev(0x100n, 4)),
      /^CommError: rank 1\/2: allGather: send and recv must both be on the host or both on the device, got float32\[2\] and cuda:float32\[4\]$/,
    );
    await assert.rejects(
      c.allGather(dev(0x10n, 2), dev(0x100n, 4)),
      /^CommError: rank 1\/2: allGather: NCCL failed: unhandled system error \(2\): socket closed by peer$/,
    );
    await assert.rejects(c.allReduce(dev(0x10n, 2, "float16"), "mean" as "sum"), /"sum" or "max"/);
  });
  await withNcclEnv(async () => {
    const f = fakes();
    const c = await openNccl({ rank: 0, size: 2, commId: "h:2", apis: f });
    f.nccl.ncclCommGetAsyncError = (_c, s) => ((s as Int32Array)[0] = 6, 0);
    await assert.rejects(
      c.allReduce(dev(0x10n, 2)),
      /rank 0\/2: allReduce: NCCL reports error 6 \(6\): socket closed by peer \(a peer may have died\)/,
    );
  });
});

Deno.test("nccl: completion is checked after each turn of the event loop, not at a timer's ~2 ms", async () => {
  await withNcclEnv(async () => {
    const f = fakes({ busy: 50 });
    await using c = await openNccl({ rank: 0, size: 2, commId: "h:2", apis: f });
    const t0 = performance.now();
    await c.allReduce(dev(0x10n, 2));
    const ms = performance.now() - t0;
    assert.equal(f.calls.filter((x) => x.fn === "cuStreamQuery").length, 51);
    assert.ok(ms < 60, `51 checks took ${ms.toFixed(1)} ms (a timer per check: ≥ 100)`);
  });
});

Deno.test("nccl: abort ends a collective that would never complete and calls ncclCommAbort", async () => {
  await withNcclEnv(async () => {
    const f = fakes({ busy: Infinity });
    const c = await openNccl({ rank: 0, size: 2, commId: "h:2", apis: f });
    const stuck = c.allReduce(dev(0x10n, 2));
    await new Promise((r) => setTimeout(r, 20));
    c.abort("the watchdog gave up");
    await assert.rejects(stuck, /rank 0\/2: allReduce: the communicator was aborted: the watchdog gave up/);
    assert.ok(f.calls.some((x) => x.fn === "ncclCommAbort"));
    await assert.rejects(c.barrier(), /aborted/);
    await c[Symbol.asyncDispose]();
    assert.ok(!f.calls.some((x) => x.fn === "ncclCommDestroy"), "abort freed it already");
  });
});

Deno.test("nccl: opening fails naming the rank: bad address, no device, ranks that never connect", async () => {
  await withNcclEnv(async () => {
    await assert.rejects(
      openNccl({ rank: 0, size: 2, commId: "no-port", apis: fakes() }),
      /^CommError: rank 0\/2: open: the NCCL address must be host:port \(or \[ipv6\]:port\), got "no-port"$/,
    );
    await assert.rejects(
      openNccl({ rank: 0, size: 2, commId: "h:1", device: 5, apis: fakes() }),
      /rank 0\/2: open: CUDA device 5 does not exist: 2 are visible/,
    );
    const bad = fakes({ rc: { cuInit: 100 } });
    await assert.rejects(
      openNccl({ rank: 1, size: 2, commId: "h:1", apis: bad }),
      /rank 1\/2: open: cuInit failed: CUDA_ERROR_INVALID_DEVICE \(100\)/,
    );
    const never = fakes({ pending: Infinity });
    await assert.rejects(
      openNccl({ rank: 1, size: 2, commId: "h:1", timeoutMs: 50, apis: never }),
      /rank 1\/2: open: NCCL did not connect all 2 ranks within 0.05 s: is every rank started, and is h:1 \(rank 0's host\) reachable/,
    );
    assert.ok(never.calls.some((x) => x.fn === "ncclCommAbort"));
  });
});

Deno.test("openCommunicator: on CUDA, NCCL at MASTER_ADDR:MASTER_PORT+1 under the watchdog", async () => {
  await withNcclEnv(async () => {
    const f = fakes();
    await using c = await openCommunicator({
      device: "cuda",
      env: { RANK: "1", WORLD_SIZE: "2", LOCAL_RANK: "1", MASTER_ADDR: "10.0.0.5", MASTER_PORT: "29500" },
      nccl: { apis: f },
    });
    assert.deepEqual([c.backend, c.rank, c.size, c.localRank], ["nccl", 1, 2, 1]);
    assert.equal(Deno.env.get("NCCL_COMM_ID"), "10.0.0.5:29501");
  });
});

/** The calls of `f` without the stream polls and the driver's set-up, as `name` or `name(args…)`. */
const staged = (calls: Call[]) =>
  calls.filter((x) => x.fn !== "cuStreamQuery").map((x) =>
    x.fn.startsWith("cuMemcpy") ? `${x.fn}(${x.args[0]}, ${x.args[1]})` : x.fn
  );

Deno.test("nccl: host arrays are staged through a device buffer on the stream: copied in, reduced there, copied back", async () => {
  await withNcclEnv(async () => {
    const f = fakes({ rank: 1, size: 2, busy: 2 });
    const stream = Deno.UnsafePointer.create(0x57n);
    const c = await openNccl({ rank: 1, size: 2, commId: "h:2", stream, apis: f });
    const S = 0x5c7a7cn + 0x100000n; // the staging buffer: the allocation after barrier()'s float
    f.calls.length = 0;
    const grad = Float32Array.of(1, 2, 3, 4);
    await c.allReduce(grad);
    assert.deepEqual([...grad], [101, 103, 105, 107], "the other rank's 100 + i added");
    assert.deepEqual(staged(f.calls), [
      "cuMemAlloc_v2",
      `cuMemcpyHtoDAsync_v2(${S}, 16)`,
      "ncclAllReduce",
      `cuMemcpyDtoHAsync_v2(${S}, 16)`,
    ]);
    // the copy back waits until the stream has run the collective (busy twice), then for itself
    const order = f.calls.map((x) => x.fn);
    const nccl = order.indexOf("ncclAllReduce"), back = order.indexOf("cuMemcpyDtoHAsync_v2");
    assert.deepEqual(order.slice(nccl + 1, back), ["cuStreamQuery", "cuStreamQuery", "cuStreamQuery"]);
    assert.equal(order[back + 1], "cuStreamQuery");
    const ar = f.calls.find((x) => x.fn === "ncclAllReduce")!;
    assert.deepEqual([addr(ar.args[0]), addr(ar.args[1]), ar.args[2], ar.args[3], addr(ar.args[6])], [
      S,
      S,
      4n,
      NCCL_DTYPES.float32,
      0x57n,
    ]);
    assert.ok(
      f.calls.filter((x) => x.fn.startsWith("cuMemcpy")).every((x) => x.args[2] === 0x57n),
      "on the stream",
    );

    // reduce-scatter: send staged whole, NCCL's in-place form, rank 1's block copied back from its offset
    f.calls.length = 0;
    const send = Float64Array.of(1, 2, 3, 4, 5, 6), recv = new Float64Array(3);
    await c.reduceScatter(send, recv);
    assert.deepEqual([...recv], [4 + 103, 5 + 104, 6 + 105]);
    assert.deepEqual(staged(f.calls), [
      "cuMemFree_v2",
      "cuMemAlloc_v2",
      `cuMemcpyHtoDAsync_v2(${S + 0x100000n}, 48)`,
      "ncclReduceScatter",
      `cuMemcpyDtoHAsync_v2(${S + 0x100000n + 24n}, 24)`,
    ]);
    const rs = f.calls.find((x) => x.fn === "ncclReduceScatter")!;
    assert.deepEqual([addr(rs.args[1]) - addr(rs.args[0]), rs.args[2], rs.args[3]], [
      24n,
      3n,
      NCCL_DTYPES.float64,
    ]);

    // all-gather: send staged at rank 1's block, the whole of recv copied back
    f.calls.length = 0;
    const mine = Int32Array.of(7, 8), all = new Int32Array(4);
    await c.allGather(mine, all);
    assert.deepEqual([...all], [100, 101, 7, 8]);
    const S3 = S + 0x100000n;
    assert.deepEqual(staged(f.calls), [
      `cuMemcpyHtoDAsync_v2(${S3 + 8n}, 8)`,
      "ncclAllGather",
      `cuMemcpyDtoHAsync_v2(${S3}, 16)`,
    ], "the 48-byte buffer is reused");

    // broadcast: the root copies in, every rank copies back
    f.calls.length = 0;
    const b = Float32Array.of(9, 9);
    await c.broadcast(b, 0);
    assert.deepEqual([...b], [100, 101], "rank 0's values");
    assert.deepEqual(
      staged(f.calls),
      ["ncclBroadcast", `cuMemcpyDtoHAsync_v2(${S3}, 8)`],
      "not the root: no copy in",
    );
    f.calls.length = 0;
    await c.broadcast(b, 1);
    assert.deepEqual([...b], [100, 101], "its own values stay");
    assert.deepEqual(staged(f.calls), [
      `cuMemcpyHtoDAsync_v2(${S3}, 8)`,
      "ncclBroadcast",
      `cuMemcpyDtoHAsync_v2(${S3}, 8)`,
    ]);
    assert.deepEqual([c.stats.calls, c.stats.staged], [5, 32 + 48 + 24 + 8 + 16 + 8 + 8 + 8]);
    await c[Symbol.asyncDispose]();
  });
});

Deno.test("nccl: the staging buffer is allocated at the first host collective, reused, grown, and freed at dispose", async () => {
  await withNcclEnv(async () => {
    const f = fakes();
    const c = await openNccl({ rank: 0, size: 2, commId: "h:2", apis: f });
    const allocs = () => f.calls.filter((x) => x.fn === "cuMemAlloc_v2").map((x) => x.args[0]);
    assert.deepEqual(allocs(), [4n], "only barrier()'s float at opening");
    assert.equal(c.stagingBytes, 0);
    await c.allReduce(dev(0x1000n, 1000));
    assert.equal(c.stagingBytes, 0, "device buffers are not staged");
    await c.allReduce(new Float32Array(10));
    await c.allReduce(new Float32Array(5));
    await c.allReduce(new Uint8Array(40));
    assert.deepEqual(allocs(), [4n, 40n], "reused for smaller or equal arrays");
    await c.allReduce(new Float64Array(20));
    assert.deepEqual(allocs(), [4n, 40n, 160n], "grown for a larger one");
    const first = 0x5c7a7cn + 0x100000n, second = first + 0x100000n;
    assert.deepEqual(
      f.calls.filter((x) => x.fn === "cuMemFree_v2").map((x) => x.args[0]),
      [first],
      "the old one freed",
    );
    assert.equal(c.stagingBytes, 160);
    f.calls.length = 0;
    await c[Symbol.asyncDispose]();
    assert.deepEqual(
      f.calls.filter((x) => x.fn === "cuMemFree_v2").map((x) => x.args[0]),
      [0x5c7a7cn, second],
      "barrier()'s float and the staging buffer",
    );
    assert.equal(f.memory.size, 0, "nothing left on the device");
    await assert.rejects(
      c.allReduce(new Float32Array(2)),
      /rank 0\/2: allReduce: the communicator is closed/,
    );
  });
  // an aborted communicator frees it too
  await withNcclEnv(async () => {
    const f = fakes();
    const c = await openNccl({ rank: 0, size: 2, commId: "h:2", apis: f });
    await c.allReduce(new Float32Array(3));
    c.abort("test");
    await c[Symbol.asyncDispose]();
    assert.equal(f.memory.size, 0);
  });
});

Deno.test("nccl: a failed copy or staging allocation names the rank, the collective and the array, and aborts", async () => {
  await withNcclEnv(async () => {
    const f = fakes({ rc: { cuMemcpyHtoDAsync_v2: 1 } });
    const c = await openNccl({ rank: 1, size: 2, commId: "h:2", apis: f });
    await assert.rejects(
      c.allReduce(new Float32Array(4)),
      /^CommError: rank 1\/2: allReduce: copying float32\[4\] \(16 bytes\) to CUDA device 1 failed: CUDA_ERROR_INVALID_DEVICE \(1\)$/,
    );
    assert.ok(!f.calls.some((x) => x.fn === "ncclAllReduce"), "NCCL is not called on data that is not there");
    assert.ok(f.calls.some((x) => x.fn === "ncclCommAbort"), "the peers are not left waiting");
    await assert.rejects(
      c.barrier(),
      /rank 1\/2: barrier: the communicator was aborted: copying float32\[4\]/,
    );
    await c[Symbol.asyncDispose]();
  });
  await withNcclEnv(async () => {
    const f = fakes({ rc: { cuMemcpyDtoHAsync_v2: 700 } });
    const c = await openNccl({ rank: 0, size: 2, commId: "h:2", apis: f });
    await assert.rejects(
      c.allGather(new Int32Array(2), new Int32Array(4)),
      /^CommError: rank 0\/2: allGather: copying int32\[4\] \(16 bytes\) back from CUDA device 0 failed: .* \(700\)$/,
    );
    await c[Symbol.asyncDispose]();
  });
  await withNcclEnv(async () => {
    const f = fakes();
    const c = await openNccl({ rank: 0, size: 2, commId: "h:2", apis: f });
    f.cuda.cuMemAlloc_v2 = () => 2;
    await assert.rejects(
      c.reduceScatter(new Float32Array(8), new Float32Array(4)),
      /^CommError: rank 0\/2: reduceScatter: allocating 32 bytes on CUDA device 0 to stage host arrays failed: .* \(2\)$/,
    );
    await c[Symbol.asyncDispose]();
  });
});

Deno.test("nccl: host arrays larger than the staging chunk go in pieces: the same results, the device buffer bounded", async () => {
  await withNcclEnv(async () => {
    // every other rank holds 10 everywhere, so a piece's result does not depend on where it starts
    const f = fakes({ rank: 1, size: 3, peer: () => 10 });
    const c = await openNccl({ rank: 1, size: 3, commId: "h:2", apis: f, stagingChunkBytes: 16 });
    const count = (fn: string) => f.calls.filter((x) => x.fn === fn).length;

    const grad = Float32Array.from({ length: 10 }, (_, i) => i);
    await c.allReduce(grad);
    assert.deepEqual([...grad], Array.from({ length: 10 }, (_, i) => i + 20));
    assert.equal(count("ncclAllReduce"), 3, "4 + 4 + 2 floats of 16 bytes at most");

    // reduce-scatter: 3 blocks of 5; a piece stages one element of each block (12 bytes ≤ 16)
    const send = Float32Array.from({ length: 15 }, (_, i) => i), recv = new Float32Array(5);
    await c.reduceScatter(send, recv);
    assert.deepEqual([...recv], [5, 6, 7, 8, 9].map((v) => v + 20), "rank 1's block, plus the others'");
    assert.equal(count("ncclReduceScatter"), 5);

    const mine = Float32Array.of(1, 2, 3, 4, 5), all = new Float32Array(15);
    await c.allGather(mine, all);
    assert.deepEqual([...all], [...Array(5).fill(10), 1, 2, 3, 4, 5, ...Array(5).fill(10)]);
    assert.equal(count("ncclAllGather"), 5);

    const b = Float64Array.of(1, 2, 3, 4, 5);
    await c.broadcast(b, 0);
    assert.deepEqual([...b], [10, 10, 10, 10, 10]);
    assert.equal(count("ncclBroadcast"), 3, "2 + 2 + 1 doubles");

    assert.ok(c.stagingBytes <= 16, `staged through ${c.stagingBytes} bytes`);
    // in and out once each: all-reduce 40 + 40, reduce-scatter 60 + 20, all-gather 20 + 60, the broadcast
    // only out (rank 1 is not the root) 40
    assert.equal(c.stats.staged, 80 + 80 + 80 + 40);
    await c[Symbol.asyncDispose]();
  });
});
