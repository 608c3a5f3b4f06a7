/**
 * The training engine's graph layer: a typed ONNX graph builder, operators, reverse-mode autodiff,
 * optimizers, Loop-chunked training graphs and (de)serialization.
 * @module
 */
export * from "./dtype.ts";
export type {
  Attr,
  Dim,
  ExternalData,
  ExternalTensor,
  Graph,
  InlineTensor,
  Node,
  TensorData,
  ValueInfo,
} from "./ir.ts";
export { IR_VERSION, OPSET } from "./ir.ts";
export {
  type BuiltNode,
  dtypeOfArray,
  GraphBuilder,
  makeArray,
  type OutSpec,
  type Segment,
  toHalfBits,
  Value,
} from "./builder.ts";
export * as op from "./ops.ts";
export { freeNames, type GradientOptions, gradients, type SegmentMode } from "./autodiff.ts";
export { type BlockFn, chunkedRows } from "./chunked.ts";
export { constValues, sumTo, VJP, type VjpRule } from "./vjp.ts";
export { addLoop, type LoopResult, type LoopSpec, renameGraph, runOnce } from "./loop.ts";
export * from "./optim.ts";
export * from "./training.ts";
export * from "./distributed.ts";
export * from "./serialize.ts";
export { broadcastShapes } from "./shape.ts";
