/**
 * NCCL through lib/runtime/comm on a lent GPU, in one short run:
 * 1. a world of one: {@link openNccl} in this process on device 0, every collective on device buffers
 *    (all-reduce sum of float32 and bfloat16, max of int32, reduce-scatter, all-gather, broadcast,
 *    barrier), each result copied back and compared with what it must be; then every collective on HOST
 *    arrays (float32, float64, int32; staged through NCCL's device buffer) with the default staging chunk
 *    and again with a {@link TINY_CHUNK_BYTES}-byte one (odd lengths: uneven pieces, a reduce-scatter block
 *    not divisible by the piece), the staging buffer's size checked against the chunk; the time of a
 *    64 MiB and a 320 MiB all-reduce on the device and on the host (320 MiB > the 256 MiB default chunk:
 *    two pieces, the staged cost).
 * 2. where two or more GPUs are visible: two ranks (this script again, twice, with torchrun's variables:
 *    RANK 0/1, MASTER_ADDR 127.0.0.1 and a free MASTER_PORT), each on its own device through
 *    {@link openCommunicator}: the same device checks with values that differ by rank, on both ranks, and
 *    all-reduce bus bandwidth from 1 MiB to 256 MiB; then the host-array checks and timings through
 *    {@link openNccl} (its staging buffer is not visible through openCommunicator's watchdog), at
 *    MASTER_PORT + 2 (default chunk) and + 3 (tiny chunk).
 * One JSON line per result (also `$OUT/nccl_check.jsonl` when OUT is set); exit status 1 when a check
 * fails, 2 when NCCL or the driver cannot start (the message names what is missing). Some seconds.
 *
 * The host-array checks take any {@link Communicator}: tests/bench/gpu_checks_test.ts runs them on the CPU
 * through lib/runtime/comm's in-process world and through NCCL's fakes.
 *
 * ```
 * deno run -A bench/gpu/nccl_check.ts     # NCCL_LIBRARY=/path/libnccl.so.2 where it is not found by itself
 * ```
 * @module
 */
import {
  type Communicator,
  type DeviceBuffer,
  openCommunicator,
  openNccl,
  paddedShard,
  worldFromEnv,
} from "../../lib/runtime/comm/mod.ts";
import { CUDA_LIBRARIES, findLibraries, librarySearchDirs } from "../../lib/runtime/cuda.ts";
import { checkReport, type CheckSink, twoRankEnv } from "./_checks.ts";

/** The small staging chunk of the second host pass: a float64 piece of 2 ranks is 4 elements. */
export const TINY_CHUNK_BYTES = 64;
/** Host all-reduces timed, MiB: the second is over the 256 MiB default chunk (two pieces). */
export const HOST_BANDWIDTH_MIB = [64, 320];

/** The driver API calls this script needs for device memory. */
function driver() {
  const lib = CUDA_LIBRARIES.find((l) => l.soname === "libcuda.so.1")!;
  const path = findLibraries([lib], librarySearchDirs()).found.get(lib.soname);
  if (!path) throw new Error("libcuda.so.1 (the NVIDIA driver) was not found");
  return Deno.dlopen(path, {
    cuInit: { parameters: ["u32"], result: "i32" },
    cuDeviceGetCount: { parameters: ["buffer"], result: "i32" },
    cuMemAlloc_v2: { parameters: ["buffer", "usize"], result: "i32" },
    cuMemFree_v2: { parameters: ["u64"], result: "i32" },
    cuMemcpyHtoD_v2: { parameters: ["u64", "buffer", "usize"], result: "i32" },
    cuMemcpyDtoH_v2: { parameters: ["buffer", "u64", "usize"], result: "i32" },
    cuCtxSynchronize: { parameters: [], result: "i32" },
  }).symbols;
}

type Cu = ReturnType<typeof driver>;
type Host = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint16Array;

