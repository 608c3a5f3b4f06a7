/**
 * Running graphs: ONNX Runtime sessions on CPU or CUDA, and chunked training sessions.
 * @module
 */
export * from "./session.ts";
export * from "./graph_folder.ts";
export * from "./device_memory.ts";
export * from "./training_session.ts";
export * from "./device.ts";
export * from "./cuda.ts";
export * from "./precision.ts";
export * from "./ort/mod.ts";
export * from "./comm/mod.ts";
