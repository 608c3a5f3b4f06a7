import assert from "node:assert/strict";
import { batchMetrics, lossByName } from "../../lib/losses/mod.ts";
import { loadModelFolder } from "../../lib/model/model_folder.ts";
import { trainableParamsFor } from "../../lib/model/decoder.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import { generate } from "../../lib/model/generate.ts";
import { loadTokenizer } from "../../lib/data/tokenize.ts";
import { loadDataset } from "../../lib/data/load.ts";
import { ModelSession } from "../../lib/runtime/session.ts";
import { TrainingSession } from "../../lib/runtime/training_session.ts";
import { loadLatestCheckpoint } from "../../lib/train/checkpoint.ts";
import { assembleChunk, planSteps } from "../../lib/train/chunks.ts";
import { readMetrics } from "../../lib/train/metrics_log.ts";
import { prepareExamples, shapeExamples } from "../../lib/train/prepare.ts";
import { scoreExamples } from "../../lib/train/scoring.ts";
import { buildAlignmentGraph } from "../../lib/train/train_graph.ts";
import { buildScoringGraph } from "../../lib/model/scoring_graph.ts";
import { train } from "../../lib/train/trainer.ts";
import { explainRunError } from "../../lib/train/run_plan.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol * (1 + Math.abs(b)), `${what}: ${a} vs ${b}`);

