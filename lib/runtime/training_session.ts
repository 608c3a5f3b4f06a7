/**
 * Runs a training graph chunk by chunk: holds the trainable state (parameters, optimizer moments, step
 * counter, loss scale) in host memory between session runs, feeds it with a chunk of stacked batches and
 * learning rates, and takes back the updated state and the per-step scans.
 *
 * The parameters live in one buffer laid out as the graph takes them ({@link TrainingIO.packed}); each
 * parameter is a view of it. A run returns new buffers and the state then points at them: arrays handed
 * out are never written to afterwards, so {@link TrainingSession.current} can give them without a copy.
 *
 * The state is held by the session between runs (in the device's memory where the backend can keep it
 * there): a run's `.next` outputs are the next run's inputs as they are, and only the scans come back to
 * JavaScript; the host arrays are read from the held tensors when asked for ({@link TrainingSession.state},
 * checkpoints, the export).
 * @module
 */
import type { GraphBuilder } from "../graph/builder.ts";
import type { BatchInput, TrainingIO } from "../graph/training.ts";
import { ModelSession, type SessionOptions } from "./session.ts";
import { type HeldTensor, type HostTensor, type Placement, zeros } from "./tensor.ts";
import { releaseFreeMemory } from "./device_memory.ts";

/**
 * A tensor of `shape` with its first dimension `first` (0: empty) and its other symbolic dimensions 1:
 * what a mode that does not read an input is fed for it.
 */
function empty(dtype: BatchInput["dtype"], shape: readonly (number | string)[], first: number): HostTensor {
  return zeros(dtype, shape.map((d, i) => (i === 0 ? first : typeof d === "number" ? d : 1)));
}

/** PyTorch's names of the optimizer slots (`train.m` is AdamW's first moment, …). */
const SLOT_NAMES: Record<string, string> = { m: "exp_avg", v: "exp_avg_sq", buf: "momentum_buffer" };

function slotName(stateName: string): string {
  const slot = stateName.replace(/^train\./, "");
  return SLOT_NAMES[slot] ?? slot;
}

/** A state this large is given back to the system as soon as a run replaces it. */
const LARGE_STATE_BYTES = 64 * 2 ** 20;

/** Per-step results of one chunk. */
export type ChunkResult = {
  steps: number;
  loss: Float32Array;
  gradNorm: Float32Array;
  skipped: Float32Array;
  /** The loss scale each step ran with (graphs with loss scaling only). */
  lossScale?: Float32Array;
  metrics: Record<string, Float32Array>;
};

/** A training graph loaded in a session, with its state. */
export class TrainingSession {
  /** Parameter names, which live in {@link TrainingSession.packed}. */
  readonly #members: Set<string>;
  /** Every parameter (a view of the packed buffer) and the optimizer's state, by name. */
  readonly #state: Map<string, Float32Array>;
  private packed: Float32Array;
  /** The state as the session holds it, by graph input name (the packed buffer's included). */
  #held = new Map<string, HeldTensor>();
  /** Whether {@link #state} is behind {@link #held} (a run since it was read). */
  #stale = false;

  private constructor(
    readonly session: ModelSession,
    readonly io: TrainingIO,
    state: Map<string, Float32Array>,
    packed: Float32Array,
  ) {
    this.#members = new Set(io.packed.members.map((m) => m.name));
    this.#state = state;
    this.packed = packed;
  }

