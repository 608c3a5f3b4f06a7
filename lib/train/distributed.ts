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
import type { GraphBuilder } from "../graph/builder.ts";
import {
  buildShardOptimizerGraph,
  type GradientIO,
  SHARD_OPTIMIZER,
  SHARE_INPUT,
} from "../graph/distributed.ts";
import type { OptimizerConfig } from "../graph/optim.ts";
import {
  allGatherPadded,
  type Communicator,
  paddedShard,
  reduceScatterPadded,
} from "../runtime/comm/communicator.ts";
import { ModelSession, type SessionOptions } from "../runtime/session.ts";
import { type HostTensor, zeros } from "../runtime/tensor.ts";
import { type ChunkResult, runScoringMode } from "../runtime/training_session.ts";
import { sequenceLengths } from "../data/tokenize.ts";
import {
  assembleChunk,
  BATCH_INPUTS,
  type ChunkOptions,
  type ChunkTensors,
  type PlannedStep,
} from "./chunks.ts";
import type { PreparedExample } from "./prepare.ts";
import { FP16_LOSS_SCALING } from "./train_graph.ts";

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
 */
export class DistributedSession {
  /** The packed parameters (whole on every rank); replaced, never written, by a step. */
  #packed: Float32Array;
  /** AdamW's moments: the whole packed length (DDP) or this rank's slice [start, end) (ZeRO-1). */
  #m: Float32Array;
  #v: Float32Array;
  #step = 0;
  /** With loss scaling: the scale the next step uses, and the finite steps in a row since it last changed. */
  #lossScale: number;
  #goodSteps = 0;
  readonly #slice: { start: number; end: number; block: number };

  private constructor(
    readonly comm: Communicator,
    readonly io: GradientIO,
    readonly gradSession: ModelSession,
    readonly optSession: ModelSession,
    readonly opts: DistributedOptions,
    packed: Float32Array,
  ) {
    this.#packed = packed;
    const n = packed.length;
    const { start, end, block } = paddedShard(n, comm.size, comm.rank);
    this.#slice = { start, end, block };
    const own = this.zero === 1 ? end - start : n;
    this.#m = new Float32Array(own);
    this.#v = new Float32Array(own);
    this.#lossScale = Math.fround(opts.lossScale ?? FP16_LOSS_SCALING.init);
  }

  get zero(): ZeroStage {
    return this.opts.zero ?? 0;
  }

  /** Elements of the packed state. */
  get size(): number {
    return this.#packed.length;
  }

