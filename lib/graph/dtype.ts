/**
 * Element types of graph tensors and their ONNX codes.
 *
 * Graph inputs and outputs stay fp32/int32/int64 (fp16 tensors break across Deno's N-API); fp16 and
 * fp64 live inside graphs and tests.
 * @module
 */

/** The element types the builder knows. */
export type DType =
  | "float32"
  | "float16"
  | "bfloat16"
  | "float64"
  | "int32"
  | "int64"
  | "bool"
  | "uint8"
  | "int8";

/** ONNX TensorProto.DataType codes. */
export const ONNX_DTYPE: Readonly<Record<DType, number>> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  bfloat16: 16,
};

/** The reverse of {@link ONNX_DTYPE}. */
export function dtypeFromOnnx(code: number): DType {
  for (const [name, c] of Object.entries(ONNX_DTYPE)) if (c === code) return name as DType;
  throw new TypeError(`unsupported ONNX data type ${code}`);
}

/** Bytes per element. */
export function dtypeSize(dtype: DType): number {
  switch (dtype) {
    case "float64":
    case "int64":
      return 8;
    case "float32":
    case "int32":
      return 4;
    case "float16":
    case "bfloat16":
      return 2;
    default:
      return 1;
  }
}

/**
 * Floating-point types carry gradients; integer and boolean types do not. bfloat16 is a storage type
 * (frozen weights as their checkpoint holds them, cast where used), so it is a float too.
 */
export function isFloat(dtype: DType): boolean {
  return dtype === "float32" || dtype === "float16" || dtype === "float64" || dtype === "bfloat16";
}

/** Typed arrays that can back a tensor's data. float16 and bfloat16 data are raw Uint16Array bits. */
export type TensorArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Int8Array
  | Uint16Array;
