/**
 * ONNX Runtime sessions for the toolkit's graphs: creation from bytes (with external data), CPU or CUDA,
 * thread counts and optimization level, and run errors that name the failing operator and the shapes
 * of what was fed.
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import type { SerializedModel } from "../graph/serialize.ts";

/** Where a session runs. */
export type Device = "cpu" | "cuda";

/** Options for {@link ModelSession.create}. */
export type SessionOptions = {
  device?: Device;
  /** Threads inside one operator (CPU). Default: all cores. */
  intraOpThreads?: number;
  interOpThreads?: number;
  /** ONNX Runtime graph optimization level. Default "all". */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /** Turns on ONNX Runtime's profiler; the trace file is written at release with this prefix. */
  profilePrefix?: string;
  /** Explains a node by name in error messages (the builder's `describe`). */
  describe?: (nodeName: string) => string | undefined;
  /** CUDA device index. */
  deviceId?: number;
};

/** A tensor in host memory: what crosses the JS boundary. */
export type HostTensor = {
  dtype: "float32" | "float64" | "int32" | "int64" | "bool" | "uint8";
  dims: readonly number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
};

/** A loaded model ready to run. */
export class ModelSession {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly device: Device,
    private readonly describe?: (nodeName: string) => string | undefined,
    private readonly profilePrefix?: string,
  ) {}

  /** Creates a session from serialized model bytes (and their external data) or a file path. */
  static async create(
    model: SerializedModel | Uint8Array | string,
    opts: SessionOptions = {},
  ): Promise<ModelSession> {
    const device = opts.device ?? "cpu";
    const so: ort.InferenceSession.SessionOptions = {
      executionProviders: device === "cuda" ? [{ name: "cuda", deviceId: opts.deviceId ?? 0 }] : ["cpu"],
      graphOptimizationLevel: opts.optimization ?? "all",
      intraOpNumThreads: opts.intraOpThreads ?? navigator.hardwareConcurrency,
      interOpNumThreads: opts.interOpThreads ?? 1,
      logSeverityLevel: 3,
    };
    if (opts.profilePrefix) {
      so.enableProfiling = true;
      so.profileFilePrefix = opts.profilePrefix;
    }
    let session: ort.InferenceSession;
    try {
      if (typeof model === "string") session = await ort.InferenceSession.create(model, so);
      else if (model instanceof Uint8Array) session = await ort.InferenceSession.create(model, so);
      else {
        if (model.externalData) {
          so.externalData = [{ path: model.externalData.path, data: model.externalData.data }];
        }
        session = await ort.InferenceSession.create(model.model, so);
      }
    } catch (e) {
      throw new Error(`ONNX Runtime could not load the model on ${device}: ${explain(e, opts.describe)}`, {
        cause: e,
      });
    }
    return new ModelSession(session, device, opts.describe, opts.profilePrefix);
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Runs the model; returns the requested outputs (all by default) as host tensors. */
  async run(
    feeds: Record<string, HostTensor>,
    outputs?: readonly string[],
  ): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = toOrt(t);
    let result: ort.InferenceSession.ReturnType;
    try {
      result = outputs ? await this.session.run(ortFeeds, [...outputs]) : await this.session.run(ortFeeds);
    } catch (e) {
      const shapes = Object.entries(feeds).map(([n, t]) => `${n}: ${t.dtype}[${t.dims.join(", ")}]`).join(
        "; ",
      );
      throw new Error(`ONNX Runtime failed: ${explain(e, this.describe)}\n  fed: ${shapes}`, { cause: e });
    }
    const out: Record<string, HostTensor> = {};
    for (const [name, t] of Object.entries(result)) out[name] = fromOrt(t);
    return out;
  }

  /** Ends the profiler (if on) and frees the session. Returns the profile file, if any. */
  async release(): Promise<string | undefined> {
    if (this.profilePrefix) this.session.endProfiling();
    await this.session.release();
    return this.profilePrefix ? newestProfile(this.profilePrefix) : undefined;
  }
}

/**
 * The trace ONNX Runtime wrote for `prefix` (it appends `_<date>.json`): the newest match. onnxruntime-node
 * 1.29's `endProfiling` does not return the file name, so it is found on disk.
 */
function newestProfile(prefix: string): string | undefined {
  const dir = dirname(resolve(prefix)), base = basename(prefix);
  let best: { path: string; mtime: number } | undefined;
  for (const e of Deno.readDirSync(dir)) {
    if (!e.isFile || !e.name.startsWith(`${base}_`) || !e.name.endsWith(".json")) continue;
    const path = join(dir, e.name);
    const mtime = Deno.statSync(path).mtime?.getTime() ?? 0;
    if (!best || mtime >= best.mtime) best = { path, mtime };
  }
  return best?.path;
}

function explain(e: unknown, describe?: (name: string) => string | undefined): string {
  const msg = e instanceof Error ? e.message : String(e);
  const m = msg.match(/node\. Name:'([^']+)'/) ?? msg.match(/Node \(([^)]+)\)/) ??
    msg.match(/node '([^']+)'/);
  const d = m && describe?.(m[1]);
  return d ? `${msg}\n  at ${d}` : msg;
}

function toOrt(t: HostTensor): ort.Tensor {
  if (t.dtype === "bool") return new ort.Tensor("bool", t.data as Uint8Array, t.dims);
  return new ort.Tensor(t.dtype, t.data as Float32Array, t.dims);
}

function fromOrt(t: ort.Tensor): HostTensor {
  const dtype = t.type as HostTensor["dtype"];
  if (!["float32", "float64", "int32", "int64", "bool", "uint8"].includes(dtype)) {
    throw new TypeError(`output of type ${t.type}: keep graph outputs fp32/int32/int64`);
  }
  return { dtype, dims: t.dims, data: t.data as HostTensor["data"] };
}

/** Shorthand for a float32 host tensor. */
export function f32(data: ArrayLike<number>, dims: readonly number[]): HostTensor {
  return { dtype: "float32", dims, data: data instanceof Float32Array ? data : Float32Array.from(data) };
}

/** Shorthand for a float64 host tensor. */
export function f64(data: ArrayLike<number>, dims: readonly number[]): HostTensor {
  return { dtype: "float64", dims, data: data instanceof Float64Array ? data : Float64Array.from(data) };
}

/** Shorthand for an int64 host tensor. */
export function i64(data: ArrayLike<number>, dims: readonly number[]): HostTensor {
  return { dtype: "int64", dims, data: BigInt64Array.from(Array.from(data), (v) => BigInt(v)) };
}

/** Shorthand for an int32 host tensor. */
export function i32(data: ArrayLike<number>, dims: readonly number[]): HostTensor {
  return { dtype: "int32", dims, data: data instanceof Int32Array ? data : Int32Array.from(data) };
}
