/**
 * An in-process world of n ranks sharing memory, for tests of code written against {@link Communicator}:
 * the k-th collective of every rank forms one collective, which completes when all n ranks have made it.
 *
 * Reductions run in rank order (rank 0's value, then + rank 1's, …) in the buffer's own type, element by
 * element, so a result is the same on every run and every rank. Float32 sums are IEEE float32 additions
 * (the double sum of two floats rounded to float32 is the correctly rounded float32 sum); integer sums wrap
 * as two's complement. Open MPI and NCCL sum in orders of their own (trees, rings, chunked pipelines), so
 * their floating-point results may differ from this one in the last bits, and the max of a NaN is not
 * specified anywhere.
 * @module
 */
import {
  checkCollective,
  type CollectiveName,
  type CommBuffer,
  CommError,
  type Communicator,
  describeBuffer,
  dtypeOf,
  type HostBuffer,
  isDeviceBuffer,
  type ReduceOp,
} from "./communicator.ts";

type Call = {
  rank: number;
  op: CollectiveName;
  reduce?: ReduceOp;
  root?: number;
  buf?: HostBuffer;
  send?: HostBuffer;
  recv?: HostBuffer;
  /** Why this rank's own call was refused (its peers fail too, naming it). */
  invalid?: string;
  resolve: () => void;
  reject: (e: Error) => void;
};

/** What a call looks like to its peers: ranks whose calls differ are named in the error. */
function signature(c: Call): string {
  if (c.invalid !== undefined) return `${c.op} with invalid arguments (${c.invalid})`;
  switch (c.op) {
    case "allReduce":
      return `allReduce(${c.reduce}, ${describeBuffer(c.buf!)})`;
    case "reduceScatter":
      return `reduceScatter(${c.reduce}, ${describeBuffer(c.send!)} → ${describeBuffer(c.recv!)})`;
    case "allGather":
      return `allGather(${describeBuffer(c.send!)} → ${describeBuffer(c.recv!)})`;
    case "broadcast":
      return `broadcast(${describeBuffer(c.buf!)}, root ${c.root})`;
    case "barrier":
      return "barrier()";
  }
}

/** "rank 1" or "ranks 0, 2". */
function ranksText(ranks: number[]): string {
  return ranks.length === 1 ? `rank ${ranks[0]}` : `ranks ${ranks.join(", ")}`;
}

/** Reduces `inputs` element by element in rank order, in their type (see the module's note). */
function reduce(inputs: HostBuffer[], op: ReduceOp): HostBuffer {
  // deno-lint-ignore no-explicit-any
  const acc: any = inputs[0].slice();
  for (let r = 1; r < inputs.length; r++) {
    // deno-lint-ignore no-explicit-any
    const x: any = inputs[r];
    if (op === "sum") { for (let i = 0; i < acc.length; i++) acc[i] = acc[i] + x[i]; }
    else for (let i = 0; i < acc.length; i++) if (x[i] > acc[i]) acc[i] = x[i];
  }
  return acc;
}

function copy(from: HostBuffer, to: HostBuffer) {
  (to as Float64Array).set(from as unknown as Float64Array);
}

class LocalWorld {
  /** The number of collectives each rank has made. */
  readonly made: number[];
  /** Collectives waiting for ranks, by sequence number. */
  readonly pending = new Map<number, (Call | undefined)[]>();
  aborted?: { rank: number; reason: string };
  /** Ranks whose communicator was closed. */
  readonly closed = new Set<number>();

  constructor(readonly size: number) {
    this.made = new Array(size).fill(0);
  }

  join(call: Call) {
    const n = this.size;
    if (this.aborted) {
      const { rank, reason } = this.aborted;
      return call.reject(new CommError(call.rank, n, call.op, `aborted by rank ${rank}: ${reason}`));
    }
    if (this.closed.has(call.rank)) {
      return call.reject(new CommError(call.rank, n, call.op, "the communicator is closed"));
    }
    const seq = this.made[call.rank]++;
    let slot = this.pending.get(seq);
    if (!slot) this.pending.set(seq, slot = new Array(n).fill(undefined));
    slot[call.rank] = call;
    if (call.invalid !== undefined) {
      call.reject(new CommError(call.rank, n, call.op, call.invalid));
    }
    if (!this.failIfStranded(seq, slot) && slot.every((c) => c !== undefined)) {
      this.complete(seq, slot as Call[]);
    }
  }

  /** Fails a collective that a closed rank can no longer join. */
  failIfStranded(seq: number, slot: (Call | undefined)[]): boolean {
    const gone = [...this.closed].filter((r) => slot[r] === undefined && this.made[r] <= seq);
    if (!gone.length) return false;
    this.pending.delete(seq);
    for (const c of slot) {
      if (c && c.invalid === undefined) {
        c.reject(
          new CommError(
            c.rank,
            this.size,
            c.op,
            `${ranksText(gone)} closed the communicator without joining it`,
          ),
        );
      }
    }
    return true;
  }

