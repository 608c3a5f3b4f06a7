/**
 * The training pipeline behind `deno task train`: load the model, tokenizer and data → compute the
 * reference log-probs once and cache them in the run folder → train in Loop chunks (several optimizer
 * steps per session run) → evaluate on the held-out split → checkpoint atomically → export the policy as a
 * servable folder → write the summary and charts. A run folder can be resumed exactly.
 * @module
 */
import { join } from "node:path";
import { trainableParamsFor } from "../model/decoder.ts";
import { readModelWeights } from "../model/model_folder.ts";
import { storedWeights } from "../model/stored_weights.ts";
import { resolveDevice } from "../runtime/device.ts";
import { GraphFolder } from "../runtime/graph_folder.ts";
import { PhasePeaks, processMemory } from "../runtime/device_memory.ts";
import type { LoraConfig } from "../model/lora.ts";
import { explainRunError, planMemory } from "./run_plan.ts";
import { assertFloat16Device } from "../runtime/precision.ts";
import { TrainingSession } from "../runtime/training_session.ts";
import { trainingCharts } from "./charts.ts";
import { exportPolicy } from "./export_policy.ts";
import {
  compareModels,
  digestInputs,
  ensureRun,
  notARunFolder,
  refuseChanged,
  resumedConfig,
  trainingIdentity,
} from "./resume.ts";
import { hashConfig, loadLatestCheckpoint, newestCheckpointMeta, saveCheckpoint } from "./checkpoint.ts";
import { compareData, dataDigest, type InputsDigest } from "./inputs_digest.ts";
import { assembleChunk, defaultStepsPerRun, fractionalEpochs, groupChunks, planSteps } from "./chunks.ts";
import { isFile, writeTextAtomic } from "../files.ts";
import { lockFolder } from "../lock.ts";
import type { TrainConfig } from "./option_specs.ts";
import { stepIntervals } from "./options.ts";
import { loadRunInputs } from "./run_inputs.ts";
import { loadReferenceModel, referenceScores } from "./reference.ts";
import { openScorer } from "../model/open.ts";
import { evaluatePolicy, finalEvalOf, prefixed } from "./evaluate.ts";
import { type MetricsRecord, MetricsWriter, readMetrics, summarize } from "./metrics_log.ts";
import { createRunFolder, type RunPaths, runPaths, writeJsonAtomic } from "./run_folder.ts";
import { lrsFor, type ScheduleConfig } from "./schedule.ts";
import {
  type AlignmentGraphSpec,
  buildAlignmentGraph,
  FP16_CPU_GAPS,
  FP16_LOSS_SCALING,
  usesDropoutKey,
} from "./train_graph.ts";
import type { Communicator } from "../runtime/comm/communicator.ts";
import { type DistributedSession, rankError, type ZeroStage } from "./distributed.ts";
import { assembleRankChunk } from "./rank_data.ts";
import {
  anyRank,
  distributedSession,
  openTrainWorld,
  plannedWorld,
  rankHooks,
  rankRunFolder,
  resumedBatch,
  sharedRunFolder,
  sumRanks,
  type TrainWorld,
} from "./distributed_run.ts";

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
  /**
   * This process's rank of several (tests: lib/runtime/comm's localWorld); by default the world comes from
   * the launcher's environment (torchrun, mpirun, srun), see lib/train/distributed_run.ts.
   */
  comm?: Communicator;
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
  // one rank of several (torchrun, mpirun, srun, or a test's communicator): only rank 0 prints, and every
  // rank's error names it
  const launched = plannedWorld(hooks.comm);
  if (launched.size === 1) return await trainRank(cfg, hooks, launched);
  try {
    return await trainRank(cfg, rankHooks(hooks, launched), launched);
  } catch (e) {
    throw rankError(launched, e);
  }
}

