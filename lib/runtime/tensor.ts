/**
 * What crosses a session's boundary, whatever runs it: tensors in JavaScript memory ({@link HostTensor}),
 * tensors a session keeps for its caller between runs ({@link HeldTensor}: a KV cache, a training state),
 * and the device a session runs on. The session contract (session.ts) and its backends (ort/) share these
 * types; neither imports the other for them.
 *
 * ```ts
 * import { f32, i64 } from "./tensor.ts";
 * const x = f32([1, 2, 3, 4], [2, 2]);
 * const ids = i64([5, 6], [1, 2]);
 * console.log(x.dims, ids.data); // [2, 2] BigInt64Array(2) [5n, 6n]
 * ```
 * @module
 */
import type { DType } from "../graph/dtype.ts";

/** Where a session runs. */
export type Device = "cpu" | "cuda";

/** A tensor in host memory: what crosses the JS boundary. */
export type HostTensor = {
  dtype: "float32" | "float64" | "int32" | "int64" | "bool" | "uint8";
  dims: readonly number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
};

/**
 * A tensor a session keeps for its caller: a run's output placed `"device"` (see `ModelSession.run`),
 * which the next run takes as it is. Where it lives is the session's business: device memory through the
 * C API, JavaScript memory through onnxruntime-node (which keeps nothing between runs). Release it (or let
 * `using` do so) once done; `ModelSession.toHost` reads it.
 */
export interface HeldTensor extends Disposable {
  readonly dtype: DType;
  readonly dims: readonly number[];
  /** Frees it now (idempotent). */
  release(): void;
}

/** Where a run's output goes: back to JavaScript, or kept by the session for the next run. */
export type Placement = "host" | "device";

/** A run's outputs, each as its placement asked: host tensors, or tensors the session holds. */
export type Placed<P extends Record<string, Placement>> = {
  [K in keyof P]: P[K] extends "host" ? HostTensor
    : P[K] extends "device" ? HeldTensor
    : HostTensor | HeldTensor;
};

/** What a run takes: host tensors (lent for the run) and held tensors (as they are). */
export type Feeds = Readonly<Record<string, HostTensor | HeldTensor>>;

/** The typed array that carries each host tensor type. */
export const HOST_ARRAYS = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  int64: BigInt64Array,
  bool: Uint8Array,
  uint8: Uint8Array,
} as const;

/** Whether a feed is a host tensor (it has its data in JavaScript). */
export function isHostTensor(t: HostTensor | HeldTensor): t is HostTensor {
  return "data" in t && ArrayBuffer.isView((t as HostTensor).data);
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

/**
 * A zero-filled host tensor of `dims` in `dtype` (float32 for a dtype a host tensor does not hold): what a
 * session is fed for an input a run does not read.
 */
export function zeros(dtype: string, dims: number[]): HostTensor {
  const n = dims.reduce((a, b) => a * b, 1);
  const t = (dtype in HOST_ARRAYS ? dtype : "float32") as HostTensor["dtype"];
  return { dtype: t, dims, data: new HOST_ARRAYS[t](n) } as HostTensor;
}
