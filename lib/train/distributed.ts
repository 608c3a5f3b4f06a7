/**
 * Data-parallel training over a {@link Communicator}: each rank runs the gradient graph on its share of
 * every global batch, the ranks reduce the packed gradient, and AdamW runs on the result (see
 * lib/graph/distributed.ts for the two graphs).
 *
 * One step, world of N:
 * 1. gradient run: forward + backward (+ in-graph accumulation) → the packed gradient of this rank's part of
 *    the micro-batches, weighted by its shares of them (`train.share`, {@link rankShares});
 * 2. DDP (`zero` 0): all-reduce (sum) of the packed gradient, the global batch's mean gradient; ZeRO-1
 *    (`zero` 1): reduce-scatter (sum) to this rank's slice (the even split of lib/runtime/comm's
 *    {@link paddedShard});
 * 3. the squared norm of each rank's slice, all-reduced: the global norm, and the clipping factor from it
 *    (the same on every rank, and the same for DDP and ZeRO-1);
 * 4. AdamW: DDP on the whole packed state (every rank holds both moments and computes the same update);
 *    ZeRO-1 on this rank's slice only (only its moments exist), then an all-gather of the new parameters.
 *
 * fp16 (a gradient graph with loss scaling): each rank feeds the session's loss scale to its gradient run and
 * gets its gradient unscaled; the all-reduced norm (the same on every rank) decides, as the chunk graph's step
 * does (PyTorch's GradScaler): not finite, the step is skipped on every rank (parameters, moments and step
 * count unchanged) and the scale halved; finite, the update, and the scale × growth factor after
 * `growthInterval` finite steps in a row.
 *
 * The parameters start equal (rank 0's are broadcast) and are compared every `hashEvery` steps and at each
 * checkpoint ({@link DistributedSession.checkParams}): a rank that drifted fails the run, named.
 *
 * The data: a global batch is per-device batch × accumulation × world size prompts (TRL/accelerate's
 * definition); every rank plans the same steps (the same seeded shuffle) and takes, from each micro-batch
 * of the global step, its contiguous part of whole prompts ({@link rankSteps}): equal parts, or as even as
 * they go for a step that does not split evenly (the last of an epoch), so the ranks train on the steps one
 * process trains on. The part is padded to the global batch's width and keyed LoRA dropout gets the rows of
 * the micro-batch before it (`dropout_row_offset`), so every prompt sees what it would in one process with
 * the whole batch; its weight in the loss and gradient is its share of the micro-batch's prompts (response
 * tokens for SFT, whose loss is a mean over them).
 * @module
 */
import { GraphBuilder } from "../graph/builder.ts";
import { buildShardOptimizerGraph, type GradientIO, SHARD_OPTIMIZER } from "../graph/distributed.ts";
import * as op from "../graph/ops.ts";
import type { OptimizerConfig } from "../graph/optim.ts";
import {
  allGatherPadded,
  type CommBuffer,
  type Communicator,
  type DeviceBuffer,
  isDeviceBuffer,
  paddedShard,
  reduceScatterPadded,
  STAGING_CHUNK_BYTES,
} from "../runtime/comm/communicator.ts";
import { ModelSession, type SessionOptions } from "../runtime/session.ts";
import { f32, type HeldTensor, type HostTensor, type Placement, zeros } from "../runtime/tensor.ts";
import { type ChunkResult, runScoringMode } from "../runtime/training_session.ts";
import { FP16_LOSS_SCALING } from "./train_graph.ts";

/** Options of {@link DistributedSession.namedState}. */
export type NamedStateOptions = {
  /** The one rank that gets the whole moments (the checkpoint's writer); default every rank. */
  root?: number;
  /** With `root`: the most bytes an all-gather of the moments moves at once (default 256 MiB). */
  pieceBytes?: number;
};

/** How the optimizer state is held across ranks: 0 replicated (DDP), 1 sharded (ZeRO stage 1). */
export type ZeroStage = 0 | 1;

/** Options of {@link DistributedSession.create}. */
export type DistributedOptions = SessionOptions & {
  optimizer: OptimizerConfig;
  maxGradNorm?: number;
  zero?: ZeroStage;
  /** Compare the ranks' parameters every this many steps (0: only when asked). Default 50. */
  hashEvery?: number;
  /**
   * The initial loss scale of a gradient graph with loss scaling (TrainingSession's `lossScale`). Default
   * {@link FP16_LOSS_SCALING}'s.
   */
  lossScale?: number;
  /**
   * Tests: hand host memory to the collectives as device buffers, so that the device path (in-place
   * reduce-scatter, the gradient reused for the gathered parameters, the norm by a graph) runs on the CPU
   * with a communicator that reads such buffers.
   */
  deviceMemory?: boolean;
};

/** `rank r/n: ` — every message of a rank says whose it is. */
export function rankPrefix(comm: { rank: number; size: number }): string {
  return `rank ${comm.rank}/${comm.size}: `;
}

