/**
 * Open MPI through Deno's FFI, for training on several CPU processes started by `mpirun`.
 *
 * Open MPI's handles are addresses of its global objects (`MPI_COMM_WORLD` is `&ompi_mpi_comm_world`,
 * `MPI_FLOAT` is `&ompi_mpi_float`, `MPI_SUM` is `&ompi_mpi_op_sum`): Deno's `pointer` statics give exactly
 * those addresses. `MPI_IN_PLACE` is `(void*)1`. Counts are C ints, so a collective past 2^31 − 1 elements
 * is made of several calls (see {@link countChunks}).
 *
 * The collectives block until every rank has joined, so they are `nonblocking` FFI symbols: they run on
 * one of Deno's worker threads while the event loop goes on (the watchdog's timer, signals). That needs
 * MPI_THREAD_SERIALIZED at least (MPI_THREAD_MULTIPLE is asked for, so that MPI_Abort from the main thread
 * may interrupt a collective in flight); calls of one communicator are queued so that one runs at a time.
 * MPI_Init_thread and MPI_Finalize run on the main thread, as MPI wants.
 *
 * After MPI_Init a process must not start subprocesses (Open MPI's fork handling breaks its shared-memory
 * transport): find everything that needs one (library search included) before {@link openMpi}.
 * @module
 */
import { findLibraries, librarySearchDirs } from "../cuda.ts";
import {
  allocLike,
  checkCollective,
  type CollectiveName,
  type CommBuffer,
  type CommDType,
  CommError,
  type Communicator,
  describeBuffer,
  dtypeOf,
  type HostBuffer,
  isDeviceBuffer,
  type ReduceOp,
} from "./communicator.ts";
import { WATCHDOG_EXIT_CODE } from "./watchdog.ts";

/** The library loaded, and what provides it. */
export const MPI_LIBRARY = { soname: "libmpi.so.40", what: "Open MPI 4 or 5" } as const;

/** How to install Open MPI, for error messages. */
export const MPI_HELP =
  "Install Open MPI: Debian/Ubuntu `apt-get install openmpi-bin` (brings libopenmpi3, " +
  "libopenmpi40 on newer releases), Fedora/RHEL `dnf install openmpi` (then `module load mpi`); or put the lib " +
  "folder of your Open MPI on LD_LIBRARY_PATH.";

/**
 * What Open MPI needs to start as root (a container): the consent it asks for, and no single-copy (CMA)
 * mechanism for its shared-memory transport, which containers usually do not permit.
 */
export const MPI_AS_ROOT_ENV = {
  OMPI_ALLOW_RUN_AS_ROOT: "1",
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1",
  OMPI_MCA_btl_vader_single_copy_mechanism: "none",
} as const;

/** mpirun's path on PATH, or undefined. */
export function findMpirun(path = Deno.env.get("PATH") ?? ""): string | undefined {
  for (const dir of path.split(":").filter(Boolean)) {
    try {
      if (Deno.statSync(`${dir}/mpirun`).isFile) return `${dir}/mpirun`;
    } catch { /* not in this folder */ }
  }
}

/** The most elements one MPI call carries (its counts are C ints). */
export const MPI_MAX_COUNT = 2 ** 31 - 1;

/** Raised when Open MPI is missing or cannot start; the message says why and what to do. */
export class MpiUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MpiUnavailableError";
  }
}

