/**
 * When things happen in a run, whatever `--steps-per-run` groups the steps into: evaluations at exact
 * multiples of `--eval-every`, checkpoints at exact multiples of `--save-every`, and the fractional epoch
 * counted against whole epochs when `--max-steps` stops a run inside one.
 */
import assert from "node:assert/strict";
import { listCheckpoints, loadLatestCheckpoint } from "../../lib/train/checkpoint.ts";
import { readMetrics } from "../../lib/train/metrics_log.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

Deno.test("trainer: --eval-every 2 and --save-every 5 act at exactly those steps with --steps-per-run 3", async () => {
  const s = await tinySetup();
  const res = await train(
    tinyConfigFor(s, { stepsPerRun: 3, evalEvery: 2, saveEvery: 5, keepCheckpoints: 100 }),
    { log: () => {} },
  );
  const total = res.totalSteps;
  assert.ok(total >= 10, `the run has ${total} steps`);
  const records = await readMetrics(res.run.metrics);
  const evaluated = records.filter((r) => r["eval/loss"] !== undefined).map((r) => r.step);
  const every2 = Array.from({ length: Math.floor((total - 1) / 2) }, (_, i) => 2 * (i + 1));
  // during training at 2, 4, 6, …, then once more at the end
  assert.deepEqual(evaluated, [...every2, total]);
  const saved = (await listCheckpoints(res.run.checkpoints)).map((c) => c.step);
  const every5 = Array.from({ length: Math.floor((total - 1) / 5) }, (_, i) => 5 * (i + 1));
  assert.deepEqual(saved, [...every5, total]);
  // each step trained once and logged once
  assert.deepEqual(
    records.filter((r) => r.loss !== undefined).map((r) => r.step),
    Array.from({ length: total }, (_, i) => i + 1),
  );
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("trainer: the epoch of a run cut by --max-steps counts whole epochs (HF's fractional epoch)", async () => {
  const s = await tinySetup();
  const whole = await train(tinyConfigFor(s, { out: `${s.dir}/whole`, epochs: 1 }), { log: () => {} });
  const perEpoch = whole.totalSteps;
  assert.ok(perEpoch >= 4, `an epoch has ${perEpoch} steps`);
  const cut = await train(tinyConfigFor(s, { out: `${s.dir}/cut`, maxSteps: perEpoch + 2 }), {
    log: () => {},
  });
  assert.equal(cut.totalSteps, perEpoch + 2);
  const epochs = (await readMetrics(cut.run.metrics)).filter((r) => r.loss !== undefined).map((r) =>
    r.epoch!
  );
  const expected = Array.from({ length: perEpoch + 2 }, (_, i) => (i + 1) / perEpoch);
  assert.equal(epochs.length, expected.length);
  epochs.forEach((e, i) => assert.ok(Math.abs(e - expected[i]) < 1e-9, `step ${i + 1}: epoch ${e}`));
  // the checkpoint too: 2 steps into the second epoch, not 2.00
  const state = await loadLatestCheckpoint(`${s.dir}/cut/checkpoints`);
  assert.ok(Math.abs(state!.meta.epoch - (1 + 2 / perEpoch)) < 1e-9);
  await Deno.remove(s.dir, { recursive: true });
});
