/**
 * The trainer options that change what a run computes or writes: `--reference` (another model folder's
 * log-probs), `--save-dtype`, AdamW's β2, `--report-to tensorboard` with `--logging-steps`.
 */
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loadModelFolder, saveModelFolder } from "../../lib/model/model_folder.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import { ModelSession } from "../../lib/runtime/session.ts";
import { loadLatestCheckpoint } from "../../lib/train/checkpoint.ts";
import { readMetrics } from "../../lib/train/metrics_log.ts";
import { loadRunInputs } from "../../lib/train/run_inputs.ts";
import { scoreExamples } from "../../lib/train/scoring.ts";
import { buildScoringGraph } from "../../lib/model/scoring_graph.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";
import { readEventDir } from "./_tfevents.ts";

const quiet = { log: () => {} };

/** The dtype of every tensor in a safetensors file's header. */
async function safetensorsDtypes(path: string): Promise<Set<string>> {
  const file = await Deno.readFile(path);
  const n = Number(new DataView(file.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n)));
  return new Set(
    Object.entries(header).filter(([k]) => k !== "__metadata__").map(([, v]) =>
      (v as { dtype: string }).dtype
    ),
  );
}

/** A model's summed log-probs of every response of `examples`, scored directly from its folder. */
async function scoreFolder(dir: string, examples: Parameters<typeof scoreExamples>[1], padId: number) {
  const m = await loadModelFolder(dir);
  const session = await ModelSession.create(buildScoringGraph(m.config, storedWeights(m.stored)).build());
  try {
    return (await scoreExamples(session, examples, { padId, batchSize: 4 })).logps;
  } finally {
    await session.release();
  }
}

