/**
 * One run per run folder: two trainings on one `--out` leave one run's config, checkpoints, summary and
 * policy (the second is refused before it writes anything), and `--resume` of a running run is refused,
 * naming the process that runs it.
 */
import assert from "node:assert/strict";
import { LockedError, lockFolder } from "../../lib/lock.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

Deno.test("train: a second run on the same --out is refused at once and writes nothing", async () => {
  const s = await tinySetup();
  try {
    const a = tinyConfigFor(s, { epochs: 1, seed: 3 });
    const b = tinyConfigFor(s, { epochs: 1, seed: 4, lr: 5e-3 });
    const runs = await Promise.allSettled([train(a, { log: () => {} }), train(b, { log: () => {} })]);
    const refused = runs.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    assert.equal(refused.length, 1, JSON.stringify(runs.map((r) => r.status)));
    assert.ok(refused[0].reason instanceof LockedError, String(refused[0].reason));
    const winner = runs.findIndex((r) => r.status === "fulfilled");
    const cfg = JSON.parse(await Deno.readTextFile(`${s.dir}/run/config.json`));
    assert.equal(cfg.seed, [a, b][winner].seed, "config.json is the finished run's");
    assert.equal(cfg.lr, [a, b][winner].lr);
    const done = (runs[winner] as PromiseFulfilledResult<Awaited<ReturnType<typeof train>>>).value;
    assert.deepEqual(JSON.parse(await Deno.readTextFile(done.run.summary)).steps, done.steps);
    await assert.rejects(Deno.stat(`${s.dir}/run/.lock`), Deno.errors.NotFound, "released at the end");
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("train: --resume of a run that is running is refused, naming its pid; the run is untouched", async () => {
  const s = await tinySetup();
  try {
    const first = await train(tinyConfigFor(s, { epochs: 1 }), { log: () => {}, stopAfterSteps: 1 });
    const before = await Deno.readTextFile(first.run.metrics);
    const held = await lockFolder(first.run.dir, { command: "deno task train --out run" });
    try {
      // flags that differ from the run's would be refused too; the lock is what speaks first
      const e = await train(tinyConfigFor(s, { resume: first.run.dir, lr: 1 }), { log: () => {} }).then(
        () => null,
        (e) => e,
      );
      assert.ok(e instanceof LockedError, String(e));
      assert.match(
        e.message,
        new RegExp(`in use by another run \\(pid ${Deno.pid}, \`deno task train --out run\``),
      );
      assert.equal(await Deno.readTextFile(first.run.metrics), before);
    } finally {
      await held.release();
    }
    const resumed = await train(tinyConfigFor(s, { resume: first.run.dir, epochs: 1 }), { log: () => {} });
    assert.equal(resumed.interrupted, false);
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
