/**
 * Protocol-buffers wire format: a size-first writer (so large byte fields are copied once, straight into
 * the output buffer) and a reader for round trips. Only what ONNX's schema needs: varints, 32- and 64-bit
 * fixed fields, length-delimited fields.
 * @module
 */

/** A message to write: fields in order. Nested messages are themselves `Msg`. */
export type Field =
  | { no: number; kind: "varint"; value: number | bigint }
  | { no: number; kind: "float"; value: number }
  | { no: number; kind: "bytes"; value: Uint8Array }
  | { no: number; kind: "string"; value: string }
  | { no: number; kind: "message"; value: Msg }
  | { no: number; kind: "packedVarint"; value: readonly (number | bigint)[] }
  | { no: number; kind: "packedFloat"; value: readonly number[] };

/** A message as a list of fields, with a memoized size. */
export class Msg {
  readonly fields: Field[] = [];
  #size = -1;

  varint(no: number, value: number | bigint): this {
    this.fields.push({ no, kind: "varint", value });
    return this;
  }
  float(no: number, value: number): this {
    this.fields.push({ no, kind: "float", value });
    return this;
  }
  bytes(no: number, value: Uint8Array): this {
    this.fields.push({ no, kind: "bytes", value });
    return this;
  }
  string(no: number, value: string): this {
    this.fields.push({ no, kind: "string", value });
    return this;
  }
  message(no: number, value: Msg): this {
    this.fields.push({ no, kind: "message", value });
    return this;
  }
  packedVarint(no: number, value: readonly (number | bigint)[]): this {
    this.fields.push({ no, kind: "packedVarint", value });
    return this;
  }
  packedFloat(no: number, value: readonly number[]): this {
    this.fields.push({ no, kind: "packedFloat", value });
    return this;
  }

  /** Encoded size in bytes (computed once). */
  size(): number {
    if (this.#size >= 0) return this.#size;
    let n = 0;
    for (const f of this.fields) n += fieldSize(f);
    this.#size = n;
    return n;
  }

  /** Encodes the message into a fresh buffer of exactly the right size. */
  encode(): Uint8Array {
    const out = new Uint8Array(this.size());
    const end = writeMsg(this, out, 0);
    if (end !== out.length) throw new Error(`protobuf size mismatch: ${end} != ${out.length}`);
    return out;
  }
}

const utf8 = new TextEncoder();
const stringBytes = new WeakMap<Field, Uint8Array>();

function strBytes(f: Field & { kind: "string" }): Uint8Array {
  let b = stringBytes.get(f);
  if (!b) stringBytes.set(f, b = utf8.encode(f.value));
  return b;
}

function varintSize(v: number | bigint): number {
  let x = typeof v === "bigint" ? BigInt.asUintN(64, v) : v < 0 ? BigInt.asUintN(64, BigInt(v)) : v;
  if (typeof x === "number") {
    let n = 1;
    while (x >= 128) {
      x = Math.floor(x / 128);
      n++;
    }
    return n;
  }
  let n = 1;
  while (x >= 128n) {
    x >>= 7n;
    n++;
  }
  return n;
}

function payloadSize(f: Field): number {
  switch (f.kind) {
    case "varint":
      return varintSize(f.value);
    case "float":
      return 4;
    case "bytes":
      return f.value.length;
    case "string":
      return strBytes(f).length;
    case "message":
      return f.value.size();
    case "packedVarint": {
      let n = 0;
      for (const v of f.value) n += varintSize(v);
      return n;
    }
    case "packedFloat":
      return 4 * f.value.length;
  }
}

function fieldSize(f: Field): number {
  const p = payloadSize(f);
  const tag = varintSize(f.no * 8);
  if (f.kind === "varint" || f.kind === "float") return tag + p;
  return tag + varintSize(p) + p;
}

function writeVarint(out: Uint8Array, pos: number, v: number | bigint): number {
  if (typeof v === "number" && v >= 0 && v < 2 ** 31) {
    while (v >= 128) {
      out[pos++] = (v & 127) | 128;
      v >>>= 7;
    }
    out[pos++] = v;
    return pos;
  }
  let x = BigInt.asUintN(64, BigInt(v));
  while (x >= 128n) {
    out[pos++] = Number(x & 127n) | 128;
    x >>= 7n;
  }
  out[pos++] = Number(x);
  return pos;
}

function writeMsg(m: Msg, out: Uint8Array, pos: number): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (const f of m.fields) {
    const wire = f.kind === "varint" ? 0 : f.kind === "float" ? 5 : 2;
    pos = writeVarint(out, pos, f.no * 8 + wire);
    switch (f.kind) {
      case "varint":
        pos = writeVarint(out, pos, f.value);
        break;
      case "float":
        view.setFloat32(pos, f.value, true);
        pos += 4;
        break;
      case "bytes":
        pos = writeVarint(out, pos, f.value.length);
        out.set(f.value, pos);
        pos += f.value.length;
        break;
      case "string": {
        const b = strBytes(f);
        pos = writeVarint(out, pos, b.length);
        out.set(b, pos);
        pos += b.length;
        break;
      }
      case "message":
        pos = writeVarint(out, pos, f.value.size());
        pos = writeMsg(f.value, out, pos);
        break;
      case "packedVarint":
        pos = writeVarint(out, pos, payloadSize(f));
        for (const v of f.value) pos = writeVarint(out, pos, v);
        break;
      case "packedFloat":
        pos = writeVarint(out, pos, 4 * f.value.length);
        for (const v of f.value) {
          view.setFloat32(pos, v, true);
          pos += 4;
        }
        break;
    }
  }
  return pos;
}

