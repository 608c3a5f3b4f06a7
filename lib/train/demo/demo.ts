/**
 * The offline demo behind `deno task train` with no arguments: a task whose reward is a program (sorting
 * digits, with partial credit), a tiny model trained from scratch on noisy demonstrations (the SFT stage),
 * K responses per prompt sampled from it and scored, and alignment on those scores (NCA by default). It
 * reports the mean reward before and after, the chosen responses' implicit reward and the KL to the
 * reference, and leaves a servable `policy/` in its run folder (what `deno task serve` loads by default).
 *
 * With `compare`, the same samples also train DPO on binarized pairs and InfoNCA and NCA with K = 2 and
 * K = 4, and one table and chart answer the paper's three questions at toy scale.
 * @module
 */
import { join } from "node:path";
import { loadTokenizer } from "../../data/tokenize.ts";
import { mulberry32 } from "../../data/random.ts";
import { type LlamaModelConfig, validateModelConfig } from "../../model/config.ts";
import { initWeights } from "../../model/init.ts";
import { saveModelFolder } from "../../model/model_folder.ts";
import type { Device } from "../../runtime/tensor.ts";
import { type DeviceRequest, resolveDevice } from "../../runtime/device.ts";
import { lineChart } from "../charts.ts";
import { readMetrics } from "../metrics_log.ts";
import { createRunFolder, writeJsonAtomic } from "../run_folder.ts";
import { writeTextAtomic } from "../../files.ts";
import { defaultTrainOptions } from "../options.ts";
import { train, type TrainConfig, type TrainHooks } from "../trainer.ts";
import { type PolicyScore, scorePolicy } from "./evaluate.ts";
import { sampleResponses } from "./sampling.ts";
import { answerText, noisyDemonstration, promptText, samplePrompts } from "./task.ts";
import { writeDemoTokenizer } from "./tokenizer.ts";

/** Demo settings (defaults sized for a 2-core CPU: about a minute). */
export type DemoOptions = {
  seed?: number;
  device?: DeviceRequest;
  compare?: boolean;
  /** Base folder of run folders (default "runs"). */
  runs?: string;
  log?: (line: string) => void;
  hooks?: TrainHooks;
  /** Scale the sizes down (tests): fraction of the prompts and steps. */
  scale?: number;
  /** Overrides of the alignment runs' settings (beta, alpha, lr, epochs, …). */
  align?: Partial<TrainConfig>;
  /** Overrides of the SFT run's settings. */
  sft?: Partial<TrainConfig>;
};

/**
 * The demo's model: a 2-layer Llama, hidden 64, 4 heads (2 kv heads), 32 positions, tied embeddings, over
 * the demo tokenizer's vocabulary (no BOS). Validated like a parsed config.
 */
export function demoModelConfig(tok: { vocabSize: number; eosId: number; padId: number }): LlamaModelConfig {
  const cfg: LlamaModelConfig = {
    family: "llama",
    modelType: "llama",
    vocabSize: tok.vocabSize,
    hiddenSize: 64,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    intermediateSize: 128,
    maxPositions: 32,
    attentionBias: { q: false, k: false, v: false, o: false },
    mlpBias: false,
    tieWordEmbeddings: true,
    activation: "silu",
    bosTokenId: null,
    eosTokenId: tok.eosId,
    padTokenId: tok.padId,
    torchDtype: "float32",
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    slidingWindow: null,
    slidingLayers: null,
    qkNorm: false,
  };
  validateModelConfig(cfg, "the demo's model config");
  return cfg;
}

/** One aligned model's results. */
export type DemoRow = {
  method: string;
  k: number;
  score: PolicyScore;
  /** Training metrics at the end: rewards/chosen, logps/chosen change from the start. */
  rewardsChosen: number;
  logpsChosenChange: number;
  run: string;
};

/** What the demo returns (also written to `demo.json` in its run folder). */
export type DemoResult = { dir: string; sft: PolicyScore; rows: DemoRow[]; seconds: number };

/** The settings every demo run shares; each stage overrides what differs. */
function baseConfig(
  over: Partial<TrainConfig> & Pick<TrainConfig, "model" | "data" | "loss" | "out">,
): TrainConfig {
  return {
    ...defaultTrainOptions(),
    evalFraction: 0.05,
    name: "demo",
    beta: 1,
    alpha: 0.1,
    lr: 2e-3,
    epochs: 4,
    batchSize: 16,
    maxLength: 32,
    maxPromptLength: 16,
    loraR: 16,
    loraAlpha: 32,
    loraDropout: 0,
    stepsPerRun: 16,
    keepCheckpoints: 1,
    ...over,
  };
}

