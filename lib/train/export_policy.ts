/**
 * The end of a run: the trained policy written to the run folder — LoRA's adapter as PEFT saves it, and
 * `policy/`, a Hugging Face folder ready to serve, whose weights are streamed tensor by tensor (the
 * adapter merged into each base weight) in the model's own dtype or `--save-dtype`, with what of the LoRA
 * update survives that rounding measured.
 * @module
 */
import { join, resolve } from "node:path";
import type { Trainable } from "../model/decoder.ts";
import { exportForServing } from "../model/export.ts";
import { type ModelFolder, storedDtype } from "../model/model_folder.ts";
import { LoraUpdateMeter, loraUpdateWarning, mergeLoraTensor, saveAdapter } from "../model/peft.ts";
import type { TensorReader } from "../model/safetensors.ts";
import { readStoredTensor } from "../model/weight_files.ts";
import { writeFolderAtomic } from "../files.ts";
import type { TrainConfig } from "./option_specs.ts";
import type { RunPaths } from "./run_folder.ts";
import type { RunInputs } from "./run_inputs.ts";

/** Writes `adapter/` (LoRA) and `policy/` of a finished run; returns the dtype and the LoRA update kept. */
export async function exportPolicy(o: {
  run: RunPaths;
  cfg: TrainConfig;
  p: RunInputs;
  trainable: Trainable;
  state: Record<string, Float32Array>;
  log: (line: string) => void;
}): Promise<
  { saveDtype: NonNullable<TrainConfig["saveDtype"]>; loraKept: ReturnType<LoraUpdateMeter["result"]> | null }
> {
  const { run, cfg, p, trainable, state, log } = o;
  if (trainable.mode === "lora") {
    await saveAdapter(join(run.dir, "adapter"), p.model.config, trainable.lora!, state, {
      baseModelNameOrPath: resolve(cfg.model),
    });
  }
  const saveDtype = cfg.saveDtype ?? storedDtype(p.model);
  // what of the LoRA update survives rounding to the save dtype (bf16 rounds a small one away)
  const meter = trainable.mode === "lora" ? new LoraUpdateMeter(saveDtype) : undefined;
  // into a temporary folder that then replaces policy/: a full disk or a kill leaves no broken model
  await writeFolderAtomic(run.policy, (dir) =>
    exportForServing(dir, {
      cfg: p.model.config,
      weights: policyReader(p.model, trainable, state, meter),
      dtype: saveDtype,
      tokenizerDir: p.model.tokenizerDir ?? undefined,
      log,
    }).then(() => {}));
  const loraKept = meter?.result() ?? null;
  const loraWarning = loraKept && loraUpdateWarning(loraKept, saveDtype);
  if (loraWarning) log(loraWarning);
  return { saveDtype, loraKept };
}

/**
 * The policy's weights, tensor by tensor (canonical names): the trained ones (full fine-tuning), or each
 * base weight read from the model's files with its adapter merged in (measured by `meter` when given).
 */
export function policyReader(
  model: ModelFolder,
  trainable: Trainable,
  state: Record<string, Float32Array>,
  meter?: LoraUpdateMeter,
): TensorReader {
  return async (name) => {
    if (trainable.mode === "full") {
      const v = state[name];
      if (!v) throw new Error(`the trained state has no "${name}"`);
      return v;
    }
    const stored = model.stored.get(name);
    if (!stored) throw new Error(`${model.dir}: no weight "${name}"`);
    return mergeLoraTensor(model.config, trainable.lora!, state, name, await readStoredTensor(stored), meter);
  };
}