function ok(what: string, rc: number) {
  if (rc !== 0) throw new Error(`${what} failed: CUresult ${rc}`);
}

/** A device copy of `host` (Uint16Array = bfloat16 bits). */
function toDevice(cu: Cu, host: Host, dtype: DeviceBuffer["dtype"]): DeviceBuffer & { addr: bigint } {
  const out = new BigUint64Array(1);
  ok("cuMemAlloc", cu.cuMemAlloc_v2(out, BigInt(Math.max(host.byteLength, 4))));
  ok("cuMemcpyHtoD", cu.cuMemcpyHtoD_v2(out[0], host, BigInt(host.byteLength)));
  return {
    pointer: Deno.UnsafePointer.create(out[0]),
    addr: out[0],
    length: host.length,
    dtype,
    device: "cuda",
  };
}

function toHost<T extends Host>(cu: Cu, d: { addr: bigint }, host: T): T {
  ok("cuCtxSynchronize", cu.cuCtxSynchronize());
  ok("cuMemcpyDtoH", cu.cuMemcpyDtoH_v2(host, d.addr, BigInt(host.byteLength)));
  return host;
}

/** bfloat16 bits of small integers (exact). */
const bf16 = (xs: number[]) =>
  Uint16Array.from(xs, (x) => new Uint32Array(Float32Array.of(x).buffer)[0] >>> 16);
const fromBf16 = (bits: Uint16Array) =>
  Array.from(bits, (b) => new Float32Array(Uint32Array.of(b << 16).buffer)[0]);

const range = <T>(len: number, f: (i: number) => T) => Array.from({ length: len }, (_, i) => f(i));

/** Emits whether `got` equals `want` element by element (the first 8 of each where not), with `extra`. */
function same(
  sink: CheckSink,
  name: string,
  got: ArrayLike<unknown>,
  want: ArrayLike<unknown>,
  extra: Record<string, unknown> = {},
) {
  let first = -1;
  for (let i = 0; first < 0 && i < Math.min(got.length, want.length); i++) if (got[i] !== want[i]) first = i;
  const good = got.length === want.length && first < 0;
  const at = Math.max(0, first);
  sink.emit({
    check: name,
    ...extra,
    ok: good,
    ...(good ? {} : {
      length: got.length,
      first_difference: first,
      got: Array.from(got).slice(at, at + 8).map(String),
      want: Array.from(want).slice(at, at + 8).map(String),
    }),
  });
  if (!good) sink.failures.push(`${name}${extra.chunkBytes ? ` (chunk ${extra.chunkBytes} B)` : ""}`);
}