Deno.test("trainer: the training graph's loss and metrics equal the TypeScript references on the same batch", async () => {
  const s = await tinySetup();
  const model = await loadModelFolder(s.model);
  const tok = await loadTokenizer(s.model);
  for (const loss of ["nca", "infonca", "dpo", "nca_pair", "ipo"] as const) {
    const cfg = tinyConfigFor(s, {
      loss,
      data: loss === "nca" || loss === "infonca" ? `${s.dir}/reward.jsonl` : `${s.dir}/pref.jsonl`,
    });
    const ex = prepareExamples(tok, shapeExamples(await loadDataset(cfg.data), { loss, seed: 0 }), {
      maxLength: 48,
      maxPromptLength: 24,
      alpha: cfg.alpha,
    }).slice(0, 4);
    const k = ex[0].responseIds.length;
    const frozen = storedWeights(model.stored);
    // a LoRA policy that differs from the reference: B non-zero
    const trainable = trainableParamsFor(model.config, {
      mode: "lora",
      lora: { r: 4, alpha: 8, targetModules: "all-linear" },
      seed: 5,
    });
    for (const p of trainable.params) {
      if (p.name.includes("lora_B")) {
        trainable.init[p.name] = trainable.init[p.name].map((_, i) => Math.sin(i) * 0.05);
      }
    }
    // reference log-probs from the scoring graph; the policy's too, at the same parameters
    const pad = tok.pad_token_id as number;
    const refSession = await ModelSession.create(buildScoringGraph(model.config, frozen).build());
    const reference = (await scoreExamples(refSession, ex, { padId: pad, batchSize: 4 })).logps;
    const polSession = await ModelSession.create(buildScoringGraph(model.config, frozen, trainable).build());
    const extra = Object.fromEntries(
      trainable.params.map((
        p,
      ) => [p.name, { dtype: "float32" as const, dims: p.shape, data: trainable.init[p.name] }]),
    );
    const policy = (await scoreExamples(polSession, ex, { padId: pad, batchSize: 4, extra })).logps;
    // one training step at lr 0: the loss it reports is the loss at the initial parameters
    const built = buildAlignmentGraph({
      cfg: model.config,
      frozen,
      trainable,
      loss,
      beta: 0.3,
      k,
      ranked: ex[0].rewards !== undefined,
      optimizer: { kind: "adamw" },
    });
    const ts = await TrainingSession.create(built, trainable.init);
    const chunk = assembleChunk(ex, [{ epoch: 0, indices: [0, 1, 2, 3] }], reference, {
      loss,
      k,
      padId: pad,
      accumulation: 1,
    });
    const res = await ts.run(chunk.feeds, [0]);
    const x = {
      policy: policy.map((r) => [...r]),
      reference: reference.map((r) => [...r]),
      rewards: ex[0].rewards ? ex.map((e) => e.rewards!) : undefined,
    };
    const want = lossByName[loss](x, { beta: 0.3, alpha: cfg.alpha });
    close(res.loss[0], want.loss, 1e-4, `${loss} loss`);
    for (const [m, v] of Object.entries(batchMetrics(x, { beta: 0.3, alpha: cfg.alpha }))) {
      close(res.metrics[m][0], v, 1e-3, `${loss} ${m}`);
    }
    await Promise.all([ts.release(), refSession.release(), polSession.release()]);
  }
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("trainer: a run writes config, metrics, charts, checkpoints, reference record and a servable policy", async () => {
  const s = await tinySetup();
  const res = await train(tinyConfigFor(s, { evalEvery: 4, saveEvery: 4 }), { log: () => {} });
  assert.equal(res.interrupted, false);
  assert.equal(res.steps, res.totalSteps);
  for (
    const f of ["config.json", "metrics.jsonl", "summary.json", "reference.json", "reference_logps.json"]
  ) {
    assert.ok((await Deno.stat(`${res.run.dir}/${f}`)).isFile, f);
  }
  for (const f of ["loss.svg", "rewards.svg", "logps_chosen.svg"]) {
    assert.match(await Deno.readTextFile(`${res.run.charts}/${f}`), /^<svg/);
  }
  const records = await readMetrics(res.run.metrics);
  assert.equal(records.filter((r) => r.loss !== undefined).length, res.steps);
  for (
    const m of [
      "loss",
      "rewards/chosen",
      "rewards/rejected",
      "rewards/margins",
      "rewards/accuracies",
      "logps/chosen",
      "logps/rejected",
      "rewards/A0",
      "logps/A3",
      "grad_norm",
      "lr",
      "tokens_per_s",
    ]
  ) {
    assert.ok(Number.isFinite(records[0][m]), `metric ${m} logged`);
  }
  assert.ok(records.some((r) => r["eval/loss"] !== undefined), "evaluated during training");
  // at step 1 the policy is the reference: NCA's loss is 2·log 2 whatever the labels
  close(records[0].loss!, 2 * Math.log(2), 1e-5, "initial NCA loss");
  // adapters saved as PEFT does, and the exported policy generates
  assert.ok((await Deno.stat(`${res.run.dir}/adapter/adapter_config.json`)).isFile);
  const session = await ModelSession.create(`${res.run.policy}/onnx/model.onnx`);
  const out = await generate(session, [[5, 6, 7]], { maxNewTokens: 3, temperature: 0 });
  assert.equal(out.rows[0].tokens.length, 3);
  await session.release();
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test(
  "trainer: an interrupted run, resumed, ends with the same weights as an uninterrupted one (LoRA dropout on)",
  async () => {
    const s = await tinySetup();
    const whole = await train(tinyConfigFor(s, { out: `${s.dir}/whole`, loraDropout: 0.1 }), {
      log: () => {},
    });
    const cut = await train(tinyConfigFor(s, { out: `${s.dir}/cut`, loraDropout: 0.1 }), {
      log: () => {},
      stopAfterSteps: 4,
    });
    assert.equal(cut.interrupted, true);
    assert.ok(cut.steps >= 4 && cut.steps < cut.totalSteps);
    const resumed = await train(
      tinyConfigFor(s, { resume: `${s.dir}/cut`, stepsPerRun: 5, loraDropout: 0.1 }),
      {
        log: () => {},
      },
    );
    assert.equal(resumed.steps, whole.steps);
    const a = await loadLatestCheckpoint(`${s.dir}/whole/checkpoints`);
    const b = await loadLatestCheckpoint(`${s.dir}/cut/checkpoints`);
    assert.ok(a && b);
    for (const name of Object.keys(a.tensors)) {
      const x = a.tensors[name], y = b.tensors[name];
      for (let i = 0; i < x.length; i++) close(y[i], x[i], 1e-5, `${name}[${i}]`);
    }
    // and dropout was really on: without it the weights end elsewhere
    await train(tinyConfigFor(s, { out: `${s.dir}/plain`, loraDropout: 0 }), { log: () => {} });
    const c = await loadLatestCheckpoint(`${s.dir}/plain/checkpoints`);
    const someB = Object.keys(a.tensors).find((n) => n.includes("lora_B"))!;
    assert.ok(
      c!.tensors[someB].some((v, i) => Math.abs(v - a.tensors[someB][i]) > 1e-6),
      "dropout changes training",
    );
    // the metrics log holds each step once
    const steps = (await readMetrics(`${s.dir}/cut/metrics.jsonl`)).filter((r) => r.loss !== undefined).map((
      r,
    ) => r.step);
    assert.deepEqual(steps, [...Array(whole.steps).keys()].map((i) => i + 1));
    await Deno.remove(s.dir, { recursive: true });
  },
);

Deno.test("trainer: gradient accumulation, full fine-tuning and every loss run", async () => {
  const s = await tinySetup();
  for (
    const [loss, data, over] of [
      ["dpo", "pref", { gradAccum: 2 }],
      ["nca_pair", "pref", {}],
      ["ipo", "reward", { pairStrategy: "best-vs-worst" }],
      ["infonca", "reward", { k: 2, kMode: "random" }],
      ["sft", "sft", { full: true }],
    ] as const
  ) {
    const res = await train(
      tinyConfigFor(s, { loss, data: `${s.dir}/${data}.jsonl`, out: `${s.dir}/${loss}`, epochs: 1, ...over }),
      { log: () => {} },
    );
    assert.equal(res.interrupted, false, loss);
    const records = await readMetrics(res.run.metrics);
    assert.ok(records.every((r) => r.loss === undefined || Number.isFinite(r.loss)), loss);
  }
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("trainer: SFT on a fixed small set raises the log-likelihood of the completions", async () => {
  const s = await tinySetup();
  const res = await train(
    tinyConfigFor(s, {
      loss: "sft",
      data: `${s.dir}/sft.jsonl`,
      full: true,
      lr: 1e-2,
      epochs: 6,
      evalFraction: 0,
    }),
    { log: () => {} },
  );
  const rec = (await readMetrics(res.run.metrics)).filter((r) => r.loss !== undefined);
  assert.ok(rec.at(-1)!.loss! < rec[0].loss! * 0.7, `sft loss ${rec[0].loss} → ${rec.at(-1)!.loss}`);
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("trainer: bad input is reported with what and where", async () => {
  const s = await tinySetup();
  await assert.rejects(
    () => train(tinyConfigFor(s, { model: `${s.dir}/nothing` }), { log: () => {} }),
    /nothing/,
  );
  // an unsupported architecture names the supported ones
  const cfgPath = `${s.dir}/model/config.json`;
  const orig = await Deno.readTextFile(cfgPath);
  await Deno.writeTextFile(cfgPath, orig.replace(/"model_type": "llama"/, '"model_type": "bert"'));
  await assert.rejects(
    () => train(tinyConfigFor(s, { out: `${s.dir}/r2` }), { log: () => {} }),
    /bert.*llama|llama.*bert/s,
  );
  await Deno.writeTextFile(cfgPath, orig);
  // a malformed data line: file, line and field
  await Deno.writeTextFile(
    `${s.dir}/bad.jsonl`,
    '{"prompt": "hi", "responses": [{"content": "a", "reward": 1}, {"content": "b", "reward": "x"}]}\n',
  );
  await assert.rejects(
    () => train(tinyConfigFor(s, { data: `${s.dir}/bad.jsonl`, out: `${s.dir}/r3` }), { log: () => {} }),
    /bad\.jsonl:1.*responses\[1\]\.reward/,
  );
  // reward losses need reward or preference data
  await assert.rejects(
    () => train(tinyConfigFor(s, { data: `${s.dir}/sft.jsonl`, out: `${s.dir}/r4` }), { log: () => {} }),
    /nca loss needs reward or preference data/,
  );
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("trainer: a NaN loss stops the run, names the step and keeps the last checkpoint", async () => {
  const s = await tinySetup();
  await assert.rejects(
    () =>
      train(tinyConfigFor(s, { lr: 1e30, maxGradNorm: 0, saveEvery: 1, stepsPerRun: 1, full: true }), {
        log: () => {},
      }),
    (e: Error) => {
      assert.match(
        e.message,
        /the loss became (NaN|Infinity|-Infinity) at step \d+ \(epoch \d, prompts [\d, ]+/,
      );
      assert.match(e.message, /last checkpoint is kept/);
      return true;
    },
  );
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("trainer: running out of CUDA memory says which settings to lower", () => {
  const cfg = tinyConfigFor({ dir: "/x", model: "/m" }, {
    batchSize: 8,
    maxLength: 1024,
    stepsPerRun: 8,
    gradAccum: 1,
  });
  const e = explainRunError(new Error("CUDA failure 2: out of memory ; GPU=0"), cfg, 11);
  assert.match(
    e.message,
    /out of device memory at step 12: lower --batch-size \(now 8\), --max-length \(now 1024\)/,
  );
  assert.match(e.message, /--grad-accum \(now 1\)/);
  assert.equal(explainRunError(new Error("other"), cfg, 0).message, "other");
});

Deno.test("trainer: planSteps covers each prompt once per epoch", () => {
  const ex = Array.from({ length: 10 }, (_, i) => ({ promptIds: [1], responseIds: [[2, i]] }));
  const steps = planSteps(ex, { batchSize: 3, epochs: 2, seed: 1 });
  for (const e of [0, 1]) {
    const seen = steps.filter((s) => s.epoch === e).flatMap((s) => s.indices).sort((a, b) => a - b);
    assert.deepEqual(seen, [...Array(10).keys()]);
  }
  assert.equal(planSteps(ex, { batchSize: 3, epochs: 2, seed: 1, maxSteps: 5 }).length, 5);
});
