/**
 * `OrtValue`: a tensor ONNX Runtime can run on, either over a JavaScript buffer (no copy: the value keeps
 * the buffer alive) or allocated by ONNX Runtime (a run's output, which may stay where it was made and be
 * fed to the next run as it is). Released by {@link OrtValue.release}; a value dropped without it is
 * released when collected, as a safety net only.
 * @module
 */
import { type DType, ONNX_DTYPE } from "../../graph/dtype.ts";
import { type HeldTensor, HOST_ARRAYS, type HostTensor } from "../tensor.ts";
import { check, ortApi, outPointer } from "./api.ts";
import { cpuMemoryInfo, defaultAllocator } from "./env.ts";

/**
 * The tensor element types the toolkit runs with: the graph's dtypes, whose ONNX codes are the C API's
 * `ONNXTensorElementDataType` values.
 */
export type ElementType = DType;
const TYPE_OF = new Map(Object.entries(ONNX_DTYPE).map(([k, v]) => [v, k as ElementType]));

/** Bytes per element of the types a view can slice. */
const ELEMENT_BYTES: Partial<Record<ElementType, number>> = {
  float32: 4,
  float64: 8,
  int32: 4,
  int64: 8,
  uint8: 1,
  bool: 1,
  float16: 2,
  bfloat16: 2,
};

const registry = new FinalizationRegistry<bigint>((p) => ortApi().ReleaseValue(Deno.UnsafePointer.create(p)));

/** A tensor ONNX Runtime holds or reads: what a C API session holds for its caller ({@link HeldTensor}). */
export class OrtValue implements HeldTensor {
  #ptr: Deno.PointerValue;
  #shape?: { type: ElementType; dims: number[] };
  /** The JavaScript buffer a host value reads, or the value a view reads (kept alive as long as this one). */
  readonly #keep?: ArrayBufferView | OrtValue;

  private constructor(ptr: Deno.PointerValue, keep?: ArrayBufferView | OrtValue) {
    this.#ptr = ptr;
    this.#keep = keep;
    registry.register(this, BigInt(Deno.UnsafePointer.value(ptr)), this);
  }

