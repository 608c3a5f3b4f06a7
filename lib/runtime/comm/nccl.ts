/**
 * NCCL through Deno's FFI, for training on several CUDA devices: collectives on device memory (a resident
 * ONNX Runtime value's data pointer), issued on a CUDA stream the caller gives (the one ONNX Runtime's CUDA
 * provider runs on, so that a collective follows the run that produced its input).
 *
 * No id exchange: with `NCCL_COMM_ID=host:port` set on every rank, `ncclGetUniqueId` makes the same id
 * everywhere and rank 0 listens on that address (see {@link openNccl}).
 *
 * The communicator is non-blocking (`NCCL_COMM_BLOCKING=0` unless the user set it): initialization and
 * calls return at once and are polled (`ncclCommGetAsyncError`, then `cuStreamQuery` on the stream), so
 * the event loop stays free for the watchdog while NCCL connects or a peer hangs, and `ncclCommAbort` can
 * end a collective that will never complete. A collective resolves when its work on the stream is done:
 * checked after each turn of the event loop for its first 5 ms (a message to itself, ~50 µs a turn here,
 * where a 0 ms timer takes ~2 ms), then every ms.
 *
 * The CUDA device is made current on the main thread with the driver API (libcuda.so.1, part of the
 * driver), because NCCL's initialization takes the calling thread's current device.
 *
 * Host arrays (the data-parallel step's gradient, which comes back to JavaScript from each session run) are
 * staged: copied into a device scratch buffer on the communicator's stream (`cuMemcpyHtoDAsync_v2`), reduced
 * there by NCCL, copied back (`cuMemcpyDtoHAsync_v2`), the stream polled as for any collective. A large array
 * goes in pieces of at most {@link STAGING_CHUNK_BYTES} of the buffer (one NCCL call each, element-wise the
 * same result), so the device holds 256 MiB for staging, not a second copy of a 7B model's 27 GiB gradient.
 * The scratch buffer is allocated at the first host collective, grown (freed and allocated anew) when a larger
 * one comes, reused otherwise, and freed at dispose. The cost is two PCIe copies per collective (for a packed gradient of
 * P float32, 4·P bytes each way, ~25 GB/s on PCIe 4: about 1 ms per 3 M parameters on top of NCCL's own
 * time), plus the host round trip of the session's output itself. Sessions of the C API keep the
 * gradient and the state on the device (lib/train/distributed.ts): their values come as
 * {@link DeviceBuffer}s, passed to NCCL as they are.
 * @module
 */
import { CUDA_LIBRARIES, findLibraries, librarySearchDirs } from "../cuda.ts";
import {
  checkCollective,
  type CollectiveName,
  type CommBuffer,
  type CommDType,
  CommError,
  type Communicator,
  describeBuffer,
  type DeviceBuffer,
  DTYPE_BYTES,
  dtypeOf,
  type HostBuffer,
  isDeviceBuffer,
  type ReduceOp,
  STAGING_CHUNK_BYTES,
} from "./communicator.ts";
import { checkTimeoutMs, DEFAULT_COMM_TIMEOUT_MS } from "./watchdog.ts";

/** The library loaded, and what provides it. */
export const NCCL_LIBRARY = { soname: "libnccl.so.2", what: "NCCL 2" } as const;

/** How to get NCCL, for error messages. */
export const NCCL_HELP =
  "NCCL comes with NVIDIA's CUDA repositories (`apt-get install libnccl2`), the HPC SDK, " +
  "or PyTorch's wheel (`pip install nvidia-nccl-cu13`, which a CUDA 13 PyTorch installs): put the folder holding " +
  "libnccl.so.2 on LD_LIBRARY_PATH, or set NCCL_LIBRARY to the file.";

/** Raised when NCCL or the CUDA driver is missing; the message says why and what to do. */
export class NcclUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NcclUnavailableError";
  }
}

/** ncclDataType_t (nccl.h). */
export const NCCL_DTYPES: Record<CommDType, number> = {
  uint8: 1,
  int32: 2,
  int64: 4,
  float16: 6,
  float32: 7,
  float64: 8,
  bfloat16: 9,
};

/** ncclRedOp_t (nccl.h). */
export const NCCL_OPS: Record<ReduceOp, number> = { sum: 0, max: 2 };

/** ncclResult_t values this module acts on. */
const NCCL_SUCCESS = 0, NCCL_IN_PROGRESS = 7;
/** CUresult values: done, and still running. */
const CUDA_SUCCESS = 0, CUDA_ERROR_NOT_READY = 600;
/** The size of ncclUniqueId. */
const UNIQUE_ID_BYTES = 128;

