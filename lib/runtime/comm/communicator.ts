/**
 * The communicator contract for training on several devices: the collectives data parallelism needs
 * (all-reduce, reduce-scatter, all-gather, broadcast, barrier), the same whatever engine runs them (Open MPI
 * on the CPU, NCCL on CUDA, an in-process simulation for tests, or nothing for one process). Also the
 * argument checks every backend shares, the even split of a flat vector over ranks, and a size-1
 * communicator.
 * @module
 */

/** Reductions: what gradient averaging (sum, then scale) and a global max (overflow checks) need. */
export type ReduceOp = "sum" | "max";

/** Element types a collective carries. `float16`/`bfloat16` exist only on the device (NCCL). */
export type CommDType = "float32" | "float64" | "int32" | "int64" | "uint8" | "float16" | "bfloat16";

/**
 * Memory on a CUDA device, e.g. a resident ONNX Runtime value's `GetTensorMutableData`: only NCCL reads it.
 * `length` counts elements of `dtype`, not bytes.
 */
export type DeviceBuffer = {
  pointer: Deno.PointerValue;
  length: number;
  dtype: CommDType;
  device: "cuda";
};

/** Host arrays a collective accepts (the JavaScript types of the graph's inputs and outputs). */
export type HostBuffer = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

/** What a collective reads and writes: host memory, or device memory for NCCL. */
export type CommBuffer = HostBuffer | DeviceBuffer;

/** The engines behind {@link Communicator}; `single` is the world of one process, where nothing moves. */
export type CommBackend = "mpi" | "nccl" | "local" | "single";

/**
 * One process's view of a world of `size` ranks. Every rank makes the same collectives in the same order
 * with the same lengths, as in MPI; each resolves when this rank's part is done and its output buffers hold
 * the result (the caller leaves the buffers alone until then). Errors are {@link CommError}s naming the rank.
 */
export interface Communicator extends AsyncDisposable {
  /** This process's rank, 0 ≤ rank < size. */
  readonly rank: number;
  /** How many processes take part. */
  readonly size: number;
  /** The rank among the processes on this machine (the CUDA device a rank uses). */
  readonly localRank: number;
  readonly backend: CommBackend;
  /** Reduces `buf` over all ranks, in place: every rank ends with the same result. */
  allReduce(buf: CommBuffer, op?: ReduceOp): Promise<void>;
  /**
   * Reduces `send` (length `recv.length × size`) over all ranks; rank r receives block r, the elements
   * [r·k, (r+1)·k) with k = `recv.length`. See {@link paddedShard} for lengths not divisible by the size.
   */
  reduceScatter(send: CommBuffer, recv: CommBuffer, op?: ReduceOp): Promise<void>;
  /** Concatenates every rank's `send` in rank order into `recv` (length `send.length × size`). */
  allGather(send: CommBuffer, recv: CommBuffer): Promise<void>;
  /** Copies rank `root`'s `buf` into every other rank's `buf`. */
  broadcast(buf: CommBuffer, root: number): Promise<void>;
  /** Resolves when every rank has called it. */
  barrier(): Promise<void>;
  /**
   * Gives up on the world: pending and later collectives fail (on every rank, where the engine can tell
   * the others: MPI ends the whole job, NCCL makes the peers' collectives fail), each error naming the rank
   * and `reason`. For the watchdog and fatal errors; it does not wait.
   */
  abort(reason: string): void;
}

/** The collectives, by name, for error messages and the watchdog. */
export type CollectiveName = "allReduce" | "reduceScatter" | "allGather" | "broadcast" | "barrier";

/** An error of a collective, prefixed `rank r/n: op: ` so that a log of several ranks says whose it is. */
export class CommError extends Error {
  constructor(
    readonly rank: number,
    readonly size: number,
    readonly op: CollectiveName | "open" | "close",
    readonly detail: string,
  ) {
    super(`rank ${rank}/${size}: ${op}: ${detail}`);
    this.name = "CommError";
  }
}

