/**
 * Fakes of NCCL and the CUDA driver for tests without a GPU (tests/runtime/comm/nccl_test.ts, the trainer's
 * world opening in tests/train/distributed_test.ts).
 */
import type { CudaDriverApi, DeviceBuffer, NcclApi } from "../../../lib/runtime/comm/mod.ts";
import { NCCL_DTYPES } from "../../../lib/runtime/comm/mod.ts";

export type Call = { fn: string; args: unknown[] };

/** Typed arrays of the NCCL types the fake device computes on. */
const FAKE_TYPES: Record<
  number,
  new (b: ArrayBuffer, o: number, n: number) => Float32Array | Float64Array | Int32Array
> = {
  [NCCL_DTYPES.float32]: Float32Array,
  [NCCL_DTYPES.float64]: Float64Array,
  [NCCL_DTYPES.int32]: Int32Array,
};

/**
 * Fakes of NCCL and the driver: init and each call are "in progress" for `pending` polls, the stream busy
 * for `busy` queries; `rc`/`async` force a call's result or the async state. cuMemAlloc_v2 hands out
 * addresses of a simulated device memory (the first 0x5c7a7c, barrier()'s float), which the copies read and
 * write; on that memory the collectives compute as in a world of `size` ranks where every other rank holds
 * `peer(i)` at element i (all-reduce and reduce-scatter add it `size − 1` times, all-gather puts it in the
 * other ranks' blocks, broadcast from another root writes it). Device pointers outside it are left alone.
 */
export function fakes(
  o: {
    pending?: number;
    busy?: number;
    rc?: Record<string, number>;
    asyncState?: number;
    rank?: number;
    size?: number;
    peer?: (i: number) => number;
  } = {},
) {
  const rank = o.rank ?? 0, size = o.size ?? 2, peer = o.peer ?? ((i: number) => 100 + i);
  const memory = new Map<bigint, Uint8Array>();
  let next = 0x5c7a7cn;
  /** The simulated bytes at [addr, addr + bytes), or undefined outside the simulated memory. */
  const at = (addr: bigint, bytes: number): Uint8Array | undefined => {
    for (const [base, m] of memory) {
      if (addr >= base && addr + BigInt(bytes) <= base + BigInt(m.length)) {
        return m.subarray(Number(addr - base), Number(addr - base) + bytes);
      }
    }
  };
  const typed = (p: unknown, n: bigint, dt: number) => {
    const T = FAKE_TYPES[dt];
    if (!T) return undefined;
    const bytes = Number(n) * (T as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
    const m = at(addr(p), bytes);
    return m && new T(m.buffer as ArrayBuffer, m.byteOffset, Number(n));
  };
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
    ncclAllReduce: (...a) => {
      const x = typed(a[1], a[2], a[3]);
      if (x && !o.rc?.ncclAllReduce) x.forEach((v, i) => x[i] = v + (size - 1) * peer(i));
      return issue("ncclAllReduce", ...a);
    },
    ncclReduceScatter: (...a) => {
      const s = typed(a[0], a[2] * BigInt(size), a[3]), r = typed(a[1], a[2], a[3]);
      if (s && r) r.forEach((_, i) => r[i] = s[rank * r.length + i] + (size - 1) * peer(rank * r.length + i));
      return issue("ncclReduceScatter", ...a);
    },
    ncclAllGather: (...a) => {
      const s = typed(a[0], a[2], a[3]), r = typed(a[1], a[2] * BigInt(size), a[3]);
      if (s && r) r.forEach((_, i) => r[i] = Math.floor(i / s.length) === rank ? s[i % s.length] : peer(i));
      return issue("ncclAllGather", ...a);
    },
    ncclBroadcast: (...a) => {
      const x = typed(a[1], a[2], a[3]);
      if (x && a[4] !== rank) x.forEach((_, i) => x[i] = peer(i));
      return issue("ncclBroadcast", ...a);
    },
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
      const rc = rec("cuMemAlloc_v2", bytes);
      if (rc) return rc;
      (out as BigUint64Array)[0] = next;
      memory.set(next, new Uint8Array(Number(bytes)));
      next += 0x100000n;
      return 0;
    },
    cuMemFree_v2: (p) => {
      memory.delete(p);
      return rec("cuMemFree_v2", p);
    },
    cuMemcpyHtoDAsync_v2: (dst, src, bytes, stream) => {
      const rc = rec("cuMemcpyHtoDAsync_v2", dst, bytes, addr(stream));
      const s = src as ArrayBufferView;
      if (!rc) at(dst, Number(bytes))!.set(new Uint8Array(s.buffer, s.byteOffset, Number(bytes)));
      return rc;
    },
    cuMemcpyDtoHAsync_v2: (dst, src, bytes, stream) => {
      const rc = rec("cuMemcpyDtoHAsync_v2", src, bytes, addr(stream));
      const d = dst as ArrayBufferView;
      if (!rc) new Uint8Array(d.buffer, d.byteOffset, Number(bytes)).set(at(src, Number(bytes))!);
      return rc;
    },
    cuGetErrorString: (_code, out) => {
      (out as BigUint64Array)[0] = Deno.UnsafePointer.value(cstr("CUDA_ERROR_INVALID_DEVICE")) as bigint;
      return 0;
    },
  };
  return { nccl, cuda, calls, comm, memory };
}

/** Runs `fn` with NCCL's variables as openNccl leaves them, restoring the environment after. */
export async function withNcclEnv(fn: () => Promise<void>) {
  const saved = ["NCCL_COMM_ID", "NCCL_COMM_BLOCKING"].map((k) => [k, Deno.env.get(k)] as const);
  for (const [k] of saved) Deno.env.delete(k);
  try {
    await fn();
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
}

export const dev = (
  addr: bigint,
  length: number,
  dtype: DeviceBuffer["dtype"] = "float32",
): DeviceBuffer => ({
  pointer: Deno.UnsafePointer.create(addr),
  length,
  dtype,
  device: "cuda",
});
export const addr = (p: unknown) => Deno.UnsafePointer.value(p as Deno.PointerValue);
