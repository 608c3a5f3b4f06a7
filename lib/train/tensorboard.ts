/**
 * TensorBoard event files, written without TensorFlow or a protobuf library: `--report-to tensorboard`
 * writes `runs/<run>/tensorboard/events.out.tfevents.<time>.<host>`, one scalar per metric of each
 * `metrics.jsonl` line, under the same names, so `tensorboard --logdir runs` shows a run beside TRL's.
 *
 * An event file is a sequence of TFRecords (little-endian uint64 length, masked CRC-32C of those 8 bytes,
 * the data, masked CRC-32C of the data), each holding one `tensorflow.Event` proto: `wall_time` (double,
 * field 1), `step` (int64, field 2), and either `file_version` (string, field 3; "brain.Event:2", the first
 * record) or `summary` (field 5: `Summary { repeated Value value = 1 }`, `Value { string tag = 1; float
 * simple_value = 2 }`). The few fields needed are encoded by hand below.
 * @module
 */
import { join } from "node:path";

/** CRC-32C (Castagnoli) lookup table, reflected polynomial 0x82F63B78. */
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of `bytes` (TFRecord's checksum; "123456789" → 0xE3069283). */
export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC32C_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 and add a constant, so a CRC of CRCs is not trivially 0. */
export function maskedCrc32c(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: length, its masked CRC, the data, the data's masked CRC. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/** A growing byte buffer with the protobuf wire encodings the event protos use. */
class ProtoWriter {
  readonly bytes: number[] = [];
  varint(v: number): this {
    // arithmetic, not bit operations: steps may pass 2^31
    let x = Math.max(0, Math.floor(v));
    while (x >= 128) {
      this.bytes.push((x % 128) | 128);
      x = Math.floor(x / 128);
    }
    this.bytes.push(x);
    return this;
  }
  tag(field: number, wire: 0 | 1 | 2 | 5): this {
    return this.varint(field * 8 + wire);
  }
  double(field: number, v: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.tag(field, 1).bytes.push(...b);
    return this;
  }
  float(field: number, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.tag(field, 5).bytes.push(...b);
    return this;
  }
  int(field: number, v: number): this {
    return this.tag(field, 0).varint(v);
  }
  message(field: number, body: Uint8Array | number[]): this {
    this.tag(field, 2).varint(body.length);
    for (const b of body) this.bytes.push(b);
    return this;
  }
  string(field: number, s: string): this {
    return this.message(field, new TextEncoder().encode(s));
  }
  done(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

/** What one `Event` carries: the file version (first record) or scalars. */
export type EventFields = {
  wallTime: number;
  step: number;
  fileVersion?: string;
  /** Tag → value, written as `Summary.Value { tag, simple_value }` (float32). */
  scalars?: Record<string, number>;
};

/** A `tensorflow.Event` proto's bytes. */
export function encodeEvent(e: EventFields): Uint8Array {
  const w = new ProtoWriter().double(1, e.wallTime);
  if (e.step !== 0) w.int(2, e.step); // proto3: the default value is left out
  if (e.fileVersion !== undefined) w.string(3, e.fileVersion);
  if (e.scalars) {
    const summary = new ProtoWriter();
    for (const [tag, v] of Object.entries(e.scalars)) {
      summary.message(1, new ProtoWriter().string(1, tag).float(2, v).done());
    }
    w.message(5, summary.done());
  }
  return w.done();
}

/** The event file name TensorFlow's writer uses: `events.out.tfevents.<unix seconds>.<host>`. */
export function eventFileName(seconds: number, host: string): string {
  return `events.out.tfevents.${String(Math.floor(seconds)).padStart(10, "0")}.${host}`;
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "localhost"; // without --allow-sys
  }
}

/**
 * Appends scalar events to a new event file in `dir` (one per opening: a resumed run adds a file, and
 * TensorBoard reads a folder's files as one run).
 */
export class TensorBoardWriter {
  #file: Deno.FsFile | undefined;
  readonly path: string;

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /** Creates `dir` and the event file, and writes the file-version record. */
  static async open(dir: string, o: { now?: number; host?: string } = {}): Promise<TensorBoardWriter> {
    await Deno.mkdir(dir, { recursive: true });
    const now = o.now ?? Date.now() / 1000;
    let path = join(dir, eventFileName(now, o.host ?? hostname()));
    // a second writer within the same second (a quick resume) gets its own file
    for (let n = 1; await Deno.stat(path).then(() => true, () => false); n++) {
      path = join(dir, `${eventFileName(now, o.host ?? hostname())}.${n}`);
    }
    const file = await Deno.open(path, { write: true, createNew: true });
    const w = new TensorBoardWriter(path, file);
    w.#writeSync(encodeEvent({ wallTime: now, step: 0, fileVersion: "brain.Event:2" }));
    return w;
  }

  /** Writes one event with a scalar per entry of `values`, at `step`. */
  scalars(step: number, values: Record<string, number>, wallTime = Date.now() / 1000): void {
    if (Object.keys(values).length === 0) return;
    this.#writeSync(encodeEvent({ wallTime, step, scalars: values }));
  }

  #writeSync(event: Uint8Array): void {
    const file = this.#file;
    if (!file) throw new Error(`TensorBoard event file ${this.path} is closed`);
    const bytes = tfRecord(event);
    let off = 0;
    while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
  }

  /** Closes the file; safe to call twice. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }
}
