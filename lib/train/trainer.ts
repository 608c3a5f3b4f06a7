/**
 * The training pipeline behind `deno task train`: load the model, tokenizer and data → compute the
 * reference log-probs once and cache them in the run folder → train in Loop chunks (several optimizer
 * steps per session run) → evaluate on the held-out split → checkpoint atomically → export the policy as a
 * servable folder → write the summary and charts. A run folder can be resumed exactly.
 * @module
 */
import { join, resolve } from "node:path";
import { type Trainable, trainableParamsFor } from "../model/decoder.ts";
import { type ModelFolder, readModelWeights, storedDtype } from "../model/model_folder.ts";
import { readStoredTensor } from "../model/checkpoint.ts";
import { storedWeights } from "../model/stored_weights.ts";
import type { TensorReader } from "../model/safetensors.ts";
import { mergeLoraTensor, saveAdapter } from "../model/peft.ts";
import { exportForServing } from "../model/export.ts";
import { resolveDevice } from "../runtime/device.ts";
import { GraphFolder } from "../runtime/graph_folder.ts";
import { deviceMemory, PhasePeaks, processMemory } from "../runtime/device_memory.ts";
import type { Device } from "../runtime/session.ts";
import { type LoraConfig, loraModules } from "../model/lora.ts";
import { describeEstimate, planRun, type RunPlan } from "./memory.ts";
import { exampleLength } from "./scoring.ts";
import { assertFloat16Device } from "../runtime/precision.ts";
import { TrainingSession } from "../runtime/training_session.ts";
import { trainingCharts } from "./charts.ts";
import { hashConfig, loadLatestCheckpoint, newestCheckpointMeta, saveCheckpoint } from "./checkpoint.ts";
import {
  compareData,
  compareFolder,
  type DataDigest,
  dataDigest,
  folderDigest,
  type InputsDigest,
} from "./inputs_digest.ts";
import { assembleChunk, defaultStepsPerRun, groupChunks, planSteps } from "./chunks.ts";
import { isFile, writeFolderAtomic, writeTextAtomic } from "../files.ts";
import { lockFolder } from "../lock.ts";
import { OPTION_SPECS, type TrainConfig } from "./option_specs.ts";
import { defaultTrainOptions, givenOptions } from "./options.ts";
import { loadRunInputs, type RunInputs } from "./run_inputs.ts";
import { loadReferenceModel, referenceModelScorer, referenceScores } from "./reference.ts";
import { evaluatePolicy, finalEvalOf, prefixed } from "./evaluate.ts";
import { type MetricsRecord, MetricsWriter, readMetrics, summarize } from "./metrics_log.ts";
import { createRunFolder, type RunPaths, runPaths, writeJsonAtomic } from "./run_folder.ts";
import { lrsFor, type ScheduleConfig } from "./schedule.ts";
import { buildAlignmentGraph, FP16_CPU_GAPS, FP16_LOSS_SCALING, usesDropoutKey } from "./train_graph.ts";

export type { TrainConfig };

/** Where a run reports progress (the CLI prints; tests collect). */
export type TrainHooks = {
  log?: (line: string) => void;
  /** Called after every chunk with the step records of that chunk and the process's resident memory. */
  onChunk?: (
    info: {
      step: number;
      totalSteps: number;
      records: MetricsRecord[];
      seconds: number;
      tokens: number;
      memory: number;
    },
  ) => void;
  /** Aborting saves a checkpoint after the current chunk and returns (Ctrl-C). */
  signal?: AbortSignal;
  /** Stops (as an abort would) once this many steps are done in this call: tests of resuming. */
  stopAfterSteps?: number;
  /**
   * Runs `--precision fp16` on the CPU instead of refusing it: tests of the fp16 loop. ONNX Runtime runs
   * most fp16 operators in float32 there (see lib/runtime/precision.ts).
   */
  allowFloat16OnCpu?: boolean;
  /** The bytes the device can give the run, instead of its free memory: tests of the memory plan. */
  memoryBudget?: number;
};

/** What a run returns. */
export type TrainResult = {
  run: RunPaths;
  /** The configuration the run used (for a resumed run: the saved one). */
  config: TrainConfig;
  steps: number;
  totalSteps: number;
  interrupted: boolean;
  summary?: Record<string, unknown>;
  eval?: Record<string, number>;
};