/** `e` with its message prefixed by the rank (once). */
export function rankError(comm: { rank: number; size: number }, e: unknown): Error {
  const err = e instanceof Error ? e : new Error(String(e));
  const prefix = rankPrefix(comm);
  if (!err.message.startsWith(prefix)) err.message = prefix + err.message;
  return err;
}

/** A 32-bit FNV-1a hash of a float array's bytes, word by word (checks that ranks hold the same values). */
export function hashFloats(a: Float32Array): number {
  const w = new Uint32Array(a.buffer, a.byteOffset, a.length);
  let h = 0x811c9dc5;
  for (let i = 0; i < w.length; i++) h = Math.imul(h ^ w[i], 0x01000193);
  return h >>> 0;
}

/** PyTorch's names of the AdamW moments, as checkpoints store them (`<param>.exp_avg`, `.exp_avg_sq`). */
const SLOTS = ["exp_avg", "exp_avg_sq"] as const;

/** The float32 rounding of clip_grad_norm_'s factor min(1, maxNorm / (norm + 1e-6)), as the graphs compute it. */
export function clipFactor(norm: number, maxNorm: number | undefined): number {
  if (maxNorm === undefined || !Number.isFinite(maxNorm)) return 1;
  const f = Math.fround;
  return Math.min(f(f(maxNorm) / f(f(norm) + f(1e-6))), 1);
}

/**
 * A gradient graph (lib/graph/distributed.ts) and the AdamW graph in sessions of their own, with the
 * trainable state, stepping with the other ranks of `comm`. What the trainer needs of a
 * {@link import("../runtime/training_session.ts").TrainingSession}: `run`, `scorer`, `namedState`,
 * `restoreNamed`, `current`.
 *
 * The state (parameters, AdamW's moments) and the gradient stay where the sessions hold them between runs
 * (`ModelSession.run`'s `"device"` placement): in device memory through the C API on a GPU, in host memory on
 * the CPU and through onnxruntime-node. The collectives read and write that memory in place
 * (`ModelSession.memoryOf`: a typed array over host memory, a CUDA address for NCCL), so on a GPU a step's
 * gradient, parameters and moments never cross to the host; only the loss, the metrics and the norm do.
 * Under ZeRO-1 the gradient graph is built for the ranks (`buildGradientGraph(spec, { ranks })`): its
 * gradient comes padded to ranks × block, which a device reduce-scatter writes in place and a device
 * all-gather of the new parameters then reuses; the parameters live in such a padded buffer, the moments in
 * blocks.
 */
export class DistributedSession {
  /** The packed parameters `[rows, C]` the gradient graph reads (whole on every rank). */
  #params: HeldTensor;
  /** ZeRO-1: the padded buffer (ranks × block elements) {@link #params} is a view of. */
  #paramsBuffer: HeldTensor | undefined;
  /** AdamW's moments: the whole packed length (DDP) or this rank's block (ZeRO-1; zeros past the state's end). */
  #m: HeldTensor;
  #v: HeldTensor;
  #step = 0;
  /** With loss scaling: the scale the next step uses, and the finite steps in a row since it last changed. */
  #lossScale: number;
  #goodSteps = 0;
  readonly #slice: { start: number; end: number; block: number };
  /** The sum of squares of a device slice (a graph: the gradient's norm without a copy to the host). */
  #normSession: ModelSession | undefined;
  /** Zeros on the device: the gradient of a rank without prompts in a step. */
  #zerosSession: ModelSession | undefined;
  /** The parameters' fingerprint on the device (what the ranks compare). */
  #fingerprintSession: ModelSession | undefined;

  private constructor(
    readonly comm: Communicator,
    readonly io: GradientIO,
    readonly gradSession: ModelSession,
    readonly optSession: ModelSession,
    readonly opts: DistributedOptions,
    packed: Float32Array,
  ) {
    const n = packed.length;
    const { start, end, block } = paddedShard(n, comm.size, comm.rank);
    this.#slice = { start, end, block };
    const own = this.zero === 1 ? block : n;
    this.#m = gradSession.hold(f32(new Float32Array(own), [own]));
    this.#v = gradSession.hold(f32(new Float32Array(own), [own]));
    this.#params = this.#holdParams(packed);
    this.#lossScale = Math.fround(opts.lossScale ?? FP16_LOSS_SCALING.init);
  }

  get zero(): ZeroStage {
    return this.opts.zero ?? 0;
  }

  /** Elements of the packed state. */
  get size(): number {
    return this.io.packed.shape[0];
  }

  /** Bytes of optimizer state this rank holds (both moments). */
  get optimizerStateBytes(): number {
    return 2 * 4 * this.#m.dims.reduce((a, b) => a * b, 1);
  }

  /** Optimizer steps done. */
  get stepsDone(): number {
    return this.#step;
  }

