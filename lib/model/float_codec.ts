/**
 * The dtypes of safetensors files and the conversions between their little-endian bytes and fp32: F64, F32,
 * F16 and BF16 read as fp32, fp32 written as F32, F16 or BF16 (round to nearest even, as PyTorch casts). A
 * concept of its own: the weight readers, the ONNX graphs' initializers and the tests all convert.
 * @module
 */

/** Every dtype the safetensors spec defines; only the floating ones can be loaded as fp32. */
export const SAFETENSORS_DTYPES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

/** A dtype name as it appears in a safetensors header. */
export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

/** Output dtypes the writer supports; fp32 is the default because it is lossless for our tensors. */
export type OutputDtype = "float32" | "float16" | "bfloat16";

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// ---------------------------------------------------------------------------------------------------------
// Scalar conversions
// ---------------------------------------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** fp32 bit pattern of a number (after rounding it to fp32), for exact bit-level tests and conversions. */
export function f32Bits(x: number): number {
  f32Scratch[0] = x;
  return u32Scratch[0];
}

/** The fp32 value of a 32-bit pattern. */
export function f32FromBits(bits: number): number {
  u32Scratch[0] = bits >>> 0;
  return f32Scratch[0];
}

/**
 * Decode an IEEE half-float bit pattern, including subnormals, infinities and NaN (payload kept), exactly:
 * every fp16 value is representable in fp32.
 */
export function f16BitsToF32(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) {
    const v = mant * 2 ** -24; // subnormal (or zero): mant * 2^-14 * 2^-10
    return sign ? -v : v;
  }
  if (exp === 0x1f) return f32FromBits(sign | 0x7f800000 | (mant << 13));
  return f32FromBits(sign | ((exp + 112) << 23) | (mant << 13));
}

/**
 * Encode an fp32 value as a half-float bit pattern with round-to-nearest-even, overflow to infinity,
 * gradual underflow to subnormals and a quiet NaN for NaN — the same result as numpy/torch `.half()`.
 */
export function f32ToF16Bits(x: number): number {
  const f = f32Bits(x);
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const mant = f & 0x7fffff;
  if (exp === 0xff) return mant !== 0 ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  if (exp >= 143) return sign | 0x7c00; // |x| >= 2^16: overflow
  if (exp >= 113) {
    // Normal half: rebias the exponent and round the 13 dropped mantissa bits; a carry may reach infinity.
    let q = ((exp - 112) << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (q & 1) === 1)) q++;
    return sign | q;
  }
  if (exp <= 101) return sign; // below half the smallest subnormal: rounds to (signed) zero
  // Subnormal half: value = full * 2^(exp-150) = q * 2^-24, so q = full >> (126 - exp), rounded.
  const full = mant | 0x800000;
  const shift = 126 - exp; // 14..24
  let q = full >>> shift;
  const rem = full & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) === 1)) q++; // q may carry into the smallest normal: still right
  return sign | q;
}

/** Decode a bfloat16 bit pattern: it is the top half of an fp32, so this is exact. */
export function bf16BitsToF32(b: number): number {
  return f32FromBits((b & 0xffff) << 16);
}

/** Encode an fp32 value as bfloat16 with round-to-nearest-even; NaN stays a (quiet) NaN. */
export function f32ToBf16Bits(x: number): number {
  const f = f32Bits(x);
  if ((f & 0x7fffffff) > 0x7f800000) return ((f >>> 16) | 0x0040) & 0xffff;
  return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
}

let f16Table: Float32Array | undefined;

/** All 65536 half-float values, built once: a table lookup is the fastest bulk decoder in JS. */
function halfTable(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32(h);
  }
  return f16Table;
}

// ---------------------------------------------------------------------------------------------------------
// Bulk conversions (raw little-endian bytes <-> fp32)
// ---------------------------------------------------------------------------------------------------------