/** Trains a policy per `cfg`; see the module documentation. */
export async function train(cfg: TrainConfig, hooks: TrainHooks = {}): Promise<TrainResult> {
  const log = hooks.log ?? ((l: string) => console.log(l));
  const resumed = cfg.resume ? runPaths(cfg.resume) : undefined;
  // one run at a time in a folder: a second `--out`, or `--resume` of a running run, is refused at once
  if (resumed && !(await isFile(resumed.config))) throw notARunFolder(resumed);
  await using _resumedLock = resumed ? await lockFolder(resumed.dir, { log }) : null;
  if (resumed) Object.assign(cfg, await resumedConfig(resumed, cfg));
  const { device, notice } = await resolveDevice(cfg.device, { log });
  // fp16 runs on CUDA only: refuse it before a run folder is made or any data is loaded
  if (cfg.precision === "fp16" && !hooks.allowFloat16OnCpu) {
    assertFloat16Device(device, FP16_CPU_GAPS, notice);
  }
  const run = resumed ?? (cfg.out ? await ensureRun(cfg.out) : await createRunFolder("runs", cfg.name));
  await using _lock = resumed ? null : await lockFolder(run.dir, { log });
  const configHash = await hashConfig(trainingIdentity(cfg));
  await writeJsonAtomic(run.config, { ...cfg, resume: undefined });
  if (notice) log(notice);
  const phases = new PhasePeaks();
  phases.enter("load");
  const p = await loadRunInputs(cfg, log);
  // --reference: a model folder of its own, checked against the policy's vocabulary before any work
  const refModel = cfg.reference !== undefined && cfg.loss !== "sft"
    ? await loadReferenceModel(cfg.reference, p.model, log)
    : undefined;
  // what the run trains on, against the checkpoint a resume continues from: the data now, before any work;
  // the models' files, hashed meanwhile, before anything is scored with them
  const saved = resumed ? await newestCheckpointMeta(run.checkpoints) : undefined;
  const savedInputs = saved?.meta.inputs as InputsDigest | undefined;
  const data = dataDigest(p.train, p.eval);
  if (saved && savedInputs) refuseChanged(compareData(savedInputs.data, data), run, saved.path, cfg, log);
  if (saved && !savedInputs) {
    log(`${saved.path} records no digest of its data and models (an older run): changes are not checked`);
  }
  const inputs = digestInputs(cfg, p, refModel, data, savedInputs).then((now) => {
    if (saved && savedInputs) refuseChanged(compareModels(savedInputs, now), run, saved.path, cfg, log);
    return now;
  });
  inputs.catch(() => {}); // awaited where needed; a run that fails first must not also report this
  const fp16 = cfg.precision === "fp16";
  log(
    `model ${p.model.config.modelType} (${p.model.config.numLayers} layers, hidden ${p.model.config.hiddenSize}) · ` +
      `${p.train.length} training / ${p.eval.length} eval prompts · K = ${p.k} · loss ${cfg.loss} · ${device}` +
      (fp16 ? " · fp16 (mixed precision, loss scaling)" : ""),
  );

  // what the run will hold, before any of it is loaded: checkpointing and the LM head's blocks follow
  const lora: LoraConfig = {
    r: cfg.loraR,
    alpha: cfg.loraAlpha,
    dropout: cfg.loraDropout,
    targetModules: cfg.loraTargets ?? "all-linear",
  };
  const plan = await planMemory(cfg, p, device, lora, log, hooks.memoryBudget);

  const frozen = storedWeights(p.model.stored);
  const trainable = trainableParamsFor(
    p.model.config,
    cfg.full
      ? { mode: "full", weights: await readModelWeights(p.model) }
      : { mode: "lora", lora, seed: cfg.seed },
  );

  // a step is --grad-accum micro-batches of --batch-size prompts; a last step that cannot be split so is left out
  const steps = planSteps(p.train, {
    batchSize: cfg.batchSize * cfg.gradAccum,
    epochs: cfg.epochs,
    seed: cfg.seed,
    maxSteps: cfg.maxSteps,
  }).filter((st) => st.indices.length % cfg.gradAccum === 0);
  if (steps.length === 0) {
    throw new Error(`no training steps: ${p.train.length} prompts, batch size ${cfg.batchSize}`);
  }
  // fractional epoch after each step (HF's convention: 1.0 at the end of the first pass)
  const perEpoch = new Map<number, number>();
  for (const st of steps) perEpoch.set(st.epoch, (perEpoch.get(st.epoch) ?? 0) + 1);
  const seen = new Map<number, number>();
  const epochAt = steps.map((st) => {
    const n = (seen.get(st.epoch) ?? 0) + 1;
    seen.set(st.epoch, n);
    return st.epoch + n / perEpoch.get(st.epoch)!;
  });
  const schedule: ScheduleConfig = {
    kind: cfg.schedule,
    lr: cfg.lr,
    totalSteps: steps.length,
    warmupSteps: cfg.warmupSteps,
    warmupRatio: cfg.warmupSteps === undefined ? cfg.warmupRatio : undefined,
  };

  // one session holds the frozen weights, read by ONNX Runtime from the model's files (linked into the run's
  // graph folder), for training, the reference log-probs and evaluation (its scoring mode)
  phases.enter("session");
  const graphs = await GraphFolder.open(join(run.dir, "graphs"), log);
  // a --reference model is scored (or read from the cache) before the training session exists, so the two
  // models are never loaded together
  let reference: { train: Float32Array[]; eval: Float32Array[] } | undefined;
  if (refModel) {
    phases.enter("reference");
    const open = () =>
      referenceModelScorer(refModel, { device, graphs, precision: cfg.precision, chunk: plan.chunk });
    const identity = (await inputs).reference!.sha256;
    reference = await referenceScores(cfg, run, p, open, log, identity).catch(async (e) => {
      await graphs.remove();
      throw e;
    });
    phases.enter("session");
  }
  const built = buildAlignmentGraph({
    cfg: p.model.config,
    frozen,
    trainable,
    loss: cfg.loss,
    beta: cfg.beta,
    k: p.k,
    ranked: p.ranked,
    optimizer: {
      kind: "adamw",
      weightDecay: cfg.weightDecay,
      beta1: cfg.adamBeta1,
      beta2: cfg.adamBeta2,
      eps: cfg.adamEpsilon,
    },
    maxGradNorm: cfg.maxGradNorm > 0 ? cfg.maxGradNorm : undefined,
    accumulation: cfg.gradAccum,
    precision: cfg.precision,
    segments: plan.segments,
    chunk: plan.chunk,
    scoring: true,
  });
  const trainableParams = trainable.params.reduce((n, x) => n + x.shape.reduce((a, b) => a * b, 1), 0);
  const stepsPerRun = cfg.stepsPerRun ?? defaultStepsPerRun(device, trainable.mode, trainableParams);
  const session = await TrainingSession.create(built, trainable.init, {
    device,
    lossScale: fp16 ? FP16_LOSS_SCALING.init : undefined,
    graphFolder: graphs,
    graphName: "train",
  });
  // the session holds the initial values now (full fine-tuning: a copy of the model the run need not keep)
  for (const k of Object.keys(trainable.init)) delete trainable.init[k];
  const scorer = session.scorer();

  // reference log-probs: once, cached in the run folder; scored before a checkpoint is restored, on the
  // initial parameters (LoRA's B = 0: the base model itself)
  if (!refModel && cfg.loss !== "sft") {
    phases.enter("reference");
    reference = await referenceScores(cfg, run, p, scorer, log, (await inputs).model.sha256);
  }

  phases.enter("train");
  let step = 0;
  const ckpt = await loadLatestCheckpoint(run.checkpoints, { configHash, warn: log });
  if (ckpt) {
    // the checkpoint checked above, unless it turned out damaged and an older one is used
    const then = ckpt.meta.inputs as InputsDigest | undefined, now = await inputs;
    if (then && ckpt.path !== saved?.path) {
      refuseChanged(
        [...compareData(then.data, now.data), ...compareModels(then, now)],
        run,
        ckpt.path,
        cfg,
        log,
      );
    }
    if (ckpt.version >= 2) session.restoreNamed(ckpt.tensors, ckpt.scalars);
    else session.restore(ckpt.tensors); // version 1: the graph's own state names
    step = ckpt.step;
    log(`resumed from ${ckpt.path} at step ${step}`);
  } else if (cfg.resume) log(`no checkpoint in ${run.checkpoints}: starting from step 0`);
  const metrics = await MetricsWriter.open(run.metrics, {
    append: step > 0,
    truncateAfterStep: step,
    every: cfg.loggingSteps ?? 1,
    tensorboard: cfg.reportTo === "tensorboard" ? join(run.dir, "tensorboard") : undefined,
  });

  const evaluate = async (): Promise<Record<string, number> | undefined> => {
    if (!p.eval.length) return undefined;
    return await evaluatePolicy(cfg, p, scorer, reference?.eval);
  };

  const save = async () => {
    await metrics.flush(); // a resumed log then has every step up to the checkpoint
    const { tensors, scalars } = session.namedState();
    await saveCheckpoint(run.checkpoints, {
      tensors,
      scalars,
      meta: {
        step,
        epoch: step > 0 ? epochAt[step - 1] : 0,
        dataPosition: step,
        configHash,
        schedule,
        inputs: await inputs,
      },
    }, { keep: cfg.keepCheckpoints });
  };

  let interrupted = false, completed = false;
  const started = step;
  const release = async () => {
    await session.release();
    await graphs.remove();
  };
  try {
    for (const c of groupChunks(steps, stepsPerRun, step)) {
      if (
        hooks.signal?.aborted ||
        (hooks.stopAfterSteps !== undefined && step - started >= hooks.stopAfterSteps)
      ) {
        interrupted = true;
        break;
      }
      const chunkSteps = steps.slice(c.from, c.to);
      const tensors = assembleChunk(p.train, chunkSteps, reference?.train, {
        loss: cfg.loss,
        k: p.k,
        padId: p.padId,
        accumulation: cfg.gradAccum,
        dropout: usesDropoutKey(trainable) ? { seed: cfg.seed, fromStep: c.from } : undefined,
      });
      const lrs = lrsFor(c.from, chunkSteps.length, schedule);
      const t0 = performance.now();
      let res;
      try {
        res = await session.run(tensors.feeds, [...lrs]);
      } catch (e) {
        throw explainRunError(e, { ...cfg, stepsPerRun }, c.from);
      }
      const seconds = (performance.now() - t0) / 1000;
      const tokens = tensors.tokens.reduce((a, b) => a + b, 0);
      const records: MetricsRecord[] = [];
      for (let i = 0; i < res.steps; i++) {
        const s = c.from + i;
        // fp16: a step with non-finite gradients (or loss) was skipped and the loss scale halved
        const skipped = res.lossScale !== undefined && res.skipped[i] > 0;
        if (skipped) {
          const scale = res.lossScale![i];
          log(
            `step ${s + 1}: non-finite gradients at loss scale ${scale} (fp16 overflow): update skipped, ` +
              `loss scale now ${scale / 2}`,
          );
          if (scale / 2 < 1) {
            throw new Error(
              `fp16 training keeps overflowing: the loss scale fell below 1 at step ${s + 1} (loss ${
                res.loss[i]
              }), so the forward pass itself is not finite in float16. Train with --precision fp32; the ` +
                `last checkpoint is kept in ${run.checkpoints}.`,
            );
          }
        }
        if (!skipped && !Number.isFinite(res.loss[i])) {
          throw new Error(
            `the loss became ${res.loss[i]} at step ${s + 1} (epoch ${chunkSteps[i].epoch}, prompts ` +
              `${chunkSteps[i].indices.slice(0, 8).join(", ")}${
                chunkSteps[i].indices.length > 8 ? ", …" : ""
              }); ` +
              `the last checkpoint is kept in ${run.checkpoints}. Lower --lr or --beta, or check the data.`,
          );
        }
        const r: MetricsRecord = {
          step: s + 1,
          epoch: epochAt[s],
          loss: res.loss[i],
          grad_norm: res.gradNorm[i],
          lr: lrs[i],
          tokens_per_s: tokens / seconds,
        };
        if (res.lossScale) {
          r.loss_scale = res.lossScale[i];
          r.skipped = res.skipped[i];
        }
        for (const [m, v] of Object.entries(res.metrics)) r[m] = v[i];
        records.push(r);
      }
      step = c.to;
      const crossed = (every?: number) =>
        every !== undefined && every > 0 && Math.floor(c.to / every) > Math.floor(c.from / every);
      if (crossed(cfg.evalEvery) && step < steps.length) {
        const ev = await evaluate();
        if (ev) Object.assign(records[records.length - 1], prefixed(ev));
      }
      for (const r of records) await metrics.write(r);
      hooks.onChunk?.({
        step,
        totalSteps: steps.length,
        records,
        seconds,
        tokens,
        memory: processMemory().rss,
      });
      if (crossed(cfg.saveEvery) && step < steps.length) await save();
    }
    if (interrupted || step < steps.length) {
      await save();
      log(`stopped at step ${step} of ${steps.length}; checkpoint saved. Continue with --resume ${run.dir}`);
      return { run, config: cfg, steps: step, totalSteps: steps.length, interrupted: true };
    }
    // a run resumed after its last checkpoint (killed during the export) has its final evaluation logged
    const logged = step === started &&
      (await readMetrics(run.metrics)).some((r) =>
        r.step === step && Object.keys(r).some((k) => k.startsWith("eval/"))
      );
    const finalEval = logged ? undefined : await evaluate();
    if (finalEval) {
      await metrics.write({ step, epoch: epochAt[step - 1], ...prefixed(finalEval) });
    }
    await save();
    completed = true;
  } finally {
    await metrics.close();
    if (!completed) await release();
  }

  // the trained policy: adapters saved as PEFT does; sessions released before the export streams the
  // merged weights tensor by tensor, in the model's own dtype (or --save-dtype)
  const state = session.current();
  await release();
  if (trainable.mode === "lora") {
    await saveAdapter(join(run.dir, "adapter"), p.model.config, trainable.lora!, state, {
      baseModelNameOrPath: resolve(cfg.model),
    });
  }
  phases.enter("export");
  // into a temporary folder that then replaces policy/: a full disk or a kill leaves no broken model
  await writeFolderAtomic(run.policy, (dir) =>
    exportForServing(dir, {
      cfg: p.model.config,
      weights: policyReader(p.model, trainable, state),
      dtype: cfg.saveDtype ?? storedDtype(p.model),
      tokenizerDir: p.model.tokenizerDir ?? undefined,
      log,
    }).then(() => {}));

  phases.enter();
  const records = await readMetrics(run.metrics);
  const charts = trainingCharts(records);
  await Deno.mkdir(run.charts, { recursive: true });
  for (const [file, svg] of Object.entries(charts)) await writeTextAtomic(join(run.charts, file), svg);
  const summary = {
    ...summarize(records),
    steps: step,
    loss: cfg.loss,
    device,
    finalEval: finalEvalOf(records),
    data: p.data,
    gradient_checkpointing: plan.checkpointing,
    memory_estimate_gib: Object.fromEntries(Object.entries(plan.estimate).map(([k, v]) => [k, gib(v)])),
    peak_memory_gib: Object.fromEntries(Object.entries(phases.peaks).map(([k, v]) => [k, gib(v)])),
  };
  await writeJsonAtomic(run.summary, summary);
  return {
    run,
    config: cfg,
    steps: step,
    totalSteps: steps.length,
    interrupted: false,
    summary,
    eval: finalEvalOf(records),
  };
}

