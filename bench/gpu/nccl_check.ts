/**
 * NCCL through lib/runtime/comm on a lent GPU, in one short run:
 * 1. a world of one: {@link openNccl} in this process on device 0, every collective on device buffers
 *    (all-reduce sum of float32 and bfloat16, max of int32, reduce-scatter, all-gather, broadcast,
 *    barrier), each result copied back and compared with what it must be; the time of a 64 MiB
 *    all-reduce.
 * 2. where two or more GPUs are visible: two ranks (this script again, twice, with torchrun's variables:
 *    RANK 0/1, MASTER_ADDR 127.0.0.1 and a free MASTER_PORT), each on its own device through
 *    {@link openCommunicator}: the same checks with values that differ by rank, on both ranks, and
 *    all-reduce bus bandwidth from 1 MiB to 256 MiB.
 * One JSON line per result (also `$OUT/nccl_check.jsonl` when OUT is set); exit status 1 when a check
 * fails, 2 when NCCL or the driver cannot start (the message names what is missing). Some seconds.
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
} from "../../lib/runtime/comm/mod.ts";
import { CUDA_LIBRARIES, findLibraries, librarySearchDirs } from "../../lib/runtime/cuda.ts";
import { checkReport } from "./_checks.ts";

const RANK_MODE = Deno.args.includes("--rank");
const report = checkReport("nccl_check");
/** In rank mode, lines go to stdout for the driver to collect. */
const emit = (o: Record<string, unknown>) =>
  RANK_MODE ? console.log(JSON.stringify({ rank: Number(Deno.env.get("RANK")), ...o })) : report.emit(o);
const failures: string[] = RANK_MODE ? [] : report.failures;

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

function same(name: string, got: unknown[], want: unknown[]) {
  const good = got.length === want.length && got.every((g, i) => g === want[i]);
  emit({
    check: name,
    ok: good,
    ...(good ? {} : { got: got.slice(0, 8).map(String), want: want.slice(0, 8).map(String) }),
  });
  if (!good) failures.push(name);
}

/** Every collective with rank-dependent values; checks this rank's results. */
async function collectives(comm: Communicator, cu: Cu) {
  const { rank: r, size: n } = comm;
  const tri = (n * (n + 1)) / 2;
  const k = 1000;
  const range = <T>(len: number, f: (i: number) => T) => Array.from({ length: len }, (_, i) => f(i));

  const a = toDevice(cu, Float32Array.from(range(k, (i) => (r + 1) * i)), "float32");
  await comm.allReduce(a);
  same("allReduce sum float32", Array.from(toHost(cu, a, new Float32Array(k))), range(k, (i) => tri * i));

  const b = toDevice(cu, bf16(range(16, (i) => (r + 1) * i)), "bfloat16");
  await comm.allReduce(b);
  same("allReduce sum bfloat16", fromBf16(toHost(cu, b, new Uint16Array(16))), range(16, (i) => tri * i));

  const c = toDevice(cu, Int32Array.from(range(k, (i) => r * 1000 + i)), "int32");
  await comm.allReduce(c, "max");
  same(
    "allReduce max int32",
    Array.from(toHost(cu, c, new Int32Array(k))),
    range(k, (i) => (n - 1) * 1000 + i),
  );

  const send = toDevice(cu, Float32Array.from(range(k * n, (j) => j + 100 * r)), "float32");
  const recv = toDevice(cu, new Float32Array(k), "float32");
  await comm.reduceScatter(send, recv);
  same(
    "reduceScatter sum float32",
    Array.from(toHost(cu, recv, new Float32Array(k))),
    range(k, (i) => n * (r * k + i) + 100 * (n * (n - 1)) / 2),
  );

  const mine = toDevice(cu, Float64Array.from(range(k, (i) => r * 10 + i)), "float64");
  const all = toDevice(cu, new Float64Array(k * n), "float64");
  await comm.allGather(mine, all);
  same(
    "allGather float64",
    Array.from(toHost(cu, all, new Float64Array(k * n))),
    range(k * n, (j) => Math.floor(j / k) * 10 + (j % k)),
  );

  const root = n - 1;
  const bc = toDevice(cu, BigInt64Array.from(range(k, (i) => (r === root ? BigInt(i) * 3n : 0n))), "int64");
  await comm.broadcast(bc, root);
  same("broadcast int64", Array.from(toHost(cu, bc, new BigInt64Array(k))), range(k, (i) => BigInt(i) * 3n));

  const t0 = performance.now();
  await comm.barrier();
  emit({ check: "barrier", ok: true, ms: +(performance.now() - t0).toFixed(3) });
  // the padded split a ZeRO-1 step will use, on the device: this rank's block of a 1001-element vector
  const { block, padded } = paddedShard(1001, n, r);
  emit({ check: "paddedShard(1001)", ok: block * n === padded, block, padded });
  for (const d of [a, b, c, send, recv, mine, all, bc]) cu.cuMemFree_v2(d.addr);
}