  /**
   * Loads both graphs and the initial parameters, which rank 0 then broadcasts (every rank starts from its
   * values). Every rank of `comm` calls it.
   */
  static async create(
    built: { graph: GraphBuilder; io: GradientIO },
    params: Record<string, Float32Array>,
    comm: Communicator,
    opts: DistributedOptions,
  ): Promise<DistributedSession> {
    try {
      const { io } = built;
      const zero = opts.zero ?? 0;
      if (zero !== 0 && zero !== 1) throw new RangeError(`--zero must be 0 or 1, got ${zero}`);
      const packed = new Float32Array(io.packed.shape[0]);
      const shapes = new Map(io.params.map((p) => [p.name, p.shape]));
      for (const m of io.packed.members) {
        const v = params[m.name];
        if (!v || v.length !== m.length) {
          throw new RangeError(
            `parameter ${m.name}: ${v?.length ?? 0} values for shape [${shapes.get(m.name)?.join(", ")}]`,
          );
        }
        packed.set(v, m.offset);
      }
      const { optimizer, maxGradNorm, zero: _z, hashEvery: _h, lossScale: _l, deviceMemory: _d, ...session } =
        opts;
      const clip = maxGradNorm !== undefined && Number.isFinite(maxGradNorm);
      const optGraph = buildShardOptimizerGraph(optimizer, clip);
      const gradSession = await ModelSession.create(built.graph.build(), {
        ...session,
        describe: session.describe ?? ((n) => built.graph.describe(n)),
      });
      const optSession = await ModelSession.create(optGraph.build(), {
        device: session.device,
        deviceId: session.deviceId,
        intraOpThreads: session.intraOpThreads,
        backend: session.backend,
      } as SessionOptions);
      const { padded } = paddedShard(packed.length, comm.size, comm.rank);
      if (zero === 1 && (gradSession.holdsOn === "cuda" || opts.deviceMemory) && io.gradientLength < padded) {
        throw new RangeError(
          `ZeRO-1 on device memory needs the gradient graph built for the ${comm.size} ranks ` +
            `(buildGradientGraph(spec, { ranks: ${comm.size} })): its gradient has ${io.gradientLength} ` +
            `elements, not ${padded}`,
        );
      }
      await comm.broadcast(packed, 0);
      return new DistributedSession(comm, io, gradSession, optSession, opts, packed);
    } catch (e) {
      throw rankError(comm, e);
    }
  }

  /** Holds packed parameters (host values): as they are (DDP), or in a padded buffer of the ranks' blocks (ZeRO-1). */
  #holdParams(packed: Float32Array): HeldTensor {
    const gs = this.gradSession;
    this.#paramsBuffer?.release();
    this.#paramsBuffer = undefined;
    if (this.zero === 0) return gs.hold(f32(packed, this.io.packed.shape));
    const padded = this.#slice.block * this.comm.size;
    const buffer = new Float32Array(padded);
    buffer.set(packed);
    this.#paramsBuffer = gs.hold(f32(buffer, [padded]));
    return gs.viewOf(this.#paramsBuffer, 0, this.io.packed.shape);
  }