const NCCL_SYMBOLS = {
  ncclGetVersion: { parameters: ["buffer"], result: "i32" },
  ncclGetUniqueId: { parameters: ["buffer"], result: "i32" },
  ncclCommInitRank: {
    parameters: ["buffer", "i32", { struct: new Array(UNIQUE_ID_BYTES).fill("u8") }, "i32"],
    result: "i32",
  },
  ncclAllReduce: {
    parameters: ["pointer", "pointer", "usize", "i32", "i32", "pointer", "pointer"],
    result: "i32",
  },
  ncclReduceScatter: {
    parameters: ["pointer", "pointer", "usize", "i32", "i32", "pointer", "pointer"],
    result: "i32",
  },
  ncclAllGather: { parameters: ["pointer", "pointer", "usize", "i32", "pointer", "pointer"], result: "i32" },
  ncclBroadcast: {
    parameters: ["pointer", "pointer", "usize", "i32", "i32", "pointer", "pointer"],
    result: "i32",
  },
  ncclCommGetAsyncError: { parameters: ["pointer", "buffer"], result: "i32" },
  ncclCommFinalize: { parameters: ["pointer"], result: "i32", optional: true },
  ncclCommDestroy: { parameters: ["pointer"], result: "i32" },
  ncclCommAbort: { parameters: ["pointer"], result: "i32" },
  ncclGetErrorString: { parameters: ["i32"], result: "pointer" },
  ncclGetLastError: { parameters: ["pointer"], result: "pointer", optional: true },
} as const;