async function writeJsonl(path: string, rows: unknown[]): Promise<void> {
  await Deno.writeTextFile(path, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
}

/** Runs the demo; see the module documentation. */
export async function runDemo(o: DemoOptions = {}): Promise<DemoResult> {
  const t0 = performance.now();
  const log = o.log ?? ((l: string) => console.log(l));
  const seed = o.seed ?? 0, scale = o.scale ?? 1;
  const { device, notice } = await resolveDevice(o.device ?? "auto");
  if (notice) log(notice);
  const run = await createRunFolder(o.runs ?? "runs", o.compare ? "demo-compare" : "demo");
  log(
    'demo: a tiny language model learns to sort digits ("sort 3 1 4 1 =" → "1 1 3 4") from noisy ' +
      "demonstrations,\nthen is aligned on K scored samples of its own; the reward is a program (fraction of " +
      `digits in the right place).\nrun folder: ${run.dir} · device: ${device}`,
  );
  const stages = join(run.dir, "stages");
  await Deno.mkdir(stages, { recursive: true });
  const n = (x: number) => Math.max(8, Math.round(x * scale));

  // 1. a tokenizer and a tiny model from scratch
  const tokDir = join(stages, "tokenizer");
  const tokInfo = await writeDemoTokenizer(tokDir);
  const cfg = demoModelConfig(tokInfo);
  const baseDir = join(stages, "base");
  await saveModelFolder(baseDir, cfg, initWeights(cfg, { seed }), { tokenizerFrom: tokDir });
  const tok = await loadTokenizer(baseDir);

  // 2. SFT on noisy demonstrations (half of them wrong in some way)
  const rng = mulberry32(seed + 1);
  const sftPrompts = samplePrompts(n(4000), seed + 2);
  const sftData = join(stages, "sft.jsonl");
  await writeJsonl(
    sftData,
    sftPrompts.map((p) => ({ prompt: promptText(p), completion: noisyDemonstration(p, 0.5, rng) })),
  );
  log(`\n▶ SFT: a ${cfg.numLayers}-layer model from scratch on ${sftPrompts.length} noisy demonstrations`);
  const sft = await train(
    baseConfig({
      model: baseDir,
      data: sftData,
      loss: "sft",
      out: join(stages, "sft"),
      full: true,
      lr: 5e-3,
      epochs: 12,
      batchSize: 64,
      device,
      seed,
      ...o.sft,
    }),
    o.hooks,
  );
  const sftPolicy = sft.run.policy;

  // 3. K = 4 responses per prompt, sampled from the SFT model and scored by the program
  const alignPrompts = samplePrompts(n(768), seed + 3);
  const samples = await sampleResponses(sftPolicy, tok, alignPrompts, {
    k: 4,
    temperature: 1,
    seed: seed + 4,
    device,
  });
  const rewardData = join(stages, "samples.jsonl");
  await writeJsonl(
    rewardData,
    alignPrompts.map((p, i) => ({
      prompt: promptText(p),
      responses: samples[i].map((s) => ({ content: s.text, reward: s.reward })),
    })),
  );
  const meanSampled = samples.flat().reduce((a, s) => a + s.reward, 0) / samples.flat().length;
  log(
    `\n▶ sampled 4 responses for each of ${alignPrompts.length} prompts: mean reward ${
      meanSampled.toFixed(3)
    }`,
  );

  // 4. alignment on the scored samples
  const heldOut = samplePrompts(n(300), seed + 5);
  // the prompts as files too, for running the loop with deno task sample / score / eval (see the README)
  await writeJsonl(join(stages, "prompts.jsonl"), alignPrompts.map((p) => ({ prompt: promptText(p) })));
  await writeJsonl(join(stages, "heldout.jsonl"), heldOut.map((p) => ({ prompt: promptText(p) })));
  const sftScore = await scorePolicy(sftPolicy, sftPolicy, tok, heldOut, { seed: seed + 6, device });
  const methods: { method: string; loss: TrainConfig["loss"]; k: number }[] = o.compare
    ? [
      { method: "DPO (binarized pairs)", loss: "dpo", k: 2 },
      { method: "InfoNCA K=2", loss: "infonca", k: 2 },
      { method: "InfoNCA K=4", loss: "infonca", k: 4 },
      { method: "NCA K=2", loss: "nca", k: 2 },
      { method: "NCA K=4", loss: "nca", k: 4 },
    ]
    : [{ method: "NCA K=4", loss: "nca", k: 4 }];
  const rows: DemoRow[] = [];
  const curves: { name: string; points: [number, number][] }[] = [];
  for (const m of methods) {
    log(`\n▶ align: ${m.method} on the scored samples (reference = the SFT model)`);
    const single = !o.compare;
    const out = single ? run.dir : join(stages, m.method.replace(/[^A-Za-z0-9]+/g, "-").toLowerCase());
    const res = await train(
      baseConfig({
        model: sftPolicy,
        data: rewardData,
        loss: m.loss,
        k: m.loss === "dpo" ? undefined : m.k,
        kMode: "random",
        out,
        evalEvery: 8,
        device,
        seed,
        ...o.align,
      }),
      o.hooks,
    );
    // the chosen (best) responses of the held-out split: their implicit reward β·(log π − log μ) over training
    const records = await readMetrics(res.run.metrics);
    const chosen = records.filter((r) => r["eval/rewards/chosen"] !== undefined);
    const beta = res.config.beta;
    const final = chosen.at(-1)?.["eval/rewards/chosen"] ?? NaN;
    const score = await scorePolicy(res.run.policy, sftPolicy, tok, heldOut, { seed: seed + 6, device });
    rows.push({
      method: m.method,
      k: m.k,
      score,
      rewardsChosen: final,
      logpsChosenChange: final / beta,
      run: res.run.dir,
    });
    curves.push({
      name: m.method,
      points: [[0, 0], ...chosen.map((r): [number, number] => [r.step, r["eval/rewards/chosen"]! / beta])],
    });
  }

  const result: DemoResult = { dir: run.dir, sft: sftScore, rows, seconds: (performance.now() - t0) / 1000 };
  await writeJsonAtomic(join(run.dir, "demo.json"), result);
  if (o.compare) {
    await Deno.mkdir(run.charts, { recursive: true });
    await writeTextAtomic(
      join(run.charts, "compare_logps_chosen.svg"),
      lineChart({
        title: "Held-out chosen responses: change of log π(chosen) from the reference",
        xLabel: "step",
        yLabel: "log π − log μ (nats)",
        series: curves,
      }),
    );
  }
  log(
    await examplesTable(
      sftPolicy,
      rows.length ? rows[rows.length - 1] : undefined,
      heldOut.slice(0, 4),
      tok,
      seed,
      device,
    ),
  );
  log("\n" + formatDemoTable(result));
  log(`\nrun folder: ${run.dir}  (charts in ${join(run.dir, "charts")}; serve it with: deno task serve)`);
  return result;
}

/** A few held-out prompts with a sampled answer from the SFT model and from the aligned one. */
async function examplesTable(
  sftPolicy: string,
  aligned: DemoRow | undefined,
  prompts: ReturnType<typeof samplePrompts>,
  tok: Awaited<ReturnType<typeof loadTokenizer>>,
  seed: number,
  device: Device,
): Promise<string> {
  const opts = { k: 1, temperature: 1, seed: seed + 7, device };
  const before = await sampleResponses(sftPolicy, tok, prompts, opts);
  const after = aligned ? await sampleResponses(join(aligned.run, "policy"), tok, prompts, opts) : before;
  const lines = ["\nexamples (one sample each, temperature 1):"];
  prompts.forEach((p, i) => {
    const b = before[i][0], a = after[i][0];
    lines.push(
      `  ${promptText(p).padEnd(16)} → SFT: ${b.text.padEnd(10)} (reward ${b.reward.toFixed(2)})   ` +
        `${aligned?.method ?? "aligned"}: ${a.text.padEnd(10)} (reward ${a.reward.toFixed(2)})   answer: ${
          answerText(p)
        }`,
    );
  });
  return lines.join("\n");
}

/** The demo's table: the reference (SFT) model and each aligned model on the held-out prompts. */
export function formatDemoTable(r: DemoResult): string {
  const head = [
    "model",
    "mean reward (T=1)",
    "exact match (greedy)",
    "KL(π‖μ)",
    "rewards/chosen",
    "Δ log π(chosen)",
  ];
  const fmt = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : "—");
  const body = [
    ["SFT (reference)", fmt(r.sft.meanReward), fmt(r.sft.exactMatch), fmt(0), "—", "—"],
    ...r.rows.map((row) => [
      row.method,
      fmt(row.score.meanReward),
      fmt(row.score.exactMatch),
      fmt(row.score.kl),
      fmt(row.rewardsChosen),
      fmt(row.logpsChosenChange, 2),
    ]),
  ];
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(head), widths.map((w) => "─".repeat(w)).join("  "), ...body.map(line)].join("\n") +
    `\n(${r.seconds.toFixed(0)} s; held-out prompts; reward = fraction of digits in the right place)`;
}
