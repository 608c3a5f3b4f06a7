/**
 * `--resume` restores the run's whole configuration: a setting left out keeps its saved value (not the
 * default), a harmless one given again may change, and one that changes the math is refused, naming it.
 */
import assert from "node:assert/strict";
import { parseTrainOptions } from "../../lib/train/options.ts";
import type { TrainOptions } from "../../lib/train/option_specs.ts";
import { train, type TrainConfig } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

Deno.test("resume: saved settings survive, harmless ones may change, math-changing ones are refused", async () => {
  const s = await tinySetup();
  const run = `${s.dir}/run`;
  const cut = await train(tinyConfigFor(s, { out: run, stepsPerRun: 2, lr: 3e-3 }), {
    log: () => {},
    stopAfterSteps: 2,
  });
  assert.equal(cut.interrupted, true);
  const resume = (...flags: string[]) =>
    parseTrainOptions(["--resume", run, ...flags]) as TrainOptions as TrainConfig;

  await assert.rejects(
    () => train(resume("--lr", "1e-4", "--beta", "0.5"), { log: () => {} }),
    /keeps the settings it started with; these differ: --lr 0\.0001 \(the run has 0\.003\), --beta 0\.5 \(the run has 0\.1\)/,
  );
  // the same value given again is fine; nothing given keeps the saved steps-per-run (not the default)
  const again = await train(resume("--lr", "3e-3", "--quiet"), { log: () => {}, stopAfterSteps: 4 });
  assert.equal(again.config.stepsPerRun, 2);
  assert.equal(again.config.lr, 3e-3);
  let saved = JSON.parse(await Deno.readTextFile(`${run}/config.json`));
  assert.equal(saved.stepsPerRun, 2);
  // a harmless setting may change, and config.json says so
  const done = await train(resume("--steps-per-run", "5"), { log: () => {} });
  assert.equal(done.steps, done.totalSteps);
  saved = JSON.parse(await Deno.readTextFile(`${run}/config.json`));
  assert.equal(saved.stepsPerRun, 5);
  assert.equal(saved.lr, 3e-3);
  await Deno.remove(s.dir, { recursive: true });
});
