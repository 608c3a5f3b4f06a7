/**
 * The session contract: one {@link ModelSession} whatever calls ONNX Runtime. A session is made from a graph
 * (its frozen weights read by ONNX Runtime from the model's own files, see graph_folder.ts), from bytes or
 * from a file, on the CPU or CUDA, and runs with {@link ModelSession.run}: host tensors and held tensors in,
 * each output placed where the caller asks (`"host"`: back to JavaScript; `"device"`: kept for the next
 * run). Behind it are two backends, which callers never see: ONNX Runtime's C API from Deno (ort/, where a
 * held tensor stays in the device's memory; the default on the CPU) and onnxruntime-node (CUDA until the C
 * API has run there, and profiling; a held tensor is then kept in JavaScript memory). Run errors name the
 * failing operator and the shapes of what was fed.
 *
 * ```ts
 * import { GraphBuilder } from "../graph/builder.ts";
 * import { f32, ModelSession } from "./session.ts";
 * const g = new GraphBuilder("double");
 * const x = g.input("x", "float32", [2]);
 * g.output(g.node("Add", [x, x], [{ dtype: "float32", shape: [2] }])[0], "y");
 * await using s = await ModelSession.create(g.build());
 * using held = (await s.run({ x: f32([1, 2], [2]) }, { y: "device" })).y; // kept for the next run
 * const out = await s.run({ x: held }, ["y"]);
 * console.log(out.y.data); // Float32Array [4, 8]
 * ```
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import type { Graph } from "../graph/ir.ts";
import {
  deserializeModel,
  type SerializedModel,
  serializeModel,
  type SerializeOptions,
} from "../graph/serialize.ts";
import { externalFiles, GraphFolder } from "./graph_folder.ts";
import { releaseFreeMemory } from "./device_memory.ts";
import { OrtSession, type OrtSessionSettings } from "./ort/session.ts";
import { OrtValue } from "./ort/value.ts";
import { MemoryInfo } from "./ort/memory_info.ts";
import { copyToHost } from "./ort/transfer.ts";
import {
  type Device,
  type Feeds,
  type HeldTensor,
  HOST_ARRAYS,
  type HostTensor,
  isHostTensor,
  type Placed,
  type Placement,
} from "./tensor.ts";

import type { CommDType, DeviceBuffer } from "./comm/communicator.ts";

export * from "./tensor.ts";

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
  /**
   * For a graph whose weights live in files: the folder its model file and weight links go to (default: a
   * temporary folder, removed at release), and the model file's name there.
   */
  graphFolder?: GraphFolder;
  graphName?: string;
  /** For a graph: how in-memory initializers are serialized (large ones into an external blob). */
  serialize?: SerializeOptions;
  /** ONNX Runtime's CPU memory arena (default on). Off, freed activations go back to the system allocator. */
  memoryArena?: boolean;
  /**
   * ONNX Runtime's memory patterns: one block per run, planned from the previous run's shapes. Default:
   * off for graphs whose weights live in files, on otherwise.
   */
  memoryPattern?: boolean;
  /**
   * How ONNX Runtime is called: through its C API from Deno (`ffi`, lib/runtime/ort; the default on the
   * CPU), where a held output stays in the device's memory and feeds the next run without passing through
   * JavaScript, or through onnxruntime-node (`node`; the default on CUDA for now). Profiling and an
   * in-memory external-data blob need `node`. Nothing else about a session depends on it.
   */
  backend?: "node" | "ffi";
  /**
   * For weights read from files in a narrower dtype than the graph computes in: cast them once when the
   * session loads (ONNX Runtime's constant folding; an fp32 copy held for the session's life) instead of
   * at every use. Decoding reads every weight at every token, so this is what makes it fast; training and
   * scoring leave it off (default).
   */
  foldWeights?: boolean;
};

