/**
 * How TRL's values (`DPOConfig`/`TrainingArguments` and `ModelConfig`) read as ours where TRL's convention
 * differs (`max_steps: -1` means "from the epochs", `loss_type: "sigmoid"` is DPO). The names themselves are
 * in option_specs.ts, each on the option it sets (`trl`); they work in `--config` and as flags. A TRL
 * setting with no counterpart here is refused with what to use instead, rather than ignored.
 * @module
 */
import type { Converted, TrlName } from "../cli/spec.ts";

const show = (v: unknown) => JSON.stringify(v);

/** TRL's `loss_type`s that are one of our losses (`--loss`). */
const TRL_LOSSES: Readonly<Record<string, string>> = {
  sigmoid: "dpo",
  ipo: "ipo",
  nca_pair: "nca_pair",
};

function lossType(raw: unknown): Converted {
  // TRL ≥ 0.20 takes a list of losses to combine: one is fine
  const v = Array.isArray(raw) && raw.length === 1 ? raw[0] : raw;
  if (typeof v === "string" && Object.hasOwn(TRL_LOSSES, v)) return { value: TRL_LOSSES[v] };
  return {
    error: `${show(raw)} has no counterpart here: TRL's "sigmoid" is --loss dpo, "ipo" is ` +
      `--loss ipo, "nca_pair" is --loss nca_pair; InfoNCA and NCA on reward data are --loss infonca|nca`,
  };
}

function schedulerType(raw: unknown): Converted {
  // ours are transformers' *_with_warmup schedules: "constant" warms up too when a warmup is set
  if (raw === "constant_with_warmup") return { value: "constant" };
  if (raw === "cosine" || raw === "linear" || raw === "constant" || raw === null) return { value: raw };
  return { error: `${show(raw)} is not supported: cosine, linear, constant (or constant_with_warmup)` };
}

function reportTo(raw: unknown): Converted {
  // a flag gives one name, or several separated by commas
  const list = Array.isArray(raw)
    ? raw
    : typeof raw === "string"
    ? raw.split(",").map((x) => x.trim())
    : [raw];
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
const whenTrue = (on: unknown) => (raw: unknown): Converted =>
  raw === true || raw === "true"
    ? { value: on }
    : raw === false || raw === "false" || raw === null
    ? { value: null }
    : { error: `must be true or false, got ${show(raw)}` };

/** A sentinel TRL uses for "unset" (`max_steps: -1`, `warmup_steps: 0`) reads as unset. */
const unsetWhen = (sentinel: number) => (raw: unknown): Converted => ({
  value: raw === sentinel || (typeof raw === "string" && raw.trim() === String(sentinel)) ? null : raw,
});

/** TRL's names for our options whose values differ from ours, by name (option_specs.ts puts them on each). */
export const TRL_TRANSLATED = {
  max_steps: { name: "max_steps", translate: unsetWhen(-1) },
  warmup_steps: { name: "warmup_steps", translate: unsetWhen(0) },
  lr_scheduler_type: { name: "lr_scheduler_type", translate: schedulerType },
  loss_type: { name: "loss_type", translate: lossType },
  // ONNX Runtime has no bf16 training kernels: bf16 weights stay bf16 in the files and the graph computes
  // in fp32 (the policy is saved in the model's dtype, bf16, unless --save-dtype says otherwise)
  bf16: { name: "bf16", boolean: true, translate: whenTrue("fp32") },
  fp16: { name: "fp16", boolean: true, translate: whenTrue("fp16") },
  report_to: { name: "report_to", translate: reportTo },
  use_peft: {
    name: "use_peft",
    boolean: true,
    translate: (raw) =>
      typeof raw === "boolean" ? { value: !raw } : { error: `must be true or false, got ${show(raw)}` },
  },
  lora_target_modules: {
    name: "lora_target_modules",
    translate: (raw) => ({ value: raw === "all-linear" ? null : raw }),
  },
  // TRL's "no" logs nothing; a run's summary and charts read its metrics.jsonl, which is always written
  logging_strategy: {
    name: "logging_strategy",
    translate: (raw) =>
      raw === "no"
        ? {
          error: `"no" is not supported: metrics.jsonl is always written (the run's summary and charts ` +
            `read it); --logging-steps N writes a line every N steps`,
        }
        : { value: raw },
  },
} as const satisfies Record<string, TrlName>;
