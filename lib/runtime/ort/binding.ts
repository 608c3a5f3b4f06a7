/**
 * `OrtIoBinding`: a session's inputs and outputs fixed before the run, so that values stay where they
 * are: an input is any {@link OrtValue} (a previous run's output included, on the device it was made on),
 * an output may be left to ONNX Runtime on a given device (`bindOutputToDevice`) and read back as values
 * after the run, without passing through JavaScript.
 * @module
 */
import { check, cString, ortApi, outPointer } from "./api.ts";
import { defaultAllocator, freeWithDefault } from "./env.ts";
import type { MemoryInfo } from "./memory_info.ts";
import { OrtValue } from "./value.ts";

/** Inputs and outputs bound to one session. */
export class IoBinding {
  #ptr: Deno.PointerValue;
  readonly #outputs: string[] = [];
  /** The bound inputs, kept alive until the binding is cleared or released. */
  readonly #inputs = new Map<string, OrtValue>();

  /** @internal Made by {@link OrtSession.binding}. */
  constructor(session: Deno.PointerValue) {
    const out = outPointer();
    check(ortApi().CreateIoBinding(session, out.out), "CreateIoBinding");
    this.#ptr = out.get();
  }

  get pointer(): Deno.PointerValue {
    if (!this.#ptr) throw new Error("IoBinding used after release()");
    return this.#ptr;
  }

  /** Binds an input to a value (no copy where the value already sits on the session's device). */
  bindInput(name: string, value: OrtValue): void {
    check(ortApi().BindInput(this.pointer, cString(name), value.pointer), `BindInput(${name})`);
    this.#inputs.set(name, value);
  }

  /** Binds an output to a value that receives it (its shape must be the output's). */
  bindOutput(name: string, value: OrtValue): void {
    check(ortApi().BindOutput(this.pointer, cString(name), value.pointer), `BindOutput(${name})`);
    this.#outputs.push(name);
  }

  /** Leaves an output to ONNX Runtime, allocated on the device `memory` describes. */
  bindOutputToDevice(name: string, memory: MemoryInfo): void {
    check(
      ortApi().BindOutputToDevice(this.pointer, cString(name), memory.pointer),
      `BindOutputToDevice(${name})`,
    );
    this.#outputs.push(name);
  }

  /** The outputs of the last run, by name, in the order they were bound; the caller owns them. */
  outputs(): Record<string, OrtValue> {
    const a = ortApi();
    const arr = outPointer(), count = new BigUint64Array(1);
    check(a.GetBoundOutputValues(this.pointer, defaultAllocator(), arr.out, count), "GetBoundOutputValues");
    const n = Number(count[0]);
    const out: Record<string, OrtValue> = {};
    if (n === 0) return out;
    const base = arr.get()!;
    const view = new Deno.UnsafePointerView(base);
    for (let i = 0; i < n; i++) out[this.#outputs[i]] = OrtValue.adopt(view.getPointer(i * 8));
    freeWithDefault(base);
    return out;
  }

  /** Unbinds every input and output. */
  clear(): void {
    const a = ortApi();
    a.ClearBoundInputs(this.pointer);
    a.ClearBoundOutputs(this.pointer);
    this.#inputs.clear();
    this.#outputs.length = 0;
  }

  release(): void {
    if (!this.#ptr) return;
    ortApi().ReleaseIoBinding(this.#ptr);
    this.#ptr = null;
    this.#inputs.clear();
  }

  /** `using` releases it. */
  [Symbol.dispose](): void {
    this.release();
  }
}
