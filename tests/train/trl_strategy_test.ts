/**
 * TRL's `eval_strategy`, `save_strategy` and `logging_strategy` in a run: `epoch` evaluates, saves and writes
 * a metrics line at each epoch's end, once the run knows how many steps an epoch has; `no` leaves only the
 * end; the flags as TRL's scripts give them reach the run.
 */
import assert from "node:assert/strict";
import { listCheckpoints } from "../../lib/train/checkpoint.ts";
import { readMetrics } from "../../lib/train/metrics_log.ts";
import { parseTrainOptions } from "../../lib/train/options.ts";
import type { TrainOptions } from "../../lib/train/option_specs.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

Deno.test("trainer: --eval_strategy epoch --save_strategy epoch --logging_strategy epoch act at each epoch's end", async () => {
  const s = await tinySetup();
  try {
    const whole = await train(tinyConfigFor(s, { out: `${s.dir}/one`, epochs: 1 }), { log: () => {} });
    const perEpoch = whole.totalSteps;
    assert.ok(perEpoch >= 3, `an epoch has ${perEpoch} steps`);
    const flags = parseTrainOptions([
      "--model",
      s.model,
      "--data",
      `${s.dir}/reward.jsonl`,
      "--eval_strategy",
      "epoch",
      "--save_strategy",
      "epoch",
      "--logging_strategy",
      "epoch",
      "--save_total_limit",
      "10",
    ]) as TrainOptions;
    const { evalStrategy, saveStrategy, loggingStrategy, keepCheckpoints } = flags;
    const res = await train(
      tinyConfigFor(s, { epochs: 3, evalStrategy, saveStrategy, loggingStrategy, keepCheckpoints }),
      { log: () => {} },
    );
    assert.equal(res.totalSteps, 3 * perEpoch);
    const ends = [perEpoch, 2 * perEpoch, 3 * perEpoch];
    const records = await readMetrics(res.run.metrics);
    assert.deepEqual(records.filter((r) => r["eval/loss"] !== undefined).map((r) => r.step), ends);
    assert.deepEqual(records.filter((r) => r.loss !== undefined).map((r) => r.step), ends);
    assert.deepEqual((await listCheckpoints(res.run.checkpoints)).map((c) => c.step), ends);

    // no: evaluated and saved at the end only, whatever --eval-every says
    const none = await train(
      tinyConfigFor(s, { out: `${s.dir}/none`, evalStrategy: "no", evalEvery: 1, saveStrategy: "no" }),
      { log: () => {} },
    );
    const noneRecords = await readMetrics(none.run.metrics);
    assert.deepEqual(noneRecords.filter((r) => r["eval/loss"] !== undefined).map((r) => r.step), [
      none.totalSteps,
    ]);
    assert.deepEqual((await listCheckpoints(none.run.checkpoints)).map((c) => c.step), [none.totalSteps]);
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
