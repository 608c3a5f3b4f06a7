/**
 * A TensorBoard event-file reader written independently of lib/train/tensorboard.ts (a bitwise CRC-32C,
 * a generic protobuf field decoder), to check what the writer writes.
 */
import assert from "node:assert/strict";

/** CRC-32C bit by bit (no table), reflected polynomial 0x82F63B78. */
export function crc32cBitwise(bytes: Uint8Array): number {
  let c = ~0 >>> 0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
    c >>>= 0;
  }
  return (~c) >>> 0;
}

const masked = (bytes: Uint8Array) => {
  const c = crc32cBitwise(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
};

/** The TFRecords of a file, with both CRCs verified. */
export function readRecords(file: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  let at = 0;
  while (at < file.length) {
    const len = Number(view.getBigUint64(at, true));
    assert.equal(view.getUint32(at + 8, true), masked(file.subarray(at, at + 8)), `length CRC at ${at}`);
    const data = file.subarray(at + 12, at + 12 + len);
    assert.equal(view.getUint32(at + 12 + len, true), masked(data), `data CRC at ${at}`);
    out.push(data);
    at += 12 + len + 4;
  }
  assert.equal(at, file.length, "the file ends with a whole record");
  return out;
}

/** A decoded protobuf field: varint as a number, fixed64/fixed32 as their bytes, length-delimited as bytes. */
type Field = { field: number; wire: number; value: number | Uint8Array };

function fields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = () => {
    let v = 0, mul = 1;
    for (;;) {
      const b = buf[i++];
      v += (b & 127) * mul;
      mul *= 128;
      if (b < 128) return v;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) out.push({ field, wire, value: varint() });
    else if (wire === 1) out.push({ field, wire, value: buf.slice(i, i += 8) });
    else if (wire === 5) out.push({ field, wire, value: buf.slice(i, i += 4) });
    else if (wire === 2) {
      const n = varint();
      out.push({ field, wire, value: buf.slice(i, i += n) });
    } else throw new Error(`wire type ${wire}`);
  }
  return out;
}

/** A decoded `Event`: wall time, step, file version, and the scalars of its summary. */
export type DecodedEvent = {
  wallTime: number;
  step: number;
  fileVersion?: string;
  scalars: Record<string, number>;
};

/** Decodes an `Event` proto (fields 1, 2, 3 and 5 → Summary.Value{tag 1, simple_value 2}). */
export function decodeEvent(buf: Uint8Array): DecodedEvent {
  const e: DecodedEvent = { wallTime: NaN, step: 0, scalars: {} };
  for (const f of fields(buf)) {
    const bytes = f.value as Uint8Array;
    if (f.field === 1 && f.wire === 1) e.wallTime = new DataView(bytes.buffer).getFloat64(0, true);
    else if (f.field === 2 && f.wire === 0) e.step = f.value as number;
    else if (f.field === 3 && f.wire === 2) e.fileVersion = new TextDecoder().decode(bytes);
    else if (f.field === 5 && f.wire === 2) {
      for (const v of fields(bytes)) {
        assert.equal(v.field, 1, "Summary.value is field 1");
        let tag = "", value = NaN;
        for (const x of fields(v.value as Uint8Array)) {
          if (x.field === 1) tag = new TextDecoder().decode(x.value as Uint8Array);
          if (x.field === 2 && x.wire === 5) {
            value = new DataView((x.value as Uint8Array).buffer).getFloat32(0, true);
          }
        }
        e.scalars[tag] = value;
      }
    } else throw new Error(`unexpected Event field ${f.field} (wire ${f.wire})`);
  }
  return e;
}

/** Every event of every event file in `dir` (in file-name order). */
export async function readEventDir(dir: string): Promise<{ files: string[]; events: DecodedEvent[] }> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile) files.push(e.name);
  files.sort();
  const events: DecodedEvent[] = [];
  for (const f of files) {
    for (const r of readRecords(await Deno.readFile(`${dir}/${f}`))) events.push(decodeEvent(r));
  }
  return { files, events };
}