/** Whether `b` is device memory rather than a host array. */
export function isDeviceBuffer(b: CommBuffer): b is DeviceBuffer {
  return typeof b === "object" && b !== null && !ArrayBuffer.isView(b) && "pointer" in b;
}

/** The element type of a buffer. */
export function dtypeOf(b: CommBuffer): CommDType {
  if (isDeviceBuffer(b)) return b.dtype;
  if (b instanceof Float32Array) return "float32";
  if (b instanceof Float64Array) return "float64";
  if (b instanceof Int32Array) return "int32";
  if (b instanceof BigInt64Array) return "int64";
  if (b instanceof Uint8Array) return "uint8";
  throw new TypeError(`not a buffer a collective carries: ${Object.prototype.toString.call(b)}`);
}

/** Bytes per element of each type. */
export const DTYPE_BYTES: Record<CommDType, number> = {
  float32: 4,
  float64: 8,
  int32: 4,
  int64: 8,
  uint8: 1,
  float16: 2,
  bfloat16: 2,
};

/** `float32[8]`: a buffer's type and length, for messages. */
export function describeBuffer(b: CommBuffer): string {
  return `${isDeviceBuffer(b) ? "cuda:" : ""}${dtypeOf(b)}[${b.length}]`;
}

/** Whether two host arrays share bytes (collectives other than in-place ones must not alias). */
function overlaps(a: CommBuffer, b: CommBuffer): boolean {
  if (isDeviceBuffer(a) || isDeviceBuffer(b)) {
    if (!isDeviceBuffer(a) || !isDeviceBuffer(b)) return false;
    const a0 = Deno.UnsafePointer.value(a.pointer), b0 = Deno.UnsafePointer.value(b.pointer);
    const a1 = a0 + BigInt(a.length * DTYPE_BYTES[a.dtype]),
      b1 = b0 + BigInt(b.length * DTYPE_BYTES[b.dtype]);
    return a.length > 0 && b.length > 0 && a0 < b1 && b0 < a1;
  }
  if (a.buffer !== b.buffer || a.byteLength === 0 || b.byteLength === 0) return false;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/**
 * Checks a collective's arguments as every backend needs them, throwing a {@link CommError} that says what
 * is wrong. `inPlace`: the byte offset of `send` inside `recv` that NCCL accepts as an in-place call
 * (all-gather: send = recv's block `rank`; reduce-scatter: recv = send's block `rank`), device only.
 */
export function checkCollective(
  who: { rank: number; size: number },
  op: CollectiveName,
  a: { buf?: CommBuffer; send?: CommBuffer; recv?: CommBuffer; reduce?: ReduceOp; root?: number },
): void {
  const fail = (detail: string): never => {
    throw new CommError(who.rank, who.size, op, detail);
  };
  const checkBuf = (b: CommBuffer | undefined, name: string) => {
    if (b === undefined || b === null) return fail(`${name} is missing`);
    try {
      dtypeOf(b);
    } catch (e) {
      fail(`${name}: ${(e as Error).message}`);
    }
    if (isDeviceBuffer(b)) {
      if (b.device !== "cuda") fail(`${name}: device buffers must be on "cuda", got ${String(b.device)}`);
      if (!Number.isSafeInteger(b.length) || b.length < 0) {
        fail(`${name}: length must be a whole number of elements, got ${b.length}`);
      }
      if (!(b.dtype in DTYPE_BYTES)) fail(`${name}: unknown dtype ${String(b.dtype)}`);
    }
  };
  if (a.reduce !== undefined && a.reduce !== "sum" && a.reduce !== "max") {
    fail(`the reduction must be "sum" or "max", got ${JSON.stringify(a.reduce)}`);
  }
  if (op === "allReduce") checkBuf(a.buf, "buffer");
  if (op === "broadcast") {
    checkBuf(a.buf, "buffer");
    if (!Number.isInteger(a.root) || a.root! < 0 || a.root! >= who.size) {
      fail(`root must be a rank in [0, ${who.size}), got ${a.root}`);
    }
  }
  if (op === "reduceScatter" || op === "allGather") {
    checkBuf(a.send, "send");
    checkBuf(a.recv, "recv");
    const send = a.send!, recv = a.recv!;
    if (dtypeOf(send) !== dtypeOf(recv)) {
      fail(
        `send and recv must have one element type, got ${describeBuffer(send)} and ${describeBuffer(recv)}`,
      );
    }
    if (isDeviceBuffer(send) !== isDeviceBuffer(recv)) {
      fail(
        `send and recv must both be on the host or both on the device, got ${describeBuffer(send)} and ${
          describeBuffer(recv)
        }`,
      );
    }
    const [big, small] = op === "reduceScatter" ? [send, recv] : [recv, send];
    if (big.length !== small.length * who.size) {
      fail(
        op === "reduceScatter"
          ? `send must hold recv.length × size = ${recv.length} × ${who.size} = ${
            recv.length * who.size
          } elements, got ${send.length} (pad it: see paddedShard)`
          : `recv must hold send.length × size = ${send.length} × ${who.size} = ${
            send.length * who.size
          } elements, got ${recv.length}`,
      );
    }
    if (overlaps(send, recv)) {
      // NCCL's in-place forms: the small buffer is exactly this rank's block of the big one.
      const inPlace = isDeviceBuffer(send) && isDeviceBuffer(recv) &&
        Deno.UnsafePointer.value((small as DeviceBuffer).pointer) -
              Deno.UnsafePointer.value((big as DeviceBuffer).pointer) ===
          BigInt(who.rank * small.length * DTYPE_BYTES[dtypeOf(small)]);
      if (!inPlace) fail(`send and recv overlap in memory; use separate buffers`);
    }
  }
}

/**
 * A contiguous share [start, end) of n items for `rank` among `size`: the first n mod size ranks get one
 * more, so sizes differ by at most 1 and every item is in exactly one share (some empty where n < size).
 * For splitting work (prompts, rows); a reduce-scatter needs equal blocks: {@link paddedShard}.
 */
export function shardRange(n: number, size: number, rank: number): { start: number; end: number } {
  checkShardArgs(n, size, rank);
  const base = Math.floor(n / size), extra = n % size;
  const start = rank * base + Math.min(rank, extra);
  return { start, end: start + base + (rank < extra ? 1 : 0) };
}

/**
 * The equal-block split a reduce-scatter or all-gather of a flat vector of n elements uses: the vector is
 * padded with zeros to `padded` = ⌈n / size⌉ × size, rank r owns the block [r·block, (r+1)·block) of it, of
 * which [start, end) lies inside the real n elements (end − start < block for the last ranks where n is not
 * divisible; empty where n < size). Zero padding leaves sums and the max of non-negative values unchanged;
 * the padded elements are ignored on the way back.
 */
export function paddedShard(
  n: number,
  size: number,
  rank: number,
): { block: number; padded: number; start: number; end: number } {
  checkShardArgs(n, size, rank);
  const block = Math.ceil(n / size);
  const start = Math.min(rank * block, n);
  return { block, padded: block * size, start, end: Math.min(start + block, n) };
}

function checkShardArgs(n: number, size: number, rank: number) {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`shard: n must be a whole number ≥ 0, got ${n}`);
  }
  if (!Number.isSafeInteger(size) || size < 1) {
    throw new RangeError(`shard: size must be a whole number ≥ 1, got ${size}`);
  }
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= size) {
    throw new RangeError(`shard: rank must be in [0, ${size}), got ${rank}`);
  }
}

