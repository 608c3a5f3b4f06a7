import assert from "node:assert/strict";
import { join } from "node:path";
import {
  crc32c,
  encodeEvent,
  eventFileName,
  maskedCrc32c,
  TensorBoardWriter,
  tfRecord,
} from "../../lib/train/tensorboard.ts";
import { type MetricsRecord, MetricsWriter, readMetrics } from "../../lib/train/metrics_log.ts";
import { crc32cBitwise, decodeEvent, readEventDir, readRecords } from "./_tfevents.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("tensorboard: CRC-32C known answers (RFC 3720 and the check value)", () => {
  assert.equal(crc32c(bytes("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43); // 32 bytes of ones
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e); // incrementing
  // the test's bitwise reader agrees on arbitrary data
  const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7919) & 0xff);
  assert.equal(crc32c(data), crc32cBitwise(data));
  // TFRecord's mask: rotate right 15, add 0xa282ead8
  const c = 0xe3069283;
  assert.equal(maskedCrc32c(bytes("123456789")), ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0);
});

Deno.test("tensorboard: a record is length, masked CRC, data, masked CRC; an event decodes back", () => {
  const ev = encodeEvent({
    wallTime: 1700000000.25,
    step: 3_000_000_000,
    scalars: { loss: 0.5, "eval/x": -2 },
  });
  const rec = tfRecord(ev);
  assert.equal(rec.length, ev.length + 16);
  const [data] = readRecords(rec);
  assert.deepEqual(decodeEvent(data), {
    wallTime: 1700000000.25,
    step: 3_000_000_000, // past 2^31: varints are not 32-bit
    scalars: { loss: 0.5, "eval/x": -2 },
  });
  assert.deepEqual(decodeEvent(encodeEvent({ wallTime: 1, step: 0, fileVersion: "brain.Event:2" })), {
    wallTime: 1,
    step: 0,
    fileVersion: "brain.Event:2",
    scalars: {},
  });
  assert.equal(eventFileName(1700000000.9, "host"), "events.out.tfevents.1700000000.host");
});

Deno.test("tensorboard: the metrics log's lines become scalars with the same names, steps and values", async () => {
  await withDir(async (dir) => {
    const tb = join(dir, "tensorboard");
    const w = await MetricsWriter.open(join(dir, "metrics.jsonl"), { fsync: false, tensorboard: tb });
    const records: MetricsRecord[] = [
      { step: 1, epoch: 0.5, loss: 1.386, "rewards/chosen": 0.1, "rewards/A0": -0.25, lr: 5e-6 },
      { step: 2, epoch: 1, loss: 1.2, "rewards/chosen": 0.3, grad_norm: NaN, "eval/loss": 1.3 },
    ];
    for (const r of records) await w.write(r);
    w.close();
    const { files, events } = await readEventDir(tb);
    assert.equal(files.length, 1);
    assert.match(files[0], /^events\.out\.tfevents\.\d{10}\.\S+$/);
    assert.equal(events[0].fileVersion, "brain.Event:2");
    assert.equal(events.length, 1 + records.length);
    const jsonl = await readMetrics(join(dir, "metrics.jsonl"));
    for (const [i, r] of jsonl.entries()) {
      const e = events[i + 1];
      assert.equal(e.step, r.step);
      assert.ok(Math.abs(e.wallTime - Date.now() / 1000) < 60, "wall time in seconds");
      const { step: _, ...metrics } = r;
      assert.deepEqual(Object.keys(e.scalars), Object.keys(metrics));
      for (const [k, v] of Object.entries(metrics)) {
        if (Number.isNaN(v)) assert.ok(Number.isNaN(e.scalars[k]), k);
        else assert.equal(e.scalars[k], Math.fround(v!), k); // simple_value is a float32
      }
    }
    // a second writer (a resumed run) adds a file: TensorBoard reads the folder as one run
    const again = await TensorBoardWriter.open(tb);
    again.scalars(3, { loss: 1 });
    again.close();
    const after = await readEventDir(tb);
    assert.equal(after.files.length, 2);
    assert.deepEqual(after.events.at(-1)!.scalars, { loss: 1 });
  });
});

Deno.test("tensorboard: a resumed log rewrites the events from the log it keeps: no step twice", async () => {
  await withDir(async (dir) => {
    const tb = join(dir, "tensorboard"), log = join(dir, "metrics.jsonl");
    const first = await MetricsWriter.open(log, { fsync: false, tensorboard: tb });
    for (let step = 1; step <= 5; step++) await first.write({ step, epoch: step / 6, loss: 2 - step / 10 });
    first.close(); // killed after step 5; the checkpoint is at step 3
    const resumed = await MetricsWriter.open(log, {
      fsync: false,
      tensorboard: tb,
      append: true,
      truncateAfterStep: 3,
    });
    for (let step = 4; step <= 6; step++) await resumed.write({ step, epoch: step / 6, loss: 1 - step / 10 });
    resumed.close();
    const { files, events } = await readEventDir(tb);
    assert.equal(files.length, 1, "one event file");
    const steps = events.slice(1).map((e) => e.step);
    assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
    assert.equal(events.at(-2)!.scalars.loss, Math.fround(1 - 5 / 10), "step 5 as trained again");
    assert.deepEqual((await readMetrics(log)).map((r) => r.step), steps);
  });
});
