/**
 * A run's memory plan against the device (logged, and a run that will not fit is refused naming the
 * settings that lower it), and device errors made actionable.
 * @module
 */
import type { LoraConfig } from "../model/lora.ts";
import { loraModules } from "../model/lora.ts";
import { deviceMemory } from "../runtime/device_memory.ts";
import type { Device } from "../runtime/tensor.ts";
import { describeEstimate, planRun, type RunPlan } from "./memory.ts";
import type { TrainConfig } from "./option_specs.ts";
import type { RunInputs } from "./run_inputs.ts";
import { exampleLength } from "./scoring.ts";

/**
 * The run's memory plan, logged; refuses a run that will not fit the device's free memory, naming the
 * settings that lower it. With `worldSize` ranks it is one rank's: AdamW's moments 1/N under `--zero 1`.
 */
export async function planMemory(
  cfg: TrainConfig,
  p: RunInputs,
  device: Device,
  lora: LoraConfig,
  log: (line: string) => void,
  budget?: number,
  worldSize = 1,
  /** The CUDA device whose free memory counts (a rank's: its local rank). */
  deviceId = 0,
): Promise<RunPlan> {
  const model = p.model.config;
  const modules = cfg.full ? [] : loraModules(model, lora);
  const trainableParams = cfg.full
    ? [...p.model.stored.values()].reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0)
    : modules.reduce((n, m) => n + lora.r * (m.inFeatures + m.outFeatures), 0);
  const width = p.train.reduce((w, e) => Math.max(w, Math.ceil(exampleLength(e) / 8) * 8), 8);
  const memory = budget === undefined
    ? await deviceMemory(device, deviceId)
    : { free: budget, total: budget };
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
    world: worldSize > 1 ? { size: worldSize, zero: cfg.zero === 1 ? 1 : 0, device } : undefined,
  });
  const inGib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  const perRank = worldSize > 1
    ? ` per rank of ${worldSize} (${cfg.zero === 1 ? "ZeRO-1: AdamW's moments sharded" : "DDP: state whole"})`
    : "";
  log(
    `${describeEstimate(plan.estimate)}${perRank}${
      memory ? `; ${device} has ${inGib(memory.free)} free` : ""
    }` +
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
    // several ranks holding AdamW's moments whole: sharding them is the first thing to try
    const shard = worldSize > 1 && cfg.zero !== 1
      ? ` Or shard AdamW's moments across the ${worldSize} ranks with --zero 1.`
      : "";
    throw new Error(
      `this run needs about ${inGib(plan.estimate.total)} but the ${device} has ${inGib(memory.free)} ` +
        `free${how}. Lower ${lower.join(", ")}; raise --grad-accum to keep the effective batch.${shard}`,
    );
  }
  return plan;
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