const CUDA_SYMBOLS = {
  cuInit: { parameters: ["u32"], result: "i32" },
  cuDeviceGetCount: { parameters: ["buffer"], result: "i32" },
  cuDeviceGet: { parameters: ["buffer", "i32"], result: "i32" },
  cuDevicePrimaryCtxRetain: { parameters: ["buffer", "i32"], result: "i32" },
  cuCtxSetCurrent: { parameters: ["pointer"], result: "i32" },
  cuStreamQuery: { parameters: ["pointer"], result: "i32" },
  cuMemAlloc_v2: { parameters: ["buffer", "usize"], result: "i32" },
  cuMemFree_v2: { parameters: ["u64"], result: "i32" },
  cuMemcpyHtoDAsync_v2: { parameters: ["u64", "buffer", "usize", "pointer"], result: "i32" },
  cuMemcpyDtoHAsync_v2: { parameters: ["buffer", "u64", "usize", "pointer"], result: "i32" },
  cuGetErrorString: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

type Ptr = Deno.PointerValue;
type Out = BufferSource | null;

/** The NCCL functions used, as Deno's FFI types them (tests pass a fake). */
export type NcclApi = {
  ncclGetVersion(version: Out): number;
  ncclGetUniqueId(id: Out): number;
  ncclCommInitRank(comm: Out, nranks: number, id: BufferSource, rank: number): number;
  ncclAllReduce(s: Ptr, r: Ptr, count: bigint, dt: number, op: number, comm: Ptr, stream: Ptr): number;
  ncclReduceScatter(s: Ptr, r: Ptr, count: bigint, dt: number, op: number, comm: Ptr, stream: Ptr): number;
  ncclAllGather(s: Ptr, r: Ptr, count: bigint, dt: number, comm: Ptr, stream: Ptr): number;
  ncclBroadcast(s: Ptr, r: Ptr, count: bigint, dt: number, root: number, comm: Ptr, stream: Ptr): number;
  ncclCommGetAsyncError(comm: Ptr, state: Out): number;
  ncclCommFinalize?: ((comm: Ptr) => number) | null;
  ncclCommDestroy(comm: Ptr): number;
  ncclCommAbort(comm: Ptr): number;
  ncclGetErrorString(code: number): Ptr;
  ncclGetLastError?: ((comm: Ptr) => Ptr) | null;
};

/** The CUDA driver functions used (tests pass a fake). */
export type CudaDriverApi = {
  cuInit(flags: number): number;
  cuDeviceGetCount(count: Out): number;
  cuDeviceGet(device: Out, ordinal: number): number;
  cuDevicePrimaryCtxRetain(ctx: Out, device: number): number;
  cuCtxSetCurrent(ctx: Ptr): number;
  cuStreamQuery(stream: Ptr): number;
  cuMemAlloc_v2(dptr: Out, bytes: bigint): number;
  cuMemFree_v2(dptr: bigint): number;
  cuMemcpyHtoDAsync_v2(dst: bigint, src: Out, bytes: bigint, stream: Ptr): number;
  cuMemcpyDtoHAsync_v2(dst: Out, src: bigint, bytes: bigint, stream: Ptr): number;
  cuGetErrorString(code: number, text: Out): number;
};

/**
 * Folders that may hold libnccl.so.2: the loader's (LD_LIBRARY_PATH, the ldconfig cache, the usual places)
 * and those of Python's NVIDIA wheels (`site-packages/nvidia/nccl/lib`, under a virtualenv, conda, the
 * user's or the system's Python), where PyTorch's NCCL lives.
 */
export function ncclSearchDirs(env: Record<string, string | undefined> = Deno.env.toObject()): string[] {
  const dirs = librarySearchDirs();
  const roots = [
    env.VIRTUAL_ENV,
    env.CONDA_PREFIX,
    env.HOME && `${env.HOME}/.local`,
    "/usr/local",
    "/usr",
    "/opt/conda",
  ]
    .filter((r): r is string => !!r);
  for (const root of roots) {
    if (root === env.CONDA_PREFIX) dirs.push(`${root}/lib`);
    let entries: Deno.DirEntry[] = [];
    try {
      entries = [...Deno.readDirSync(`${root}/lib`)];
    } catch { /* no such folder */ }
    for (
      const e of entries.filter((e) => /^python3(\.\d+)?$/.test(e.name)).sort((
        a,
        b,
      ) => (a.name < b.name ? 1 : -1))
    ) {
      for (const pk of ["site-packages", "dist-packages"]) {
        dirs.push(`${root}/lib/${e.name}/${pk}/nvidia/nccl/lib`);
      }
    }
  }
  return [...new Set(dirs)];
}

/** Where libnccl.so.2 is: NCCL_LIBRARY if set, else searched; throws {@link NcclUnavailableError} naming it. */
export function findNcclLibrary(
  dirs?: readonly string[],
  env: Record<string, string | undefined> = Deno.env.toObject(),
): string {
  if (env.NCCL_LIBRARY) {
    try {
      if (Deno.statSync(env.NCCL_LIBRARY).isFile) return env.NCCL_LIBRARY;
    } catch { /* reported below */ }
    throw new NcclUnavailableError(`NCCL_LIBRARY=${env.NCCL_LIBRARY} is not a file. ${NCCL_HELP}`);
  }
  const where = dirs ?? ncclSearchDirs(env);
  const hit = findLibraries([NCCL_LIBRARY], where).found.get(NCCL_LIBRARY.soname);
  if (!hit) {
    throw new NcclUnavailableError(
      `${NCCL_LIBRARY.soname} (${NCCL_LIBRARY.what}) was not found in ${where.join(", ")}. ${NCCL_HELP}`,
    );
  }
  return hit;
}

/**
 * The CUDA device of a rank: its local rank where several devices are visible (one process per device, as
 * torchrun and mpirun start them), device 0 where one is (the launcher gave each process its own through
 * CUDA_VISIBLE_DEVICES, as SLURM's --gpus-per-task does).
 */
export function pickCudaDevice(localRank: number, visible: number, cudaVisibleDevices?: string): number {
  if (visible < 1) throw new Error("no CUDA device is visible");
  if (visible === 1) return 0;
  if (localRank < visible) return localRank;
  throw new Error(
    `local rank ${localRank} has no CUDA device of its own: ${visible} are visible` +
      (cudaVisibleDevices !== undefined ? ` (CUDA_VISIBLE_DEVICES=${cudaVisibleDevices})` : "") +
      "; start at most one process per device on each machine",
  );
}

/** Options for {@link openNccl}. */
export type NcclOptions = {
  rank: number;
  size: number;
  /** The rank among this machine's processes (default `rank`). */
  localRank?: number;
  /** `host:port` where rank 0 listens for the others (NCCL_COMM_ID, which wins where already set). */
  commId: string;
  /** The CUDA device ordinal (default {@link pickCudaDevice}). */
  device?: number;
  /** The cudaStream_t collectives are issued on (default null: the legacy default stream). */
  stream?: Deno.PointerValue;
  /**
   * The most device memory a host collective is staged through at once (default {@link STAGING_CHUNK_BYTES});
   * a piece holds at least one element of each rank, so a chunk below that is exceeded by it.
   */
  stagingChunkBytes?: number;
  /** How long NCCL may take to connect, in ms (default 600 000). */
  timeoutMs?: number;
  /** The libnccl.so.2 to load (default: {@link findNcclLibrary}). */
  library?: string;
  /** Fakes of NCCL and the driver, for tests. */
  apis?: { nccl: NcclApi; cuda: CudaDriverApi };
};

/** The NCCL_COMM_ID this module put in the environment (a user's own wins; ours is replaced next time). */
let commIdWeSet: string | undefined;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Calls `step` until it returns true (it throws to stop): at once, then after each turn of the event loop
 * for `spinMs` (a MessageChannel message to itself lets timers and signals run, in ~50 µs where a 0 ms
 * timer takes ~2 ms), then every ms, so a long wait does not keep a core busy.
 */
async function pollUntil(step: () => boolean, spinMs = 5): Promise<void> {
  if (step()) return;
  const { port1, port2 } = new MessageChannel();
  try {
    const t0 = performance.now();
    for (;;) {
      if (performance.now() - t0 < spinMs) {
        await new Promise<void>((r) => {
          port2.onmessage = () => r();
          port1.postMessage(null);
        });
      } else await sleep(1);
      if (step()) return;
    }
  } finally {
    port1.close();
    port2.close();
  }
}

function cString(p: Ptr): string {
  try {
    return p ? Deno.UnsafePointerView.getCString(p) : "";
  } catch {
    return "";
  }
}

function loadApis(o: NcclOptions): { nccl: NcclApi; cuda: CudaDriverApi } {
  const driver = CUDA_LIBRARIES.find((l) => l.soname === "libcuda.so.1")!;
  const found = findLibraries([driver], librarySearchDirs()).found.get(driver.soname);
  if (!found) {
    throw new NcclUnavailableError(
      "libcuda.so.1 (the NVIDIA driver) was not found: NCCL needs an NVIDIA GPU and its driver",
    );
  }
  const path = o.library ?? findNcclLibrary();
  let nccl: NcclApi, cuda: CudaDriverApi;
  try {
    cuda = Deno.dlopen(found, CUDA_SYMBOLS).symbols;
  } catch (e) {
    throw new NcclUnavailableError(`could not load ${found}: ${(e as Error).message}`);
  }
  try {
    nccl = Deno.dlopen(path, NCCL_SYMBOLS).symbols;
  } catch (e) {
    throw new NcclUnavailableError(`could not load ${path} as NCCL: ${(e as Error).message}. ${NCCL_HELP}`);
  }
  return { nccl, cuda };
}

/**
 * Connects this rank to the others over NCCL. Sets NCCL_COMM_ID (unless set) and NCCL_COMM_BLOCKING=0
 * (unless set) in this process's environment, makes `device` current on the main thread, and waits for
 * every rank to connect, at most `timeoutMs`. Errors name the rank.
 */
export async function openNccl(o: NcclOptions): Promise<NcclCommunicator> {
  const { rank, size } = o;
  if (!Number.isSafeInteger(size) || size < 1 || !Number.isSafeInteger(rank) || rank < 0 || rank >= size) {
    throw new RangeError(`openNccl: rank ${rank} of ${size} is not a rank of the world`);
  }
  const fail = (detail: string): never => {
    throw new CommError(rank, size, "open", detail);
  };
  const timeoutMs = checkTimeoutMs(o.timeoutMs ?? DEFAULT_COMM_TIMEOUT_MS);
  if (!/^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):\d{1,5}$/.test(o.commId)) {
    fail(`the NCCL address must be host:port (or [ipv6]:port), got ${JSON.stringify(o.commId)}`);
  }
  const localRank = o.localRank ?? rank;
  let apis: { nccl: NcclApi; cuda: CudaDriverApi };
  try {
    apis = o.apis ?? loadApis(o);
  } catch (e) {
    return fail((e as Error).message);
  }
  const { nccl, cuda } = apis;
  const cu = (what: string, rc: number) => {
    if (rc !== CUDA_SUCCESS) fail(`${what} failed: ${cuErrorText(cuda, rc)}`);
  };
  cu("cuInit", cuda.cuInit(0));
  const count = new Int32Array(1);
  cu("cuDeviceGetCount", cuda.cuDeviceGetCount(count));
  let ordinal = o.device;
  if (ordinal === undefined) {
    try {
      ordinal = pickCudaDevice(localRank, count[0], Deno.env.get("CUDA_VISIBLE_DEVICES"));
    } catch (e) {
      return fail((e as Error).message);
    }
  } else if (!Number.isInteger(ordinal) || ordinal < 0 || ordinal >= count[0]) {
    fail(`CUDA device ${ordinal} does not exist: ${count[0]} are visible`);
  }
  const dev = new Int32Array(1), ctx = new BigUint64Array(1);
  cu(`cuDeviceGet(${ordinal})`, cuda.cuDeviceGet(dev, ordinal!));
  cu("cuDevicePrimaryCtxRetain", cuda.cuDevicePrimaryCtxRetain(ctx, dev[0]));
  cu("cuCtxSetCurrent", cuda.cuCtxSetCurrent(Deno.UnsafePointer.create(ctx[0])));

  const userCommId = Deno.env.get("NCCL_COMM_ID");
  if (userCommId === undefined || userCommId === commIdWeSet) {
    Deno.env.set("NCCL_COMM_ID", commIdWeSet = o.commId);
  }
  if (Deno.env.get("NCCL_COMM_BLOCKING") === undefined) Deno.env.set("NCCL_COMM_BLOCKING", "0");
  const errorText = (code: number) => `${cString(nccl.ncclGetErrorString(code)) || "NCCL error"} (${code})`;
  const id = new Uint8Array(UNIQUE_ID_BYTES);
  let rc = nccl.ncclGetUniqueId(id);
  if (rc !== NCCL_SUCCESS) {
    fail(`ncclGetUniqueId failed: ${errorText(rc)} (NCCL_COMM_ID=${Deno.env.get("NCCL_COMM_ID")})`);
  }
  const out = new BigUint64Array(1);
  rc = nccl.ncclCommInitRank(out, size, id, rank);
  const comm = Deno.UnsafePointer.create(out[0]);
  if (rc !== NCCL_SUCCESS && rc !== NCCL_IN_PROGRESS) {
    fail(`ncclCommInitRank failed: ${errorText(rc)}`);
  }
  const state = new Int32Array(1);
  const deadline = Date.now() + timeoutMs;
  for (let i = 0;; i++) {
    rc = nccl.ncclCommGetAsyncError(comm, state);
    if (rc !== NCCL_SUCCESS) fail(`ncclCommGetAsyncError failed: ${errorText(rc)}`);
    if (state[0] === NCCL_SUCCESS) break;
    if (state[0] !== NCCL_IN_PROGRESS) {
      nccl.ncclCommAbort(comm);
      fail(`NCCL could not connect the ranks: ${errorText(state[0])}`);
    }
    if (Date.now() > deadline) {
      nccl.ncclCommAbort(comm);
      fail(
        `NCCL did not connect all ${size} ranks within ${
          timeoutMs / 1000
        } s: is every rank started, and is ` +
          `${Deno.env.get("NCCL_COMM_ID")} (rank 0's host) reachable from this one?`,
      );
    }
    await sleep(i < 10 ? 0 : 10);
  }
  // a float on the device for barrier(): NCCL has none, an all-reduce of one element is one
  const scratch = new BigUint64Array(1);
  rc = cuda.cuMemAlloc_v2(scratch, 4n);
  if (rc !== CUDA_SUCCESS) {
    nccl.ncclCommAbort(comm);
    cu("cuMemAlloc", rc);
  }
  const chunkBytes = o.stagingChunkBytes ?? STAGING_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 8) {
    nccl.ncclCommAbort(comm);
    fail(`stagingChunkBytes must be an integer ≥ 8, got ${chunkBytes}`);
  }
  return new NcclCommunicator(
    { nccl, cuda, comm, scratch: scratch[0], timeoutMs, chunkBytes },
    rank,
    size,
    localRank,
    ordinal!,
    o.stream ?? null,
  );
}