  /** Bytes of optimizer state this rank holds (both moments). */
  get optimizerStateBytes(): number {
    return this.#m.byteLength + this.#v.byteLength;
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
      const packed = new Float32Array(io.packed.shape[0] * io.packed.shape[1]);
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
      const { optimizer, maxGradNorm, zero: _z, hashEvery: _h, lossScale: _l, ...session } = opts;
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
      await comm.broadcast(packed, 0);
      return new DistributedSession(comm, io, gradSession, optSession, opts, packed);
    } catch (e) {
      throw rankError(comm, e);
    }
  }

  /**
   * Runs `lrs.length` optimizer steps on batches stacked along axis 0 (one slice per step), this rank's
   * share of each: {@link import("../runtime/training_session.ts").TrainingSession.run}'s contract. The
   * loss and metrics returned are the means over the ranks (the global batch's).
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
    const { comm, io } = this;
    const N = comm.size;
    const all: Record<string, HostTensor> = {
      [io.packed.name]: { dtype: "float32", dims: io.packed.shape, data: this.#packed },
      ...feeds,
    };
    if (io.lossScale) all[io.lossScale] = this.#scaleTensor();
    if (io.scoring) {
      all[io.scoring.mode] = { dtype: "bool", dims: [], data: Uint8Array.of(1) };
      for (const b of io.scoring.inputs) all[b.graph] = emptyOf(b.dtype, b.shape);
    }
    // a rank without prompts in this step (a short last batch split over more ranks than it has prompts)
    // runs nothing: its share of the loss and the gradient is 0, and it takes part in the collectives
    const rows = this.#rowsOf(feeds);
    const out = rows > 0 ? await this.gradSession.run(all, [io.gradient, io.loss, ...io.metrics]) : undefined;
    const grad = out ? out[io.gradient].data as Float32Array : new Float32Array(this.#packed.length);
    const scalar = (n: string) => out ? (out[n].data as Float32Array)[0] : 0;
    // the global batch's loss: the sum of the ranks' weighted ones; its metrics (means over rows): the ranks'
    // weighted by their rows
    const scalars = Float64Array.from([scalar(io.loss), rows, ...io.metrics.map((m) => rows * scalar(m))]);
    if (N > 1) await comm.allReduce(scalars, "sum");
    const { start, end, block } = this.#slice;
    // each rank's gradient is weighted by its shares (the gradient graph's `train.share`): their sum is the
    // global batch's mean gradient
    let full: Float32Array | undefined, part: Float32Array;
    if (this.zero === 0) {
      if (N > 1) await comm.allReduce(grad, "sum");
      full = grad;
      part = grad.subarray(start, end);
    } else {
      const { shard } = N > 1 ? await reduceScatterPadded(comm, grad, "sum") : { shard: grad };
      part = shard.subarray(0, end - start);
    }
    // the global norm from each rank's slice (the same sum for DDP and ZeRO-1)
    let sq = 0;
    for (let i = 0; i < part.length; i++) sq += part[i] * part[i];
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
      const next = await this.#adamw(this.#packed, full!, 0, lr, coef);
      this.#packed = next.params;
    } else {
      const own = this.#packed.subarray(start, end);
      const send = new Float32Array(block);
      if (own.length) send.set((await this.#adamw(own, part, start, lr, coef)).params);
      this.#packed = N > 1 ? await allGatherPadded(comm, send, this.#packed.length) : send;
    }
    this.#step++;
    return result;
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

  /** AdamW on elements [at, at + p.length) of the packed state; this rank's moments are replaced. */
  async #adamw(p: Float32Array, g: Float32Array, at: number, lr: number, coef: number) {
    const n = p.length;
    const decayUntil = Math.max(0, Math.min(n, this.io.decayElements - at));
    const f = (data: Float32Array): HostTensor => ({ dtype: "float32", dims: [n], data });
    const feeds: Record<string, HostTensor> = {
      [SHARD_OPTIMIZER.params]: f(p),
      [SHARD_OPTIMIZER.grad]: f(g),
      [SHARD_OPTIMIZER.m]: f(this.#m),
      [SHARD_OPTIMIZER.v]: f(this.#v),
      [SHARD_OPTIMIZER.step]: { dtype: "float32", dims: [], data: Float32Array.of(this.#step) },
      [SHARD_OPTIMIZER.lr]: { dtype: "float32", dims: [], data: Float32Array.of(lr) },
      [SHARD_OPTIMIZER.decayUntil]: { dtype: "int64", dims: [], data: BigInt64Array.of(BigInt(decayUntil)) },
    };
    if (this.optSession.inputNames.includes(SHARD_OPTIMIZER.coef)) {
      feeds[SHARD_OPTIMIZER.coef] = { dtype: "float32", dims: [], data: Float32Array.of(coef) };
    }
    const out = await this.optSession.run(feeds, [
      SHARD_OPTIMIZER.nextParams,
      SHARD_OPTIMIZER.nextM,
      SHARD_OPTIMIZER.nextV,
    ]);
    this.#m = out[SHARD_OPTIMIZER.nextM].data as Float32Array;
    this.#v = out[SHARD_OPTIMIZER.nextV].data as Float32Array;
    return { params: out[SHARD_OPTIMIZER.nextParams].data as Float32Array };
  }

  /**
   * Checks that every rank holds the same parameters (a collective): fails on every rank, naming the ranks
   * whose parameters differ from rank 0's.
   */
  async checkParams(): Promise<void> {
    const { comm } = this;
    if (comm.size === 1) return;
    const mine = Float64Array.of(hashFloats(this.#packed));
    const all = new Float64Array(comm.size);
    await comm.allGather(mine, all);
    const differ = [...all.keys()].filter((r) => all[r] !== all[0]);
    if (differ.length) {
      throw new Error(
        `${rankPrefix(comm)}the ranks' parameters differ after step ${this.#step}: rank${
          differ.length > 1 ? "s" : ""
        } ${differ.join(", ")} hold${differ.length > 1 ? "" : "s"} other values than rank 0 (hashes ${
          [...all].map((h, r) => `${r}: ${h.toString(16)}`).join(", ")
        })`,
      );
    }
  }

  /** The parameters by name: views of the packed buffer (whole on every rank), which later steps replace. */
  current(): Record<string, Float32Array> {
    return Object.fromEntries(
      this.io.packed.members.map((m) => [m.name, this.#packed.subarray(m.offset, m.offset + m.length)]),
    );
  }

  /** The whole AdamW moments (a collective under ZeRO-1: every rank gathers the slices). */
  async #moments(): Promise<[Float32Array, Float32Array]> {
    if (this.zero === 0) return [this.#m, this.#v];
    const n = this.#packed.length, { block } = this.#slice;
    const whole = async (own: Float32Array) => {
      if (this.comm.size === 1) return own;
      const send = new Float32Array(block);
      send.set(own);
      return await allGatherPadded(this.comm, send, n);
    };
    return [await whole(this.#m), await whole(this.#v)];
  }

  /**
   * The state under the parameters' names, as a one-process run's checkpoint holds it (TrainingSession's
   * `namedState`): one logical checkpoint whatever the world size. A collective: every rank calls it (the
   * ranks' parameters are compared first); rank 0 writes it.
   */
  async namedState(): Promise<{
    tensors: Record<string, { shape: number[]; data: Float32Array }>;
    scalars: Record<string, number>;
  }> {
    try {
      await this.checkParams();
      const moments = await this.#moments();
      const shapes = new Map(this.io.params.map((p) => [p.name, p.shape]));
      const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
      for (const m of this.io.packed.members) {
        const shape = shapes.get(m.name)!;
        tensors[m.name] = { shape, data: this.#packed.subarray(m.offset, m.offset + m.length) };
        SLOTS.forEach((slot, j) => {
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
    const n = this.#packed.length;
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
    const { start, end } = this.#slice;
    this.#packed = packed;
    this.#m = this.zero === 1 ? m.slice(start, end) : m;
    this.#v = this.zero === 1 ? v.slice(start, end) : v;
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
    const all: Record<string, HostTensor> = {
      [sc.mode]: { dtype: "bool", dims: [], data: Uint8Array.of(0) },
      [this.io.packed.name]: { dtype: "float32", dims: this.io.packed.shape, data: this.#packed },
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

  /** Frees both sessions. */
  async release(): Promise<void> {
    await this.gradSession.release();
    await this.optSession.release();
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

/**
 * Where rank `rank` of `size` starts in a micro-batch of `m` prompts, and how many it takes: the prompts split
 * as evenly as they go, the first `m mod size` ranks taking one more (some none when `m < size`).
 */
export function rankPart(m: number, world: { rank: number; size: number }): { start: number; count: number } {
  const base = Math.floor(m / world.size), extra = m % world.size;
  return {
    start: world.rank * base + Math.min(world.rank, extra),
    count: base + (world.rank < extra ? 1 : 0),
  };
}

/**
 * This rank's share of each global step: from each of the step's A micro-batches of G / A prompts, this
 * rank's contiguous part ({@link rankPart}) — whole prompts, all K responses with them. Any step one process
 * can take (G a multiple of A) splits; a part may be empty.
 */
export function rankSteps(
  steps: readonly PlannedStep[],
  world: { rank: number; size: number },
  accumulation: number,
): PlannedStep[] {
  const A = accumulation;
  return steps.map((st) => {
    const G = st.indices.length;
    if (G % A !== 0) {
      throw new RangeError(`a step of ${G} prompts cannot be split into ${A} micro-batches`);
    }
    const micro = G / A, { start, count } = rankPart(micro, world);
    const indices: number[] = [];
    for (let a = 0; a < A; a++) {
      indices.push(...st.indices.slice(a * micro + start, a * micro + start + count));
    }
    return { epoch: st.epoch, indices };
  });
}

/**
 * This rank's share of each micro-batch of `steps` (`[steps × accumulation]`, float32): its part of the
 * micro-batch's loss denominator over the whole — prompts, or for SFT (a mean over response tokens) its
 * prompts' response tokens. The ranks' shares of a micro-batch add up to 1.
 */
export function rankShares(
  examples: PreparedExample[],
  steps: readonly PlannedStep[],
  world: { rank: number; size: number },
  o: { accumulation: number; loss: ChunkOptions["loss"] },
): Float32Array {
  const A = o.accumulation;
  const weight = (i: number) =>
    o.loss === "sft" ? examples[i].responseIds.reduce((n, r) => n + r.length, 0) : 1;
  const out = new Float32Array(steps.length * A);
  steps.forEach((st, si) => {
    const micro = st.indices.length / A, { start, count } = rankPart(micro, world);
    for (let a = 0; a < A; a++) {
      const all = st.indices.slice(a * micro, (a + 1) * micro);
      const whole = all.reduce((n, i) => n + weight(i), 0);
      const mine = all.slice(start, start + count).reduce((n, i) => n + weight(i), 0);
      out[si * A + a] = whole > 0 ? mine / whole : 0;
    }
  });
  return out;
}

/** The width a chunk of `steps` pads to in one process (assembleChunk's rule): the longest sequence, rounded up. */
export function chunkWidth(examples: PreparedExample[], steps: readonly PlannedStep[], mult = 8): number {
  const lengths = sequenceLengths(steps.flatMap((s) => s.indices.map((i) => examples[i])));
  return Math.ceil(Math.max(0, ...lengths) / mult) * mult;
}

/**
 * A chunk of this rank's shares of the global `steps` (see {@link rankSteps}): padded to the global batch's
 * width, with the rank's share of each micro-batch ({@link rankShares}, the gradient graph's `train.share`)
 * and the rows of the global micro-batch before this rank's part for keyed dropout (`rowOffset`: the graph
 * takes `dropout_row_offset`). A rank without prompts in these steps gets batch inputs of 0 rows (the session
 * then runs nothing).
 */
export function assembleRankChunk(
  examples: PreparedExample[],
  steps: PlannedStep[],
  reference: Float32Array[] | undefined,
  o: ChunkOptions,
  world: { rank: number; size: number },
  rowOffset: boolean,
): ChunkTensors {
  const S = steps.length, A = o.accumulation;
  const mine = rankSteps(steps, world, A);
  const width = chunkWidth(examples, steps, o.padToMultipleOf ?? 8);
  const lead = A > 1 ? [S, A] : [S];
  const opts = { ...o, minWidth: Math.max(o.minWidth ?? 0, width) };
  let tensors: ChunkTensors;
  if (mine[0].indices.length > 0) tensors = assembleChunk(examples, mine, reference, opts);
  else {
    // the shapes of one prompt per micro-batch, with the rows (and prompts) axis emptied
    const one = assembleChunk(
      examples,
      steps.map((st) => ({ ...st, indices: st.indices.slice(0, A) })),
      reference,
      opts,
    );
    const feeds = Object.fromEntries(
      Object.entries(one.feeds).map(([name, t]) => {
        if (t.dims.length <= lead.length) return [name, t];
        const dims = t.dims.map((d, i) => (i === lead.length ? 0 : d));
        return [name, { ...t, dims, data: t.data.subarray(0, 0) } as HostTensor];
      }),
    );
    tensors = { feeds, tokens: one.tokens.map(() => 0), prompts: 0, width: one.width };
  }
  tensors.feeds[SHARE_INPUT] = {
    dtype: "float32",
    dims: lead,
    data: rankShares(examples, steps, world, { accumulation: A, loss: o.loss }),
  };
  if (rowOffset && o.dropout) {
    const rowsBefore = rankPart(steps[0].indices.length / A, world).start * o.k;
    tensors.feeds[BATCH_INPUTS.dropoutRowOffset] = {
      dtype: "float32",
      dims: lead,
      data: new Float32Array(S * A).fill(rowsBefore),
    };
  }
  return tensors;
}
