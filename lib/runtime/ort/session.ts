/**
 * `OrtSession` through the C API: created from a model file (its external data read from beside it) or
 * from bytes, with the toolkit's settings; runs on {@link OrtValue}s, so a run's outputs can be the next
 * run's inputs without a copy, or through an {@link IoBinding}. Runs and creation happen off the JavaScript
 * thread (FFI `nonblocking`), like onnxruntime-node's.
 * @module
 */
import { check, cString, ortApi, outPointer, pointerArray } from "./api.ts";
import { IoBinding } from "./binding.ts";
import { defaultAllocator, freeWithDefault, ortEnv } from "./env.ts";
import type { RunOptions } from "./run_options.ts";
import { OrtValue } from "./value.ts";

/** How a session is made. */
export type OrtSessionSettings = {
  device?: "cpu" | "cuda";
  deviceId?: number;
  intraOpThreads?: number;
  interOpThreads?: number;
  optimization?: "disabled" | "basic" | "extended" | "all";
  /** The CPU arena (default on). */
  memoryArena?: boolean;
  /** Memory patterns (default on). */
  memoryPattern?: boolean;
  /** Session configuration entries (`session.disable_prepacking`, `optimization.disable_specified_optimizers`…). */
  config?: Readonly<Record<string, string>>;
  /** CUDA provider options (`cudnn_conv_algo_search`, `use_tf32`…), with `device: "cuda"`. */
  cuda?: Readonly<Record<string, string>>;
};

const LEVEL = { disabled: 0, basic: 1, extended: 2, all: 99 } as const;

/** A loaded model. */
export class OrtSession {
  #ptr: Deno.PointerValue;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];

  private constructor(ptr: Deno.PointerValue) {
    this.#ptr = ptr;
    this.inputNames = names(ptr, "input");
    this.outputNames = names(ptr, "output");
  }

  /** Loads a model file (external data relative to its folder) or model bytes. */
  static async create(model: string | Uint8Array, s: OrtSessionSettings = {}): Promise<OrtSession> {
    const a = ortApi();
    const env = ortEnv();
    const options = sessionOptions(s);
    try {
      const out = outPointer();
      if (typeof model === "string") {
        check(await a.CreateSession(env, cString(model), options, out.out), "CreateSession");
      } else {
        const bytes = model as Uint8Array<ArrayBuffer>;
        check(
          await a.CreateSessionFromArray(env, bytes, BigInt(bytes.byteLength), options, out.out),
          "CreateSessionFromArray",
        );
      }
      return new OrtSession(out.get());
    } finally {
      a.ReleaseSessionOptions(options);
    }
  }

  /** {@link create} for model bytes, on the calling thread (small graphs: the copy sessions of transfer.ts). */
  static createSync(model: Uint8Array, s: OrtSessionSettings = {}): OrtSession {
    const a = ortApi();
    const env = ortEnv();
    const options = sessionOptions(s);
    try {
      const out = outPointer();
      const bytes = model as Uint8Array<ArrayBuffer>;
      check(
        a.CreateSessionFromArraySync(env, bytes, BigInt(bytes.byteLength), options, out.out),
        "CreateSessionFromArray",
      );
      return new OrtSession(out.get());
    } finally {
      a.ReleaseSessionOptions(options);
    }
  }

  get pointer(): Deno.PointerValue {
    if (!this.#ptr) throw new Error("OrtSession used after release()");
    return this.#ptr;
  }

  #inputs?: { name: string; shape: (number | string)[] }[];

  /** The inputs' names and shapes (a symbolic dimension reads "?"), as onnxruntime-node's `inputMetadata`. */
  get inputMetadata(): readonly { name: string; shape: (number | string)[] }[] {
    if (this.#inputs) return this.#inputs;
    const a = ortApi();
    return this.#inputs = this.inputNames.map((name, i) => {
      const type = outPointer();
      check(a.SessionGetInputTypeInfo(this.pointer, BigInt(i), type.out), "SessionGetInputTypeInfo");
      try {
        const tensor = outPointer(), count = new BigUint64Array(1);
        check(a.CastTypeInfoToTensorInfo(type.get(), tensor.out), "CastTypeInfoToTensorInfo");
        if (!tensor.get()) return { name, shape: [] }; // not a tensor
        check(a.GetDimensionsCount(tensor.get(), count), "GetDimensionsCount");
        const dims = new BigInt64Array(Number(count[0]));
        check(a.GetDimensions(tensor.get(), dims, BigInt(dims.length)), "GetDimensions");
        return { name, shape: Array.from(dims, (d) => (d < 0n ? "?" : Number(d))) };
      } finally {
        a.ReleaseTypeInfo(type.get());
      }
    });
  }