/** Every collective on device buffers with rank-dependent values; checks this rank's results. */
async function collectives(comm: Communicator, cu: Cu, sink: CheckSink) {
  const { rank: r, size: n } = comm;
  const tri = (n * (n + 1)) / 2;
  const k = 1000;

  const a = toDevice(cu, Float32Array.from(range(k, (i) => (r + 1) * i)), "float32");
  await comm.allReduce(a);
  same(sink, "allReduce sum float32", toHost(cu, a, new Float32Array(k)), range(k, (i) => tri * i));

  const b = toDevice(cu, bf16(range(16, (i) => (r + 1) * i)), "bfloat16");
  await comm.allReduce(b);
  same(
    sink,
    "allReduce sum bfloat16",
    fromBf16(toHost(cu, b, new Uint16Array(16))),
    range(16, (i) => tri * i),
  );

  const c = toDevice(cu, Int32Array.from(range(k, (i) => r * 1000 + i)), "int32");
  await comm.allReduce(c, "max");
  same(sink, "allReduce max int32", toHost(cu, c, new Int32Array(k)), range(k, (i) => (n - 1) * 1000 + i));

  const send = toDevice(cu, Float32Array.from(range(k * n, (j) => j + 100 * r)), "float32");
  const recv = toDevice(cu, new Float32Array(k), "float32");
  await comm.reduceScatter(send, recv);
  same(
    sink,
    "reduceScatter sum float32",
    toHost(cu, recv, new Float32Array(k)),
    range(k, (i) => n * (r * k + i) + 100 * (n * (n - 1)) / 2),
  );

  const mine = toDevice(cu, Float64Array.from(range(k, (i) => r * 10 + i)), "float64");
  const all = toDevice(cu, new Float64Array(k * n), "float64");
  await comm.allGather(mine, all);
  same(
    sink,
    "allGather float64",
    toHost(cu, all, new Float64Array(k * n)),
    range(k * n, (j) => Math.floor(j / k) * 10 + (j % k)),
  );

  const root = n - 1;
  const bc = toDevice(cu, BigInt64Array.from(range(k, (i) => (r === root ? BigInt(i) * 3n : 0n))), "int64");
  await comm.broadcast(bc, root);
  same(sink, "broadcast int64", toHost(cu, bc, new BigInt64Array(k)), range(k, (i) => BigInt(i) * 3n));

  const t0 = performance.now();
  await comm.barrier();
  sink.emit({ check: "barrier", ok: true, ms: +(performance.now() - t0).toFixed(3) });
  // the padded split a ZeRO-1 step will use, on the device: this rank's block of a 1001-element vector
  const { block, padded } = paddedShard(1001, n, r);
  sink.emit({ check: "paddedShard(1001)", ok: block * n === padded, block, padded });
  for (const d of [a, b, c, send, recv, mine, all, bc]) cu.cuMemFree_v2(d.addr);
}

/** All-reduce time and bus bandwidth for float32 device buffers of `sizes` MiB. */
async function bandwidth(comm: Communicator, cu: Cu, sink: CheckSink, sizes: number[]) {
  for (const mib of sizes) {
    const n = (mib * 2 ** 20) / 4;
    const d = toDevice(cu, new Float32Array(n), "float32");
    for (let i = 0; i < 5; i++) await comm.allReduce(d);
    const iters = 20;
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) await comm.allReduce(d);
    sink.emit({
      check: "allReduce bandwidth",
      ...busBandwidth(comm.size, mib, (performance.now() - t0) / iters),
    });
    cu.cuMemFree_v2(d.addr);
  }
}

/** A collective's time and bandwidths as nccl-tests reports them (bus: 2(n − 1)/n of the algorithm's). */
function busBandwidth(ranks: number, mib: number, ms: number) {
  const s = ms / 1000, algbw = (mib * 2 ** 20) / s / 1e9;
  return {
    ranks,
    mib,
    us: +(s * 1e6).toFixed(1),
    algbw_gbs: +algbw.toFixed(2),
    busbw_gbs: +((algbw * 2 * (ranks - 1)) / ranks).toFixed(2),
  };
}

type HostArray = Float32Array | Float64Array | Int32Array;
/** The host array types the data-parallel step hands NCCL (its gradient, its scalars, its hashes). */
const HOST_TYPES: { dtype: "float32" | "float64" | "int32"; T: new (n: number) => HostArray }[] = [
  { dtype: "float32", T: Float32Array },
  { dtype: "float64", T: Float64Array },
  { dtype: "int32", T: Int32Array },
];

/** NCCL's staging buffer size in bytes, where `comm` is an NcclCommunicator (not behind a watchdog). */
export function stagingBytesOf(comm: Communicator): number | undefined {
  const s = (comm as { stagingBytes?: unknown }).stagingBytes;
  return typeof s === "number" ? s : undefined;
}

/** NCCL calls made so far, where `comm` is an NcclCommunicator: how many pieces the host collectives took. */
function ncclCallsOf(comm: Communicator): number | undefined {
  const s = (comm as { stats?: { calls?: unknown } }).stats;
  return typeof s?.calls === "number" ? s.calls : undefined;
}