  /**
   * Runs `lrs.length` optimizer steps on batches stacked along axis 0 (one slice per step), this rank's
   * share of each: {@link import("../runtime/training_session.ts").TrainingSession.run}'s contract. The
   * loss and metrics returned are the global batch's.
   */
  async run(batches: Record<string, HostTensor>, lrs: readonly number[]): Promise<ChunkResult> {
    try {
      const S = lrs.length;
      const loss = new Float32Array(S), gradNorm = new Float32Array(S), skipped = new Float32Array(S);
      const lossScale = this.io.lossScale ? new Float32Array(S) : undefined;
      const metrics = Object.fromEntries(this.io.metrics.map((m) => [m, new Float32Array(S)]));
      for (const b of this.io.batch) {
        const t = batches[b.name];
        if (!t) throw new TypeError(`missing batch input "${b.name}"`);
        if (t.dims[0] !== S) {
          throw new RangeError(
            `batch input "${b.name}" stacks ${t.dims[0]} steps but ${S} learning rates were given`,
          );
        }
      }
      for (let i = 0; i < S; i++) {
        const feeds: Record<string, HostTensor> = {};
        for (const b of this.io.batch) feeds[b.name] = stepSlice(batches[b.name], i);
        if (lossScale) lossScale[i] = this.#lossScale;
        const r = await this.step(feeds, lrs[i]);
        loss[i] = r.loss;
        gradNorm[i] = r.gradNorm;
        skipped[i] = r.skipped ? 1 : 0;
        for (const m of this.io.metrics) metrics[m][i] = r.metrics[m];
        const every = this.opts.hashEvery ?? 50;
        if (every > 0 && this.#step % every === 0) await this.checkParams();
      }
      return { steps: S, loss, gradNorm, skipped, lossScale, metrics };
    } catch (e) {
      throw rankError(this.comm, e);
    }
  }

  /** One optimizer step on this rank's share of a global batch (see the module's note). */
  async step(
    feeds: Record<string, HostTensor>,
    lr: number,
  ): Promise<{ loss: number; gradNorm: number; skipped: boolean; metrics: Record<string, number> }> {
    const { comm, io, gradSession: gs } = this;
    const N = comm.size;
    const all: Record<string, HostTensor | HeldTensor> = { [io.packed.name]: this.#params, ...feeds };
    if (io.lossScale) all[io.lossScale] = this.#scaleTensor();
    if (io.scoring) {
      all[io.scoring.mode] = { dtype: "bool", dims: [], data: Uint8Array.of(1) };
      for (const b of io.scoring.inputs) all[b.graph] = emptyOf(b.dtype, b.shape);
    }
    // a rank without prompts in this step (a short batch split over more ranks than it has prompts) runs
    // nothing: its share of the loss and the gradient is 0, and it takes part in the collectives
    const rows = this.#rowsOf(feeds);
    const placement: Record<string, Placement> = { [io.gradient]: "device", [io.loss]: "host" };
    for (const m of io.metrics) placement[m] = "host";
    const out = rows > 0 ? await gs.run(all, placement) : undefined;
    const grad = out ? out[io.gradient] as HeldTensor : await this.#zeroGradient();
    let slice: HeldTensor | undefined;
    let keepGrad = false;
    try {
      const scalar = (n: string) => out ? ((out[n] as HostTensor).data as Float32Array)[0] : 0;
      // the global batch's loss: the sum of the ranks' weighted ones; its metrics (means over rows): the
      // ranks' weighted by their rows
      const scalars = Float64Array.from([scalar(io.loss), rows, ...io.metrics.map((m) => rows * scalar(m))]);
      if (N > 1) await comm.allReduce(scalars, "sum");
      const { start, end } = this.#slice;
      // each rank's gradient is weighted by its shares (the gradient graph's `train.share`): their sum is the
      // global batch's mean gradient
      let sq: number;
      if (this.zero === 0) {
        if (N > 1) await comm.allReduce(this.#memory(grad) as CommBuffer, "sum");
        sq = await this.#sumOfSquares(grad, start, end - start);
      } else {
        slice = await this.#reduceScatter(grad);
        sq = await this.#sumOfSquares(slice, 0, end - start);
      }
      // the global norm from each rank's slice (the same sum for DDP and ZeRO-1)
      const sums = Float64Array.of(sq);
      if (N > 1) await comm.allReduce(sums, "sum");
      // finite as the graphs' float32 sum of squares is (one that overflows float32 is not, as in the Loop)
      const finite = Number.isFinite(Math.fround(sums[0]));
      const norm = finite ? Math.fround(Math.sqrt(sums[0])) : Math.fround(sums[0]);
      const coef = clipFactor(norm, this.opts.maxGradNorm);
      const result = {
        loss: scalars[0],
        gradNorm: norm,
        skipped: !finite,
        metrics: Object.fromEntries(io.metrics.map((m, j) => [m, scalars[j + 2] / scalars[1]])),
      };
      this.#updateScale(finite);
      // a non-finite gradient: every rank has the same norm, so every rank stops here, the state unchanged
      if (!finite) return result;
      if (this.zero === 0) {
        const next = await this.#adamw(this.#params, grad, 0, lr, coef);
        this.#params.release();
        this.#params = next;
      } else {
        const p = gs.viewOf(this.#paramsBuffer!, start, slice!.dims);
        let next: HeldTensor;
        try {
          next = await this.#adamw(p, slice!, start, lr, coef);
        } finally {
          p.release();
        }
        keepGrad = await this.#allGatherParams(next, grad);
      }
      this.#step++;
      return result;
    } finally {
      slice?.release();
      if (!keepGrad) grad.release();
    }
  }

  /**
   * ZeRO-1: this rank's block of the summed gradient. On a GPU the reduce-scatter writes it in place, into
   * the rank's block of the padded gradient (NCCL's in-place form), and the block is a view of it; in host
   * memory it goes to an array of its own.
   */
  async #reduceScatter(grad: HeldTensor): Promise<HeldTensor> {
    const { comm, gradSession: gs } = this, N = comm.size, { block } = this.#slice;
    if (N === 1) return gs.viewOf(grad, 0, [block]);
    const mem = this.#memory(grad);
    if (isDeviceBuffer(mem)) {
      const at = BigInt(Deno.UnsafePointer.value(mem.pointer)) + BigInt(comm.rank * block * 4);
      const recv: DeviceBuffer = { ...mem, pointer: Deno.UnsafePointer.create(at), length: block };
      await comm.reduceScatter({ ...mem, length: N * block }, recv, "sum");
      return gs.viewOf(grad, comm.rank * block, [block]);
    }
    const { shard } = await reduceScatterPadded(comm, (mem as Float32Array).subarray(0, this.size), "sum");
    return gs.hold(f32(shard, [block]));
  }

  /**
   * ZeRO-1: gathers every rank's new block of parameters into the padded parameter buffer. On a GPU the
   * spent gradient (ranks × block, as the graph made it) receives them and becomes that buffer (true: the
   * caller keeps it); in host memory an array of its own does.
   */
  async #allGatherParams(next: HeldTensor, grad: HeldTensor): Promise<boolean> {
    const { comm, gradSession: gs } = this, N = comm.size;
    const old = this.#paramsBuffer;
    let buffer: HeldTensor, reused = false;
    if (N === 1) buffer = next;
    else {
      const send = this.#memory(next) as CommBuffer;
      const recvMem = this.#memory(grad);
      if (isDeviceBuffer(recvMem) && recvMem.length === N * this.#slice.block) {
        await comm.allGather(send, recvMem);
        buffer = grad;
        reused = true;
      } else {
        const recv = new Float32Array(N * this.#slice.block);
        await comm.allGather(send, recv);
        buffer = gs.hold(f32(recv, [recv.length]));
      }
      next.release();
    }
    this.#params.release();
    this.#paramsBuffer = buffer;
    this.#params = gs.viewOf(buffer, 0, this.io.packed.shape);
    old?.release();
    return reused;
  }

  /**
   * The gradient of a rank without prompts in a step: zeros where the others' gradients are (on a GPU, made
   * there by a one-node graph, so that its collectives take device buffers as the other ranks' do).
   */
  async #zeroGradient(): Promise<HeldTensor> {
    const gs = this.gradSession, n = this.io.gradientLength;
    if (gs.holdsOn !== "cuda" && !this.opts.deviceMemory) return gs.hold(f32(new Float32Array(n), [n]));
    if (!this.#zerosSession) {
      const g = new GraphBuilder("zeros");
      const shape = g.input("shape", "int64", [1]);
      g.output(op.constantOfShape(shape, 0, "float32", ["n"]), "zeros");
      this.#zerosSession = await this.#utilitySession(g);
    }
    const out = await this.#zerosSession.run(
      { shape: { dtype: "int64", dims: [1], data: BigInt64Array.of(BigInt(n)) } },
      { zeros: "device" },
    );
    return out.zeros;
  }

  /**
   * Σ x² over elements [offset, offset + length) of `t`: in JavaScript (float64) where it is in host memory,
   * by a one-node graph on the device where it is not (the gradient stays there; only the sum comes back).
   */
  async #sumOfSquares(t: HeldTensor, offset: number, length: number): Promise<number> {
    if (length === 0) return 0;
    const gs = this.gradSession;
    const mem = this.#memory(t);
    if (!isDeviceBuffer(mem)) {
      const x = (mem as Float32Array).subarray(offset, offset + length);
      let sq = 0;
      for (let i = 0; i < x.length; i++) sq += x[i] * x[i];
      return sq;
    }
    if (!this.#normSession) {
      const g = new GraphBuilder("sum_of_squares");
      const x = g.input("x", "float32", ["n"]);
      g.output(op.sumAll(op.mul(x, x)), "sq");
      this.#normSession = await this.#utilitySession(g);
    }
    using view = gs.viewOf(t, offset, [length]);
    const out = await this.#normSession.run({ x: view }, ["sq"]);
    return (out.sq.data as Float32Array)[0];
  }

