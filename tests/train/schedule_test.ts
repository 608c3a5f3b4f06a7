import assert from "node:assert/strict";
import { lrAt, lrFactor, lrsFor, type ScheduleConfig, warmupStepsOf } from "../../lib/train/schedule.ts";

const close = (a: number, b: number, tol = 1e-12) =>
  assert.ok(Math.abs(a - b) <= tol, `expected ${b}, got ${a} (diff ${Math.abs(a - b)})`);

const cosine: ScheduleConfig = { kind: "cosine", lr: 1, warmupSteps: 10, totalSteps: 110 };

Deno.test("warmup is linear from 0 at step 0 to the peak at step warmupSteps (HF LambdaLR)", () => {
  for (const kind of ["cosine", "linear", "constant"] as const) {
    const cfg = { ...cosine, kind };
    close(lrAt(0, cfg), 0);
    close(lrAt(1, cfg), 0.1);
    close(lrAt(5, cfg), 0.5);
    close(lrAt(9, cfg), 0.9);
    close(lrAt(10, cfg), 1);
  }
});

Deno.test("cosine: 0.5·(1 + cos(π·progress)) after warmup", () => {
  close(lrAt(35, cosine), 0.5 * (1 + Math.SQRT1_2)); // progress 0.25
  close(lrAt(60, cosine), 0.5); // midpoint
  close(lrAt(85, cosine), 0.5 * (1 - Math.SQRT1_2)); // progress 0.75
  close(lrAt(110, cosine), 0); // end
  close(lrAt(109, cosine), 0.5 * (1 + Math.cos(Math.PI * 0.99)));
});

Deno.test("linear: (total − step) / (total − warmup) after warmup", () => {
  const cfg: ScheduleConfig = { ...cosine, kind: "linear", lr: 2e-5 };
  close(lrAt(60, cfg), 1e-5, 1e-20);
  close(lrAt(85, cfg), 0.5e-5, 1e-20);
  close(lrAt(110, cfg), 0);
});

Deno.test("constant: the peak rate after warmup, to the end", () => {
  const cfg: ScheduleConfig = { ...cosine, kind: "constant", lr: 5e-6 };
  assert.equal(lrAt(10, cfg), 5e-6);
  assert.equal(lrAt(110, cfg), 5e-6);
});

Deno.test("no warmup: step 0 already has the peak rate", () => {
  assert.equal(lrAt(0, { kind: "cosine", lr: 5e-6, totalSteps: 100 }), 5e-6);
  assert.equal(lrAt(0, { kind: "linear", lr: 5e-6, totalSteps: 100, warmupSteps: 0 }), 5e-6);
});

Deno.test("warmupRatio rounds up like transformers' get_warmup_steps; warmupSteps wins over it", () => {
  assert.equal(warmupStepsOf({ kind: "cosine", lr: 1, totalSteps: 100, warmupRatio: 0.1 }), 10);
  assert.equal(warmupStepsOf({ kind: "cosine", lr: 1, totalSteps: 25, warmupRatio: 0.1 }), 3);
  // Python: math.ceil(100 * 0.07) == 8, because 100 * 0.07 == 7.000000000000001.
  assert.equal(warmupStepsOf({ kind: "cosine", lr: 1, totalSteps: 100, warmupRatio: 0.07 }), 8);
  assert.equal(
    warmupStepsOf({ kind: "cosine", lr: 1, totalSteps: 100, warmupRatio: 0.1, warmupSteps: 3 }),
    3,
  );
  close(lrAt(5, { kind: "cosine", lr: 1, totalSteps: 100, warmupRatio: 0.1 }), 0.5);
});

Deno.test("minLr floors the decay as HF's cosine_with_min_lr does", () => {
  const cfg: ScheduleConfig = { ...cosine, minLr: 0.1 };
  close(lrAt(110, cfg), 0.1);
  close(lrAt(60, cfg), 0.55);
  close(lrAt(5, cfg), 0.5); // warmup is unaffected
  close(lrAt(110, { ...cfg, kind: "linear" }), 0.1);
});

Deno.test("past totalSteps the rate stays at its final value", () => {
  close(lrAt(500, cosine), 0);
  close(lrFactor(500, { ...cosine, kind: "linear" }), 0);
});

Deno.test("lrsFor gives the next count steps' rates as fp32", () => {
  const lrs = lrsFor(8, 4, { ...cosine, lr: 5e-6 });
  assert.ok(lrs instanceof Float32Array);
  assert.equal(lrs.length, 4);
  for (let i = 0; i < 4; i++) assert.equal(lrs[i], Math.fround(lrAt(8 + i, { ...cosine, lr: 5e-6 })));
  assert.equal(lrsFor(0, 0, cosine).length, 0);
});

Deno.test("invalid settings are rejected with the field named", () => {
  assert.throws(() => lrAt(0, { ...cosine, totalSteps: 0 }), /totalSteps must be an integer ≥ 1, got 0/);
  assert.throws(() => lrAt(0, { ...cosine, lr: -1 }), /lr must be/);
  assert.throws(() => lrAt(0, { ...cosine, warmupSteps: 1.5 }), /warmupSteps/);
  assert.throws(() => lrAt(0, { ...cosine, warmupRatio: 2, warmupSteps: undefined }), /warmupRatio/);
  assert.throws(() => lrAt(0, { ...cosine, minLr: 2 }), /minLr/);
  assert.throws(() => lrAt(-1, cosine), /step must be/);
  assert.throws(() => lrAt(0, { ...cosine, kind: "step" as "cosine" }), /kind must be one of/);
  assert.throws(() => lrsFor(0, -1, cosine), /count/);
});