async function ensureRun(dir: string): Promise<RunPaths> {
  await Deno.mkdir(dir, { recursive: true });
  return runPaths(dir);
}

/** The saved config of a run being resumed; flags given now may only change how it runs, not what. */
/**
 * Settings a resumed run may change: where and how it runs, not what it computes (LoRA dropout masks and
 * the results do not depend on the chunking or on recomputation).
 */
const RESUME_MAY_CHANGE = new Set([
  "resume",
  "allowChangedInputs",
  "device",
  "quiet",
  "stepsPerRun",
  "gradientCheckpointing",
  "evalEvery",
  "saveEvery",
  "keepCheckpoints",
  "loggingSteps",
  "reportTo",
  "saveDtype",
  "out",
  "name",
  "config",
]);

/**
 * The configuration of a resumed run: the saved one whole, with the settings given now that may change
 * (see {@link RESUME_MAY_CHANGE}). A setting that changes the math and differs from the saved value is
 * refused, naming both. "Given now": the flags and `--config` keys (parseTrainOptions records them); for a
 * config built in code, every value that is not the default.
 */
async function resumedConfig(run: RunPaths, now: TrainConfig): Promise<TrainConfig> {
  let saved: TrainConfig;
  try {
    saved = JSON.parse(await Deno.readTextFile(run.config));
  } catch {
    throw notARunFolder(run);
  }
  const defaults = defaultTrainOptions() as Record<string, unknown>;
  const nowAll = now as unknown as Record<string, unknown>;
  const given = givenOptions(now) ??
    new Set(Object.keys(now).filter((k) => !sameValue(nowAll[k], defaults[k])));
  const out: Record<string, unknown> = { ...saved };
  const refused: string[] = [];
  for (const key of given) {
    const v = nowAll[key], old = (saved as unknown as Record<string, unknown>)[key];
    if (v === undefined) continue;
    if (RESUME_MAY_CHANGE.has(key)) out[key] = v;
    else if (!sameValue(v, old)) {
      refused.push(`${flagOf(key)} ${JSON.stringify(v)} (the run has ${JSON.stringify(old ?? null)})`);
    }
  }
  if (refused.length) {
    throw new Error(
      `--resume ${run.dir}: a resumed run keeps the settings it started with; these differ: ${
        refused.join(", ")
      }. ` +
        `Leave them out, or start a new run to change them`,
    );
  }
  return out as TrainConfig;
}

