/**
 * `train()` on several ranks through the in-process world (two ranks in this process, as two launched
 * processes would be): it ends where one process with the same global batch does, rank 0 alone prints and
 * writes the run folder, and a 2-rank run resumes on one process (and a 1-process run on 2 ranks); in fp16 too,
 * its loss scale and skipped steps as one process's.
 */
import assert from "node:assert/strict";
import { loadLatestCheckpoint } from "../../lib/train/checkpoint.ts";
import { readMetrics } from "../../lib/train/metrics_log.ts";
import { FP16_LOSS_SCALING } from "../../lib/train/train_graph.ts";
import { train, type TrainConfig } from "../../lib/train/trainer.ts";
import { localWorld } from "../../lib/runtime/comm/local.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

/** max |a − b| / max |b| over the checkpoint's tensors. */
function relativeDiff(a: Record<string, Float32Array>, b: Record<string, Float32Array>): number {
  let diff = 0, scale = 0;
  for (const [k, v] of Object.entries(b)) {
    assert.ok(a[k], `missing ${k}`);
    for (let i = 0; i < v.length; i++) {
      diff = Math.max(diff, Math.abs(a[k][i] - v[i]));
      scale = Math.max(scale, Math.abs(v[i]));
    }
  }
  return diff / scale;
}

async function tensorsOf(dir: string) {
  const ck = await loadLatestCheckpoint(`${dir}/checkpoints`);
  assert.ok(ck, `no checkpoint in ${dir}`);
  return ck;
}

/** Two ranks of `cfg` in this process; each rank's log lines. */
async function twoRanks(
  cfg: TrainConfig,
  hooks: { stopAfterSteps?: number; allowFloat16OnCpu?: boolean } = {},
) {
  const logs: string[][] = [[], []];
  const res = await Promise.all(
    localWorld(2).map((comm) =>
      train(structuredClone(cfg), { ...hooks, comm, log: (l) => logs[comm.rank].push(l) })
    ),
  );
  return { res, logs };
}

