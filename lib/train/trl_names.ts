/**
 * TRL's argument names (`DPOConfig`/`TrainingArguments` and `ModelConfig`, snake_case) as `--config` keys,
 * so a TRL run's settings can be passed as they are: each maps to one of our options, its value translated
 * where TRL's convention differs (`max_steps: -1` means "from the epochs", `loss_type: "sigmoid"` is DPO).
 * A TRL setting with no counterpart here is refused with what to use instead, rather than ignored.
 * @module
 */
import type { TrainOptions } from "./option_specs.ts";

/** A TRL value translated to ours (`null`: leave the option unset), or why it cannot be (after the name). */
export type TrlValue = { value: unknown } | { error: string };

/** One TRL name: the option it sets and, where TRL's values differ from ours, how they translate. */
export type TrlName = { key: keyof TrainOptions; translate?: (raw: unknown) => TrlValue };

const show = (v: unknown) => JSON.stringify(v);

/** TRL's `loss_type`s that are one of our losses. */
const TRL_LOSSES: Readonly<Record<string, TrainOptions["loss"]>> = {
  sigmoid: "dpo",
  ipo: "ipo",
  nca_pair: "nca_pair",
};

function lossType(raw: unknown): TrlValue {
  // TRL ≥ 0.20 takes a list of losses to combine: one is fine
  const v = Array.isArray(raw) && raw.length === 1 ? raw[0] : raw;
  if (typeof v === "string" && Object.hasOwn(TRL_LOSSES, v)) return { value: TRL_LOSSES[v] };
  return {
    error: `${show(raw)} has no counterpart here: TRL's "sigmoid" is --loss dpo, "ipo" is ` +
      `--loss ipo, "nca_pair" is --loss nca_pair; InfoNCA and NCA on reward data are --loss infonca|nca`,
  };
}

function schedulerType(raw: unknown): TrlValue {
  // ours are transformers' *_with_warmup schedules: "constant" warms up too when a warmup is set
  if (raw === "constant_with_warmup") return { value: "constant" };
  if (raw === "cosine" || raw === "linear" || raw === "constant" || raw === null) return { value: raw };
  return { error: `${show(raw)} is not supported: cosine, linear, constant (or constant_with_warmup)` };
}

function reportTo(raw: unknown): TrlValue {
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0 || list.every((x) => x === "none")) return { value: "none" };
  const other = list.filter((x) => x !== "tensorboard" && x !== "all" && x !== "none" && x !== "jsonl");
  if (other.length) {
    return {
      error: `${show(raw)}: only "tensorboard" is supported (event files in <run>/tensorboard/); ` +
        `metrics.jsonl is always written`,
    };
  }
  return { value: list.some((x) => x === "tensorboard" || x === "all") ? "tensorboard" : "jsonl" };
}

/** `true` sets the option to `on`; `false` leaves it unset (TRL's default). */
const whenTrue = (on: unknown) => (raw: unknown): TrlValue =>
  raw === true || raw === "true"
    ? { value: on }
    : raw === false || raw === "false" || raw === null
    ? { value: null }
    : { error: `must be true or false, got ${show(raw)}` };

/** A sentinel TRL uses for "unset" (`max_steps: -1`, `warmup_steps: 0`) reads as unset. */
const unsetWhen = (sentinel: number) => (raw: unknown): TrlValue => ({
  value: raw === sentinel || raw === String(sentinel) ? null : raw,
});

/** Every TRL name `--config` accepts, by name. */
export const TRL_NAMES: Readonly<Record<string, TrlName>> = Object.freeze({
  model_name_or_path: { key: "model" },
  dataset_name: { key: "data" },
  output_dir: { key: "out" },
  run_name: { key: "name" },
  learning_rate: { key: "lr" },
  per_device_train_batch_size: { key: "batchSize" },
  gradient_accumulation_steps: { key: "gradAccum" },
  num_train_epochs: { key: "epochs" },
  max_steps: { key: "maxSteps", translate: unsetWhen(-1) },
  max_length: { key: "maxLength" },
  max_prompt_length: { key: "maxPromptLength" },
  lr_scheduler_type: { key: "schedule", translate: schedulerType },
  warmup_ratio: { key: "warmupRatio" },
  warmup_steps: { key: "warmupSteps", translate: unsetWhen(0) },
  logging_steps: { key: "loggingSteps" },
  save_steps: { key: "saveEvery" },
  eval_steps: { key: "evalEvery" },
  save_total_limit: { key: "keepCheckpoints" },
  adam_beta1: { key: "adamBeta1" },
  adam_beta2: { key: "adamBeta2" },
  adam_epsilon: { key: "adamEpsilon" },
  weight_decay: { key: "weightDecay" },
  max_grad_norm: { key: "maxGradNorm" },
  seed: { key: "seed" },
  beta: { key: "beta" },
  loss_type: { key: "loss", translate: lossType },
  // ONNX Runtime has no bf16 training kernels: bf16 weights stay bf16 in the files and the graph computes
  // in fp32 (the policy is saved in the model's dtype, bf16, unless --save-dtype says otherwise)
  bf16: { key: "precision", translate: whenTrue("fp32") },
  fp16: { key: "precision", translate: whenTrue("fp16") },
  report_to: { key: "reportTo", translate: reportTo },
  gradient_checkpointing: { key: "gradientCheckpointing" },
  use_peft: {
    key: "full",
    translate: (raw) =>
      typeof raw === "boolean" ? { value: !raw } : { error: `must be true or false, got ${show(raw)}` },
  },
  lora_r: { key: "loraR" },
  lora_alpha: { key: "loraAlpha" },
  lora_dropout: { key: "loraDropout" },
  lora_target_modules: {
    key: "loraTargets",
    translate: (raw) => ({ value: raw === "all-linear" ? null : raw }),
  },
});
