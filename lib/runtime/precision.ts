/**
 * Which devices can run float16 graphs. ONNX Runtime's CUDA provider has fp16 kernels for every operator
 * the toolkit's graphs use. Its CPU provider has only some; measured with onnxruntime-node 1.29.0 on x86-64
 * (one-node fp16 graphs, the kernel each node ran with read from ONNX Runtime's profiler; see
 * tests/train/precision_test.ts, which measures it again):
 *
 * - fp16 kernels ({@link CPU_FLOAT16_KERNELS}): MatMul, Gemm, LayerNormalization, Gather, GatherElements,
 *   Cast, the shape ops (Reshape, Transpose, Concat, Split, Slice, Squeeze, Unsqueeze, Expand, Shape,
 *   Identity), Max, Min, Clip, Sign, IsNaN.
 * - no fp16 kernel, run in float32 behind Cast nodes ONNX Runtime inserts (and where a Cast pair
 *   float32→fp16→float32 results, it drops it, so some values are never rounded to fp16): Add, Sub, Mul,
 *   Div, Pow, Sum, Neg, Exp, Log, Sqrt, Reciprocal, Tanh, Sigmoid, FastGelu, Erf, Cos, Sin, Where, Equal, Greater,
 *   Less(OrEqual), GreaterOrEqual, ReduceSum, ReduceMean, ReduceMax, ReduceLogSumExp (in float64), Softmax
 *   and LogSoftmax (expanded into their function bodies), Softplus, Pad, CumSum, Trilu, RandomUniformLike,
 *   Dropout.
 * - failing at run time: ScatterND and ScatterElements with reduction "add" ("MLFloat16 data type is not
 *   supported"), the gradients of Gather and GatherElements; and IsInf, which takes no fp16 before opset 20
 *   on any device.
 *
 * So an fp16 training graph does run on the CPU (the decoder keeps its scatters in float32), but most of it
 * in float32 with casts around it: slower than the float32 graph, and numerics that are neither fp16's
 * nor float32's. Training in fp16 is for CUDA; {@link float16DeviceError} says so.
 * @module
 */
import type { GraphBuilder } from "../graph/builder.ts";
import type { Device } from "./tensor.ts";

/** Operators with a float16 kernel in ONNX Runtime 1.29's CPU provider (measured; see the module doc). */
export const CPU_FLOAT16_KERNELS: ReadonlySet<string> = new Set([
  "MatMul",
  "Gemm",
  "LayerNormalization",
  "Gather",
  "GatherElements",
  "Cast",
  "Reshape",
  "Transpose",
  "Concat",
  "Split",
  "Slice",
  "Squeeze",
  "Unsqueeze",
  "Expand",
  "Shape",
  "Identity",
  "Max",
  "Min",
  "Clip",
  "Sign",
  "IsNaN",
]);

/** The operator types of `g` (Loop bodies included) that read or write a float16 tensor, sorted. */
export function float16Ops(g: GraphBuilder): string[] {
  const ops = new Set<string>();
  const walk = (b: GraphBuilder) => {
    for (const n of b.nodes) {
      if ([...n.inputs, ...n.outputs].some((v) => v?.dtype === "float16")) ops.add(n.op);
    }
    b.children.forEach(walk);
  };
  walk(g);
  return [...ops].sort();
}

/** The operators of `g` that touch float16 and have no float16 kernel on the CPU (empty: none). */
export function cpuFloat16Gaps(g: GraphBuilder): string[] {
  return float16Ops(g).filter((op) => !CPU_FLOAT16_KERNELS.has(op));
}

/**
 * The error for fp16 training on the CPU: `gaps` are the operators without a CPU fp16 kernel (most
 * important first), `fallback` the notice of `--device auto` falling back to the CPU, if it did.
 */
export function float16DeviceError(gaps: readonly string[], fallback?: string): Error {
  const ops = gaps.length > 1
    ? `${gaps.slice(0, -1).join(", ")} or ${gaps.at(-1)}`
    : gaps[0] ?? "its operators";
  return new Error(
    `--precision fp16 needs --device cuda: ONNX Runtime's CPU provider has no float16 kernel for ${ops}, ` +
      `which the fp16 training graph uses (it would run them in float32 behind casts it inserts: slower than ` +
      `--precision fp32, and not fp16's numerics). Train with --precision fp32 on the CPU.` +
      (fallback ? `\n--device auto chose the CPU: ${fallback.replace(/; running on the CPU$/, "")}` : ""),
  );
}

/** Throws {@link float16DeviceError} unless `device` runs float16 graphs (CUDA). */
export function assertFloat16Device(device: Device, gaps: readonly string[], fallback?: string): void {
  if (device !== "cuda") throw float16DeviceError(gaps, fallback);
}
