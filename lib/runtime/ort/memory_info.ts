/**
 * `OrtMemoryInfo`: where a tensor lives. The CPU's, or a CUDA device's (what outputs bound with
 * {@link IoBinding.bindOutputToDevice} are allocated on, so they stay on the GPU between runs).
 * @module
 */
import { check, cString, ortApi, outPointer } from "./api.ts";

/** `OrtArenaAllocator`, `OrtDeviceAllocator`, `OrtMemTypeDefault`. */
const ARENA = 1, DEVICE = 0, MEM_DEFAULT = 0;

/** A memory location. */
export class MemoryInfo {
  #ptr: Deno.PointerValue;

  private constructor(ptr: Deno.PointerValue) {
    this.#ptr = ptr;
  }

  /** Host memory, from ONNX Runtime's CPU arena. */
  static cpu(): MemoryInfo {
    const out = outPointer();
    check(ortApi().CreateCpuMemoryInfo(ARENA, MEM_DEFAULT, out.out), "CreateCpuMemoryInfo");
    return new MemoryInfo(out.get());
  }

  /** Memory of CUDA device `deviceId`, from the CUDA provider's allocator. */
  static cuda(deviceId = 0): MemoryInfo {
    const out = outPointer();
    check(
      ortApi().CreateMemoryInfo(cString("Cuda"), DEVICE, deviceId, MEM_DEFAULT, out.out),
      "CreateMemoryInfo",
    );
    return new MemoryInfo(out.get());
  }

  get pointer(): Deno.PointerValue {
    if (!this.#ptr) throw new Error("MemoryInfo used after release()");
    return this.#ptr;
  }

  release(): void {
    if (this.#ptr) ortApi().ReleaseMemoryInfo(this.#ptr);
    this.#ptr = null;
  }

  /** `using` releases it. */
  [Symbol.dispose](): void {
    this.release();
  }
}