  complete(seq: number, calls: Call[]) {
    this.pending.delete(seq);
    const n = this.size;
    const sigs = calls.map(signature);
    if (calls.some((c) => c.invalid !== undefined) || sigs.some((s) => s !== sigs[0])) {
      const groups = new Map<string, number[]>();
      sigs.forEach((s, r) => groups.set(s, [...(groups.get(s) ?? []), r]));
      const what = [...groups].map(([s, ranks]) => `${ranksText(ranks)} called ${s}`).join("; ");
      for (const c of calls) {
        if (c.invalid === undefined) {
          c.reject(new CommError(c.rank, n, c.op, `collective #${seq} does not match across ranks: ${what}`));
        }
      }
      return;
    }
    const first = calls[0];
    switch (first.op) {
      case "allReduce": {
        const out = reduce(calls.map((c) => c.buf!), first.reduce!);
        for (const c of calls) copy(out, c.buf!);
        break;
      }
      case "reduceScatter": {
        const out = reduce(calls.map((c) => c.send!), first.reduce!);
        const k = first.recv!.length;
        for (const c of calls) copy(out.subarray(c.rank * k, (c.rank + 1) * k), c.recv!);
        break;
      }
      case "allGather": {
        const k = first.send!.length;
        // read every send before writing any recv, in case a test passes one array to two ranks
        const parts = calls.map((c) => c.send!.slice());
        for (const c of calls) {
          parts.forEach((p, r) => (c.recv! as Float64Array).set(p as Float64Array, r * k));
        }
        break;
      }
      case "broadcast": {
        const from = calls[first.root!].buf!.slice();
        for (const c of calls) copy(from, c.buf!);
        break;
      }
      case "barrier":
        break;
    }
    for (const c of calls) c.resolve();
  }

  abort(rank: number, reason: string) {
    if (this.aborted) return;
    this.aborted = { rank, reason };
    for (const slot of this.pending.values()) {
      for (const c of slot) {
        if (c && c.invalid === undefined) {
          c.reject(new CommError(c.rank, this.size, c.op, `aborted by rank ${rank}: ${reason}`));
        }
      }
    }
    this.pending.clear();
  }

  close(rank: number) {
    this.closed.add(rank);
    for (const [seq, slot] of [...this.pending]) this.failIfStranded(seq, slot);
  }
}

/** Options for {@link localWorld}. */
export type LocalWorldOptions = {
  /** Ranks per simulated machine: localRank = rank mod localSize. Default: all on one machine. */
  localSize?: number;
};

/**
 * n communicators sharing one world in this process (see the module's note). A collective whose arguments
 * differ across ranks (kind, reduction, type, length, root) fails on every rank naming who called what;
 * `abort` on any rank fails every pending and later collective on all of them; closing one rank fails the
 * collectives the others wait for it in.
 */
export function localWorld(n: number, o: LocalWorldOptions = {}): Communicator[] {
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new RangeError(`localWorld: n must be a whole number ≥ 1, got ${n}`);
  }
  const localSize = o.localSize ?? n;
  if (!Number.isSafeInteger(localSize) || localSize < 1) {
    throw new RangeError(`localWorld: localSize must be a whole number ≥ 1, got ${localSize}`);
  }
  const world = new LocalWorld(n);
  return Array.from({ length: n }, (_, rank) => new LocalCommunicator(world, rank, rank % localSize));
}

class LocalCommunicator implements Communicator {
  readonly backend = "local" as const;
  readonly size: number;

  constructor(readonly world: LocalWorld, readonly rank: number, readonly localRank: number) {
    this.size = world.size;
  }

  #call(
    op: CollectiveName,
    a: { buf?: CommBuffer; send?: CommBuffer; recv?: CommBuffer; reduce?: ReduceOp; root?: number },
  ): Promise<void> {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    let invalid: string | undefined;
    try {
      checkCollective(this, op, a);
      for (const b of [a.buf, a.send, a.recv]) {
        if (b !== undefined && isDeviceBuffer(b)) {
          throw new CommError(
            this.rank,
            this.size,
            op,
            `the in-process simulation works on host arrays, got ${describeBuffer(b)}`,
          );
        }
        if (b !== undefined) dtypeOf(b);
      }
    } catch (e) {
      invalid = e instanceof CommError ? e.detail : (e as Error).message;
    }
    this.world.join({
      rank: this.rank,
      op,
      reduce: a.reduce,
      root: a.root,
      buf: a.buf as HostBuffer | undefined,
      send: a.send as HostBuffer | undefined,
      recv: a.recv as HostBuffer | undefined,
      invalid,
      resolve,
      reject,
    });
    return promise;
  }

  allReduce(buf: CommBuffer, reduce: ReduceOp = "sum"): Promise<void> {
    return this.#call("allReduce", { buf, reduce });
  }

  reduceScatter(send: CommBuffer, recv: CommBuffer, reduce: ReduceOp = "sum"): Promise<void> {
    return this.#call("reduceScatter", { send, recv, reduce });
  }

  allGather(send: CommBuffer, recv: CommBuffer): Promise<void> {
    return this.#call("allGather", { send, recv });
  }

  broadcast(buf: CommBuffer, root: number): Promise<void> {
    return this.#call("broadcast", { buf, root });
  }

  barrier(): Promise<void> {
    return this.#call("barrier", {});
  }

  abort(reason: string): void {
    this.world.abort(this.rank, reason);
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.world.close(this.rank);
    return Promise.resolve();
  }
}