async function trainRank(cfg: TrainConfig, hooks: TrainHooks, launched: TrainWorld): Promise<TrainResult> {
  const log = hooks.log ?? ((l: string) => console.log(l));
  const resumed = cfg.resume ? runPaths(cfg.resume) : undefined;
  // one run at a time in a folder: a second `--out`, or `--resume` of a running run, is refused at once
  if (resumed && !(await isFile(resumed.config))) throw notARunFolder(resumed);
  await using _resumedLock = resumed && launched.rank === 0 ? await lockFolder(resumed.dir, { log }) : null;
  // prompts per micro-batch over all ranks: --batch-size per device × ranks, or a resumed run's own
  let globalBatch = cfg.batchSize * launched.size;
  if (resumed) {
    Object.assign(cfg, await resumedConfig(resumed, cfg));
    // the saved run's world size (config.json's `worldSize`, absent: 1): keep its global batch
    const c = cfg as TrainConfig & { worldSize?: number; globalBatch?: number };
    ({ batchSize: cfg.batchSize, globalBatch } = resumedBatch(c, launched.size, log));
    delete c.worldSize;
    delete c.globalBatch;
  }
  const { device, notice, fallback } = await resolveDevice(cfg.device, { log });
  // fp16 runs on CUDA only: refuse it before a run folder is made or any data is loaded
  if (cfg.precision === "fp16" && !hooks.allowFloat16OnCpu) {
    assertFloat16Device(device, FP16_CPU_GAPS, fallback);
  }
  const world = await openTrainWorld(launched, device);
  await using _comm = world.comm && !hooks.comm ? world.comm : null;
  // rank 0 makes the folder and holds its lock; the other ranks write into private ones (distributed_run.ts)
  const shared = resumed ??
    await sharedRunFolder(
      world,
      async () => cfg.out ? await ensureRun(cfg.out) : await createRunFolder("runs", cfg.name),
    );
  await using _lock = resumed || world.rank !== 0 ? null : await lockFolder(shared.dir, { log });
  await using own = await rankRunFolder(world, shared);
  const run = own.run;
  // the identity of a run on N ranks is that of one process with its global batch
  const configHash = await hashConfig(trainingIdentity({ ...cfg, batchSize: globalBatch }));
  await writeJsonAtomic(run.config, {
    ...cfg,
    resume: undefined,
    ...(world.size > 1 ? { worldSize: world.size } : {}),
    ...(globalBatch !== cfg.batchSize * world.size ? { globalBatch } : {}),
  });
  if (notice) log(notice);
  using phases = new PhasePeaks(); // its sampler thread stops however the run ends
  phases.enter("load");
  const p = await loadRunInputs(cfg, log);
  // --reference: a model folder of its own, checked against the policy's vocabulary before any work
  const refModel = cfg.reference !== undefined && cfg.loss !== "sft"
    ? await loadReferenceModel(cfg.reference, p.model, log)
    : undefined;
  // what the run trains on, against the checkpoint a resume continues from: the data now, before any work;
  // the models' files, hashed meanwhile, before anything is scored with them
  const saved = resumed ? await newestCheckpointMeta(shared.checkpoints) : undefined;
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
  const plan = await planMemory(
    cfg,
    p,
    device,
    lora,
    log,
    hooks.memoryBudget,
    world.size,
    device === "cuda" ? world.deviceId ?? world.localRank : 0,
  );

  const frozen = storedWeights(p.model.stored);
  const trainable = trainableParamsFor(
    p.model.config,
    cfg.full
      ? { mode: "full", weights: await readModelWeights(p.model) }
      : { mode: "lora", lora, seed: cfg.seed },
  );

  // a step is --grad-accum micro-batches of --batch-size prompts per rank; a last step that cannot be split
  // into --grad-accum micro-batches is left out (one split over the ranks may be uneven: distributed.ts)
  const planned = (o: { epochs: number; maxSteps?: number }) =>
    planSteps(p.train, { batchSize: globalBatch * cfg.gradAccum, seed: cfg.seed, ...o })
      .filter((st) => st.indices.length % cfg.gradAccum === 0);
  const steps = planned({ epochs: cfg.epochs, maxSteps: cfg.maxSteps });
  if (steps.length === 0) {
    throw new Error(`no training steps: ${p.train.length} prompts, batch size ${cfg.batchSize}`);
  }
  // when to evaluate, save and log, in steps: TRL's `epoch` strategies need the steps of an epoch
  const intervals = stepIntervals(cfg, () => planned({ epochs: 1 }).length);
  // fractional epoch after each step, against whole epochs (not the steps --max-steps keeps of the last one)
  const epochAt = fractionalEpochs(
    steps,
    cfg.maxSteps === undefined ? steps : planned({ epochs: steps[steps.length - 1].epoch + 1 }),
  );
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
  // the graph folder and the session live until the export, or until an error or an interruption ends the
  // run: released together, the session first
  await using held = new AsyncDisposableStack();
  const graphs = await GraphFolder.open(join(run.dir, "graphs"), log);
  held.defer(() => graphs.remove());
  // a --reference model is scored (or read from the cache) before the training session exists, so the two
  // models are never loaded together
  let reference: { train: Float32Array[]; eval: Float32Array[] } | undefined;
  if (refModel) {
    phases.enter("reference");
    const open = () =>
      openScorer(refModel, {
        device,
        deviceId: world.size > 1 && device === "cuda" ? world.deviceId ?? world.localRank : undefined,
        graphs,
        graphName: "reference",
        precision: cfg.precision,
        chunk: plan.chunk,
      });
    const identity = (await inputs).reference!.sha256;
    reference = await referenceScores(cfg, run, p, open, log, identity);
    phases.enter("session");
  }
  const alignment: AlignmentGraphSpec = {
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
  };
  const trainableParams = trainable.params.reduce((n, x) => n + x.shape.reduce((a, b) => a * b, 1), 0);
  const stepsPerRun = cfg.stepsPerRun ?? defaultStepsPerRun(device, trainable.mode, trainableParams);
  // several ranks: the data-parallel step (lib/train/distributed.ts); one: the chunk graph's Loop
  const session: TrainingSession | DistributedSession = held.use(
    world.size > 1
      ? await distributedSession(alignment, trainable.init, world, {
        device,
        zero: cfg.zero as ZeroStage,
        graphFolder: graphs,
        graphName: "train",
      })
      : await TrainingSession.create(buildAlignmentGraph(alignment), trainable.init, {
        device,
        lossScale: fp16 ? FP16_LOSS_SCALING.init : undefined,
        graphFolder: graphs,
        graphName: "train",
      }),
  );
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
  const ckpt = await loadLatestCheckpoint(shared.checkpoints, { configHash, warn: log });
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
    else if (session instanceof TrainingSession) session.restore(ckpt.tensors); // version 1: the graph's names
    else throw new Error(`${ckpt.path} is a version 1 checkpoint: resume it in one process first`);
    step = ckpt.step;
    log(`resumed from ${ckpt.path} at step ${step}`);
  } else if (cfg.resume) log(`no checkpoint in ${run.checkpoints}: starting from step 0`);
  const metrics = await MetricsWriter.open(run.metrics, {
    append: step > 0,
    truncateAfterStep: step,
    every: intervals.loggingSteps,
    tensorboard: cfg.reportTo === "tensorboard" ? join(run.dir, "tensorboard") : undefined,
  });

  const evaluate = async (): Promise<Record<string, number> | undefined> => {
    if (!p.eval.length) return undefined;
    return await evaluatePolicy(cfg, p, scorer, reference?.eval);
  };

  const save = async () => {
    await metrics.flush(); // a resumed log then has every step up to the checkpoint
    // several ranks: a collective that brings the whole state to rank 0, which alone writes it
    const { tensors, scalars } = await session.namedState({ root: 0 });
    if (world.rank !== 0) return;
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

  let interrupted = false;
  const started = step;
  try {
    // chunks end where an evaluation or a checkpoint falls, so both happen at exact multiples of their step
    for (const c of groupChunks(steps, stepsPerRun, step, [intervals.evalEvery, intervals.saveEvery])) {
      // several ranks stop together: a Ctrl-C reaches them at different chunks
      const stop = hooks.signal?.aborted ||
        (hooks.stopAfterSteps !== undefined && step - started >= hooks.stopAfterSteps);
      if (await anyRank(world, stop)) {
        interrupted = true;
        break;
      }
      const chunkSteps = steps.slice(c.from, c.to);
      const chunkOptions = {
        loss: cfg.loss,
        k: p.k,
        padId: p.padId,
        accumulation: cfg.gradAccum,
        dropout: usesDropoutKey(trainable) ? { seed: cfg.seed, fromStep: c.from } : undefined,
      };
      // several ranks: this rank's share of each global step (distributed.ts)
      const tensors = world.size > 1
        ? assembleRankChunk(p.train, chunkSteps, reference?.train, chunkOptions, world, true)
        : assembleChunk(p.train, chunkSteps, reference?.train, chunkOptions);
      const lrs = lrsFor(c.from, chunkSteps.length, schedule);
      const t0 = performance.now();
      let res;
      try {
        res = await session.run(tensors.feeds, [...lrs]);
      } catch (e) {
        throw explainRunError(e, { ...cfg, stepsPerRun }, c.from);
      }
      const seconds = (performance.now() - t0) / 1000;
      // the global batch's tokens (several ranks: the sum of their shares)
      const tokens = await sumRanks(world, tensors.tokens.reduce((a, b) => a + b, 0));
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
      const due = (every?: number) => every !== undefined && every > 0 && step % every === 0;
      if (due(intervals.evalEvery) && step < steps.length) {
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
      if (due(intervals.saveEvery) && step < steps.length) await save();
    }
    if (interrupted || step < steps.length) {
      await save();
      log(`stopped at step ${step} of ${steps.length}; checkpoint saved. Continue with --resume ${run.dir}`);
      return { run, config: cfg, steps: step, totalSteps: steps.length, interrupted: true };
    }
    // a run resumed after its last checkpoint (killed during the export) has its final evaluation logged
    // (rank 0's log decides for every rank: evaluating is a collective)
    const logged = await anyRank(
      world,
      step === started &&
        (await readMetrics(run.metrics)).some((r) =>
          r.step === step && Object.keys(r).some((k) => k.startsWith("eval/"))
        ),
    );
    const finalEval = logged ? undefined : await evaluate();
    if (finalEval) {
      await metrics.write({ step, epoch: epochAt[step - 1], ...prefixed(finalEval) });
    }
    await save();
  } finally {
    await metrics.close();
  }

  // rank 0 alone exports and summarizes
  if (world.rank !== 0) {
    return { run: shared, config: cfg, steps: step, totalSteps: steps.length, interrupted: false };
  }
  // the trained policy: adapters saved as PEFT does; sessions released before the export streams the
  // merged weights tensor by tensor, in the model's own dtype (or --save-dtype)
  const state = session.current();
  await held.disposeAsync();
  phases.enter("export");
  const { saveDtype, loraKept } = await exportPolicy({ run, cfg, p, trainable, state, log });

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
    // each phase's resident peak, and the process's since it started (what /usr/bin/time -v reports)
    peak_memory_gib: Object.fromEntries(
      Object.entries({ ...phases.peaks, process: phases.process }).map(([k, v]) => [k, gib(v)]),
    ),
    // the policy's dtype, and what of the LoRA update it keeps (null: full fine-tuning)
    export: { dtype: saveDtype, lora_update_kept: loraKept },
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

/** Bytes in GiB, rounded to 0.01 (summaries). */
function gib(bytes: number): number {
  return Math.round(bytes / 2 ** 30 * 100) / 100;
}
