/**
 * Runs a training graph chunk by chunk: holds the trainable state (parameters, optimizer moments, step
 * counter, loss scale) in host memory between session runs, feeds it with a chunk of stacked batches and
 * learning rates, and takes back the updated state and the per-step scans.
 * @module
 */
import type { GraphBuilder } from "../graph/builder.ts";
import type { TrainingIO } from "../graph/training.ts";
import { type HostTensor, ModelSession, type SessionOptions } from "./session.ts";

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
  private constructor(
    readonly session: ModelSession,
    readonly io: TrainingIO,
    readonly state: Map<string, Float32Array>,
  ) {}

  /**
   * Serializes and loads a training graph. `params` gives each trainable parameter's initial values;
   * optimizer slots start at zero, the step counter at 0, the loss scale at its configured initial value.
   */
  static async create(
    built: { graph: GraphBuilder; io: TrainingIO },
    params: Record<string, Float32Array>,
    opts: SessionOptions & { lossScale?: number } = {},
  ): Promise<TrainingSession> {
    const state = new Map<string, Float32Array>();
    for (const s of built.io.state) {
      const size = s.shape.reduce((a, b) => a * b, 1);
      let v: Float32Array;
      if (s.name in params) v = Float32Array.from(params[s.name]);
      else if (s.name === "train.loss_scale") v = new Float32Array([opts.lossScale ?? 65536]);
      else v = new Float32Array(size);
      if (v.length !== size) {
        throw new RangeError(`parameter ${s.name}: ${v.length} values for shape [${s.shape.join(", ")}]`);
      }
      state.set(s.name, v);
    }
    const session = await ModelSession.create(built.graph.build(), {
      ...opts,
      describe: opts.describe ?? ((n) => built.graph.describe(n)),
    });
    return new TrainingSession(session, built.io, state);
  }

  /** Runs `lrs.length` optimizer steps on batches stacked along axis 0 (one slice per step). */
  async run(batches: Record<string, HostTensor>, lrs: readonly number[]): Promise<ChunkResult> {
    const feeds: Record<string, HostTensor> = {};
    for (const s of this.io.state) {
      feeds[s.name] = { dtype: "float32", dims: s.shape, data: this.state.get(s.name)! };
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
    const out = await this.session.run(feeds);
    for (const s of this.io.state) this.state.set(s.name, out[`${s.name}.next`].data as Float32Array);
    const scan = (n: string) => out[n].data as Float32Array;
    return {
      steps: lrs.length,
      loss: scan("train.loss"),
      gradNorm: scan("train.grad_norm"),
      skipped: scan("train.skipped"),
      lossScale: this.io.scans.includes("train.loss_scale.used") ? scan("train.loss_scale.used") : undefined,
      metrics: Object.fromEntries(this.io.metrics.map((m) => [m, scan(m)])),
    };
  }

  /** A copy of the state (for checkpoints). */
  snapshot(): Record<string, Float32Array> {
    return Object.fromEntries([...this.state].map(([k, v]) => [k, v.slice()]));
  }

  /** Restores a snapshot. */
  restore(snap: Record<string, Float32Array>): void {
    for (const s of this.io.state) {
      const v = snap[s.name];
      if (!v) throw new TypeError(`checkpoint lacks "${s.name}"`);
      if (v.length !== this.state.get(s.name)!.length) {
        throw new RangeError(`checkpoint "${s.name}" has the wrong size`);
      }
      this.state.set(s.name, v.slice());
    }
  }

  async release(): Promise<string | undefined> {
    return await this.session.release();
  }
}