/** Whether a dtype can be loaded as fp32 (the floating dtypes; fp8 is not supported). */
export function isLoadableDtype(dtype: string): dtype is "F64" | "F32" | "F16" | "BF16" {
  return dtype === "F64" || dtype === "F32" || dtype === "F16" || dtype === "BF16";
}

/** A `Uint8Array` over the same memory, for zero-copy writes. */
function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Copy `bytes` into a fresh, aligned buffer when it is not suitably aligned for a typed-array view. */
function aligned(bytes: Uint8Array, alignment: number): Uint8Array {
  return bytes.byteOffset % alignment === 0 ? bytes : bytes.slice();
}

/**
 * Convert one tensor's raw little-endian bytes to fp32. For F32 with aligned input on a little-endian host
 * the result is a view over `bytes` (no copy), so callers must hand over ownership of the buffer.
 */
export function decodeToFloat32(bytes: Uint8Array, dtype: SafetensorsDtype, numel: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F32": {
      if (LITTLE_ENDIAN_HOST) {
        const b = aligned(bytes, 4);
        return new Float32Array(b.buffer, b.byteOffset, numel);
      }
      const out = new Float32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    case "F16": {
      const table = halfTable();
      const out = new Float32Array(numel);
      if (LITTLE_ENDIAN_HOST) {
        const b = aligned(bytes, 2);
        const src = new Uint16Array(b.buffer, b.byteOffset, numel);
        for (let i = 0; i < numel; i++) out[i] = table[src[i]];
      } else {
        for (let i = 0; i < numel; i++) out[i] = table[view.getUint16(i * 2, true)];
      }
      return out;
    }
    case "BF16": {
      const out = new Float32Array(numel);
      const outBits = new Uint32Array(out.buffer);
      if (LITTLE_ENDIAN_HOST) {
        const b = aligned(bytes, 2);
        const src = new Uint16Array(b.buffer, b.byteOffset, numel);
        for (let i = 0; i < numel; i++) outBits[i] = src[i] << 16;
      } else {
        for (let i = 0; i < numel; i++) out[i] = bf16BitsToF32(view.getUint16(i * 2, true));
      }
      return out;
    }
    case "F64": {
      const out = new Float32Array(numel);
      for (let i = 0; i < numel; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    }
    default:
      throw new Error(`dtype ${dtype} cannot be converted to fp32`);
  }
}

/** Bytes per element of an output dtype. */
export function outputDtypeSize(dtype: OutputDtype): number {
  return dtype === "float32" ? 4 : 2;
}

/** The safetensors header name of an output dtype. */
export function outputDtypeName(dtype: OutputDtype): SafetensorsDtype {
  return dtype === "float32" ? "F32" : dtype === "float16" ? "F16" : "BF16";
}

/**
 * Encode fp32 values as raw little-endian bytes of `dtype`. For fp32 on a little-endian host the result
 * aliases `data` (no copy).
 */
export function encodeFromFloat32(data: Float32Array, dtype: OutputDtype): Uint8Array {
  const n = data.length;
  if (dtype === "float32") {
    if (LITTLE_ENDIAN_HOST) return bytesOf(data);
    const out = new Uint8Array(n * 4);
    const view = new DataView(out.buffer);
    for (let i = 0; i < n; i++) view.setFloat32(i * 4, data[i], true);
    return out;
  }
  const out = new Uint8Array(n * 2);
  const view = new DataView(out.buffer);
  if (dtype === "bfloat16") {
    const bits = new Uint32Array(data.buffer, data.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const f = bits[i];
      const b = (f & 0x7fffffff) > 0x7f800000 ? (f >>> 16) | 0x0040 : (f + 0x7fff + ((f >>> 16) & 1)) >>> 16;
      view.setUint16(i * 2, b & 0xffff, true);
    }
  } else {
    for (let i = 0; i < n; i++) view.setUint16(i * 2, f32ToF16Bits(data[i]), true);
  }
  return out;
}