/** A CUresult as the driver names it: `CUDA_ERROR_OUT_OF_MEMORY (2)`. */
function cuErrorText(cuda: CudaDriverApi, rc: number): string {
  const text = new BigUint64Array(1);
  const name = cuda.cuGetErrorString(rc, text) === 0 ? cString(Deno.UnsafePointer.create(text[0])) : "";
  return `${name || "CUDA error"} (${rc})`;
}

/**
 * How one NCCL call on host arrays is staged through the scratch buffer: its size in bytes, what is copied in
 * before the call (at byte offsets of the scratch buffer) and what is copied back after it.
 */
type Staging = {
  bytes: number;
  copyIn: { at: number; from: HostBuffer }[];
  copyOut: { at: number; to: HostBuffer }[];
};

/** `[start, end)` element ranges of at most `per` elements covering `n` (none when `n` is 0). */
function pieces(n: number, per: number): [number, number][] {
  const out: [number, number][] = [];
  for (let e0 = 0; e0 < n; e0 += per) out.push([e0, Math.min(n, e0 + per)]);
  return out;
}

/** An NCCL communicator as a {@link Communicator}; made by {@link openNccl}. */
export class NcclCommunicator implements Communicator {
  readonly backend = "nccl" as const;
  /**
   * NCCL calls made and the bytes handed to them (the payload, not what travels on the links); `staged`:
   * the bytes host collectives copied between host and device (both ways).
   */
  readonly stats = { calls: 0, bytes: 0, staged: 0 };
  #queue: Promise<void> = Promise.resolve();
  #state: "open" | "aborted" | "closed" = "open";
  #reason = "";
  readonly nccl: NcclApi;
  readonly cuda: CudaDriverApi;
  readonly comm: Deno.PointerValue;
  /** A 4-byte device buffer that barrier() all-reduces. */
  readonly #scratch: bigint;
  /** The device buffer host arrays are staged through (none until the first host collective). */
  #staging: { addr: bigint; bytes: number } | undefined;
  /** How long closing may wait for NCCL. */
  readonly #timeoutMs: number;
  /** The most bytes of the staging buffer one NCCL call on host arrays uses (see {@link STAGING_CHUNK_BYTES}). */
  readonly stagingChunkBytes: number;