/**
 * Every collective on host arrays of each {@link HOST_TYPES} (all-reduce sum and max, reduce-scatter sum,
 * all-gather, broadcast from the last rank), values that differ by rank and are exact in every type, odd
 * lengths; checks this rank's results. `chunkBytes`: the staging chunk `comm` was opened with, for the report
 * and the staging checks (where `comm` is an NcclCommunicator): its staging buffer ≤ the chunk, and more NCCL
 * calls than collectives where an array was larger than the chunk. Every rank of `comm` calls it.
 */
export async function hostCollectives(
  comm: Communicator,
  sink: CheckSink,
  chunkBytes?: number,
): Promise<void> {
  const { rank: r, size: n } = comm;
  const tri = (n * (n + 1)) / 2;
  /** Small integers of both signs, so that every sum below is exact in float32 too. */
  const v = (i: number) => (i % 1000) - 500;
  const AR = 1001, RS = 1001, AG = 1003, BC = 999; // odd: pieces of a power-of-two chunk come out uneven
  const extra = { memory: "host", ranks: n, chunkBytes: chunkBytes ?? null };
  const calls0 = ncclCallsOf(comm);
  let count = 0, largest = 0;
  const staged = (bytes: number) => {
    count++;
    largest = Math.max(largest, bytes);
  };
  for (const { dtype, T } of HOST_TYPES) {
    const make = (len: number, f: (i: number) => number) => {
      const a = new T(len);
      for (let i = 0; i < len; i++) a[i] = f(i);
      return a;
    };
    const name = (what: string) => `host ${what} ${dtype}`;

    const sum = make(AR, (i) => (r + 1) * v(i));
    await comm.allReduce(sum, "sum");
    staged(sum.byteLength);
    same(sink, name("allReduce sum"), sum, range(AR, (i) => tri * v(i)), extra);

    // the largest value comes from a different rank element by element
    const max = make(AR, (i) => ((i + r) % n) * 1000 + v(i));
    await comm.allReduce(max, "max");
    staged(max.byteLength);
    same(sink, name("allReduce max"), max, range(AR, (i) => (n - 1) * 1000 + v(i)), extra);

    const send = make(RS * n, (j) => v(j) + 7 * r), recv = new T(RS);
    await comm.reduceScatter(send, recv, "sum");
    staged(send.byteLength);
    same(
      sink,
      name("reduceScatter sum"),
      recv,
      range(RS, (i) => n * v(r * RS + i) + (7 * n * (n - 1)) / 2),
      extra,
    );

    const mine = make(AG, (i) => 10_000 * r + v(i)), all = new T(AG * n);
    await comm.allGather(mine, all);
    staged(all.byteLength);
    same(sink, name("allGather"), all, range(AG * n, (j) => 10_000 * Math.floor(j / AG) + v(j % AG)), extra);

    const root = n - 1;
    const bc = make(BC, (i) => (r === root ? 3 * v(i) + 1 : -(i + 1)));
    await comm.broadcast(bc, root);
    staged(bc.byteLength);
    same(sink, name("broadcast"), bc, range(BC, (i) => 3 * v(i) + 1), extra);
  }
  const stagingBytes = stagingBytesOf(comm);
  if (stagingBytes !== undefined) {
    const calls = ncclCallsOf(comm)! - calls0!;
    const bounded = chunkBytes === undefined || stagingBytes <= chunkBytes;
    const split = chunkBytes === undefined || largest <= chunkBytes || calls > count;
    sink.emit({
      check: "host staging",
      ...extra,
      stagingBytes,
      largestArrayBytes: largest,
      collectives: count,
      ncclCalls: calls,
      ok: bounded && split,
    });
    if (!bounded) {
      sink.failures.push(`host staging: ${stagingBytes} bytes staged with a ${chunkBytes}-byte chunk`);
    }
    if (!split) {
      sink.failures.push(
        `host staging: ${count} collectives on arrays of up to ${largest} bytes made only ${calls} NCCL ` +
          `calls with a ${chunkBytes}-byte chunk: not split into pieces`,
      );
    }
  }
}

