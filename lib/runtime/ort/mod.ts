/**
 * ONNX Runtime's C API from Deno: sessions that run on values which stay where they are (a run's outputs
 * fed to the next run without a copy; IO binding for device memory). One file per concept.
 * @module
 */
export { ORT_API_VERSION, OrtError } from "./api.ts";
export { OrtSession, type OrtSessionSettings } from "./session.ts";
export { type ElementType, OrtValue } from "./value.ts";
export { IoBinding } from "./binding.ts";
export { MemoryInfo } from "./memory_info.ts";
export { RunOptions } from "./run_options.ts";
export { copyToHost } from "./transfer.ts";