Deno.test("train() on 2 ranks equals one process with the same global batch; rank 0 alone prints and writes", async () => {
  const s = await tinySetup();
  const base = { loraDropout: 0.1, gradAccum: 2, epochs: 1, evalFraction: 0.2 };
  await train(tinyConfigFor(s, { ...base, out: `${s.dir}/one`, batchSize: 4 }), { log: () => {} });
  const { res, logs } = await twoRanks(tinyConfigFor(s, { ...base, out: `${s.dir}/two`, batchSize: 2 }));
  assert.equal(res[0].steps, res[1].steps);
  const one = await tensorsOf(`${s.dir}/one`), two = await tensorsOf(`${s.dir}/two`);
  assert.equal(two.step, one.step);
  const d = relativeDiff(two.tensors, one.tensors);
  assert.ok(d < 1e-6, `2 ranks vs one process: relative difference ${d}`);
  assert.ok(logs[0].length > 0, "rank 0 prints");
  assert.deepEqual(logs[1], [], "rank 1 prints nothing");
  const config = JSON.parse(await Deno.readTextFile(`${s.dir}/two/config.json`));
  assert.equal(config.worldSize, 2);
  // the run folder has what one process writes: the policy, the summary, the evaluation
  for (const f of ["policy/config.json", "summary.json", "metrics.jsonl", "reference_logps.json"]) {
    assert.ok((await Deno.stat(`${s.dir}/two/${f}`)).isFile, f);
  }
  const evalOne = res[0].eval!, summary = JSON.parse(await Deno.readTextFile(`${s.dir}/one/summary.json`));
  for (const [k, v] of Object.entries(summary.finalEval as Record<string, number>)) {
    assert.ok(
      Math.abs(evalOne[k] - v) <= 1e-4 * Math.max(1, Math.abs(v)),
      `eval ${k}: ${evalOne[k]} vs ${v}`,
    );
  }
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("train() on 2 and 3 ranks takes one process's steps, a short one (split unevenly) included", async () => {
  const s = await tinySetup();
  // 19 training prompts: steps of 4 end with one of 3 (2 + 1 on 2 ranks); steps of 6 with one of 1 (on 3
  // ranks, two of them have nothing in it)
  const base = { loraDropout: 0.1, epochs: 1, evalFraction: 0.2, gradAccum: 1 };
  for (const [ranks, batch] of [[2, 2], [3, 2]]) {
    const one = `${s.dir}/one-${ranks}`, many = `${s.dir}/many-${ranks}`;
    const single = await train(tinyConfigFor(s, { ...base, out: one, batchSize: batch * ranks }), {
      log: () => {},
    });
    const logs: string[][] = Array.from({ length: ranks }, () => []);
    const res = await Promise.all(
      localWorld(ranks).map((comm) =>
        train(tinyConfigFor(s, { ...base, out: many, batchSize: batch }), {
          comm,
          log: (l) => logs[comm.rank].push(l),
        })
      ),
    );
    assert.equal(res[0].steps, single.steps, `${ranks} ranks: the steps of one process`);
    assert.equal(single.steps, Math.ceil(19 / (batch * ranks)));
    const a = await tensorsOf(many), b = await tensorsOf(one);
    assert.equal(a.step, b.step);
    // the uneven step's gradient is one process's to 2.4e-7 of its largest element (float32 sums in another
    // order: the ranks' parts, then their sum); AdamW scales each element by its own size, so an element near
    // zero carries that into the weights at ~1e-5 (the steps before it, split evenly, are bit-identical)
    const d = relativeDiff(a.tensors, b.tensors);
    assert.ok(d < 2e-5, `${ranks} ranks vs one process: relative difference ${d}`);
  }
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("train(): a 2-rank run resumes in one process, and a one-process run on 2 ranks, exactly", async () => {
  const s = await tinySetup();
  // 20 training prompts: 5 steps of 4 an epoch
  const base = { loraDropout: 0.1, epochs: 2, saveEvery: 100, evalFraction: 0.17 };
  await train(tinyConfigFor(s, { ...base, out: `${s.dir}/whole`, batchSize: 4 }), { log: () => {} });
  const whole = await tensorsOf(`${s.dir}/whole`);
  assert.equal(whole.step, 10);

  // 2 ranks × 2 prompts for 3 steps, then one process: it takes --batch-size 4 by itself
  await twoRanks(tinyConfigFor(s, { ...base, out: `${s.dir}/a`, batchSize: 2 }), { stopAfterSteps: 3 });
  assert.equal((await tensorsOf(`${s.dir}/a`)).step, 3);
  const logs: string[] = [];
  await train({ ...tinyConfigFor(s, { ...base, batchSize: 2 }), out: undefined, resume: `${s.dir}/a` }, {
    log: (l) => logs.push(l),
  });
  assert.ok(logs.some((l) => /resuming a run of 2 ranks on 1: --batch-size 4/.test(l)), logs.join("\n"));
  const a = await tensorsOf(`${s.dir}/a`);
  assert.equal(a.step, whole.step);
  assert.ok(
    relativeDiff(a.tensors, whole.tensors) < 1e-6,
    `2 → 1: ${relativeDiff(a.tensors, whole.tensors)}`,
  );

  // one process for 3 steps, then 2 ranks (ZeRO-1)
  await train(tinyConfigFor(s, { ...base, out: `${s.dir}/b`, batchSize: 4 }), {
    log: () => {},
    stopAfterSteps: 3,
  });
  await twoRanks({
    ...tinyConfigFor(s, { ...base, batchSize: 4, zero: 1 }),
    out: undefined,
    resume: `${s.dir}/b`,
  });
  const b = await tensorsOf(`${s.dir}/b`);
  assert.equal(b.step, whole.step);
  assert.ok(
    relativeDiff(b.tensors, whole.tensors) < 1e-6,
    `1 → 2: ${relativeDiff(b.tensors, whole.tensors)}`,
  );
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("train() in fp16 on 2 ranks (allowed on the CPU for the test) equals one process: weights, loss_scale, skipped", async () => {
  const s = await tinySetup();
  // the same global batch of 4 prompts, and each rank's 2 prompts are one of the one process's fp16
  // micro-batches (accumulation 2 there, 1 on the ranks): the same fp16 passes, so fp32's tolerance holds
  // (tests/train/distributed_test.ts' FP16_TOLERANCE says why other pairings are looser)
  const base = { precision: "fp16" as const, epochs: 1, evalFraction: 0.17, batchSize: 2 };
  await train(tinyConfigFor(s, { ...base, out: `${s.dir}/one`, gradAccum: 2 }), {
    log: () => {},
    allowFloat16OnCpu: true,
  });
  const { logs } = await twoRanks(tinyConfigFor(s, { ...base, out: `${s.dir}/two`, gradAccum: 1 }), {
    allowFloat16OnCpu: true,
  });
  const scaling = async (dir: string) =>
    (await readMetrics(`${dir}/metrics.jsonl`)).filter((r) => r.loss !== undefined).map((r) => ({
      step: r.step,
      loss_scale: r.loss_scale,
      skipped: r.skipped,
    }));
  const one = await scaling(`${s.dir}/one`), two = await scaling(`${s.dir}/two`);
  assert.equal(one.length, 5);
  // fp16's initial scale, on the ranks as in one process (this data does not overflow at 2^16: the skips
  // and the scale's growth are tested on the sessions, in tests/train/distributed_test.ts)
  assert.equal(one[0].loss_scale, FP16_LOSS_SCALING.init);
  assert.deepEqual(two, one, "the loss scale and skipped steps of every step");
  assert.ok(logs[0].some((l) => l.includes("fp16 (mixed precision, loss scaling)")), "rank 0 says fp16");
  const a = await tensorsOf(`${s.dir}/one`), b = await tensorsOf(`${s.dir}/two`);
  // the checkpoint's scalars, written by rank 0, as one process writes them
  assert.deepEqual(a.scalars, { step: 5, loss_scale: FP16_LOSS_SCALING.init, good_steps: 5 });
  assert.deepEqual([b.step, b.scalars], [a.step, a.scalars]);
  const d = relativeDiff(b.tensors, a.tensors);
  assert.ok(d < 1e-6, `2 ranks vs one process in fp16: relative difference ${d}`);
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("train() on 2 ranks: a Ctrl-C that reaches one rank stops both at the same chunk, one checkpoint is saved, and the resume ends where an uninterrupted run does", async () => {
  const s = await tinySetup();
  const base = { loraDropout: 0.1, epochs: 2, evalFraction: 0.17, batchSize: 2, stepsPerRun: 1 };
  await twoRanks(tinyConfigFor(s, { ...base, out: `${s.dir}/whole` }));
  const whole = await tensorsOf(`${s.dir}/whole`);
  // only rank 1 is told (as a signal reaching one process of the launcher first), once step 2 is done
  const ctrlC = new AbortController();
  const res = await Promise.all(
    localWorld(2).map((comm) =>
      train(tinyConfigFor(s, { ...base, out: `${s.dir}/cut` }), {
        comm,
        log: () => {},
        signal: comm.rank === 1 ? ctrlC.signal : undefined,
        onChunk: (i) => {
          if (i.step >= 2) ctrlC.abort();
        },
      })
    ),
  );
  assert.deepEqual(res.map((r) => [r.interrupted, r.steps]), [[true, res[0].steps], [true, res[0].steps]]);
  assert.ok(res[0].steps >= 2 && res[0].steps < whole.step, `stopped after ${res[0].steps} of ${whole.step}`);
  const saved = await tensorsOf(`${s.dir}/cut`);
  assert.equal(saved.step, res[0].steps, "the checkpoint of the step both stopped at");
  const names = [];
  for await (const e of Deno.readDir(`${s.dir}/cut/checkpoints`)) names.push(e.name);
  assert.equal(names.filter((n) => n.startsWith("checkpoint-")).length, 1, names.join(", "));
  // two ranks resume it and end where the uninterrupted run did
  await twoRanks({ ...tinyConfigFor(s, base), out: undefined, resume: `${s.dir}/cut` });
  const done = await tensorsOf(`${s.dir}/cut`);
  assert.equal(done.step, whole.step);
  assert.ok(relativeDiff(done.tensors, whole.tensors) < 1e-6, `${relativeDiff(done.tensors, whole.tensors)}`);
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("train(): a 2-rank run resumed on 3 ranks keeps its global batch (parts of 2, 1, 1) and ends where it would have", async () => {
  const s = await tinySetup();
  // 20 training prompts: 5 steps of 4 an epoch, 10 in all
  const base = { loraDropout: 0.1, epochs: 2, saveEvery: 100, evalFraction: 0.17, batchSize: 2 };
  await twoRanks(tinyConfigFor(s, { ...base, out: `${s.dir}/whole` }));
  const whole = await tensorsOf(`${s.dir}/whole`);
  await twoRanks(tinyConfigFor(s, { ...base, out: `${s.dir}/a` }), { stopAfterSteps: 3 });
  const logs: string[] = [];
  await Promise.all(
    localWorld(3).map((comm) =>
      train({ ...tinyConfigFor(s, base), out: undefined, resume: `${s.dir}/a` }, {
        comm,
        log: (l) => logs.push(l),
      })
    ),
  );
  assert.ok(
    logs.some((l) =>
      /resuming a run of 2 ranks on 3: 2 prompts on the first device, 1 on the others, the global batch of 4/
        .test(l)
    ),
    logs.join("\n"),
  );
  const a = await tensorsOf(`${s.dir}/a`);
  assert.equal(a.step, whole.step, "the plan of steps kept");
  const config = JSON.parse(await Deno.readTextFile(`${s.dir}/a/config.json`));
  assert.deepEqual([config.worldSize, config.batchSize, config.globalBatch], [3, 2, 4]);
  // uneven parts sum the gradient in another order: within what AdamW makes of float32 rounding (see above)
  const d = relativeDiff(a.tensors, whole.tensors);
  assert.ok(d < 2e-5, `2 → 3 ranks: ${d}`);
  await Deno.remove(s.dir, { recursive: true });
});