  /** @internal Made by {@link openNccl}. */
  constructor(
    h: {
      nccl: NcclApi;
      cuda: CudaDriverApi;
      comm: Deno.PointerValue;
      scratch: bigint;
      timeoutMs: number;
      chunkBytes?: number;
    },
    readonly rank: number,
    readonly size: number,
    readonly localRank: number,
    /** The CUDA device ordinal. */
    readonly device: number,
    /** The stream collectives are issued on. */
    readonly stream: Deno.PointerValue,
  ) {
    this.nccl = h.nccl;
    this.cuda = h.cuda;
    this.comm = h.comm;
    this.#scratch = h.scratch;
    this.#timeoutMs = h.timeoutMs;
    this.stagingChunkBytes = h.chunkBytes ?? STAGING_CHUNK_BYTES;
  }

  get isOpen(): boolean {
    return this.#state === "open";
  }

  /** Bytes of the device buffer host arrays are staged through (0 before the first host collective). */
  get stagingBytes(): number {
    return this.#staging?.bytes ?? 0;
  }

  #fail(op: CollectiveName | "close", detail: string): never {
    throw new CommError(this.rank, this.size, op, detail);
  }

  #guard(op: CollectiveName) {
    if (this.#state === "aborted") this.#fail(op, `the communicator was aborted: ${this.#reason}`);
    if (this.#state === "closed") this.#fail(op, "the communicator is closed");
  }

  #errorText(code: number): string {
    let text = `${cString(this.nccl.ncclGetErrorString(code)) || "NCCL error"} (${code})`;
    const last = this.nccl.ncclGetLastError ? cString(this.nccl.ncclGetLastError(this.comm)) : "";
    if (last) text += `: ${last}`;
    return text;
  }

  /**
   * The staging buffer's device address, at least `bytes` long: the one there, or (freed first) a new one.
   * Called only between collectives, when the stream has no work of ours left.
   */
  #reserve(op: CollectiveName, bytes: number): bigint {
    if (this.#staging && this.#staging.bytes >= bytes) return this.#staging.addr;
    if (this.#staging) {
      const old = this.#staging;
      this.#staging = undefined;
      const rc = this.cuda.cuMemFree_v2(old.addr);
      if (rc !== CUDA_SUCCESS) {
        this.#fail(op, `freeing the ${old.bytes}-byte staging buffer failed: ${cuErrorText(this.cuda, rc)}`);
      }
    }
    const out = new BigUint64Array(1);
    const rc = this.cuda.cuMemAlloc_v2(out, BigInt(bytes));
    if (rc !== CUDA_SUCCESS) {
      this.#fail(
        op,
        `allocating ${bytes} bytes on CUDA device ${this.device} to stage host arrays failed: ${
          cuErrorText(this.cuda, rc)
        }`,
      );
    }
    this.#staging = { addr: out[0], bytes };
    return out[0];
  }

  /**
   * A copy between a host array and the staging buffer on the stream; a failure aborts the communicator (a
   * rank that cannot take part must not leave its peers waiting) and names the rank, the collective and
   * the array.
   */
  #copy(op: CollectiveName, way: "in" | "out", host: HostBuffer, at: bigint) {
    // Deno's FFI passes the view's own bytes (its offset included); a SharedArrayBuffer's view is fine too
    const view = host as unknown as BufferSource, bytes = BigInt(host.byteLength);
    const rc = way === "in"
      ? this.cuda.cuMemcpyHtoDAsync_v2(at, view, bytes, this.stream)
      : this.cuda.cuMemcpyDtoHAsync_v2(view, at, bytes, this.stream);
    if (rc !== CUDA_SUCCESS) {
      const what = `copying ${describeBuffer(host)} (${host.byteLength} bytes) ${
        way === "in" ? "to CUDA device" : "back from CUDA device"
      } ${this.device} failed: ${cuErrorText(this.cuda, rc)}`;
      this.abort(what);
      this.#fail(op, what);
    }
    this.stats.staged += host.byteLength;
  }

  /**
   * Issues `call` after the collectives before it, then waits until its work on the stream is done. With
   * `staging` (host arrays): copies in first, issues `call` on the staging buffer's address, waits, then
   * copies back and waits for that copy (issued only once the collective has run, so that a copy into
   * pageable memory, which the driver makes synchronously, never blocks the event loop on a peer).
   */
  #enqueue(
    op: CollectiveName,
    bytes: number,
    call: (base: bigint) => number,
    staging?: Staging,
  ): Promise<void> {
    const run = async () => {
      this.#guard(op);
      this.stats.calls++;
      this.stats.bytes += bytes;
      let base = 0n;
      if (staging) {
        base = this.#reserve(op, staging.bytes);
        for (const c of staging.copyIn) this.#copy(op, "in", c.from, base + BigInt(c.at));
      }
      const rc = call(base);
      if (rc !== NCCL_SUCCESS && rc !== NCCL_IN_PROGRESS) {
        this.#fail(op, `NCCL failed: ${this.#errorText(rc)}`);
      }
      await this.#complete(op);
      if (staging) {
        for (const c of staging.copyOut) this.#copy(op, "out", c.to, base + BigInt(c.at));
        await this.#complete(op);
      }
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => {});
    return p;
  }

  /** Polls until NCCL has enqueued the call and the stream has run it, or an error or abort. */
  #complete(op: CollectiveName): Promise<void> {
    const state = new Int32Array(1);
    return pollUntil(() => {
      this.#guard(op);
      const rc = this.nccl.ncclCommGetAsyncError(this.comm, state);
      if (rc !== NCCL_SUCCESS) this.#fail(op, `ncclCommGetAsyncError failed: ${this.#errorText(rc)}`);
      if (state[0] !== NCCL_SUCCESS && state[0] !== NCCL_IN_PROGRESS) {
        this.#fail(op, `NCCL reports ${this.#errorText(state[0])} (a peer may have died)`);
      }
      if (state[0] !== NCCL_SUCCESS) return false;
      const q = this.cuda.cuStreamQuery(this.stream);
      if (q !== CUDA_SUCCESS && q !== CUDA_ERROR_NOT_READY) {
        this.#fail(op, `the CUDA stream failed (CUresult ${q})`);
      }
      return q === CUDA_SUCCESS;
    });
  }

  /**
   * Device buffers are passed to NCCL as they are (zero copy); host arrays are staged through the scratch
   * buffer (see the module's note).
   */
  allReduce(buf: CommBuffer, op: ReduceOp = "sum"): Promise<void> {
    return Promise.try(() => {
      checkCollective(this, "allReduce", { buf, reduce: op });
      if (buf.length === 0) return;
      const dt = NCCL_DTYPES[dtypeOf(buf)], n = BigInt(buf.length);
      const issue = (p: Deno.PointerValue, count: bigint) =>
        this.nccl.ncclAllReduce(p, p, count, dt, NCCL_OPS[op], this.comm, this.stream);
      const bytes = buf.length * DTYPE_BYTES[dtypeOf(buf)];
      if (isDeviceBuffer(buf)) return this.#enqueue("allReduce", bytes, () => issue(buf.pointer, n));
      return this.#staged(buf.length, DTYPE_BYTES[dtypeOf(buf)], 1, ([e0, e1]) => {
        const piece = buf.subarray(e0, e1);
        return this.#enqueue("allReduce", piece.byteLength, (base) => issue(ptr(base), BigInt(e1 - e0)), {
          bytes: piece.byteLength,
          copyIn: [{ at: 0, from: piece }],
          copyOut: [{ at: 0, to: piece }],
        });
      });
    });
  }

  /**
   * A collective on host arrays of `n` elements of `eb` bytes (times `factor`, the ranks' pieces a call
   * stages side by side) in calls staging at most {@link stagingChunkBytes} each, issued in order.
   */
  #staged(
    n: number,
    eb: number,
    factor: number,
    call: (range: [number, number], eb: number) => Promise<void>,
  ): Promise<void> {
    const per = Math.max(1, Math.floor(this.stagingChunkBytes / (eb * factor)));
    return Promise.all(pieces(n, per).map((r) => call(r, eb))).then(() => {});
  }

  /**
   * Host arrays: elements [e0, e1) of every rank's block of `send` staged side by side (`send` whole when
   * one call covers it); NCCL's in-place form writes this rank's piece where it lies.
   */
  reduceScatter(send: CommBuffer, recv: CommBuffer, op: ReduceOp = "sum"): Promise<void> {
    return Promise.try(() => {
      checkCollective(this, "reduceScatter", { send, recv, reduce: op });
      if (recv.length === 0) return;
      const dt = NCCL_DTYPES[dtypeOf(send)],
        bytes = send.length * DTYPE_BYTES[dtypeOf(send)];
      const issue = (s: Deno.PointerValue, r: Deno.PointerValue, count: number) =>
        this.nccl.ncclReduceScatter(s, r, BigInt(count), dt, NCCL_OPS[op], this.comm, this.stream);
      if (isDeviceBuffer(send)) {
        return this.#enqueue(
          "reduceScatter",
          bytes,
          () => issue(send.pointer, (recv as DeviceBuffer).pointer, recv.length),
        );
      }
      const hs = send as HostBuffer, hr = recv as HostBuffer, b = hr.length, N = this.size;
      return this.#staged(b, DTYPE_BYTES[dtypeOf(send)], N, ([e0, e1], eb) => {
        const len = e1 - e0, piece = len * eb, mine = this.rank * piece;
        const copyIn = len === b ? [{ at: 0, from: hs }] : Array.from(
          { length: N },
          (_, q) => ({ at: q * piece, from: hs.subarray(q * b + e0, q * b + e1) }),
        );
        return this.#enqueue(
          "reduceScatter",
          N * piece,
          (base) => issue(ptr(base), ptr(base + BigInt(mine)), len),
          {
            bytes: N * piece,
            copyIn,
            copyOut: [{ at: mine, to: hr.subarray(e0, e1) }],
          },
        );
      });
    });
  }

  /**
   * Host arrays: elements [e0, e1) of `send` staged at this rank's piece (NCCL's in-place form), every rank's
   * piece copied back to its block of `recv` (`recv` whole when one call covers it).
   */
  allGather(send: CommBuffer, recv: CommBuffer): Promise<void> {
    return Promise.try(() => {
      checkCollective(this, "allGather", { send, recv });
      if (send.length === 0) return;
      const dt = NCCL_DTYPES[dtypeOf(send)],
        bytes = send.length * DTYPE_BYTES[dtypeOf(send)];
      const issue = (s: Deno.PointerValue, r: Deno.PointerValue, count: number) =>
        this.nccl.ncclAllGather(s, r, BigInt(count), dt, this.comm, this.stream);
      if (isDeviceBuffer(send)) {
        return this.#enqueue(
          "allGather",
          bytes,
          () => issue(send.pointer, (recv as DeviceBuffer).pointer, send.length),
        );
      }
      const hs = send as HostBuffer, hr = recv as HostBuffer, b = hs.length, N = this.size;
      return this.#staged(b, DTYPE_BYTES[dtypeOf(send)], N, ([e0, e1], eb) => {
        const len = e1 - e0, piece = len * eb, mine = this.rank * piece;
        const copyOut = len === b
          ? [{ at: 0, to: hr }]
          : Array.from({ length: N }, (_, q) => ({ at: q * piece, to: hr.subarray(q * b + e0, q * b + e1) }));
        return this.#enqueue("allGather", piece, (base) => issue(ptr(base + BigInt(mine)), ptr(base), len), {
          bytes: N * piece,
          copyIn: [{ at: mine, from: hs.subarray(e0, e1) }],
          copyOut,
        });
      });
    });
  }

  /** Host arrays: copied in on the root only (the others' values are overwritten), copied back everywhere. */
  broadcast(buf: CommBuffer, root: number): Promise<void> {
    return Promise.try(() => {
      checkCollective(this, "broadcast", { buf, root });
      if (buf.length === 0) return;
      const dt = NCCL_DTYPES[dtypeOf(buf)],
        n = BigInt(buf.length),
        bytes = buf.length * DTYPE_BYTES[dtypeOf(buf)];
      const issue = (p: Deno.PointerValue, count: bigint) =>
        this.nccl.ncclBroadcast(p, p, count, dt, root, this.comm, this.stream);
      if (isDeviceBuffer(buf)) return this.#enqueue("broadcast", bytes, () => issue(buf.pointer, n));
      return this.#staged(buf.length, DTYPE_BYTES[dtypeOf(buf)], 1, ([e0, e1]) => {
        const piece = buf.subarray(e0, e1);
        return this.#enqueue("broadcast", piece.byteLength, (base) => issue(ptr(base), BigInt(e1 - e0)), {
          bytes: piece.byteLength,
          copyIn: this.rank === root ? [{ at: 0, from: piece }] : [],
          copyOut: [{ at: 0, to: piece }],
        });
      });
    });
  }

  /** NCCL has no barrier: an all-reduce of one float on the device, waited for, is one. */
  barrier(): Promise<void> {
    const p = Deno.UnsafePointer.create(this.#scratch);
    return this.#enqueue(
      "barrier",
      4,
      () => this.nccl.ncclAllReduce(p, p, 1n, NCCL_DTYPES.float32, NCCL_OPS.sum, this.comm, this.stream),
    );
  }

  /** ncclCommAbort: pending collectives here fail, and the peers' fail or time out (their watchdogs). */
  abort(reason: string): void {
    if (this.#state !== "open") return;
    this.#state = "aborted";
    this.#reason = reason;
    this.nccl.ncclCommAbort(this.comm);
  }

  /**
   * ncclCommFinalize (where NCCL has it, polled to the end, at most the timeout: then ncclCommAbort) and
   * ncclCommDestroy; frees the barrier's scratch float and the staging buffer.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#queue;
    if (this.#state === "closed") return;
    const aborted = this.#state === "aborted";
    this.#state = "closed";
    this.cuda.cuMemFree_v2(this.#scratch);
    if (this.#staging) this.cuda.cuMemFree_v2(this.#staging.addr);
    this.#staging = undefined;
    if (aborted) return; // ncclCommAbort freed the communicator
    if (this.nccl.ncclCommFinalize) {
      const rc = this.nccl.ncclCommFinalize(this.comm);
      if (rc !== NCCL_SUCCESS && rc !== NCCL_IN_PROGRESS) {
        this.nccl.ncclCommAbort(this.comm);
        this.#fail("close", `ncclCommFinalize failed: ${this.#errorText(rc)}`);
      }
      const state = new Int32Array(1);
      const deadline = Date.now() + this.#timeoutMs;
      await pollUntil(() => {
        this.nccl.ncclCommGetAsyncError(this.comm, state);
        if (state[0] !== NCCL_IN_PROGRESS) return true;
        if (Date.now() > deadline) {
          this.nccl.ncclCommAbort(this.comm);
          this.#fail("close", `ncclCommFinalize did not complete within ${this.#timeoutMs / 1000} s`);
        }
        return false;
      });
    }
    const rc = this.nccl.ncclCommDestroy(this.comm);
    if (rc !== NCCL_SUCCESS) this.#fail("close", `ncclCommDestroy failed: ${this.#errorText(rc)}`);
  }
}

const ptr = (addr: bigint) => Deno.UnsafePointer.create(addr);