/**
 * All-reduce of float32 host arrays of `sizes` MiB: the result of the first checked element by element
 * (every piece in its place), then `iters` timed after `warmup`; with the staging buffer's size where
 * `comm` is an NcclCommunicator (≤ `chunkBytes` where given). Every rank of `comm` calls it.
 */
export async function hostBandwidth(
  comm: Communicator,
  sink: CheckSink,
  sizes: number[],
  o: { chunkBytes?: number; warmup?: number; iters?: number } = {},
): Promise<void> {
  const { rank: r, size: n } = comm;
  const tri = (n * (n + 1)) / 2, period = 4093; // a prime, so no piece starts with the same values
  for (const mib of sizes) {
    const len = Math.round((mib * 2 ** 20) / 4);
    const x = new Float32Array(len);
    for (let i = 0; i < len; i++) x[i] = (r + 1) * (i % period);
    await comm.allReduce(x);
    let bad = -1;
    for (let i = 0; i < len && bad < 0; i++) if (x[i] !== tri * (i % period)) bad = i;
    for (let i = 0; i < (o.warmup ?? 1); i++) await comm.allReduce(x);
    const iters = o.iters ?? 5;
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) await comm.allReduce(x);
    const ms = (performance.now() - t0) / iters;
    const stagingBytes = stagingBytesOf(comm);
    const bounded = o.chunkBytes === undefined || stagingBytes === undefined || stagingBytes <= o.chunkBytes;
    sink.emit({
      check: "host allReduce bandwidth",
      memory: "host",
      ...busBandwidth(n, mib, ms),
      chunkBytes: o.chunkBytes ?? null,
      ...(stagingBytes !== undefined ? { stagingBytes } : {}),
      ok: bad < 0 && bounded,
      ...(bad < 0 ? {} : { first_difference: bad, got: x[bad], want: tri * (bad % period) }),
    });
    if (bad >= 0) sink.failures.push(`host allReduce of ${mib} MiB: wrong from element ${bad}`);
    if (!bounded) {
      sink.failures.push(
        `host allReduce of ${mib} MiB: ${stagingBytes} bytes staged with a ${o.chunkBytes}-byte chunk`,
      );
    }
  }
}

/** `count` free ports in a row from the one returned (NCCL listens on MASTER_PORT + 1, the host checks on + 2, + 3). */
function freePorts(count: number): number {
  for (let tries = 0; tries < 50; tries++) {
    const a = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const p = (a.addr as Deno.NetAddr).port;
    const held: Deno.Listener[] = [a];
    try {
      for (let k = 1; k < count; k++) held.push(Deno.listen({ hostname: "127.0.0.1", port: p + k }));
      return p;
    } catch {
      // one of them is taken: try another
    } finally {
      for (const l of held) l.close();
    }
  }
  throw new Error(`no ${count} free ports in a row`);
}

/** One of the two ranks this script starts (`--rank`): its lines to stdout, exit 1 on a failed check. */
async function rankMain(): Promise<never> {
  const world = worldFromEnv();
  const sink: CheckSink = {
    emit: (o) => console.log(JSON.stringify({ rank: world.rank, ...o })),
    failures: [],
  };
  const comm = await openCommunicator({ device: "cuda", timeoutMs: 120_000 });
  const cu = driver();
  await collectives(comm, cu, sink);
  await bandwidth(comm, cu, sink, [1, 16, 64, 256]);
  await comm[Symbol.asyncDispose]();
  for (const [k, chunk] of [[2, undefined], [3, TINY_CHUNK_BYTES]] as const) {
    const host = await openNccl({
      rank: world.rank,
      size: world.size,
      localRank: world.localRank,
      commId: `${world.masterAddr}:${world.masterPort! + k}`,
      timeoutMs: 120_000,
      stagingChunkBytes: chunk,
    });
    await hostCollectives(host, sink, host.stagingChunkBytes);
    if (chunk === undefined) {
      await hostBandwidth(host, sink, HOST_BANDWIDTH_MIB, { chunkBytes: host.stagingChunkBytes });
    }
    await host[Symbol.asyncDispose]();
  }
  console.log(
    JSON.stringify({
      rank: world.rank,
      check: "rank done",
      ok: sink.failures.length === 0,
      failures: sink.failures,
    }),
  );
  Deno.exit(sink.failures.length ? 1 : 0);
}