/** A decoded field: varints as bigint, fixed32 as its raw bits, length-delimited as a byte view. */
export type RawField =
  | { no: number; wire: 0; value: bigint }
  | { no: number; wire: 1; value: bigint }
  | { no: number; wire: 2; value: Uint8Array }
  | { no: number; wire: 5; value: number };

/** Splits one message's bytes into its fields (views, no copies). */
export function readFields(buf: Uint8Array): RawField[] {
  const out: RawField[] = [];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n, shift = 0n;
    for (;;) {
      if (pos >= buf.length) throw new RangeError("protobuf: truncated varint");
      const b = buf[pos++];
      result |= BigInt(b & 127) << shift;
      if (b < 128) return result;
      shift += 7n;
    }
  };
  while (pos < buf.length) {
    const tag = Number(varint());
    const no = tag >>> 3, wire = tag & 7;
    if (wire === 0) out.push({ no, wire, value: varint() });
    else if (wire === 1) {
      out.push({ no, wire, value: view.getBigUint64(pos, true) });
      pos += 8;
    } else if (wire === 2) {
      const len = Number(varint());
      if (pos + len > buf.length) throw new RangeError("protobuf: truncated field");
      out.push({ no, wire, value: buf.subarray(pos, pos + len) });
      pos += len;
    } else if (wire === 5) {
      out.push({ no, wire, value: view.getUint32(pos, true) });
      pos += 4;
    } else throw new RangeError(`protobuf: unsupported wire type ${wire}`);
  }
  return out;
}

/** Decodes a packed (or single) varint field as signed 64-bit numbers. */
export function readPackedVarints(f: RawField): number[] {
  if (f.wire === 0) return [Number(BigInt.asIntN(64, f.value))];
  if (f.wire !== 2) throw new RangeError("protobuf: expected varints");
  const out: number[] = [];
  const buf = f.value;
  let pos = 0;
  while (pos < buf.length) {
    let result = 0n, shift = 0n;
    for (;;) {
      const b = buf[pos++];
      result |= BigInt(b & 127) << shift;
      if (b < 128) break;
      shift += 7n;
    }
    out.push(Number(BigInt.asIntN(64, result)));
  }
  return out;
}

/** Decodes a packed (or single) float field. */
export function readPackedFloats(f: RawField): number[] {
  if (f.wire === 5) return [new Float32Array(new Uint32Array([f.value]).buffer)[0]];
  if (f.wire !== 2) throw new RangeError("protobuf: expected floats");
  const v = new DataView(f.value.buffer, f.value.byteOffset, f.value.byteLength);
  const out: number[] = [];
  for (let i = 0; i < f.value.length; i += 4) out.push(v.getFloat32(i, true));
  return out;
}

const utf8d = new TextDecoder();
/** Decodes a length-delimited field as UTF-8. */
export function readString(f: RawField): string {
  if (f.wire !== 2) throw new RangeError("protobuf: expected a string");
  return utf8d.decode(f.value);
}