/**
 * The digest of the run's inputs: `data`, and the model's (and a `--reference` model's) config and weight
 * files, hashed in the background; `known` (the checkpoint's) spares hashing files that did not change.
 */
function digestInputs(
  cfg: TrainConfig,
  p: RunInputs,
  ref: ModelFolder | undefined,
  data: DataDigest,
  known?: InputsDigest,
): Promise<InputsDigest> {
  const files = (m: ModelFolder) => [...m.stored.values()].map((t) => t.file);
  return (async () => ({
    data,
    model: await folderDigest(cfg.model, files(p.model), known?.model),
    reference: ref ? await folderDigest(ref.dir, files(ref), known?.reference) : undefined,
  }))();
}

/** How the model folders changed from `then` to `now`, in words. */
function compareModels(then: InputsDigest, now: InputsDigest): string[] {
  return [
    ...compareFolder("the model", then.model, now.model),
    ...(then.reference && now.reference ? compareFolder("the reference", then.reference, now.reference) : []),
  ];
}

/** Refuses to resume on `changes` to the inputs since `checkpoint`, unless `--allow-changed-inputs`. */
function refuseChanged(
  changes: string[],
  run: RunPaths,
  checkpoint: string,
  cfg: TrainConfig,
  log: (line: string) => void,
): void {
  if (!changes.length) return;
  if (cfg.allowChangedInputs) {
    log(
      `note: resuming from ${checkpoint} on changed inputs (--allow-changed-inputs): ${changes.join("; ")}`,
    );
    return;
  }
  throw new Error(
    `--resume ${run.dir}: the inputs changed since ${checkpoint}: ${changes.join("; ")}. The run would ` +
      `continue on other inputs than it started with: restore them, start a new run, or pass ` +
      `--allow-changed-inputs to continue anyway`,
  );
}