/**
 * Session settings for graphs that read their weights from files. ConstantFolding would turn the Cast of a
 * bf16/fp16 weight into a full-precision copy held for the session's lifetime, and CPU prepacking copies
 * every fp32 weight a Gemm reads: both would undo keeping the weights in their stored form (measured on
 * an 8192² bf16 weight: 287 MB of private memory and a 606 MB peak at creation with them, 25 MB without).
 * Memory patterns (one block per run, planned from the last run) are off too: with them a SmolLM-135M
 * LoRA step peaked at 10.7 GiB from its second run on, without them at 5.8, and ran faster. ONNX Runtime's
 * CPU arena stays on: without it the system allocator's heap fragments over a step's thousands of
 * differently sized tensors (a 4-layer TinyLlama-shaped step with checkpointing: 5.1 GiB without the arena,
 * 1.8 with it, and slower; bench/memory.ts, BENCHMARKS.md).
 */
const FILE_WEIGHTS_CONFIG = {
  optimization: { disable_specified_optimizers: "ConstantFolding;FuseFp16InitializerToFp32NodeTransformer" },
  session: { disable_prepacking: "1" },
};

/** What onnxruntime-node's sessions hold for their caller: the output itself, in JavaScript memory. */
class KeptTensor implements HeldTensor {
  #t: HostTensor | null;
  constructor(t: HostTensor) {
    this.#t = t;
  }
  get tensor(): HostTensor {
    if (!this.#t) throw new Error("a held tensor used after release()");
    return this.#t;
  }
  get dtype(): HostTensor["dtype"] {
    return this.tensor.dtype;
  }
  get dims(): readonly number[] {
    return this.tensor.dims;
  }
  release(): void {
    this.#t = null;
  }
  [Symbol.dispose](): void {
    this.release();
  }
}

/** A loaded model ready to run. */
export class ModelSession {
  private constructor(
    /** The backend's session: callers go through the contract, never to it. */
    private readonly impl: ort.InferenceSession | OrtSession,
    readonly device: Device,
    private readonly describe?: (nodeName: string) => string | undefined,
    private readonly profilePrefix?: string,
    private readonly folder?: GraphFolder,
    /** The CUDA device's index (cuda sessions). */
    readonly deviceId = 0,
  ) {}

  /**
   * Creates a session from a graph, serialized model bytes (and their external data) or a file path. A graph
   * whose initializers live in files is written to a graph folder (`opts.graphFolder`, else a temporary one
   * removed at release) and loaded from there, so ONNX Runtime reads the weights from the files themselves.
   */
  static async create(
    model: Graph | SerializedModel | Uint8Array | string,
    opts: SessionOptions = {},
  ): Promise<ModelSession> {
    if (isGraph(model)) {
      if (externalFiles(model).length === 0) {
        return await ModelSession.create(serializeModel(model, opts.serialize), opts);
      }
      const folder = opts.graphFolder ?? await GraphFolder.open();
      let path: string;
      try {
        path = await folder.write(opts.graphName ?? model.name, model, opts.serialize);
      } catch (e) {
        if (!opts.graphFolder) await folder.remove();
        throw e;
      }
      return await ModelSession.#load(
        path,
        { ...opts, fileWeights: true },
        opts.graphFolder ? undefined : folder,
      );
    }
    if (typeof model === "string") {
      return await ModelSession.#load(model, { ...opts, fileWeights: await readsFiles(model) });
    }
    return await ModelSession.#load(model, opts);
  }

