/**
 * NCCL without a GPU: the library search and its error, the choice of device, and the calls made through
 * fakes of NCCL and the CUDA driver (arguments, polling, errors, abort). bench/gpu/nccl_check.ts runs the
 * real thing on a lent GPU.
 */
import assert from "node:assert/strict";
import {
  type CudaDriverApi,
  type DeviceBuffer,
  findNcclLibrary,
  NCCL_DTYPES,
  type NcclApi,
  ncclSearchDirs,
  NcclUnavailableError,
  openCommunicator,
  openNccl,
  pickCudaDevice,
} from "../../../lib/runtime/comm/mod.ts";

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

type Call = { fn: string; args: unknown[] };

/**
 * Fakes of NCCL and the driver: init and each call are "in progress" for `pending` polls, the stream busy
 * for `busy` queries; `rc`/`async` force a call's result or the async state.
 */
function fakes(
  o: { pending?: number; busy?: number; rc?: Record<string, number>; asyncState?: number } = {},
) {
  const calls: Call[] = [];
  const keep: Uint8Array[] = [];
  const cstr = (s: string) => {
    const b = new TextEncoder().encode(s + "\0");
    keep.push(b);
    return Deno.UnsafePointer.of(b);
  };
  let pending = 0, busy = 0;
  const comm = Deno.UnsafePointer.create(0xc0ffeen);
  const rec = (fn: string, ...args: unknown[]) => {
    calls.push({ fn, args });
    return o.rc?.[fn] ?? 0;
  };
  const issue = (fn: string, ...args: unknown[]) => {
    const rc = rec(fn, ...args);
    if (rc) return rc;
    pending = o.pending ?? 0;
    busy = o.busy ?? 0;
    return pending ? 7 : 0;
  };
  const nccl: NcclApi = {
    ncclGetVersion: () => 0,
    ncclGetUniqueId: (id) => rec("ncclGetUniqueId", (id as Uint8Array).length),
    ncclCommInitRank: (out, n, id, r) => {
      (out as BigUint64Array)[0] = Deno.UnsafePointer.value(comm) as bigint;
      return issue("ncclCommInitRank", n, (id as Uint8Array).length, r);
    },
    ncclAllReduce: (...a) => issue("ncclAllReduce", ...a),
    ncclReduceScatter: (...a) => issue("ncclReduceScatter", ...a),
    ncclAllGather: (...a) => issue("ncclAllGather", ...a),
    ncclBroadcast: (...a) => issue("ncclBroadcast", ...a),
    ncclCommGetAsyncError: (_c, state) => {
      (state as Int32Array)[0] = o.asyncState ?? (pending > 0 ? 7 : 0);
      if (pending > 0) pending--;
      return 0;
    },
    ncclCommFinalize: (c) => rec("ncclCommFinalize", c),
    ncclCommDestroy: (c) => rec("ncclCommDestroy", c),
    ncclCommAbort: (c) => rec("ncclCommAbort", c),
    ncclGetErrorString: (code) => cstr(code === 2 ? "unhandled system error" : `error ${code}`),
    ncclGetLastError: () => cstr("socket closed by peer"),
  };
  const cuda: CudaDriverApi = {
    cuInit: (f) => rec("cuInit", f),
    cuDeviceGetCount: (out) => {
      (out as Int32Array)[0] = 2;
      return rec("cuDeviceGetCount");
    },
    cuDeviceGet: (out, ordinal) => {
      (out as Int32Array)[0] = ordinal;
      return rec("cuDeviceGet", ordinal);
    },
    cuDevicePrimaryCtxRetain: (out, d) => {
      (out as BigUint64Array)[0] = 0xc7an;
      return rec("cuDevicePrimaryCtxRetain", d);
    },
    cuCtxSetCurrent: (ctx) => rec("cuCtxSetCurrent", Deno.UnsafePointer.value(ctx)),
    cuStreamQuery: (s) => {
      calls.push({ fn: "cuStreamQuery", args: [s] });
      if (busy > 0) {
        busy--;
        return 600;
      }
      return 0;
    },
    cuMemAlloc_v2: (out, bytes) => {
      (out as BigUint64Array)[0] = 0x5c7a7cn;
      return rec("cuMemAlloc_v2", bytes);
    },
    cuMemFree_v2: (p) => rec("cuMemFree_v2", p),
    cuGetErrorString: (_code, out) => {
      (out as BigUint64Array)[0] = Deno.UnsafePointer.value(cstr("CUDA_ERROR_INVALID_DEVICE")) as bigint;
      return 0;
    },
  };
  return { nccl, cuda, calls, comm };
}

/** Runs `fn` with NCCL's variables as openNccl leaves them, restoring the environment after. */
async function withNcclEnv(fn: () => Promise<void>) {
  const saved = ["NCCL_COMM_ID", "NCCL_COMM_BLOCKING"].map((k) => [k, Deno.env.get(k)] as const);
  for (const [k] of saved) Deno.env.delete(k);
  try {
    await fn();
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
}

const dev = (addr: bigint, length: number, dtype: DeviceBuffer["dtype"] = "float32"): DeviceBuffer => ({
  pointer: Deno.UnsafePointer.create(addr),
  length,
  dtype,
  device: "cuda",
});
const addr = (p: unknown) => Deno.UnsafePointer.value(p as Deno.PointerValue);

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

Deno.test("nccl: host arrays, failed calls and asynchronous errors are refused naming the rank and NCCL's words", async () => {
  await withNcclEnv(async () => {
    const f = fakes({ rc: { ncclAllGather: 2 } });
    await using c = await openNccl({ rank: 1, size: 2, commId: "h:2", apis: f });
    await assert.rejects(
      c.allReduce(new Float32Array(4)),
      /^CommError: rank 1\/2: allReduce: NCCL works on device memory: pass a DeviceBuffer .*, got float32\[4\]$/,
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