  /**
   * A value over elements [offset, offset + the product of `dims`) of `parent`'s memory, wherever it is (host
   * or device), without a copy: a slice of a packed state a run reads or a collective writes in place. The
   * view keeps `parent` from being collected; releasing `parent` while the view is used is the caller's error.
   */
  static view(parent: OrtValue, offset: number, dims: readonly number[]): OrtValue {
    const count = dims.reduce((a, b) => a * b, 1);
    const total = parent.dims.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + count > total) {
      throw new RangeError(`a view of [${offset}, ${offset + count}) in a tensor of ${total} elements`);
    }
    const bytes = ELEMENT_BYTES[parent.type];
    if (!bytes) throw new TypeError(`a view of a ${parent.type} tensor`);
    const a = ortApi();
    const info = outPointer();
    check(a.GetTensorMemoryInfo(parent.pointer, info.out), "GetTensorMemoryInfo");
    const base = BigInt(Deno.UnsafePointer.value(parent.dataPointer()));
    const out = outPointer();
    const shape = BigInt64Array.from(dims, (d) => BigInt(d));
    check(
      a.CreateTensorWithDataAsOrtValue(
        info.get(),
        Deno.UnsafePointer.create(base + BigInt(offset * bytes)),
        BigInt(count * bytes),
        shape,
        BigInt(shape.length),
        ONNX_DTYPE[parent.type],
        out.out,
      ),
      "CreateTensorWithDataAsOrtValue",
    );
    return new OrtValue(out.get(), parent);
  }

  /** The address of the tensor's data (host or device memory, as {@link location} says). */
  dataPointer(): Deno.PointerValue {
    const p = outPointer();
    check(ortApi().GetTensorMutableData(this.pointer, p.out), "GetTensorMutableData");
    return p.get();
  }

  /** A value over a host tensor's buffer, without a copy. */
  static fromHost(t: HostTensor): OrtValue {
    const a = ortApi();
    const dims = BigInt64Array.from(t.dims, (d) => BigInt(d));
    const out = outPointer();
    if (t.data.byteLength === 0) {
      // an empty tensor has no data pointer to lend: ONNX Runtime allocates its (empty) buffer
      check(
        a.CreateTensorAsOrtValue(defaultAllocator(), dims, BigInt(dims.length), ONNX_DTYPE[t.dtype], out.out),
        "CreateTensorAsOrtValue",
      );
      return new OrtValue(out.get());
    }
    check(
      a.CreateTensorWithDataAsOrtValue(
        cpuMemoryInfo(),
        Deno.UnsafePointer.of(t.data as Uint8Array<ArrayBuffer>),
        BigInt(t.data.byteLength),
        dims,
        BigInt(dims.length),
        ONNX_DTYPE[t.dtype],
        out.out,
      ),
      "CreateTensorWithDataAsOrtValue",
    );
    return new OrtValue(out.get(), t.data);
  }

  /** Takes ownership of a value ONNX Runtime allocated (a run's output). */
  static adopt(ptr: Deno.PointerValue): OrtValue {
    if (!ptr) throw new Error("OrtValue.adopt: null value");
    return new OrtValue(ptr);
  }

  /** The `OrtValue*`, for the C API; throws once released. */
  get pointer(): Deno.PointerValue {
    if (!this.#ptr) throw new Error("OrtValue used after release()");
    return this.#ptr;
  }

  /** Element type and dimensions. */
  get type(): ElementType {
    return this.#info().type;
  }

  /** The element type (the {@link HeldTensor} name of {@link type}). */
  get dtype(): ElementType {
    return this.#info().type;
  }

  get dims(): readonly number[] {
    return this.#info().dims;
  }

  #info(): { type: ElementType; dims: number[] } {
    if (this.#shape) return this.#shape;
    const a = ortApi();
    const info = outPointer();
    check(a.GetTensorTypeAndShape(this.pointer, info.out), "GetTensorTypeAndShape");
    const p = info.get();
    try {
      const type = new Int32Array(1), count = new BigUint64Array(1);
      check(a.GetTensorElementType(p, type), "GetTensorElementType");
      check(a.GetDimensionsCount(p, count), "GetDimensionsCount");
      const dims = new BigInt64Array(Number(count[0]));
      check(a.GetDimensions(p, dims, BigInt(dims.length)), "GetDimensions");
      const t = TYPE_OF.get(type[0]);
      if (!t) {
        throw new TypeError(`ONNX Runtime tensor of element type ${type[0]}, not one the toolkit reads`);
      }
      return this.#shape = { type: t, dims: Array.from(dims, Number) };
    } finally {
      a.ReleaseTensorTypeAndShapeInfo(p);
    }
  }

  /** Where the tensor is: ONNX Runtime's name of its memory ("Cpu", "Cuda", "CudaPinned"…). */
  get location(): string {
    const a = ortApi();
    const info = outPointer(), name = outPointer();
    check(a.GetTensorMemoryInfo(this.pointer, info.out), "GetTensorMemoryInfo");
    check(a.MemoryInfoGetName(info.get(), name.out), "MemoryInfoGetName");
    return Deno.UnsafePointerView.getCString(name.get()!);
  }

  /** Whether JavaScript can read the tensor's memory (host or pinned host memory). */
  get onHost(): boolean {
    const where = this.location;
    return where === "Cpu" || where === "CudaPinned";
  }

  /** A copy in JavaScript memory; the value must be in host memory (else see `copyToHost`). */
  toHost(): HostTensor {
    if (!this.onHost) {
      throw new TypeError(`a tensor in ${this.location} memory: copy it with copyToHost (transfer.ts)`);
    }
    const { type, dims } = this.#info();
    if (!(type in HOST_ARRAYS)) {
      throw new TypeError(`a ${type} tensor has no host type: cast it in the graph`);
    }
    const dtype = type as HostTensor["dtype"];
    const n = dims.reduce((x, y) => x * y, 1);
    const data = new HOST_ARRAYS[dtype](n);
    if (n > 0) new Deno.UnsafePointerView(this.dataPointer()!).copyInto(new Uint8Array(data.buffer));
    return { dtype, dims, data } as HostTensor;
  }

  /** Frees the value now (idempotent). */
  release(): void {
    if (!this.#ptr) return;
    registry.unregister(this);
    ortApi().ReleaseValue(this.#ptr);
    this.#ptr = null;
    void this.#keep;
  }

  /** `using` releases it. */
  [Symbol.dispose](): void {
    this.release();
  }
}