  static async #load(
    model: SerializedModel | Uint8Array | string,
    opts: SessionOptions & { fileWeights?: boolean },
    owned?: GraphFolder,
  ): Promise<ModelSession> {
    const device = opts.device ?? "cpu";
    const so: ort.InferenceSession.SessionOptions = {
      executionProviders: device === "cuda" ? [{ name: "cuda", deviceId: opts.deviceId ?? 0 }] : ["cpu"],
      graphOptimizationLevel: opts.optimization ?? "all",
      intraOpNumThreads: opts.intraOpThreads ?? navigator.hardwareConcurrency,
      interOpNumThreads: opts.interOpThreads ?? 1,
      logSeverityLevel: 3,
    };
    if (opts.fileWeights && !opts.foldWeights) so.extra = FILE_WEIGHTS_CONFIG;
    so.enableCpuMemArena = opts.memoryArena ?? true;
    so.enableMemPattern = opts.memoryPattern ?? !opts.fileWeights;
    if (opts.profilePrefix) {
      so.enableProfiling = true;
      so.profileFilePrefix = opts.profilePrefix;
    }
    let session: ort.InferenceSession | OrtSession;
    try {
      if (backendOf(model, opts) === "ffi") session = await ffiSession(model, so, opts);
      else if (typeof model === "string") session = await ort.InferenceSession.create(model, so);
      else if (model instanceof Uint8Array) session = await ort.InferenceSession.create(model, so);
      else {
        if (model.externalData) {
          so.externalData = [{ path: model.externalData.path, data: model.externalData.data }];
        }
        session = await ort.InferenceSession.create(model.model, so);
      }
    } catch (e) {
      await owned?.remove();
      throw new Error(`ONNX Runtime could not load the model on ${device}: ${explain(e, opts.describe)}`, {
        cause: e,
      });
    }
    return new ModelSession(session, device, opts.describe, opts.profilePrefix, owned, opts.deviceId ?? 0);
  }

  /**
   * The device whose memory holds what this session holds for its caller: its own through the C API; the
   * host through onnxruntime-node, which keeps no tensor on a device between runs. A session that takes
   * these tensors (a sampler beside a decoder) belongs there.
   */
  get holdsOn(): Device {
    return this.impl instanceof OrtSession ? this.device : "cpu";
  }

  /** How ONNX Runtime is called for this session (for reports: nothing else depends on it). */
  get backend(): "node" | "ffi" {
    return this.impl instanceof OrtSession ? "ffi" : "node";
  }

  get inputNames(): readonly string[] {
    return this.impl.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.impl.outputNames;
  }

  /** The inputs' names and shapes (a symbolic dimension is a string), as ONNX Runtime reads them. */
  get inputMetadata(): readonly { name: string; shape?: readonly unknown[] }[] {
    return this.impl.inputMetadata as readonly { name: string; shape?: readonly unknown[] }[];
  }

  /**
   * Runs the model on `feeds` (host tensors, lent for the run, and held tensors, taken as they are). With a
   * list of output names (default: all), each comes back as a host tensor; with a placement per output,
   * each comes back as asked: `"host"` in JavaScript, `"device"` held by the session for the next run (the
   * caller releases it).
   */
  run(feeds: Feeds, outputs?: readonly string[]): Promise<Record<string, HostTensor>>;
  run<P extends Record<string, Placement>>(feeds: Feeds, placement: P): Promise<Placed<P>>;
  async run(
    feeds: Feeds,
    outputs?: readonly string[] | Record<string, Placement>,
  ): Promise<Record<string, HostTensor | HeldTensor>> {
    const placement: Record<string, Placement> = outputs === undefined || Array.isArray(outputs)
      ? Object.fromEntries((outputs ?? this.outputNames).map((n) => [n, "host" as const]))
      : outputs as Record<string, Placement>;
    try {
      return this.impl instanceof OrtSession
        ? await this.#runFfi(this.impl, feeds, placement)
        : await this.#runNode(this.impl, feeds, placement);
    } catch (e) {
      throw this.#failure(e, feeds);
    }
  }

  /**
   * A held tensor over a host tensor's data, without a copy where the backend allows (the caller keeps
   * `t.data` unchanged while it is held): a state that runs take and replace.
   */
  hold(t: HostTensor): HeldTensor {
    return this.impl instanceof OrtSession ? OrtValue.fromHost(t) : new KeptTensor(t);
  }

  /**
   * A held tensor's memory for a collective to read and write in place, without a copy: a typed array over
   * it where it is in host memory (onnxruntime-node's kept tensors; a C API value on the CPU), its CUDA
   * address as a {@link DeviceBuffer} where it is on a GPU. Valid while `t` is held; what is written there is
   * what the next run reads.
   */
  memoryOf(t: HeldTensor): HostTensor["data"] | DeviceBuffer {
    if (t instanceof KeptTensor) return t.tensor.data;
    if (!(t instanceof OrtValue)) throw new TypeError("not a tensor a session holds");
    const n = t.dims.reduce((a, b) => a * b, 1);
    if (t.onHost) {
      const Typed = HOST_ARRAYS[t.dtype as HostTensor["dtype"]];
      if (!Typed) throw new TypeError(`a ${t.dtype} tensor has no host type`);
      if (n === 0) return new Typed(0);
      const buf = Deno.UnsafePointerView.getArrayBuffer(t.dataPointer()!, n * Typed.BYTES_PER_ELEMENT);
      return new Typed(buf);
    }
    return { pointer: t.dataPointer(), length: n, dtype: t.dtype as CommDType, device: "cuda" };
  }

  /**
   * A held tensor over elements [offset, offset + the product of `dims`) of `t`'s memory, without a copy (a
   * slice of a packed state, or the state inside a larger buffer). It reads `t`'s memory: keep `t` held while
   * the view is used; releasing the view does not free `t`.
   */
  viewOf(t: HeldTensor, offset: number, dims: readonly number[]): HeldTensor {
    if (t instanceof OrtValue) return OrtValue.view(t, offset, dims);
    if (!(t instanceof KeptTensor)) throw new TypeError("not a tensor a session holds");
    const n = dims.reduce((a, b) => a * b, 1);
    if (offset < 0 || offset + n > t.tensor.data.length) {
      throw new RangeError(
        `a view of [${offset}, ${offset + n}) in a tensor of ${t.tensor.data.length} elements`,
      );
    }
    return new KeptTensor(
      { ...t.tensor, dims, data: t.tensor.data.subarray(offset, offset + n) } as HostTensor,
    );
  }

  /** A held tensor's data in JavaScript memory (copied from the device when it is there). */
  toHost(value: HeldTensor): HostTensor {
    if (value instanceof KeptTensor) return value.tensor;
    if (value instanceof OrtValue) return copyToHost(value, { device: this.device, deviceId: this.deviceId });
    throw new TypeError("not a tensor a session holds");
  }

  async #runNode(
    s: ort.InferenceSession,
    feeds: Feeds,
    placement: Record<string, Placement>,
  ): Promise<Record<string, HostTensor | HeldTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) {
      ortFeeds[name] = toOrt(isHostTensor(t) ? t : this.toHost(t));
    }
    const result = await s.run(ortFeeds, Object.keys(placement));
    const out: Record<string, HostTensor | HeldTensor> = {};
    for (const [name, where] of Object.entries(placement)) {
      const t = fromOrt(result[name]);
      out[name] = where === "device" ? new KeptTensor(t) : t;
    }
    return out;
  }

  #memory?: { host: MemoryInfo; device: MemoryInfo };

  /**
   * A run through the C API: host feeds lent as values over their buffers, held ones as they are; with an
   * output for the device, through an IO binding that places each output where asked.
   */
  async #runFfi(
    s: OrtSession,
    feeds: Feeds,
    placement: Record<string, Placement>,
  ): Promise<Record<string, HostTensor | HeldTensor>> {
    if (!this.#memory) {
      const host = MemoryInfo.cpu();
      this.#memory = { host, device: this.device === "cuda" ? MemoryInfo.cuda(this.deviceId) : host };
    }
    const lent: OrtValue[] = [];
    const inputs: Record<string, OrtValue> = {};
    for (const [name, t] of Object.entries(feeds)) {
      if (t instanceof OrtValue) inputs[name] = t;
      else {
        const v = OrtValue.fromHost(isHostTensor(t) ? t : this.toHost(t));
        lent.push(v);
        inputs[name] = v;
      }
    }
    // with every output for the host a plain Run does: ONNX Runtime returns its fetches in host memory
    const binding = Object.values(placement).includes("device") ? s.binding() : undefined;
    let out: Record<string, OrtValue>;
    try {
      if (binding) {
        for (const [name, v] of Object.entries(inputs)) binding.bindInput(name, v);
        for (const [name, where] of Object.entries(placement)) {
          binding.bindOutputToDevice(name, this.#memory[where === "device" ? "device" : "host"]);
        }
        await s.runBinding(binding);
        out = binding.outputs();
      } else out = await s.run(inputs, Object.keys(placement));
    } finally {
      binding?.release();
      for (const v of lent) v.release();
    }
    const result: Record<string, HostTensor | HeldTensor> = {};
    for (const [name, where] of Object.entries(placement)) {
      if (where === "device") result[name] = out[name];
      else {
        using v = out[name];
        result[name] = v.toHost();
      }
    }
    return result;
  }

  /** A failed run's error: ONNX Runtime's message, the node it names, and the shapes of what was fed. */
  #failure(e: unknown, fed: Feeds): Error {
    const shapes = Object.entries(fed).map(([n, t]) => `${n}: ${t.dtype}[${t.dims.join(", ")}]`).join("; ");
    return new Error(`ONNX Runtime failed: ${explain(e, this.describe)}\n  fed: ${shapes}`, { cause: e });
  }

  /** Ends the profiler (if on) and frees the session. Returns the profile file, if any. */
  async release(): Promise<string | undefined> {
    if (this.impl instanceof OrtSession) {
      const m = this.#memory;
      m?.host.release();
      if (m && m.device !== m.host) m.device.release();
      this.#memory = undefined;
      this.impl.release();
    } else {
      if (this.profilePrefix) this.impl.endProfiling();
      await this.impl.release();
    }
    await this.folder?.remove();
    releaseFreeMemory();
    return this.profilePrefix ? newestProfile(this.profilePrefix) : undefined;
  }

  /** `await using` releases it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

/**
 * Whether a model file reads initializers from external data (an exported decoder reading the weights from
 * model.safetensors): it then gets the settings of a graph with file weights. A file that big holds its
 * weights inline, and is not read to find out.
 */