  /**
   * Runs on `inputs`; returns the asked outputs (all by default) as values the caller owns, left where
   * ONNX Runtime made them (host memory on the CPU; copied to the host by the CUDA provider: use
   * {@link runBinding} to keep them on the GPU).
   */
  async run(
    inputs: Readonly<Record<string, OrtValue>>,
    outputs: readonly string[] = this.outputNames,
    options?: RunOptions,
  ): Promise<Record<string, OrtValue>> {
    const inNames = Object.keys(inputs).map(cString);
    const outNames = outputs.map(cString);
    const inputValues = pointerArray(Object.values(inputs).map((v) => v.pointer));
    const outValues = new BigUint64Array(outputs.length);
    check(
      await ortApi().Run(
        this.pointer,
        options?.pointer ?? null,
        pointerArray(inNames.map((n) => Deno.UnsafePointer.of(n))),
        inputValues,
        BigInt(inNames.length),
        pointerArray(outNames.map((n) => Deno.UnsafePointer.of(n))),
        BigInt(outNames.length),
        outValues,
      ),
      "Run",
    );
    const out: Record<string, OrtValue> = {};
    outputs.forEach((name, i) => out[name] = OrtValue.adopt(Deno.UnsafePointer.create(outValues[i])));
    return out;
  }

  /** A new binding of this session's inputs and outputs. */
  binding(): IoBinding {
    return new IoBinding(this.pointer);
  }

  /** {@link runBinding} on the calling thread (short runs: device-to-host copies). */
  runBindingSync(binding: IoBinding, options?: RunOptions): void {
    check(
      ortApi().RunWithBindingSync(this.pointer, options?.pointer ?? null, binding.pointer),
      "RunWithBinding",
    );
  }

  /** Runs on what `binding` binds; read the outputs with `binding.outputs()`. */
  async runBinding(binding: IoBinding, options?: RunOptions): Promise<void> {
    check(
      await ortApi().RunWithBinding(this.pointer, options?.pointer ?? null, binding.pointer),
      "RunWithBinding",
    );
  }

  release(): void {
    if (this.#ptr) ortApi().ReleaseSession(this.#ptr);
    this.#ptr = null;
  }

  /** `using` releases it. */
  [Symbol.dispose](): void {
    this.release();
  }
}

function names(session: Deno.PointerValue, which: "input" | "output"): string[] {
  const a = ortApi();
  const count = new BigUint64Array(1);
  if (which === "input") check(a.SessionGetInputCount(session, count), "SessionGetInputCount");
  else check(a.SessionGetOutputCount(session, count), "SessionGetOutputCount");
  const out: string[] = [];
  for (let i = 0; i < Number(count[0]); i++) {
    const p = outPointer();
    if (which === "input") {
      check(a.SessionGetInputName(session, BigInt(i), defaultAllocator(), p.out), "SessionGetInputName");
    } else {check(
        a.SessionGetOutputName(session, BigInt(i), defaultAllocator(), p.out),
        "SessionGetOutputName",
      );}
    out.push(Deno.UnsafePointerView.getCString(p.get()!));
    freeWithDefault(p.get());
  }
  return out;
}

/** `OrtSessionOptions` of the settings (the caller releases it). */
function sessionOptions(s: OrtSessionSettings): Deno.PointerValue {
  const a = ortApi();
  const out = outPointer();
  check(a.CreateSessionOptions(out.out), "CreateSessionOptions");
  const so = out.get();
  try {
    check(a.SetSessionLogSeverityLevel(so, 3), "SetSessionLogSeverityLevel");
    check(
      a.SetSessionGraphOptimizationLevel(so, LEVEL[s.optimization ?? "all"]),
      "SetSessionGraphOptimizationLevel",
    );
    check(
      a.SetIntraOpNumThreads(so, s.intraOpThreads ?? navigator.hardwareConcurrency),
      "SetIntraOpNumThreads",
    );
    check(a.SetInterOpNumThreads(so, s.interOpThreads ?? 1), "SetInterOpNumThreads");
    if (s.memoryArena === false) check(a.DisableCpuMemArena(so), "DisableCpuMemArena");
    if (s.memoryPattern === false) check(a.DisableMemPattern(so), "DisableMemPattern");
    for (const [k, v] of Object.entries(s.config ?? {})) {
      check(a.AddSessionConfigEntry(so, cString(k), cString(v)), `AddSessionConfigEntry(${k})`);
    }
    if (s.device === "cuda") appendCuda(so, { device_id: String(s.deviceId ?? 0), ...s.cuda });
    return so;
  } catch (e) {
    a.ReleaseSessionOptions(so);
    throw e;
  }
}

function appendCuda(so: Deno.PointerValue, options: Record<string, string>): void {
  const a = ortApi();
  const out = outPointer();
  check(a.CreateCUDAProviderOptions(out.out), "CreateCUDAProviderOptions");
  const cuda = out.get();
  try {
    const keys = Object.keys(options).map(cString), values = Object.values(options).map(cString);
    check(
      a.UpdateCUDAProviderOptions(
        cuda,
        pointerArray(keys.map((k) => Deno.UnsafePointer.of(k))),
        pointerArray(values.map((v) => Deno.UnsafePointer.of(v))),
        BigInt(keys.length),
      ),
      "UpdateCUDAProviderOptions",
    );
    check(
      a.SessionOptionsAppendExecutionProvider_CUDA_V2(so, cuda),
      "SessionOptionsAppendExecutionProvider_CUDA_V2",
    );
  } finally {
    a.ReleaseCUDAProviderOptions(cuda);
  }
}
