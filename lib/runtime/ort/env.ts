/**
 * What the process holds once: ONNX Runtime's environment (its thread pools and logger; the C API hands
 * back the same one to every caller, onnxruntime-node included), the CPU memory description and the
 * default CPU allocator. None of them is released before the process ends.
 * @module
 */
import { check, cString, ortApi, outPointer } from "./api.ts";

/** ONNX Runtime's log levels: only errors and worse are printed. */
const LOG_ERROR = 3;
/** `OrtArenaAllocator`, `OrtMemTypeDefault`. */
const ARENA_ALLOCATOR = 1, MEM_DEFAULT = 0;

let env: Deno.PointerValue | undefined;
let cpuInfo: Deno.PointerValue | undefined;
let allocator: Deno.PointerValue | undefined;

/** The process's `OrtEnv`. */
export function ortEnv(): Deno.PointerValue {
  if (env) return env;
  const out = outPointer();
  check(ortApi().CreateEnv(LOG_ERROR, cString("nca-align"), out.out), "CreateEnv");
  return env = out.get();
}

/** The `OrtMemoryInfo` of host memory, for tensors over JavaScript buffers. */
export function cpuMemoryInfo(): Deno.PointerValue {
  if (cpuInfo) return cpuInfo;
  const out = outPointer();
  check(ortApi().CreateCpuMemoryInfo(ARENA_ALLOCATOR, MEM_DEFAULT, out.out), "CreateCpuMemoryInfo");
  return cpuInfo = out.get();
}

/** ONNX Runtime's default CPU allocator (frees the names and arrays the C API allocates). */
export function defaultAllocator(): Deno.PointerValue {
  if (allocator) return allocator;
  const out = outPointer();
  check(ortApi().GetAllocatorWithDefaultOptions(out.out), "GetAllocatorWithDefaultOptions");
  return allocator = out.get();
}

/** Frees memory the C API allocated with the default allocator. */
export function freeWithDefault(p: Deno.PointerValue): void {
  if (p) check(ortApi().AllocatorFree(defaultAllocator(), p), "AllocatorFree");
}
