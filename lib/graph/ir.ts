/**
 * The intermediate representation the builder produces and the serializer writes: a plain-data mirror
 * of the parts of ONNX's GraphProto the toolkit uses.
 * @module
 */
import type { DType, TensorArray } from "./dtype.ts";

/** A dimension: a number, or a symbolic name resolved when the session runs. */
export type Dim = number | string;

/** An attribute value, tagged with its ONNX attribute type. */
export type Attr =
  | { type: "int"; value: number }
  | { type: "float"; value: number }
  | { type: "string"; value: string }
  | { type: "ints"; value: number[] }
  | { type: "floats"; value: number[] }
  | { type: "tensor"; value: TensorData }
  | { type: "graph"; value: Graph };

/**
 * Where an initializer's bytes live outside the model: `length` bytes at `offset` of `file` (an absolute
 * path), little-endian and row-major, as ONNX external data and safetensors both store a tensor. The
 * serializer turns `file` into a location relative to the model file (see serialize.ts).
 */
export type ExternalData = { file: string; offset: number; length: number };

/** A tensor with its values in memory. */
export type InlineTensor = {
  name: string;
  dtype: DType;
  dims: number[];
  data: TensorArray;
  external?: undefined;
};

/** A tensor whose values stay in a file (a frozen weight read by ONNX Runtime, never by JavaScript). */
export type ExternalTensor = {
  name: string;
  dtype: DType;
  dims: number[];
  external: ExternalData;
  data?: undefined;
};

/** A tensor with data: an initializer, or the value of a Constant-like attribute. */
export type TensorData = InlineTensor | ExternalTensor;

/** A graph input or output: a name with its type. */
export type ValueInfo = { name: string; dtype: DType; shape: Dim[] };

/** One operator application. Missing optional inputs are empty strings, as in ONNX. */
export type Node = {
  op: string;
  domain?: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, Attr>;
};

/** A graph: nodes in topological order, its interface and its initializers. */
export type Graph = {
  name: string;
  nodes: Node[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers: TensorData[];
};

/** The opset the builder targets: ONNX Runtime 1.29 supports it fully on CPU and CUDA. */
export const OPSET = 18;
/** The IR version written into models (ONNX 1.14, opset 19 and below). */
export const IR_VERSION = 9;