async function readsFiles(path: string): Promise<boolean> {
  try {
    if ((await Deno.stat(path)).size > 64 * 2 ** 20) return false;
    return externalFiles(deserializeModel(await Deno.readFile(path)).graph).length > 0;
  } catch {
    return false; // ONNX Runtime will say what is wrong with the file
  }
}

/**
 * The backend a session gets: as asked, else `NCA_ORT_BACKEND` (`ffi` or `node`: how a GPU machine tries the
 * C API on CUDA with the unchanged trainer and server), else the C API on the CPU and onnxruntime-node on
 * CUDA (until the GPU checks have run the C API there); onnxruntime-node for profiling and for an in-memory
 * external-data blob, which only it takes.
 */
function backendOf(model: SerializedModel | Uint8Array | string, opts: SessionOptions): "node" | "ffi" {
  if (opts.backend) return opts.backend;
  const blob = typeof model === "object" && !(model instanceof Uint8Array) &&
    model.externalData !== undefined;
  if (opts.profilePrefix || blob) return "node";
  const env = backendFromEnv();
  if (env) return env;
  return opts.device === "cuda" ? "node" : "ffi";
}

/** `NCA_ORT_BACKEND`, checked: undefined when unset, an error naming the variable for anything but ffi/node. */
export function backendFromEnv(
  get: (name: string) => string | undefined = (n) => Deno.env.get(n),
): "node" | "ffi" | undefined {
  const v = get("NCA_ORT_BACKEND")?.trim();
  if (!v) return undefined;
  if (v === "ffi" || v === "node") return v;
  throw new Error(`NCA_ORT_BACKEND must be "ffi" or "node", got "${v}"`);
}

