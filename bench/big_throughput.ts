/**
 * Training throughput and peak memory of NCA with LoRA on the model shapes people align (bench/_shapes.ts:
 * random-weight bf16 folders made once), as the trainer runs them: frozen weights read in place from the
 * folder, the memory plan's checkpointing and LM-head blocks, AdamW with clipping at 1, one optimizer step
 * per session run. The PyTorch side of the same measurement is bench/torch_big_baseline.py.
 *
 *   deno run -A bench/big_throughput.ts --shape mistral-7b --device cuda --prompts 4 --k 4 --seq 1024
 *
 * One JSON line: tokens/s (prompts · K · seq per step over the timed steps), step time, the device's peak
 * memory while the timed steps ran (CUDA: this process's memory as nvidia-smi reports it, ONNX Runtime's
 * arena included; CPU: the peak resident memory), the trainer's estimate for the same settings, and what
 * the plan chose.
 * @module
 */
import { join } from "node:path";
import { loadModelFolder } from "../lib/model/model_folder.ts";
import { storedWeights } from "../lib/model/stored_weights.ts";
import { trainableParamsFor } from "../lib/model/decoder.ts";
import { loraModules } from "../lib/model/lora.ts";
import {
  deviceMemory,
  gpuProcessMemory,
  processMemory,
  resetPeakMemory,
} from "../lib/runtime/device_memory.ts";
import { TrainingSession } from "../lib/runtime/training_session.ts";
import { planRun } from "../lib/train/memory.ts";
import { buildAlignmentGraph } from "../lib/train/train_graph.ts";
import {
  benchDevice,
  cpuName,
  deviceFlag,
  gpuName,
  intFlag,
  median,
  ortVersion,
  parseFlags,
  round,
  runCli,
  syntheticChunk,
  UsageError,
} from "./_common.ts";
import { randomModelFolder, shapeParameters, SHAPES } from "./_shapes.ts";

export const USAGE = `Usage: deno run -A bench/big_throughput.ts --shape NAME [flags]

  --shape NAME                   ${Object.keys(SHAPES).join(", ")}
  --device cpu|cuda|auto         (default cuda)
  --prompts N --k K --seq T      a step: N prompts × K responses × T tokens (default 4 × 4 × 1024)
  --steps N                      timed steps (default 2), after --warmup N untimed ones (default 1)
  --gradient-checkpointing on|off|auto   (default auto: the trainer's memory plan decides)
  --precision fp32|fp16          (default fp32: TF32 matmuls on CUDA)
  --lora-r N                     LoRA rank on every linear layer, alpha = r (default 16)
  --lora-dropout P               (default 0)
  --models DIR                   where the random folders are kept (default ~/.cache/nca-align/bench-models)
  --make-only                    write the folder, print its path, stop
  --threads N                    CPU threads inside an operator`;

/** The parsed flags. */
export type BigArgs = {
  shape: string;
  device: "cpu" | "cuda" | "auto";
  prompts: number;
  k: number;
  seq: number;
  steps: number;
  warmup: number;
  checkpointing: "on" | "off" | "auto";
  precision: "fp32" | "fp16";
  loraR: number;
  loraDropout: number;
  models: string;
  makeOnly: boolean;
  threads?: number;
};

/** Parses the flags; a wrong one is a {@link UsageError} naming it. */
export function parseBigArgs(argv: string[]): BigArgs {
  const f = parseFlags(argv, {
    shape: { type: "string" },
    device: { type: "string", default: "cuda" },
    prompts: { type: "string", default: "4" },
    k: { type: "string", default: "4" },
    seq: { type: "string", default: "1024" },
    steps: { type: "string", default: "2" },
    warmup: { type: "string", default: "1" },
    "gradient-checkpointing": { type: "string", default: "auto" },
    precision: { type: "string", default: "fp32" },
    "lora-r": { type: "string", default: "16" },
    "lora-dropout": { type: "string", default: "0" },
    models: { type: "string" },
    "make-only": { type: "boolean", default: false },
    threads: { type: "string" },
    help: { type: "boolean", default: false, short: "h" },
  });
  if (f.help) throw new UsageError("help");
  const shape = String(f.shape ?? "");
  if (!SHAPES[shape]) {
    throw new UsageError(`--shape must be one of ${Object.keys(SHAPES).join(", ")}, got "${shape}"`);
  }
  const ckpt = f["gradient-checkpointing"];
  if (ckpt !== "on" && ckpt !== "off" && ckpt !== "auto") {
    throw new UsageError(`--gradient-checkpointing must be on, off or auto, got ${JSON.stringify(ckpt)}`);
  }
  if (f.precision !== "fp32" && f.precision !== "fp16") {
    throw new UsageError(`--precision must be fp32 or fp16, got ${JSON.stringify(f.precision)}`);
  }
  const dropout = Number(f["lora-dropout"]);
  if (!(dropout >= 0 && dropout < 1)) {
    throw new UsageError(`--lora-dropout must be in [0, 1), got "${f["lora-dropout"]}"`);
  }
  return {
    shape,
    device: deviceFlag(f.device),
    prompts: intFlag("prompts", f.prompts),
    k: intFlag("k", f.k, 2),
    seq: intFlag("seq", f.seq, 2),
    steps: intFlag("steps", f.steps),
    warmup: intFlag("warmup", f.warmup, 0),
    checkpointing: ckpt,
    precision: f.precision,
    loraR: intFlag("lora-r", f["lora-r"]),
    loraDropout: dropout,
    models: typeof f.models === "string"
      ? f.models
      : join(Deno.env.get("HOME") ?? ".", ".cache/nca-align/bench-models"),
    makeOnly: f["make-only"] === true,
    threads: f.threads === undefined ? undefined : intFlag("threads", f.threads),
  };
}