/** A host array of `like`'s type and `n` elements, zeroed. */
export function allocLike<T extends HostBuffer>(like: T, n: number): T {
  return new (like.constructor as new (n: number) => T)(n);
}

/**
 * Reduce-scatter of a host vector of any length: pads it with zeros to a multiple of the size, and returns
 * this rank's block of the reduced vector, `shard` (length `block`), with the range [start, end) of the
 * original vector it holds (`shard.subarray(0, end − start)` is the real part).
 */
export async function reduceScatterPadded<T extends HostBuffer>(
  comm: Communicator,
  send: T,
  op: ReduceOp = "sum",
): Promise<{ shard: T; start: number; end: number }> {
  const { block, padded, start, end } = paddedShard(send.length, comm.size, comm.rank);
  let full = send;
  if (padded !== send.length) {
    full = allocLike(send, padded);
    (full as Float64Array).set(send as unknown as Float64Array);
  }
  const shard = allocLike(send, block);
  await comm.reduceScatter(full, shard, op);
  return { shard, start, end };
}

/**
 * The way back from {@link reduceScatterPadded}: gathers every rank's block (length ⌈n / size⌉, the part
 * past the real n ignored) into a vector of length n.
 */
export async function allGatherPadded<T extends HostBuffer>(
  comm: Communicator,
  shard: T,
  n: number,
): Promise<T> {
  const { block, padded } = paddedShard(n, comm.size, comm.rank);
  if (shard.length !== block) {
    throw new CommError(
      comm.rank,
      comm.size,
      "allGather",
      `a shard of a ${n}-element vector over ${comm.size} ranks holds ${block} elements, got ${shard.length}`,
    );
  }
  const full = allocLike(shard, padded);
  await comm.allGather(shard, full);
  return (padded === n ? full : full.subarray(0, n)) as T;
}