Deno.test("--reference: the cached reference log-probs are the other folder's, not the policy's start", async () => {
  const s = await tinySetup();
  const cfg = tinyConfigFor(s);
  // another model of the same shape and tokenizer, other weights (the SFT model of an iterative round)
  await saveModelFolder(
    `${s.dir}/ref`,
    tinyConfig("llama", { vocabSize: 128 }),
    initWeights(tinyConfig("llama", { vocabSize: 128 }), { seed: 2 }),
    {
      tokenizerFrom: `${s.dir}/tok`,
    },
  );
  const res = await train({ ...cfg, reference: `${s.dir}/ref`, maxSteps: 2, out: `${s.dir}/run` }, quiet);
  assert.equal(res.interrupted, false);
  const cached = JSON.parse(await Deno.readTextFile(`${s.dir}/run/reference_logps.json`));
  const p = await loadRunInputs(cfg, () => {});
  const direct = await scoreFolder(`${s.dir}/ref`, [...p.train, ...p.eval], p.padId);
  const policyStart = await scoreFolder(s.model, [...p.train, ...p.eval], p.padId);
  const rows: number[][] = [...cached.train, ...cached.eval];
  assert.equal(rows.length, direct.length);
  let apart = 0;
  rows.forEach((row, i) =>
    row.forEach((v, j) => {
      assert.ok(
        Math.abs(v - direct[i][j]) <= 1e-4 * (1 + Math.abs(v)),
        `[${i}][${j}]: ${v} vs ${direct[i][j]}`,
      );
      apart = Math.max(apart, Math.abs(v - policyStart[i][j]));
    })
  );
  assert.ok(apart > 0.1, `the reference differs from the policy's start (max |Δ| ${apart})`);
  const record = JSON.parse(await Deno.readTextFile(`${s.dir}/run/reference.json`));
  assert.equal(record.model, resolve(`${s.dir}/ref`));
  // the policy starts away from the reference: NCA's first loss is not 2·log 2 as it is without --reference
  const first = (await readMetrics(`${s.dir}/run/metrics.jsonl`)).find((r) => r.loss !== undefined)!;
  assert.ok(Math.abs(first.loss! - 2 * Math.log(2)) > 1e-4, `first loss ${first.loss}`);
  // the cache is keyed by the reference: without --reference, that cache is not used but recomputed
  await Deno.mkdir(`${s.dir}/run2`);
  await Deno.copyFile(`${s.dir}/run/reference_logps.json`, `${s.dir}/run2/reference_logps.json`);
  const again = await train({ ...cfg, maxSteps: 1, out: `${s.dir}/run2` }, quiet);
  assert.equal(again.interrupted, false);
  const base = JSON.parse(await Deno.readTextFile(`${s.dir}/run2/reference_logps.json`));
  assert.notEqual(base.fingerprint, cached.fingerprint);
  assert.ok(Math.abs(base.train[0][0] - policyStart[0][0]) <= 1e-4 * (1 + Math.abs(base.train[0][0])));
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("--reference: a folder with another vocabulary is refused, saying so", async () => {
  const s = await tinySetup();
  const small = tinyConfig("llama", { vocabSize: 96 });
  await saveModelFolder(`${s.dir}/other`, small, initWeights(small, { seed: 2 }), {
    tokenizerFrom: `${s.dir}/tok`,
  });
  await assert.rejects(
    () => train(tinyConfigFor(s, { reference: `${s.dir}/other`, maxSteps: 1 }), quiet),
    /--reference .*other: its vocabulary has 96 tokens, the model's .* 128: the reference must use the policy's tokenizer/,
  );
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("--save-dtype: a bf16 model's policy is saved bf16 by default, fp32 when asked", async () => {
  const s = await tinySetup();
  const cfg = tinyConfig("llama", { vocabSize: 128 });
  await saveModelFolder(`${s.dir}/bf16`, cfg, initWeights(cfg, { seed: 1 }), {
    dtype: "bfloat16",
    tokenizerFrom: `${s.dir}/tok`,
  });
  const run = (out: string, saveDtype?: "float32") =>
    train(
      tinyConfigFor(s, {
        model: `${s.dir}/bf16`,
        out: `${s.dir}/${out}`,
        maxSteps: 1,
        evalFraction: 0,
        saveDtype,
      }),
      quiet,
    );
  const bf = await run("default");
  assert.deepEqual(await safetensorsDtypes(`${bf.run.policy}/model.safetensors`), new Set(["BF16"]));
  const fp = await run("fp32", "float32");
  assert.deepEqual(await safetensorsDtypes(`${fp.run.policy}/model.safetensors`), new Set(["F32"]));
  assert.equal(JSON.parse(await Deno.readTextFile(`${fp.run.policy}/config.json`)).torch_dtype, "float32");
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("--adam-beta2: two runs that differ only in β2 end with different weights", async () => {
  const s = await tinySetup();
  // three steps: AdamW's first step is lr·sign(g) whatever β2 (bias-corrected), so the difference shows later
  const run = (out: string, adamBeta2: number) =>
    train(tinyConfigFor(s, { out: `${s.dir}/${out}`, maxSteps: 3, evalFraction: 0, adamBeta2 }), quiet);
  await run("a", 0.999);
  await run("b", 0.9);
  const a = (await loadLatestCheckpoint(`${s.dir}/a/checkpoints`))!.tensors;
  const b = (await loadLatestCheckpoint(`${s.dir}/b/checkpoints`))!.tensors;
  let diff = 0;
  for (const name of Object.keys(a)) {
    if (!name.includes("lora")) continue;
    for (let i = 0; i < a[name].length; i++) diff = Math.max(diff, Math.abs(a[name][i] - b[name][i]));
  }
  assert.ok(diff > 1e-4, `max |Δ| ${diff}`);
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("--report-to tensorboard with --logging-steps: event files hold the metrics log's lines", async () => {
  const s = await tinySetup();
  const res = await train(
    tinyConfigFor(s, { maxSteps: 5, stepsPerRun: 2, loggingSteps: 2, reportTo: "tensorboard" }),
    quiet,
  );
  const lines = await readMetrics(res.run.metrics);
  // windows of 2 steps, the last partial one written at the end, then the final evaluation
  assert.deepEqual(lines.filter((r) => r.loss !== undefined).map((r) => r.step), [2, 4, 5]);
  assert.ok(lines.some((r) => r["eval/loss"] !== undefined));
  const { files, events } = await readEventDir(`${res.run.dir}/tensorboard`);
  assert.equal(files.length, 1);
  assert.match(files[0], /^events\.out\.tfevents\.\d{10}\./);
  assert.equal(events[0].fileVersion, "brain.Event:2");
  assert.equal(events.length - 1, lines.length);
  lines.forEach((r, i) => {
    const e = events[i + 1];
    assert.equal(e.step, r.step);
    for (const [k, v] of Object.entries(r)) {
      if (k === "step") continue;
      if (Number.isNaN(v)) assert.ok(Number.isNaN(e.scalars[k]), k);
      else assert.equal(e.scalars[k], Math.fround(v!), `${k} at step ${r.step}`);
    }
    assert.ok("rewards/chosen" in e.scalars || "eval/loss" in e.scalars);
  });
  await Deno.remove(s.dir, { recursive: true });
});