async function main(): Promise<never> {
  if (Deno.args.includes("--rank")) return await rankMain();
  const report = checkReport("nccl_check");
  let cu: Cu;
  let gpus = 0;
  try {
    cu = driver();
    ok("cuInit", cu.cuInit(0));
    const count = new Int32Array(1);
    ok("cuDeviceGetCount", cu.cuDeviceGetCount(count));
    gpus = count[0];
  } catch (e) {
    console.error(`nccl_check: CUDA cannot start: ${(e as Error).message}`);
    Deno.exit(2);
  }
  report.emit({ check: "gpus", count: gpus });

  /** Runs a part, a failure recorded (exit 2 where NCCL or the driver is missing) without losing the rest. */
  const part = async (what: string, run: () => Promise<void>) => {
    try {
      await run();
    } catch (e) {
      console.error(`nccl_check: ${what}: ${(e as Error).message}`);
      if (/libnccl|libcuda|NCCL_LIBRARY/.test((e as Error).message)) Deno.exit(2);
      report.failures.push(`${what}: ${(e as Error).message}`);
    }
  };

  // 1. a world of one, in this process: device buffers, host arrays with the default chunk, timings
  const port = freePorts(3);
  await part("world of one", async () => {
    const comm = await openNccl({
      rank: 0,
      size: 1,
      commId: `127.0.0.1:${port + 1}`,
      device: 0,
      timeoutMs: 60_000,
    });
    await collectives(comm, cu, report);
    await hostCollectives(comm, report, comm.stagingChunkBytes);
    await bandwidth(comm, cu, report, HOST_BANDWIDTH_MIB);
    await hostBandwidth(comm, report, HOST_BANDWIDTH_MIB, { chunkBytes: comm.stagingChunkBytes });
    await comm[Symbol.asyncDispose]();
  });
  // host arrays again in pieces of TINY_CHUNK_BYTES
  await part("world of one, tiny staging chunk", async () => {
    const comm = await openNccl({
      rank: 0,
      size: 1,
      commId: `127.0.0.1:${port + 2}`,
      device: 0,
      timeoutMs: 60_000,
      stagingChunkBytes: TINY_CHUNK_BYTES,
    });
    await hostCollectives(comm, report, comm.stagingChunkBytes);
    await comm[Symbol.asyncDispose]();
  });

  // 2. two ranks on two devices
  if (gpus >= 2) {
    const port = freePorts(4);
    Deno.env.delete("NCCL_COMM_ID"); // step 1's; each rank sets its own from MASTER_ADDR/PORT
    const script = new URL(import.meta.url).pathname;
    const ranks = [0, 1].map((rank) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", script, "--rank"],
        env: twoRankEnv(rank, port),
        stdout: "piped",
        stderr: "piped",
      }).output()
    );
    for (const [rank, out] of (await Promise.all(ranks)).entries()) {
      for (const line of new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.startsWith("{"))) {
        report.emit(JSON.parse(line));
      }
      if (out.code !== 0) {
        report.failures.push(
          `rank ${rank} exited ${out.code}: ${new TextDecoder().decode(out.stderr).slice(-2000)}`,
        );
      }
    }
  } else {
    report.emit({ check: "two ranks", skipped: `${gpus} GPU visible: two ranks need two` });
  }
  return await report.finish({ gpus });
}

if (import.meta.main) await main();