function notARunFolder(run: RunPaths): Error {
  return new Error(`--resume ${run.dir}: no readable config.json there (is it a run folder?)`);
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function flagOf(key: string): string {
  return `--${OPTION_SPECS.find((s) => s.key === key)?.flag ?? key}`;
}

/** The settings that define a run's results (checkpoints from another identity are refused). */
function trainingIdentity(cfg: TrainConfig): Record<string, unknown> {
  const skip = new Set([...RESUME_MAY_CHANGE, "demo", "compare"]);
  return Object.fromEntries(Object.entries(cfg).filter(([k]) => !skip.has(k)));
}

/**
 * The policy's weights, tensor by tensor (canonical names): the trained ones (full fine-tuning), or each
 * base weight read from the model's files with its adapter merged in.
 */
export function policyReader(
  model: ModelFolder,
  trainable: Trainable,
  state: Record<string, Float32Array>,
): TensorReader {
  return async (name) => {
    if (trainable.mode === "full") {
      const v = state[name];
      if (!v) throw new Error(`the trained state has no "${name}"`);
      return v;
    }
    const stored = model.stored.get(name);
    if (!stored) throw new Error(`${model.dir}: no weight "${name}"`);
    return mergeLoraTensor(model.config, trainable.lora!, state, name, await readStoredTensor(stored));
  };
}

/**
 * The run's memory plan, logged; refuses a run that will not fit the device's free memory, naming the
 * settings that lower it.
 */
async function planMemory(
  cfg: TrainConfig,
  p: RunInputs,
  device: Device,
  lora: LoraConfig,
  log: (line: string) => void,
  budget?: number,
): Promise<RunPlan> {
  const model = p.model.config;
  const modules = cfg.full ? [] : loraModules(model, lora);
  const trainableParams = cfg.full
    ? [...p.model.stored.values()].reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0)
    : modules.reduce((n, m) => n + lora.r * (m.inFeatures + m.outFeatures), 0);
  const width = p.train.reduce((w, e) => Math.max(w, Math.ceil(exampleLength(e) / 8) * 8), 8);
  const memory = budget === undefined ? await deviceMemory(device) : { free: budget, total: budget };
  const plan = planRun({
    cfg: model,
    stored: p.model.stored,
    rows: cfg.batchSize * p.k,
    width,
    trainableParams,
    lora: cfg.full ? null : { dropout: lora.dropout! > 0, modules: modules.length, r: lora.r },
    computeBytes: cfg.precision === "fp16" ? 2 : 4,
    checkpointing: cfg.gradientCheckpointing,
    budget: memory?.free,
    device: device === "cuda" ? "cuda" : "cpu",
  });
  const inGib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  log(
    `${describeEstimate(plan.estimate)}${memory ? `; ${device} has ${inGib(memory.free)} free` : ""}` +
      (plan.checkpointing
        ? ` · gradient checkpointing${
          cfg.gradientCheckpointing ? "" : ` (on: ${inGib(plan.without.total)} without it)`
        }`
        : ""),
  );
  if (memory && plan.estimate.total > memory.free) {
    const lower = [
      `--batch-size (now ${cfg.batchSize})`,
      `--max-length (now ${cfg.maxLength}; the longest example takes ${width} tokens)`,
      ...(plan.checkpointing ? [] : ["--gradient-checkpointing"]),
      ...(cfg.precision === "fp16" || device !== "cuda" ? [] : ["--precision fp16"]),
      ...(cfg.full ? ["LoRA instead of --full"] : []),
    ];
    const how = plan.checkpointing ? " (with gradient checkpointing)" : "";
    throw new Error(
      `this run needs about ${inGib(plan.estimate.total)} but the ${device} has ${inGib(memory.free)} ` +
        `free${how}. Lower ${lower.join(", ")}; raise --grad-accum to keep the effective batch.`,
    );
  }
  return plan;
}

/** Bytes in GiB, rounded to 0.01 (summaries). */
function gib(bytes: number): number {
  return Math.round(bytes / 2 ** 30 * 100) / 100;
}

/** Errors of a training run, made actionable: CUDA out of memory says which settings to lower. */
export function explainRunError(e: unknown, cfg: TrainConfig, fromStep: number): Error {
  const msg = e instanceof Error ? e.message : String(e);
  if (
    /out of memory|Failed to allocate memory|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation/i.test(msg)
  ) {
    return new Error(
      `out of device memory at step ${
        fromStep + 1
      }: lower --batch-size (now ${cfg.batchSize}), --max-length ` +
        `(now ${cfg.maxLength}) or --steps-per-run (now ${cfg.stepsPerRun}), or raise --grad-accum ` +
        `(now ${cfg.gradAccum})${cfg.full ? ", or train LoRA adapters instead of --full" : ""}.\n${msg}`,
      { cause: e },
    );
  }
  return e instanceof Error ? e : new Error(msg);
}