  /**
   * A held tensor's memory for the collectives ({@link ModelSession.memoryOf}); with the `deviceMemory` test
   * option, host memory handed over as a device buffer (its address), so that the CPU runs the device path.
   */
  #memory(t: HeldTensor): HostTensor["data"] | DeviceBuffer {
    const m = this.gradSession.memoryOf(t);
    if (!this.opts.deviceMemory || isDeviceBuffer(m)) return m;
    const pointer = Deno.UnsafePointer.of(m as Float32Array<ArrayBuffer>);
    return { pointer, length: m.length, dtype: "float32", device: "cuda" };
  }

  /** This rank's rows (sequences) in a step's feeds: the size of the batch inputs' `rows` axis. */
  #rowsOf(feeds: Record<string, HostTensor>): number {
    const b = this.io.batch.find((x) => x.shape.includes("rows"));
    if (!b) throw new TypeError("the gradient graph has no batch input with a rows axis");
    const t = feeds[b.name];
    if (!t) throw new TypeError(`missing batch input "${b.name}"`);
    return t.dims[b.shape.indexOf("rows")];
  }

  /** The loss scale as the gradient graph takes it. */
  #scaleTensor(): HostTensor {
    return { dtype: "float32", dims: [], data: Float32Array.of(this.#lossScale) };
  }

  /**
   * The loss scale after a step, as the chunk graph's step computes it (in float32): halved on a non-finite
   * gradient (the run of finite steps restarts), × growth factor when the finite steps in a row reach the
   * growth interval (the count restarts at 0).
   */
  #updateScale(finite: boolean): void {
    const growth = this.io.lossScaling;
    if (!growth) return;
    const f = Math.fround;
    if (!finite) {
      this.#lossScale = f(this.#lossScale / 2);
      this.#goodSteps = 0;
      return;
    }
    const good = this.#goodSteps + 1;
    const grow = good >= growth.growthInterval;
    if (grow) this.#lossScale = f(this.#lossScale * f(growth.growthFactor));
    this.#goodSteps = grow ? 0 : good;
  }

  /**
   * AdamW on the held slice `p` (elements [at, …) of the packed state) with its gradient `g`: the new
   * parameters, held; this rank's moments are replaced.
   */
  async #adamw(p: HeldTensor, g: HeldTensor, at: number, lr: number, coef: number): Promise<HeldTensor> {
    const n = p.dims.reduce((a, b) => a * b, 1);
    const decayUntil = Math.max(0, Math.min(n, this.io.decayElements - at));
    const flat = (t: HeldTensor) => t.dims.length === 1 ? t : this.gradSession.viewOf(t, 0, [n]);
    const pf = flat(p), gf = flat(g);
    const feeds: Record<string, HostTensor | HeldTensor> = {
      [SHARD_OPTIMIZER.params]: pf,
      [SHARD_OPTIMIZER.grad]: gf,
      [SHARD_OPTIMIZER.m]: this.#m,
      [SHARD_OPTIMIZER.v]: this.#v,
      [SHARD_OPTIMIZER.step]: { dtype: "float32", dims: [], data: Float32Array.of(this.#step) },
      [SHARD_OPTIMIZER.lr]: { dtype: "float32", dims: [], data: Float32Array.of(lr) },
      [SHARD_OPTIMIZER.decayUntil]: { dtype: "int64", dims: [], data: BigInt64Array.of(BigInt(decayUntil)) },
    };
    if (this.optSession.inputNames.includes(SHARD_OPTIMIZER.coef)) {
      feeds[SHARD_OPTIMIZER.coef] = { dtype: "float32", dims: [], data: Float32Array.of(coef) };
    }
    try {
      const out = await this.optSession.run(feeds, {
        [SHARD_OPTIMIZER.nextParams]: "device",
        [SHARD_OPTIMIZER.nextM]: "device",
        [SHARD_OPTIMIZER.nextV]: "device",
      });
      this.#m.release();
      this.#v.release();
      this.#m = out[SHARD_OPTIMIZER.nextM];
      this.#v = out[SHARD_OPTIMIZER.nextV];
      return out[SHARD_OPTIMIZER.nextParams];
    } finally {
      if (pf !== p) pf.release();
      if (gf !== g) gf.release();
    }
  }

  /** The packed parameters in JavaScript memory (a copy where they are on a device). */
  #paramsOnHost(): Float32Array {
    return this.gradSession.toHost(this.#params).data as Float32Array;
  }

  /**
   * Checks that every rank holds the same parameters (a collective): fails on every rank, naming the ranks
   * whose parameters differ from rank 0's.
   */
  async checkParams(): Promise<void> {
    const { comm } = this;
    if (comm.size === 1) return;
    const mine = await this.#fingerprint();
    const all = new Float64Array(2 * comm.size);
    await comm.allGather(mine, all);
    const of = (r: number) => `${all[2 * r].toString(16)}/${all[2 * r + 1].toString(16)}`;
    const differ = Array.from({ length: comm.size }, (_, r) => r).filter((r) => of(r) !== of(0));
    if (differ.length) {
      throw new Error(
        `${rankPrefix(comm)}the ranks' parameters differ after step ${this.#step}: rank${
          differ.length > 1 ? "s" : ""
        } ${differ.join(", ")} hold${differ.length > 1 ? "" : "s"} other values than rank 0 (fingerprints ${
          Array.from({ length: comm.size }, (_, r) => `${r}: ${of(r)}`).join(", ")
        })`,
      );
    }
  }

  /**
   * What the ranks compare of their parameters: in host memory a hash of their bits (FNV-1a, read in place);
   * on a device Σx and Σ i·x in float64 by a graph there (the parameters are not copied out for it).
   */
  async #fingerprint(): Promise<Float64Array> {
    const mem = this.#memory(this.#params);
    if (!isDeviceBuffer(mem)) return Float64Array.of(hashFloats(mem as Float32Array), 0);
    if (!this.#fingerprintSession) {
      const g = new GraphBuilder("fingerprint");
      const x = op.cast(g.input("x", "float32", ["n"]), "float64");
      const n = op.shapeOf(x, 0, 1);
      const i = op.cast(
        op.range(g.scalar(0, "int64"), op.reshape(n, []), g.scalar(1, "int64"), "n"),
        "float64",
      );
      g.output(op.concat([op.reshape(op.sumAll(x), [1]), op.reshape(op.sumAll(op.mul(x, i)), [1])], 0), "fp");
      this.#fingerprintSession = await this.#utilitySession(g);
    }
    const out = await this.#fingerprintSession.run({ x: this.#params }, ["fp"]);
    return Float64Array.from(out.fp.data as Float64Array);
  }

  /** A small session of the step's own (a norm, zeros, a fingerprint) on the gradient session's device. */
  #utilitySession(g: GraphBuilder): Promise<ModelSession> {
    const gs = this.gradSession;
    return ModelSession.create(
      g.build(),
      { device: gs.device, deviceId: gs.deviceId, backend: "ffi" } as SessionOptions,
    );
  }

  /** The parameters by name, in JavaScript memory (views of one copy of the packed state). */
  current(): Record<string, Float32Array> {
    const packed = this.#paramsOnHost();
    return Object.fromEntries(
      this.io.packed.members.map((m) => [m.name, packed.subarray(m.offset, m.offset + m.length)]),
    );
  }

  /**
   * The whole AdamW moments (a collective under ZeRO-1, which gathers the blocks): on every rank, or with
   * `root` on that rank alone (undefined on the others), gathered in pieces of at most `pieceBytes` a call
   * so that the other ranks never hold more than a piece.
   */
  async #moments(o: NamedStateOptions): Promise<[Float32Array, Float32Array] | undefined> {
    const host = (t: HeldTensor) => this.gradSession.toHost(t).data as Float32Array;
    if (this.zero === 0) return [host(this.#m), host(this.#v)];
    const { comm } = this, n = this.size, N = comm.size, { block } = this.#slice;
    if (N === 1) return [host(this.#m).subarray(0, n), host(this.#v).subarray(0, n)];
    if (o.root === undefined) {
      return [await allGatherPadded(comm, host(this.#m), n), await allGatherPadded(comm, host(this.#v), n)];
    }
    const piece = Math.max(1, Math.floor((o.pieceBytes ?? STAGING_CHUNK_BYTES) / 4 / N));
    const recv = new Float32Array(N * Math.min(piece, block));
    const gather = async (own: Float32Array) => {
      const whole = comm.rank === o.root ? new Float32Array(n) : undefined;
      for (let e0 = 0; e0 < block; e0 += piece) {
        const len = Math.min(piece, block - e0);
        await comm.allGather(own.subarray(e0, e0 + len), recv.subarray(0, N * len));
        if (!whole) continue;
        for (let q = 0; q < N; q++) {
          const at = q * block + e0, keep = Math.max(0, Math.min(len, n - at));
          whole.set(recv.subarray(q * len, q * len + keep), at);
        }
      }
      return whole;
    };
    const m = await gather(host(this.#m)), v = await gather(host(this.#v));
    return m && v ? [m, v] : undefined;
  }

  /**
   * The state under the parameters' names, as a one-process run's checkpoint holds it (TrainingSession's
   * `namedState`): one logical checkpoint whatever the world size. A collective: every rank calls it (the
   * ranks' parameters are compared first). With `root` (the trainer's checkpoints: rank 0 writes them) the
   * moments of ZeRO-1 come whole to that rank alone; the others get the parameters only.
   */
  async namedState(o: NamedStateOptions = {}): Promise<{
    tensors: Record<string, { shape: number[]; data: Float32Array }>;
    scalars: Record<string, number>;
  }> {
    try {
      await this.checkParams();
      const moments = await this.#moments(o);
      const packed = this.#paramsOnHost();
      const shapes = new Map(this.io.params.map((p) => [p.name, p.shape]));
      const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
      for (const m of this.io.packed.members) {
        const shape = shapes.get(m.name)!;
        tensors[m.name] = { shape, data: packed.subarray(m.offset, m.offset + m.length) };
        SLOTS.forEach((slot, j) => {
          if (!moments) return;
          tensors[`${m.name}.${slot}`] = { shape, data: moments[j].subarray(m.offset, m.offset + m.length) };
        });
      }
      const scalars: Record<string, number> = { step: this.#step };
      // the one-process checkpoint's names (TrainingSession's state `train.loss_scale`, `train.good_steps`)
      if (this.io.lossScale) {
        Object.assign(scalars, { loss_scale: this.#lossScale, good_steps: this.#goodSteps });
      }
      return { tensors, scalars };
    } catch (e) {
      throw rankError(this.comm, e);
    }
  }

  /**
   * Restores a checkpoint's state (every rank reads the whole checkpoint and keeps its part), whatever world
   * size wrote it; names what is missing or misshapen.
   */
  restoreNamed(tensors: Record<string, Float32Array>, scalars: Record<string, number>): void {
    const n = this.size;
    const packed = new Float32Array(n), m = new Float32Array(n), v = new Float32Array(n);
    const need = (name: string, length: number) => {
      const x = tensors[name];
      if (!x) throw rankError(this.comm, new TypeError(`checkpoint lacks "${name}"`));
      if (x.length !== length) {
        throw rankError(
          this.comm,
          new RangeError(`checkpoint "${name}" has ${x.length} values, not ${length}`),
        );
      }
      return x;
    };
    for (const mem of this.io.packed.members) {
      packed.set(need(mem.name, mem.length), mem.offset);
      m.set(need(`${mem.name}.${SLOTS[0]}`, mem.length), mem.offset);
      v.set(need(`${mem.name}.${SLOTS[1]}`, mem.length), mem.offset);
    }
    const scalarNames = this.io.lossScale ? ["step", "loss_scale", "good_steps"] : ["step"];
    for (const k of scalarNames) {
      if (typeof scalars[k] !== "number") {
        throw rankError(this.comm, new TypeError(`checkpoint lacks the scalar "${k}"`));
      }
    }
    const { start, end, block } = this.#slice;
    const own = (x: Float32Array) => {
      if (this.zero === 0) return x;
      const b = new Float32Array(block);
      b.set(x.subarray(start, end));
      return b;
    };
    const gs = this.gradSession;
    this.#params.release();
    this.#params = this.#holdParams(packed);
    this.#m.release();
    this.#v.release();
    const om = own(m), ov = own(v);
    this.#m = gs.hold(f32(om, [om.length]));
    this.#v = gs.hold(f32(ov, [ov.length]));
    this.#step = scalars.step;
    if (this.io.lossScale) {
      this.#lossScale = Math.fround(scalars.loss_scale);
      this.#goodSteps = scalars.good_steps;
    }
  }

  /**
   * The scoring mode on the current parameters, on this rank alone (see {@link scorer} for the split
   * across ranks).
   */
  async score(
    feeds: Record<string, HostTensor>,
    outputs: readonly string[],
  ): Promise<Record<string, HostTensor>> {
    const sc = this.io.scoring;
    if (!sc) throw new TypeError("this gradient graph has no scoring mode");
    const all: Record<string, HostTensor | HeldTensor> = {
      [sc.mode]: { dtype: "bool", dims: [], data: Uint8Array.of(0) },
      [this.io.packed.name]: this.#params,
    };
    for (const b of this.io.batch) all[b.name] = emptyOf(b.dtype, b.shape);
    if (this.io.lossScale) all[this.io.lossScale] = this.#scaleTensor();
    return await runScoringMode(sc, all, feeds, outputs, (f, names) => this.gradSession.run(f, names));
  }

  /**
   * The scoring mode as a scorer whose batches are split across the ranks: each scores its rows (the even
   * split of {@link paddedShard}, the last row repeated to fill a short share) and the outputs are
   * all-gathered, so every rank gets the whole batch's. Every rank makes the same calls (reference log-probs,
   * evaluation).
   */
  scorer(): {
    run: (f: Record<string, HostTensor>, o: readonly string[]) => Promise<Record<string, HostTensor>>;
  } {
    return {
      run: async (feeds, outputs) => {
        try {
          return await this.#splitScore(feeds, outputs);
        } catch (e) {
          throw rankError(this.comm, e);
        }
      },
    };
  }

  async #splitScore(feeds: Record<string, HostTensor>, outputs: readonly string[]) {
    const { comm } = this;
    if (comm.size === 1) return await this.score(feeds, outputs);
    const rows = Object.values(feeds)[0]?.dims[0] ?? 0;
    for (const [name, t] of Object.entries(feeds)) {
      if (t.dims[0] !== rows) {
        throw new RangeError(`scoring input "${name}" has ${t.dims[0]} rows, not ${rows}`);
      }
    }
    const { block, padded } = paddedShard(rows, comm.size, comm.rank);
    const first = comm.rank * block;
    const pick = Array.from({ length: block }, (_, i) => Math.min(first + i, rows - 1));
    const mine = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, takeRows(t, pick)]));
    const out = await this.score(mine, outputs);
    const res: Record<string, HostTensor> = {};
    for (const o of outputs) {
      const t = out[o];
      if (!(t.data instanceof Float32Array)) throw new TypeError(`scoring output "${o}" is not float32`);
      const per = t.data.length / block;
      const all = new Float32Array(padded * per);
      await comm.allGather(t.data, all);
      res[o] = { dtype: "float32", dims: [rows, ...t.dims.slice(1)], data: all.subarray(0, rows * per) };
    }
    return res;
  }

  /** Frees the state and the sessions. */
  async release(): Promise<void> {
    this.#params.release();
    this.#paramsBuffer?.release();
    this.#m.release();
    this.#v.release();
    await this.gradSession.release();
    await this.optSession.release();
    await this.#normSession?.release();
    await this.#zerosSession?.release();
    await this.#fingerprintSession?.release();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

/** Step `i` of a tensor stacked along axis 0: a view, no copy. */
function stepSlice(t: HostTensor, i: number): HostTensor {
  const per = t.data.length / t.dims[0];
  return {
    dtype: t.dtype,
    dims: t.dims.slice(1),
    data: t.data.subarray(i * per, (i + 1) * per),
  } as HostTensor;
}

/** Rows `pick` of a tensor (a copy). */
function takeRows(t: HostTensor, pick: number[]): HostTensor {
  const per = t.dims[0] ? t.data.length / t.dims[0] : 0;
  const data = new (t.data.constructor as new (n: number) => HostTensor["data"])(pick.length * per);
  pick.forEach((r, i) =>
    (data as Float64Array).set((t.data as Float64Array).subarray(r * per, (r + 1) * per), i * per)
  );
  return { dtype: t.dtype, dims: [pick.length, ...t.dims.slice(1)], data } as HostTensor;
}

/**
 * An input a mode does not read: its first symbolic dimension 0 (no data), other symbolic ones 1, fixed ones
 * as they are (the accumulation axis).
 */
function emptyOf(dtype: string, shape: readonly (number | string)[]): HostTensor {
  const first = shape.findIndex((d) => typeof d !== "number");
  return zeros(dtype, shape.map((d, i) => (i === first ? 0 : typeof d === "number" ? d : 1)));
}