  /**
   * Every parameter (a view of the packed buffer) and the optimizer's state, by name: read-only (change it
   * with {@link restore}); read from the session when a run has changed it.
   */
  get state(): ReadonlyMap<string, Float32Array> {
    if (this.#stale) {
      const host = (name: string) => this.session.toHost(this.#held.get(name)!).data as Float32Array;
      const packed = host(this.io.packed.name);
      for (const s of this.io.state) {
        if (!this.#members.has(s.name)) this.#state.set(s.name, host(s.name));
      }
      this.#stale = false;
      this.#setPacked(packed);
    }
    return this.#state;
  }

  /**
   * Serializes and loads a training graph. `params` gives each trainable parameter's initial values
   * (copied into the packed buffer: the caller may drop them); optimizer slots start at zero, the step
   * counter at 0, the loss scale at its configured initial value.
   */
  static async create(
    built: { graph: GraphBuilder; io: TrainingIO },
    params: Record<string, Float32Array>,
    opts: SessionOptions & { lossScale?: number } = {},
  ): Promise<TrainingSession> {
    const { io } = built;
    const packed = new Float32Array(io.packed.shape[0] * io.packed.shape[1]);
    const state = new Map<string, Float32Array>();
    const members = new Map(io.packed.members.map((m) => [m.name, m]));
    for (const s of io.state) {
      const size = s.shape.reduce((a, b) => a * b, 1);
      const m = members.get(s.name);
      if (m) {
        const v = params[s.name];
        if (!v || v.length !== size) {
          throw new RangeError(
            `parameter ${s.name}: ${v?.length ?? 0} values for shape [${s.shape.join(", ")}]`,
          );
        }
        packed.set(v, m.offset);
        continue;
      }
      state.set(
        s.name,
        s.name === "train.loss_scale" ? new Float32Array([opts.lossScale ?? 65536]) : new Float32Array(size),
      );
    }
    // a full model's state (full fine-tuning: no frozen weights in files): no memory patterns, as for a
    // model session (see session.ts), and no arena, which would keep the replaced state's gigabytes
    // (SmolLM-135M full fine-tuning: 6.5 GiB at the peak without it, 8.0 with it)
    const large = packed.byteLength >= LARGE_STATE_BYTES;
    const session = await ModelSession.create(built.graph.build(), {
      ...opts,
      memoryArena: opts.memoryArena ?? (large ? false : undefined),
      memoryPattern: opts.memoryPattern ?? (large ? false : undefined),
      describe: opts.describe ?? ((n) => built.graph.describe(n)),
    });
    const ts = new TrainingSession(session, io, state, packed);
    ts.#setPacked(packed);
    ts.#hold();
    return ts;
  }

  /** The session holds the host state (over its arrays, no copy where it can), replacing what it held. */
  #hold(): void {
    for (const v of this.#held.values()) v.release();
    this.#held.clear();
    const dims = this.io.packed.shape;
    this.#held.set(this.io.packed.name, this.session.hold({ dtype: "float32", dims, data: this.packed }));
    for (const s of this.io.state) {
      if (this.#members.has(s.name)) continue;
      const data = this.#state.get(s.name)!;
      this.#held.set(s.name, this.session.hold({ dtype: "float32", dims: s.shape, data }));
    }
    this.#stale = false;
  }

  /** Points the parameters' views at `packed`. */
  #setPacked(packed: Float32Array): void {
    this.packed = packed;
    for (const m of this.io.packed.members) {
      this.#state.set(m.name, packed.subarray(m.offset, m.offset + m.length));
    }
  }

  /** Runs `lrs.length` optimizer steps on batches stacked along axis 0 (one slice per step). */
  async run(batches: Record<string, HostTensor>, lrs: readonly number[]): Promise<ChunkResult> {
    const feeds: Record<string, HostTensor | HeldTensor> = Object.fromEntries(this.#held);
    if (this.io.scoring) {
      feeds[this.io.scoring.mode] = { dtype: "bool", dims: [], data: Uint8Array.of(1) };
      for (const b of this.io.scoring.inputs) feeds[b.graph] = empty(b.dtype, b.shape, 1);
    }
    for (const b of this.io.stacked) {
      if (b.name === "train.lr") continue;
      const t = batches[b.name];
      if (!t) throw new TypeError(`missing batch input "${b.name}"`);
      if (t.dims[0] !== lrs.length) {
        throw new RangeError(
          `batch input "${b.name}" stacks ${t.dims[0]} steps but ${lrs.length} learning rates were given`,
        );
      }
      feeds[b.name] = t;
    }
    feeds["train.lr"] = { dtype: "float32", dims: [lrs.length], data: Float32Array.from(lrs) };
    // the state's `.next` outputs stay with the session, to replace what it holds; only the scans come back
    const where: Record<string, Placement> = {};
    for (const name of this.#held.keys()) where[`${name}.next`] = "device";
    for (const n of this.io.scans) where[n] = "host";
    const out = await this.session.run(feeds, where);
    for (const [name, v] of this.#held) {
      v.release();
      this.#held.set(name, out[`${name}.next`] as HeldTensor);
    }
    this.#stale = true;
    // a full model's old state is garbage now: gigabytes V8 and glibc would hold until much later
    if (this.packed.byteLength >= LARGE_STATE_BYTES) releaseFreeMemory();
    const scan = (n: string) => (out[n] as HostTensor).data as Float32Array;
    return {
      steps: lrs.length,
      loss: scan("train.loss"),
      gradNorm: scan("train.grad_norm"),
      skipped: scan("train.skipped"),
      lossScale: this.io.scans.includes("train.loss_scale.used") ? scan("train.loss_scale.used") : undefined,
      metrics: Object.fromEntries(this.io.metrics.map((m) => [m, scan(m)])),
    };
  }

  /**
   * Runs the graph's scoring mode (see `TrainingSpec.scoring`) on the current parameters: `feeds` and the
   * outputs go by their names in the scoring spec. What a scoring session would compute, from this
   * session's weights.
   */
  async score(
    feeds: Record<string, HostTensor>,
    outputs: readonly string[],
  ): Promise<Record<string, HostTensor>> {
    const sc = this.io.scoring;
    if (!sc) throw new TypeError("this training graph has no scoring mode");
    // what training reads goes in empty (the moments, the batches), or as it is when tiny (scalars)
    const all: Record<string, HostTensor | HeldTensor> = {
      [sc.mode]: { dtype: "bool", dims: [], data: Uint8Array.of(0) },
      [this.io.packed.name]: this.#held.get(this.io.packed.name)!,
    };
    for (const s of this.io.state) {
      if (this.#members.has(s.name)) continue;
      all[s.name] = s.shape.length ? empty("float32", s.shape, 0) : this.#scalar(s.name);
    }
    for (const b of this.io.stacked) all[b.name] = empty(b.dtype, ["steps", ...b.shape], 0);
    return await runScoringMode(sc, all, feeds, outputs, (f, names) => this.session.run(f, names));
  }

  /** A scalar of the state (the step counter, the loss scale) as a host tensor. */
  #scalar(name: string): HostTensor {
    return { dtype: "float32", dims: [], data: this.session.toHost(this.#held.get(name)!).data };
  }

  /** The scoring mode as a scorer (`run(feeds, outputs)`, as a scoring session has it). */
  scorer(): {
    run: (f: Record<string, HostTensor>, o: readonly string[]) => Promise<Record<string, HostTensor>>;
  } {
    return { run: (feeds, outputs) => this.score(feeds, outputs) };
  }

  /** A copy of the state. */
  snapshot(): Record<string, Float32Array> {
    return Object.fromEntries([...this.state].map(([k, v]) => [k, v.slice()]));
  }

  /**
   * The state as it is now, without a copy (checkpoints, the export): a later run replaces these arrays
   * rather than writing into them, so they stay as they are.
   */
  current(): Record<string, Float32Array> {
    return Object.fromEntries(this.state);
  }

  /**
   * The state under the parameters' own names, as a checkpoint stores it: each parameter with its shape,
   * its optimizer slots beside it (`<name>.exp_avg`, `<name>.exp_avg_sq` for AdamW, `<name>.momentum_buffer`
   * for SGD, PyTorch's names: views of the packed buffers, no copies), and the scalar state (`step`,
   * `loss_scale`, `good_steps`). {@link restoreNamed} takes it back. (`root` is the data-parallel session's:
   * one process holds the whole state.)
   */
  namedState(_o: { root?: number } = {}): {
    tensors: Record<string, { shape: number[]; data: Float32Array }>;
    scalars: Record<string, number>;
  } {
    const state = this.state;
    const shapes = new Map(this.io.state.map((s) => [s.name, s.shape]));
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    const scalars: Record<string, number> = {};
    const slots = this.io.state.filter((s) => !this.#members.has(s.name) && s.shape.length === 2);
    for (const m of this.io.packed.members) {
      const shape = shapes.get(m.name)!;
      tensors[m.name] = { shape, data: state.get(m.name)! };
      for (const slot of slots) {
        const data = state.get(slot.name)!.subarray(m.offset, m.offset + m.length);
        tensors[`${m.name}.${slotName(slot.name)}`] = { shape, data };
      }
    }
    for (const s of this.io.state) {
      if (s.shape.length === 0) scalars[s.name.replace(/^train\./, "")] = state.get(s.name)![0];
    }
    return { tensors, scalars };
  }

  /** Restores what {@link namedState} gave (from a checkpoint), naming what is missing or misshapen. */
  restoreNamed(tensors: Record<string, Float32Array>, scalars: Record<string, number>): void {
    const snap: Record<string, Float32Array> = {};
    const slots = this.io.state.filter((s) => !this.#members.has(s.name) && s.shape.length === 2);
    const need = (name: string, length: number) => {
      const v = tensors[name];
      if (!v) throw new TypeError(`checkpoint lacks "${name}"`);
      if (v.length !== length) {
        throw new RangeError(`checkpoint "${name}" has ${v.length} values, not ${length}`);
      }
      return v;
    };
    for (const slot of slots) snap[slot.name] = new Float32Array(this.packed.length);
    for (const m of this.io.packed.members) {
      snap[m.name] = need(m.name, m.length);
      for (const slot of slots) {
        snap[slot.name].set(need(`${m.name}.${slotName(slot.name)}`, m.length), m.offset);
      }
    }
    for (const s of this.io.state) {
      if (s.shape.length !== 0) continue;
      const key = s.name.replace(/^train\./, "");
      if (typeof scalars[key] !== "number") throw new TypeError(`checkpoint lacks the scalar "${key}"`);
      snap[s.name] = Float32Array.of(scalars[key]);
    }
    this.restore(snap);
  }

  /** Restores a snapshot. */
  restore(snap: Record<string, Float32Array>): void {
    const packed = new Float32Array(this.packed.length);
    for (const s of this.io.state) {
      const v = snap[s.name];
      if (!v) throw new TypeError(`checkpoint lacks "${s.name}"`);
      if (v.length !== this.state.get(s.name)!.length) {
        throw new RangeError(`checkpoint "${s.name}" has the wrong size`);
      }
      const m = this.io.packed.members.find((x) => x.name === s.name);
      if (m) packed.set(v, m.offset);
      else this.#state.set(s.name, v.slice());
    }
    this.#setPacked(packed);
    this.#hold();
  }

  /** Frees the held state and the session; the profile file, if the session profiled. */
  async release(): Promise<string | undefined> {
    for (const v of this.#held.values()) v.release();
    this.#held.clear();
    return await this.session.release();
  }

  /** `await using` releases it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

/**
 * A run of a training graph's scoring mode: `fixed` (the mode flag, the parameters, what training reads, empty)
 * with `feeds` under their graph names, and the outputs back under the spec's names. Throws naming an input or
 * output the mode does not have.
 */
export async function runScoringMode<T>(
  sc: NonNullable<TrainingIO["scoring"]>,
  fixed: Record<string, T>,
  feeds: Record<string, HostTensor>,
  outputs: readonly string[],
  run: (feeds: Record<string, T | HostTensor>, outputs: string[]) => Promise<Record<string, HostTensor>>,
): Promise<Record<string, HostTensor>> {
  const all: Record<string, T | HostTensor> = { ...fixed };
  for (const [name, t] of Object.entries(feeds)) {
    const input = sc.inputs.find((b) => b.name === name);
    if (!input) throw new TypeError(`the scoring mode has no input "${name}"`);
    all[input.graph] = t;
  }
  const names = outputs.map((o) => {
    if (!sc.outputs[o]) throw new TypeError(`the scoring mode has no output "${o}"`);
    return sc.outputs[o];
  });
  const out = await run(all, names);
  return Object.fromEntries(outputs.map((o) => [o, out[sc.outputs[o]]]));
}
