import assert from "node:assert/strict";
import { join } from "node:path";
import {
  aggregateRecords,
  formatMetricsLine,
  type MetricsRecord,
  MetricsWriter,
  parseMetrics,
  readMetrics,
  summarize,
} from "../../lib/train/metrics_log.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const rec = (step: number, extra: Partial<MetricsRecord> = {}): MetricsRecord => ({
  step,
  epoch: step / 10,
  loss: 1 / step,
  "rewards/chosen": step * 0.01,
  "rewards/rejected": -step * 0.01,
  ...extra,
});

Deno.test("a line is compact JSON with step and epoch first, slashes kept, non-finite as null", () => {
  const line = formatMetricsLine({
    loss: 0.5,
    epoch: 0.25,
    step: 3,
    "rewards/A0": NaN,
    "logps/A1": -Infinity,
    grad_norm: undefined,
  } as MetricsRecord);
  assert.equal(line, '{"step":3,"epoch":0.25,"loss":0.5,"rewards/A0":null,"logps/A1":null}\n');
  assert.throws(() => formatMetricsLine({ step: 1, epoch: 0, loss: "x" as unknown as number }), /"loss"/);
});

Deno.test("writer appends one line per record, readable while open; reader maps null to NaN", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "metrics.jsonl");
    const w = await MetricsWriter.open(path, { fsync: false });
    await w.write(rec(1));
    assert.equal((await readMetrics(path)).length, 1); // on disk before close: nothing buffered
    await w.write(rec(2, { "eval/loss": NaN }));
    w.close();
    w.close();
    await assert.rejects(() => w.write(rec(3)), /closed/);
    const got = await readMetrics(path);
    assert.equal(got.length, 2);
    assert.deepEqual(got[0], rec(1));
    assert.ok(Number.isNaN(got[1]["eval/loss"]));
  });
});

Deno.test("reader tolerates a truncated last line but not corruption in the middle", async () => {
  const good = formatMetricsLine(rec(1)) + formatMetricsLine(rec(2));
  assert.equal(parseMetrics(good + '{"step":3,"epoch":0.3,"lo').length, 2);
  assert.equal(parseMetrics(good + "\n\n").length, 2);
  assert.equal(parseMetrics("").length, 0);
  assert.throws(() => parseMetrics('{"step":1,"ep\n' + good), /metrics\.jsonl:1: not a metrics record/);
  assert.throws(() => parseMetrics(good + "[1,2]\n" + formatMetricsLine(rec(3))), /:3:/);
  assert.deepEqual(await readMetrics("/nonexistent/metrics.jsonl"), []);
});

Deno.test("opening without append starts a fresh file", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "metrics.jsonl");
    await Deno.writeTextFile(path, formatMetricsLine(rec(1)));
    using w = await MetricsWriter.open(path, { fsync: false });
    await w.write(rec(5));
    assert.deepEqual((await readMetrics(path)).map((r) => r.step), [5]);
  });
});

Deno.test("appending after a crash cuts the partial line instead of gluing onto it", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "metrics.jsonl");
    await Deno.writeTextFile(path, formatMetricsLine(rec(1)) + formatMetricsLine(rec(2)) + '{"step":3,"ep');
    using w = await MetricsWriter.open(path, { append: true });
    await w.write(rec(3));
    const text = await Deno.readTextFile(path);
    assert.equal(text.split("\n").length, 4);
    assert.deepEqual(parseMetrics(text).map((r) => r.step), [1, 2, 3]);
  });
});

Deno.test("resuming drops records logged after the checkpoint step", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "metrics.jsonl");
    await Deno.writeTextFile(path, [1, 2, 3, 4, 5].map((s) => formatMetricsLine(rec(s))).join(""));
    using w = await MetricsWriter.open(path, { append: true, truncateAfterStep: 3, fsync: false });
    await w.write(rec(4, { loss: 42 }));
    const got = await readMetrics(path);
    assert.deepEqual(got.map((r) => r.step), [1, 2, 3, 4]);
    assert.equal(got[3].loss, 42);
  });
});

