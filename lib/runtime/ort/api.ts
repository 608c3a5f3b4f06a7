/**
 * ONNX Runtime's C API, called through Deno FFI: the `libonnxruntime.so.1` that onnxruntime-node ships (one
 * library in the process, shared with the package), `OrtGetApiBase()`, then the `OrtApi` function table of
 * API version 29. Only the entries the toolkit uses are declared; each is called by its index in the table
 * (`onnxruntime_c_api.h` at the 1.29 tag: the table only grows, so the indices never change).
 *
 * Every entry that returns an `OrtStatus*` goes through {@link check}, which turns a failure into an
 * {@link OrtError} with ONNX Runtime's message and the name of the call.
 * @module
 */
import { ortNativeDir } from "../cuda.ts";

/** The API version asked of `GetApi`: onnxruntime-node 1.29.0's. */
export const ORT_API_VERSION = 29;

type Fn = Deno.ForeignFunction;
const S = "pointer" as const; // OrtStatus* (null: success)
const P = "pointer" as const;
const B = "buffer" as const;

/** The entries used, by their index in `OrtApi`, with their C signatures in FFI types. */
const ENTRIES = {
  GetErrorCode: [1, { parameters: [P], result: "i32" }],
  GetErrorMessage: [2, { parameters: [P], result: P }],
  CreateEnv: [3, { parameters: ["i32", B, B], result: S }],
  CreateSession: [7, { parameters: [P, B, P, B], result: S, nonblocking: true }],
  CreateSessionFromArray: [8, { parameters: [P, B, "usize", P, B], result: S, nonblocking: true }],
  CreateSessionFromArraySync: [8, { parameters: [P, B, "usize", P, B], result: S }],
  Run: [9, { parameters: [P, P, B, B, "usize", B, "usize", B], result: S, nonblocking: true }],
  CreateSessionOptions: [10, { parameters: [B], result: S }],
  EnableMemPattern: [16, { parameters: [P], result: S }],
  DisableMemPattern: [17, { parameters: [P], result: S }],
  EnableCpuMemArena: [18, { parameters: [P], result: S }],
  DisableCpuMemArena: [19, { parameters: [P], result: S }],
  SetSessionLogSeverityLevel: [22, { parameters: [P, "i32"], result: S }],
  SetSessionGraphOptimizationLevel: [23, { parameters: [P, "i32"], result: S }],
  SetIntraOpNumThreads: [24, { parameters: [P, "i32"], result: S }],
  SetInterOpNumThreads: [25, { parameters: [P, "i32"], result: S }],
  SessionGetInputCount: [30, { parameters: [P, B], result: S }],
  SessionGetOutputCount: [31, { parameters: [P, B], result: S }],
  SessionGetInputTypeInfo: [33, { parameters: [P, "usize", B], result: S }],
  CastTypeInfoToTensorInfo: [55, { parameters: [P, B], result: S }],
  ReleaseTypeInfo: [98, { parameters: [P], result: "void" }],
  SessionGetInputName: [36, { parameters: [P, "usize", P, B], result: S }],
  SessionGetOutputName: [37, { parameters: [P, "usize", P, B], result: S }],
  CreateRunOptions: [39, { parameters: [B], result: S }],
  RunOptionsSetTerminate: [46, { parameters: [P], result: S }],
  RunOptionsUnsetTerminate: [47, { parameters: [P], result: S }],
  CreateTensorAsOrtValue: [48, { parameters: [P, B, "usize", "i32", B], result: S }],
  CreateTensorWithDataAsOrtValue: [49, { parameters: [P, P, "usize", B, "usize", "i32", B], result: S }],
  GetTensorMutableData: [51, { parameters: [P, B], result: S }],
  GetTensorElementType: [60, { parameters: [P, B], result: S }],
  GetDimensionsCount: [61, { parameters: [P, B], result: S }],
  GetDimensions: [62, { parameters: [P, B, "usize"], result: S }],
  GetTensorTypeAndShape: [65, { parameters: [P, B], result: S }],
  MemoryInfoGetName: [71, { parameters: [P, B], result: S }],
  GetTensorMemoryInfo: [194, { parameters: [P, B], result: S }],
  CreateMemoryInfo: [68, { parameters: [B, "i32", "i32", "i32", B], result: S }],
  CreateCpuMemoryInfo: [69, { parameters: ["i32", "i32", B], result: S }],
  AllocatorFree: [76, { parameters: [P, P], result: S }],
  GetAllocatorWithDefaultOptions: [78, { parameters: [B], result: S }],
  ReleaseEnv: [92, { parameters: [P], result: "void" }],
  ReleaseStatus: [93, { parameters: [P], result: "void" }],
  ReleaseMemoryInfo: [94, { parameters: [P], result: "void" }],
  ReleaseSession: [95, { parameters: [P], result: "void" }],
  ReleaseValue: [96, { parameters: [P], result: "void" }],
  ReleaseRunOptions: [97, { parameters: [P], result: "void" }],
  ReleaseTensorTypeAndShapeInfo: [99, { parameters: [P], result: "void" }],
  ReleaseSessionOptions: [100, { parameters: [P], result: "void" }],
  AddSessionConfigEntry: [130, { parameters: [P, B, B], result: S }],
  RunWithBinding: [133, { parameters: [P, P, P], result: S, nonblocking: true }],
  RunWithBindingSync: [133, { parameters: [P, P, P], result: S }],
  CreateIoBinding: [134, { parameters: [P, B], result: S }],
  ReleaseIoBinding: [135, { parameters: [P], result: "void" }],
  BindInput: [136, { parameters: [P, B, P], result: S }],
  BindOutput: [137, { parameters: [P, B, P], result: S }],
  BindOutputToDevice: [138, { parameters: [P, B, P], result: S }],
  GetBoundOutputValues: [140, { parameters: [P, P, B, B], result: S }],
  ClearBoundInputs: [141, { parameters: [P], result: "void" }],
  ClearBoundOutputs: [142, { parameters: [P], result: "void" }],
  SessionOptionsAppendExecutionProvider_CUDA_V2: [204, { parameters: [P, P], result: S }],
  CreateCUDAProviderOptions: [205, { parameters: [B], result: S }],
  UpdateCUDAProviderOptions: [206, { parameters: [P, B, B, "usize"], result: S }],
  ReleaseCUDAProviderOptions: [208, { parameters: [P], result: "void" }],
} as const satisfies Record<string, readonly [number, Fn]>;