const MPI_SYMBOLS = {
  MPI_Initialized: { parameters: ["buffer"], result: "i32" },
  MPI_Finalized: { parameters: ["buffer"], result: "i32" },
  MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  MPI_Comm_rank: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_set_errhandler: { parameters: ["pointer", "pointer"], result: "i32" },
  MPI_Error_string: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  MPI_Allreduce: {
    parameters: ["pointer", "pointer", "i32", "pointer", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Reduce_scatter_block: {
    parameters: ["pointer", "pointer", "i32", "pointer", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Allgather: {
    parameters: ["pointer", "i32", "pointer", "pointer", "i32", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Bcast: {
    parameters: ["pointer", "i32", "pointer", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  MPI_Barrier: { parameters: ["pointer"], result: "i32", nonblocking: true },
  MPI_Abort: { parameters: ["pointer", "i32"], result: "i32" },
  MPI_Finalize: { parameters: [], result: "i32" },
  ompi_mpi_comm_world: { type: "pointer" },
  ompi_mpi_errors_return: { type: "pointer" },
  ompi_mpi_float: { type: "pointer" },
  ompi_mpi_double: { type: "pointer" },
  ompi_mpi_int: { type: "pointer" },
  ompi_mpi_int64_t: { type: "pointer" },
  ompi_mpi_uint8_t: { type: "pointer" },
  ompi_mpi_op_sum: { type: "pointer" },
  ompi_mpi_op_max: { type: "pointer" },
} as const;

type MpiSymbols = Deno.DynamicLibrary<typeof MPI_SYMBOLS>["symbols"];

/** Open MPI's thread levels (mpi.h). */
const MPI_THREAD_SERIALIZED = 2, MPI_THREAD_MULTIPLE = 3;
const THREAD_LEVELS = [
  "MPI_THREAD_SINGLE",
  "MPI_THREAD_FUNNELED",
  "MPI_THREAD_SERIALIZED",
  "MPI_THREAD_MULTIPLE",
];

/**
 * The pieces [offset, count) a collective of `total` elements is cut into when one call may carry at most
 * `max` elements (MPI's int counts). Empty for total 0.
 */
export function countChunks(total: number, max: number): [number, number][] {
  if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`countChunks: max must be ≥ 1, got ${max}`);
  const out: [number, number][] = [];
  for (let o = 0; o < total; o += max) out.push([o, Math.min(max, total - o)]);
  return out;
}

/** Where libmpi.so.40 is, searched as the loader would; throws {@link MpiUnavailableError} naming it. */
export function findMpiLibrary(dirs: readonly string[] = librarySearchDirs()): string {
  const { found } = findLibraries([MPI_LIBRARY], dirs);
  const hit = found.get(MPI_LIBRARY.soname);
  if (!hit) {
    throw new MpiUnavailableError(
      `${MPI_LIBRARY.soname} (${MPI_LIBRARY.what}) was not found in ${dirs.join(", ")}. ${MPI_HELP}`,
    );
  }
  return hit;
}

/** Whether this process was started by Open MPI's `mpirun`/`mpiexec` (which sets OMPI_COMM_WORLD_*). */
export function startedByMpirun(env: Record<string, string | undefined> = Deno.env.toObject()): boolean {
  return env.OMPI_COMM_WORLD_SIZE !== undefined && env.OMPI_COMM_WORLD_RANK !== undefined;
}

/** Options for {@link openMpi}. */
export type MpiOptions = {
  /** The libmpi.so.40 to load (default: searched, see {@link findMpiLibrary}). */
  library?: string;
  /** Folders to search for it. */
  searchDirs?: string[];
  /** The most elements one MPI call carries (default 2^31 − 1); tests set a small one to test chunking. */
  maxCount?: number;
  /** The rank among this machine's processes (default OMPI_COMM_WORLD_LOCAL_RANK). */
  localRank?: number;
  /** The world the launcher announced; opening fails when MPI sees another. */
  expect?: { rank: number; size: number };
};

/** The one MPI world of this process: MPI may be initialized once per process, and never again. */
let theWorld: MpiCommunicator | undefined;

/**
 * Initializes Open MPI (MPI_Init_thread on the main thread) and returns MPI_COMM_WORLD as a
 * {@link Communicator}. Only under `mpirun` (see {@link startedByMpirun}): a process started otherwise
 * would make a world of its own. Once per process; closing it (`await using`, or `[Symbol.asyncDispose]`)
 * calls MPI_Finalize. Errors name the rank where it is known.
 */
export function openMpi(o: MpiOptions = {}): Promise<MpiCommunicator> {
  return Promise.try(() => {
    const env = Deno.env.toObject();
    const where = env.OMPI_COMM_WORLD_RANK !== undefined
      ? `rank ${env.OMPI_COMM_WORLD_RANK}/${env.OMPI_COMM_WORLD_SIZE ?? "?"}: `
      : "";
    if (theWorld) {
      throw new MpiUnavailableError(
        theWorld.isOpen
          ? `${where}MPI is already open in this process (it can be initialized once): use that communicator`
          : `${where}MPI was finalized in this process; it cannot start again`,
      );
    }
    if (!startedByMpirun(env)) {
      throw new MpiUnavailableError(
        `${where}Open MPI needs a process started by mpirun (OMPI_COMM_WORLD_RANK/SIZE are not set): ` +
          "launch with `mpirun -np N …`",
      );
    }
    const maxCount = o.maxCount ?? MPI_MAX_COUNT;
    if (!Number.isSafeInteger(maxCount) || maxCount < 1 || maxCount > MPI_MAX_COUNT) {
      throw new RangeError(`${where}maxCount must be in [1, ${MPI_MAX_COUNT}], got ${maxCount}`);
    }
    let path: string;
    try {
      path = o.library ?? findMpiLibrary(o.searchDirs);
    } catch (e) {
      throw new MpiUnavailableError(`${where}${(e as Error).message}`);
    }
    let lib: Deno.DynamicLibrary<typeof MPI_SYMBOLS>;
    try {
      lib = Deno.dlopen(path, MPI_SYMBOLS);
    } catch (e) {
      throw new MpiUnavailableError(
        `${where}could not load ${path} as Open MPI: ${(e as Error).message}. ${MPI_HELP}`,
      );
    }
    const api = lib.symbols;
    const flag = new Int32Array(1);
    api.MPI_Finalized(flag);
    if (flag[0]) {
      throw new MpiUnavailableError(`${where}MPI was finalized in this process; it cannot start again`);
    }
    api.MPI_Initialized(flag);
    if (flag[0]) throw new MpiUnavailableError(`${where}MPI was initialized in this process by someone else`);
    // Ranks wait in MPI on a worker thread while their main thread needs a core to issue the next call; with
    // every core busy (training on the CPU), Open MPI's busy polling then costs whole scheduler time slices
    // (measured here: p90 of a 1 MiB all-reduce 8–18 ms instead of 0.5). Yielding when idle avoids that.
    if (Deno.env.get("OMPI_MCA_mpi_yield_when_idle") === undefined) {
      Deno.env.set("OMPI_MCA_mpi_yield_when_idle", "1");
    }
    const provided = new Int32Array(1);
    const rc = api.MPI_Init_thread(null, null, MPI_THREAD_MULTIPLE, provided);
    if (rc !== 0) throw new MpiUnavailableError(`${where}MPI_Init_thread failed (error ${rc})`);
    const world = api.ompi_mpi_comm_world;
    api.MPI_Comm_set_errhandler(world, api.ompi_mpi_errors_return);
    const r = new Int32Array(1), s = new Int32Array(1);
    api.MPI_Comm_rank(world, r);
    api.MPI_Comm_size(world, s);
    const rank = r[0], size = s[0];
    const fail = (detail: string): never => {
      api.MPI_Finalize();
      throw new CommError(rank, size, "open", detail);
    };
    if (provided[0] < MPI_THREAD_SERIALIZED) {
      fail(
        `Open MPI gives ${
          THREAD_LEVELS[provided[0]] ?? provided[0]
        }; Deno runs blocking calls on worker threads, ` +
          "which needs MPI_THREAD_SERIALIZED or more (an Open MPI built with thread support)",
      );
    }
    if (o.expect && (o.expect.rank !== rank || o.expect.size !== size)) {
      fail(
        `the launcher announced rank ${o.expect.rank} of ${o.expect.size}, MPI says rank ${rank} of ${size}`,
      );
    }
    const localRank = o.localRank ?? Number(env.OMPI_COMM_WORLD_LOCAL_RANK ?? 0);
    theWorld = new MpiCommunicator(api, rank, size, localRank, maxCount, provided[0]);
    return theWorld;
  });
}

/** MPI_COMM_WORLD as a {@link Communicator}; made by {@link openMpi}. */
export class MpiCommunicator implements Communicator {
  readonly backend = "mpi" as const;
  /** MPI calls made and the bytes handed to them (the payload, not what travels on the wire). */
  readonly stats = { calls: 0, bytes: 0 };
  #queue: Promise<void> = Promise.resolve();
  #state: "open" | "aborted" | "closed" = "open";
  #reason = "";
  readonly #api: MpiSymbols;
  readonly #world: Deno.PointerObject;
  static readonly #IN_PLACE = Deno.UnsafePointer.create(1n);

  /** @internal Made by {@link openMpi}. */
  constructor(
    api: MpiSymbols,
    readonly rank: number,
    readonly size: number,
    readonly localRank: number,
    readonly maxCount: number,
    /** The thread level MPI gave (3 = MPI_THREAD_MULTIPLE). */
    readonly threadLevel: number,
  ) {
    this.#api = api;
    this.#world = api.ompi_mpi_comm_world!;
  }

  #datatype(t: CommDType): Deno.PointerValue {
    const a = this.#api;
    switch (t) {
      case "float32":
        return a.ompi_mpi_float;
      case "float64":
        return a.ompi_mpi_double;
      case "int32":
        return a.ompi_mpi_int;
      case "int64":
        return a.ompi_mpi_int64_t;
      case "uint8":
        return a.ompi_mpi_uint8_t;
      default:
        throw new Error(`no MPI datatype for ${t}`);
    }
  }

  #op(op: ReduceOp): Deno.PointerValue {
    return op === "max" ? this.#api.ompi_mpi_op_max : this.#api.ompi_mpi_op_sum;
  }

  /** Host arrays only: this Open MPI is not asked to read CUDA memory. */
  #host(op: CollectiveName, ...bufs: CommBuffer[]): HostBuffer[] {
    for (const b of bufs) {
      if (isDeviceBuffer(b)) {
        throw new CommError(
          this.rank,
          this.size,
          op,
          `Open MPI works on host arrays here, got ${describeBuffer(b)}: ` +
            "use NCCL (--device cuda) for device memory",
        );
      }
    }
    return bufs as HostBuffer[];
  }

  /** Runs `body` after the collectives before it (one MPI call at a time), unless aborted or closed. */
  #enqueue(op: CollectiveName, body: () => Promise<void>): Promise<void> {
    const run = () => {
      this.#guard(op);
      return body();
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => {});
    return p;
  }

  /** Whether collectives may still be made (not aborted, not closed). */
  get isOpen(): boolean {
    return this.#state === "open";
  }

  #guard(op: CollectiveName) {
    if (this.#state === "aborted") {
      throw new CommError(this.rank, this.size, op, `the communicator was aborted: ${this.#reason}`);
    }
    if (this.#state === "closed") throw new CommError(this.rank, this.size, op, "the communicator is closed");
  }

  /** Checks an MPI return code, naming the call and MPI's own words for the error. */
  #rc(op: CollectiveName, fn: string, rc: number) {
    if (rc === 0) return;
    let text = `error ${rc}`;
    try {
      const s = new Uint8Array(256), len = new Int32Array(1);
      if (this.#api.MPI_Error_string(rc, s, len) === 0) {
        text = `${new TextDecoder().decode(s.subarray(0, len[0]))} (error ${rc})`;
      }
    } catch { /* keep the number */ }
    throw new CommError(this.rank, this.size, op, `${fn} failed: ${text}`);
  }

  /** A pointer to a host array's first element; `.buffer` first moves a small on-heap array off the heap. */
  #ptr(b: HostBuffer): Deno.PointerValue {
    void b.buffer;
    return Deno.UnsafePointer.of(b);
  }

  #count(b: HostBuffer) {
    this.stats.calls++;
    this.stats.bytes += b.byteLength;
  }

  allReduce(buf: CommBuffer, op: ReduceOp = "sum"): Promise<void> {
    return Promise.try(() => {
      checkCollective(this, "allReduce", { buf, reduce: op });
      const [b] = this.#host("allReduce", buf);
      const dt = this.#datatype(dtypeOf(b)), mop = this.#op(op);
      return this.#enqueue("allReduce", async () => {
        for (const [o, n] of countChunks(b.length, this.maxCount)) {
          this.#guard("allReduce");
          const part = b.subarray(o, o + n);
          this.#count(part);
          const rc = await this.#api.MPI_Allreduce(
            MpiCommunicator.#IN_PLACE,
            this.#ptr(part),
            n,
            dt,
            mop,
            this.#world,
          );
          this.#rc("allReduce", "MPI_Allreduce", rc);
        }
      });
    });
  }

  /**
   * One MPI_Reduce_scatter_block where send (k × size elements) fits in one call; else pieces of each
   * block, gathered into a contiguous scratch array per piece (the blocks' pieces are strided in send).
   */
  reduceScatter(send: CommBuffer, recv: CommBuffer, op: ReduceOp = "sum"): Promise<void> {
    return Promise.try(() => {
      checkCollective(this, "reduceScatter", { send, recv, reduce: op });
      const [s, r] = this.#host("reduceScatter", send, recv);
      const dt = this.#datatype(dtypeOf(s)), mop = this.#op(op);
      const k = r.length, size = this.size;
      return this.#enqueue("reduceScatter", async () => {
        if (k === 0) return;
        const step = k * size <= this.maxCount ? k : Math.max(1, Math.floor(this.maxCount / size));
        for (const [o, n] of countChunks(k, step)) {
          this.#guard("reduceScatter");
          let from = s;
          if (n !== k) {
            from = allocLike(s, n * size);
            for (let q = 0; q < size; q++) {
              (from as Float64Array).set(s.subarray(q * k + o, q * k + o + n) as Float64Array, q * n);
            }
          }
          this.#count(from);
          const rc = await this.#api.MPI_Reduce_scatter_block(
            this.#ptr(from),
            this.#ptr(r.subarray(o, o + n)),
            n,
            dt,
            mop,
            this.#world,
          );
          this.#rc("reduceScatter", "MPI_Reduce_scatter_block", rc);
        }
      });
    });
  }

  /** One MPI_Allgather where recv fits in one call; else pieces, spread from a scratch array into recv. */
  allGather(send: CommBuffer, recv: CommBuffer): Promise<void> {
    return Promise.try(() => {
      checkCollective(this, "allGather", { send, recv });
      const [s, r] = this.#host("allGather", send, recv);
      const dt = this.#datatype(dtypeOf(s));
      const k = s.length, size = this.size;
      return this.#enqueue("allGather", async () => {
        if (k === 0) return;
        const step = k * size <= this.maxCount ? k : Math.max(1, Math.floor(this.maxCount / size));
        for (const [o, n] of countChunks(k, step)) {
          this.#guard("allGather");
          const to = n === k ? r : allocLike(r, n * size);
          const part = s.subarray(o, o + n);
          this.#count(part);
          const rc = await this.#api.MPI_Allgather(this.#ptr(part), n, dt, this.#ptr(to), n, dt, this.#world);
          this.#rc("allGather", "MPI_Allgather", rc);
          if (to !== r) {
            for (let q = 0; q < size; q++) {
              (r as Float64Array).set(to.subarray(q * n, (q + 1) * n) as Float64Array, q * k + o);
            }
          }
        }
      });
    });
  }

  broadcast(buf: CommBuffer, root: number): Promise<void> {
    return Promise.try(() => {
      checkCollective(this, "broadcast", { buf, root });
      const [b] = this.#host("broadcast", buf);
      const dt = this.#datatype(dtypeOf(b));
      return this.#enqueue("broadcast", async () => {
        for (const [o, n] of countChunks(b.length, this.maxCount)) {
          this.#guard("broadcast");
          const part = b.subarray(o, o + n);
          this.#count(part);
          this.#rc(
            "broadcast",
            "MPI_Bcast",
            await this.#api.MPI_Bcast(this.#ptr(part), n, dt, root, this.#world),
          );
        }
      });
    });
  }

  barrier(): Promise<void> {
    return this.#enqueue("barrier", async () => {
      this.stats.calls++;
      this.#rc("barrier", "MPI_Barrier", await this.#api.MPI_Barrier(this.#world));
    });
  }

  /**
   * Ends the whole job: says why on stderr, then MPI_Abort, which makes mpirun kill every rank (and this
   * process, with status {@link WATCHDOG_EXIT_CODE}); it does not return.
   */
  abort(reason: string): void {
    if (this.#state !== "open") return;
    this.#state = "aborted";
    this.#reason = reason;
    console.error(`rank ${this.rank}/${this.size}: aborting the MPI job: ${reason}`);
    this.#api.MPI_Abort(this.#world, WATCHDOG_EXIT_CODE);
  }

  /** MPI_Finalize, after the collectives in flight; MPI cannot start again in this process. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#queue;
    if (this.#state !== "open") return;
    this.#state = "closed";
    const rc = this.#api.MPI_Finalize();
    if (rc !== 0) throw new CommError(this.rank, this.size, "close", `MPI_Finalize failed (error ${rc})`);
  }
}