/** The C API session of the same settings as onnxruntime-node's `so`. */
async function ffiSession(
  model: SerializedModel | Uint8Array | string,
  so: ort.InferenceSession.SessionOptions,
  opts: SessionOptions,
): Promise<OrtSession> {
  if (opts.profilePrefix) throw new TypeError('profiling needs backend: "node"');
  if (!(typeof model === "string" || model instanceof Uint8Array) && model.externalData) {
    throw new TypeError('an in-memory external-data blob needs backend: "node"');
  }
  const config: Record<string, string> = {};
  for (const [group, entries] of Object.entries(so.extra ?? {})) {
    for (const [k, v] of Object.entries(entries as Record<string, string>)) config[`${group}.${k}`] = v;
  }
  const settings: OrtSessionSettings = {
    device: opts.device,
    deviceId: opts.deviceId,
    intraOpThreads: so.intraOpNumThreads,
    interOpThreads: so.interOpNumThreads,
    optimization: so.graphOptimizationLevel as OrtSessionSettings["optimization"],
    memoryArena: so.enableCpuMemArena,
    memoryPattern: so.enableMemPattern,
    config,
  };
  const bytes = typeof model === "string" ? model : model instanceof Uint8Array ? model : model.model;
  return await OrtSession.create(bytes, settings);
}

function isGraph(m: unknown): m is Graph {
  return typeof m === "object" && m !== null && "nodes" in m && "initializers" in m;
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