Deno.test("logging every N steps: each line the window's mean (lr, grad_norm last), evaluations as they come", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "metrics.jsonl");
    const w = await MetricsWriter.open(path, { fsync: false, every: 3 });
    const step = (s: number, extra: Partial<MetricsRecord> = {}): MetricsRecord => ({
      step: s,
      epoch: s / 8,
      loss: s,
      lr: 10 * s,
      grad_norm: 100 * s,
      skipped: s === 2 ? 1 : 0,
      ...extra,
    });
    await w.write(step(1));
    await w.write(step(2, { "eval/loss": 7 })); // an evaluation mid-window: written at once, alone
    assert.deepEqual(await readMetrics(path), [{ step: 2, epoch: 0.25, "eval/loss": 7 }]);
    await w.write(step(3));
    for (const s of [4, 5, 6, 7]) await w.write(step(s));
    await w.flush(); // before a checkpoint: the partial window [7]
    await w.write(step(8));
    await w.write({ step: 8, epoch: 1, "eval/loss": 5 }); // the final evaluation: the window first
    await w.write(step(9));
    w.close(); // the last partial window is written on close
    assert.deepEqual(await readMetrics(path), [
      { step: 2, epoch: 0.25, "eval/loss": 7 },
      { step: 3, epoch: 3 / 8, loss: 2, lr: 30, grad_norm: 300, skipped: 1 },
      { step: 6, epoch: 6 / 8, loss: 5, lr: 60, grad_norm: 600, skipped: 0 },
      { step: 7, epoch: 7 / 8, loss: 7, lr: 70, grad_norm: 700, skipped: 0 },
      { step: 8, epoch: 1, loss: 8, lr: 80, grad_norm: 800, skipped: 0 },
      { step: 8, epoch: 1, "eval/loss": 5 },
      { step: 9, epoch: 9 / 8, loss: 9, lr: 90, grad_norm: 900, skipped: 0 },
    ]);
    assert.deepEqual(
      aggregateRecords([{ step: 1, epoch: 0, loss: 1 }, { step: 2, epoch: 0, loss: NaN }]).loss,
      NaN,
    );
  });
  await assert.rejects(() => MetricsWriter.open("/nonexistent/m.jsonl", { every: 0 }), /every must be/);
});

Deno.test("summarize: final values, best eval loss, means over the last N steps", () => {
  const records: MetricsRecord[] = [
    { step: 1, epoch: 0.1, loss: 4, "rewards/margins": 0 },
    { step: 2, epoch: 0.2, loss: 3, "rewards/margins": 1 },
    { step: 2, epoch: 0.2, "eval/loss": 2.5 },
    { step: 3, epoch: 0.3, loss: 2, "rewards/margins": NaN },
    { step: 4, epoch: 0.4, loss: 1, "rewards/margins": 3 },
    { step: 4, epoch: 0.4, "eval/loss": 2.7, "eval/rewards/margins": 0.5 },
  ];
  const s = summarize(records, 2);
  assert.equal(s.records, 6);
  assert.equal(s.steps, 4);
  assert.equal(s.epoch, 0.4);
  assert.deepEqual(s.final, { loss: 1, "rewards/margins": 3, "eval/loss": 2.7, "eval/rewards/margins": 0.5 });
  assert.deepEqual(s.meanLast, { loss: 1.5, "rewards/margins": 2 }); // NaN skipped; eval not averaged
  assert.equal(s.lastN, 2);
  assert.deepEqual(s.bestEval, { step: 2, loss: 2.5 });
});

Deno.test("summarize handles no records, no eval and all-NaN metrics", () => {
  const empty = summarize([]);
  assert.equal(empty.records, 0);
  assert.equal(empty.steps, 0);
  assert.equal(empty.bestEval, undefined);
  const s = summarize([{ step: 1, epoch: 0, loss: NaN }]);
  assert.ok(Number.isNaN(s.final.loss));
  assert.equal(s.meanLast.loss, undefined);
  assert.equal("bestEval" in s, false);
  assert.throws(() => summarize([], 0), /lastN/);
});