/** Copies `from` into `to` (host arrays of one type and length). */
function copyHost(from: HostBuffer, to: HostBuffer) {
  (to as Float64Array).set(from as unknown as Float64Array);
}

/**
 * The world of one process: every collective is the identity (reduce-scatter and all-gather copy send to
 * recv), with the same argument checks as the real backends, so that code written for N ranks is checked
 * when it runs on one. Device buffers are accepted in place only (a copy between two device buffers needs
 * CUDA; open NCCL with a world of one for that).
 */
export function singleCommunicator(): Communicator {
  const who = { rank: 0, size: 1 };
  let aborted: string | undefined;
  let closed = false;
  const guard = (op: CollectiveName) => {
    if (aborted !== undefined) throw new CommError(0, 1, op, `the communicator was aborted: ${aborted}`);
    if (closed) throw new CommError(0, 1, op, "the communicator is closed");
  };
  const copy = (op: CollectiveName, send: CommBuffer, recv: CommBuffer) => {
    if (isDeviceBuffer(send) || isDeviceBuffer(recv)) {
      const s = send as DeviceBuffer, r = recv as DeviceBuffer;
      if (Deno.UnsafePointer.value(s.pointer) !== Deno.UnsafePointer.value(r.pointer)) {
        throw new CommError(
          0,
          1,
          op,
          "copying between two device buffers needs CUDA: pass one buffer as send and recv, or use NCCL",
        );
      }
      return;
    }
    copyHost(send, recv);
  };
  return {
    rank: 0,
    size: 1,
    localRank: 0,
    backend: "single",
    allReduce(buf, reduce) {
      return Promise.try(() => {
        guard("allReduce");
        checkCollective(who, "allReduce", { buf, reduce });
      });
    },
    reduceScatter(send, recv, reduce) {
      return Promise.try(() => {
        guard("reduceScatter");
        checkCollective(who, "reduceScatter", { send, recv, reduce });
        copy("reduceScatter", send, recv);
      });
    },
    allGather(send, recv) {
      return Promise.try(() => {
        guard("allGather");
        checkCollective(who, "allGather", { send, recv });
        copy("allGather", send, recv);
      });
    },
    broadcast(buf, root) {
      return Promise.try(() => {
        guard("broadcast");
        checkCollective(who, "broadcast", { buf, root });
      });
    },
    barrier() {
      return Promise.try(() => guard("barrier"));
    },
    abort(reason) {
      aborted ??= reason;
    },
    [Symbol.asyncDispose]() {
      closed = true;
      return Promise.resolve();
    },
  };
}

/**
 * The most device memory a collective on host arrays is staged through at once (NCCL, nccl.ts): 256 MiB, big
 * enough that a piece's call runs at full bandwidth (its launch cost lost in it), small beside a model's state.
 */
export const STAGING_CHUNK_BYTES = 256 * 2 ** 20;