/** All-reduce time and bus bandwidth for float32 buffers of `sizes` MiB. */
async function bandwidth(comm: Communicator, cu: Cu, sizes: number[]) {
  for (const mib of sizes) {
    const n = (mib * 2 ** 20) / 4;
    const d = toDevice(cu, new Float32Array(n), "float32");
    for (let i = 0; i < 5; i++) await comm.allReduce(d);
    const iters = 20;
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) await comm.allReduce(d);
    const s = (performance.now() - t0) / 1000 / iters;
    const algbw = (mib * 2 ** 20) / s / 1e9;
    emit({
      check: "allReduce bandwidth",
      ranks: comm.size,
      mib,
      us: +(s * 1e6).toFixed(1),
      algbw_gbs: +algbw.toFixed(2),
      busbw_gbs: +((algbw * 2 * (comm.size - 1)) / comm.size).toFixed(2),
    });
    cu.cuMemFree_v2(d.addr);
  }
}

/** Two free ports in a row (NCCL listens on MASTER_PORT + 1). */
function freePorts(): number {
  for (let tries = 0; tries < 50; tries++) {
    const a = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const p = (a.addr as Deno.NetAddr).port;
    try {
      const b = Deno.listen({ hostname: "127.0.0.1", port: p + 1 });
      b.close();
      a.close();
      return p;
    } catch {
      a.close();
    }
  }
  throw new Error("no two free ports in a row");
}

if (RANK_MODE) {
  const comm = await openCommunicator({ device: "cuda", timeoutMs: 120_000 });
  const cu = driver();
  await collectives(comm, cu);
  await bandwidth(comm, cu, [1, 16, 64, 256]);
  await comm[Symbol.asyncDispose]();
  console.log(JSON.stringify({ rank: comm.rank, check: "rank done", ok: failures.length === 0, failures }));
  Deno.exit(failures.length ? 1 : 0);
}

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
emit({ check: "gpus", count: gpus });

// 1. a world of one, in this process
try {
  const port = freePorts();
  const comm = await openNccl({
    rank: 0,
    size: 1,
    commId: `127.0.0.1:${port + 1}`,
    device: 0,
    timeoutMs: 60_000,
  });
  await collectives(comm, cu);
  await bandwidth(comm, cu, [64]);
  await comm[Symbol.asyncDispose]();
} catch (e) {
  console.error(`nccl_check: ${(e as Error).message}`);
  if (/libnccl|libcuda|NCCL_LIBRARY/.test((e as Error).message)) Deno.exit(2);
  report.failures.push(`world of one: ${(e as Error).message}`);
}

// 2. two ranks on two devices
if (gpus >= 2) {
  const port = freePorts();
  Deno.env.delete("NCCL_COMM_ID"); // step 1's; each rank sets its own from MASTER_ADDR/PORT
  const script = new URL(import.meta.url).pathname;
  const ranks = [0, 1].map((rank) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "--rank"],
      env: {
        RANK: String(rank),
        WORLD_SIZE: "2",
        LOCAL_RANK: String(rank),
        LOCAL_WORLD_SIZE: "2",
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: String(port),
      },
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
  emit({ check: "two ranks", skipped: `${gpus} GPU visible: two ranks need two` });
}
await report.finish({ gpus });