type Entries = typeof ENTRIES;
/** The callable table: each entry's `call`, typed from its FFI signature. */
export type OrtApi = { [K in keyof Entries]: Deno.UnsafeFnPointer<Entries[K][1]>["call"] };

let api: OrtApi | undefined;

/** The `OrtApi` table (loaded on first use). */
export function ortApi(): OrtApi {
  if (api) return api;
  const path = `${ortNativeDir()}/libonnxruntime.so.1`;
  const lib = Deno.dlopen(path, { OrtGetApiBase: { parameters: [], result: "pointer" } });
  const base = lib.symbols.OrtGetApiBase();
  if (!base) throw new Error(`${path}: OrtGetApiBase returned null`);
  const getApi = new Deno.UnsafeFnPointer(new Deno.UnsafePointerView(base).getPointer(0)!, {
    parameters: ["u32"],
    result: "pointer",
  });
  const table = getApi.call(ORT_API_VERSION);
  if (!table) throw new Error(`${path}: ONNX Runtime does not offer C API version ${ORT_API_VERSION}`);
  const view = new Deno.UnsafePointerView(table);
  const out: Record<string, unknown> = {};
  for (const [name, [index, def]] of Object.entries(ENTRIES)) {
    const fn = new Deno.UnsafeFnPointer(view.getPointer(index * 8)!, def as Fn);
    out[name] = fn.call.bind(fn);
  }
  return api = out as OrtApi;
}

/** An ONNX Runtime failure: its message, its error code and the C API call that returned it. */
export class OrtError extends Error {
  constructor(readonly call: string, readonly code: number, message: string) {
    super(`${message} (${call}, ONNX Runtime error code ${code})`);
    this.name = "OrtError";
  }
}

/** Throws the {@link OrtError} of a non-null status (and releases the status). */
export function check(status: Deno.PointerValue, call: string): void {
  if (status === null) return;
  const a = ortApi();
  const code = a.GetErrorCode(status);
  const msg = Deno.UnsafePointerView.getCString(a.GetErrorMessage(status)!);
  a.ReleaseStatus(status);
  throw new OrtError(call, code, msg);
}

/** A null-terminated UTF-8 string for a `const char*` parameter. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${s}\0`);
}

/** A one-pointer out parameter: pass `out`, read the pointer with `get()`. */
export function outPointer(): { out: BigUint64Array<ArrayBuffer>; get(): Deno.PointerValue } {
  const out = new BigUint64Array(1);
  return { out, get: () => Deno.UnsafePointer.create(out[0]) };
}

/** An array of pointers (`T* const*`) for the C API. */
export function pointerArray(ps: readonly Deno.PointerValue[]): BigUint64Array<ArrayBuffer> {
  return BigUint64Array.from(ps, (p) => BigInt(Deno.UnsafePointer.value(p)));
}
