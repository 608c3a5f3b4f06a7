/**
 * `OrtRunOptions`: what one run is told from outside. {@link RunOptions.terminate} stops a run in flight
 * (ONNX Runtime checks the flag between nodes and inside Loops), which is how a cancelled generation or a
 * stopped training ends without waiting for its run.
 * @module
 */
import { check, ortApi, outPointer } from "./api.ts";

/** Options of one or more runs; a terminated one stays so until {@link RunOptions.reset}. */
export class RunOptions {
  #ptr: Deno.PointerValue;

  constructor() {
    const out = outPointer();
    check(ortApi().CreateRunOptions(out.out), "CreateRunOptions");
    this.#ptr = out.get();
  }

  get pointer(): Deno.PointerValue {
    if (!this.#ptr) throw new Error("RunOptions used after release()");
    return this.#ptr;
  }

  /** Makes the runs using these options stop with an error as soon as ONNX Runtime checks. */
  terminate(): void {
    check(ortApi().RunOptionsSetTerminate(this.pointer), "RunOptionsSetTerminate");
  }

  /** Clears {@link terminate}, for the next run. */
  reset(): void {
    check(ortApi().RunOptionsUnsetTerminate(this.pointer), "RunOptionsUnsetTerminate");
  }

  release(): void {
    if (this.#ptr) ortApi().ReleaseRunOptions(this.#ptr);
    this.#ptr = null;
  }

  /** `using` releases it. */
  [Symbol.dispose](): void {
    this.release();
  }
}