/** Runs the measurement; prints and returns its record. */
export async function main(argv: string[], print: (line: string) => void = console.log) {
  let a: BigArgs;
  try {
    a = parseBigArgs(argv);
  } catch (e) {
    if (e instanceof UsageError && e.message === "help") return void print(USAGE);
    throw e;
  }
  const dir = await randomModelFolder(a.models, a.shape);
  if (a.makeOnly) return void print(dir);
  const device = await benchDevice(a.device);
  const model = await loadModelFolder(dir);
  const cfg = model.config;
  const lora = { r: a.loraR, alpha: a.loraR, dropout: a.loraDropout, targetModules: "all-linear" as const };
  const modules = loraModules(cfg, lora);
  const rows = a.prompts * a.k;
  const memory = await deviceMemory(device);
  const plan = planRun({
    cfg,
    stored: model.stored,
    rows,
    width: a.seq,
    trainableParams: modules.reduce((n, m) => n + a.loraR * (m.inFeatures + m.outFeatures), 0),
    lora: { dropout: a.loraDropout > 0, modules: modules.length, r: a.loraR },
    computeBytes: a.precision === "fp16" ? 2 : 4,
    checkpointing: a.checkpointing === "auto" ? undefined : a.checkpointing === "on",
    budget: memory?.free,
    device: device === "cuda" ? "cuda" : "cpu",
  });
  const t0 = performance.now();
  const trainable = trainableParamsFor(cfg, { mode: "lora", lora, seed: 0 });
  const built = buildAlignmentGraph({
    cfg,
    frozen: storedWeights(model.stored),
    trainable,
    loss: "nca",
    beta: 0.1,
    k: a.k,
    ranked: true,
    optimizer: { kind: "adamw", weightDecay: 0 },
    maxGradNorm: 1,
    precision: a.precision,
    segments: plan.segments,
    chunk: plan.chunk,
  });
  const t1 = performance.now();
  const session = await TrainingSession.create(built, trainable.init, {
    device,
    intraOpThreads: a.threads,
    lossScale: a.precision === "fp16" ? 65536 : undefined,
  });
  const t2 = performance.now();
  const feeds = syntheticChunk({
    steps: 1,
    rows,
    width: a.seq,
    vocab: cfg.vocabSize,
    loss: "nca",
    k: a.k,
    seed: 1,
    dropoutKey: a.loraDropout > 0,
  });
  let peak = 0;
  const poll = device === "cuda"
    ? setInterval(async () => (peak = Math.max(peak, (await gpuProcessMemory()) ?? 0)), 250)
    : undefined;
  const times: number[] = [];
  let lastLoss = NaN;
  try {
    for (let i = 0; i < a.warmup; i++) await session.run(feeds, [1e-5]);
    resetPeakMemory();
    for (let i = 0; i < a.steps; i++) {
      const s0 = performance.now();
      const r = await session.run(feeds, [1e-5]);
      times.push(performance.now() - s0);
      lastLoss = r.loss[0];
      if (!Number.isFinite(lastLoss)) throw new Error(`the loss is ${lastLoss} at step ${i + 1}`);
    }
    if (device === "cuda") peak = Math.max(peak, (await gpuProcessMemory()) ?? 0);
    else peak = processMemory().peak;
  } finally {
    if (poll) clearInterval(poll);
    await session.release();
  }
  const gib = (b: number) => round(b / 2 ** 30, 2);
  const tokens = rows * a.seq;
  const stepMs = median(times);
  const rec = {
    bench: "big_throughput",
    shape: a.shape,
    device,
    hardware: device === "cuda" ? await gpuName() : cpuName(),
    ort: ortVersion(),
    params: shapeParameters(a.shape),
    trainable_params: trainable.params.reduce((n, p) => n + p.shape.reduce((x, y) => x * y, 1), 0),
    loss: "nca",
    lora_r: a.loraR,
    lora_dropout: a.loraDropout,
    precision: a.precision,
    batch: `${a.prompts} × ${a.k} × ${a.seq}`,
    tokens_per_step: tokens,
    steps: a.steps,
    step_ms: round(stepMs),
    tokens_per_s: round(tokens / (stepMs / 1000), 1),
    gradient_checkpointing: plan.checkpointing,
    head_chunk: plan.chunk,
    peak_memory_gib: gib(peak),
    estimate_gib: gib(plan.estimate.total),
    device_free_gib: memory ? gib(memory.free) : null,
    build_s: round((t1 - t0) / 1000),
    session_s: round((t2 - t1) / 1000),
    last_loss: round(lastLoss, 5),
  };
  print(JSON.stringify(rec));
  return rec;
}

if (import.meta.main) await runCli(main, USAGE);
