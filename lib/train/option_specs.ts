/**
 * The trainer's options, one entry each: type, flag, default (the paper's recipe where it has one), the
 * check of its value, its `--help` line, TRL's names for it and whether a `--resume` may change it. The
 * engine that reads them is lib/cli/options.ts; what is the trainer's own (config files, resolution, resume)
 * is in options.ts.
 *
 * @module
 */

import { deviceOption, type OptionSpec } from "../cli/spec.ts";
import { parseTemplateKwargs } from "../data/chat.ts";
import type { LossName } from "../losses/types.ts";
import type { PairStrategy } from "../data/convert.ts";
import type { DeviceRequest } from "../runtime/device.ts";
import type { ScheduleKind } from "./schedule.ts";
import { TRL_TRANSLATED as T } from "./trl_names.ts";

/** What to train with: supervised fine-tuning, or one of the alignment losses. */
export type TrainLoss = "sft" | LossName;

/** Everything a run is configured by: the options, resolved, with a model and data. */
export type TrainConfig = TrainOptions & { model: string; data: string };

/** Every option of `deno task train`, resolved (defaults filled in). */
export type TrainOptions = {
  /** Hugging Face model folder (the SFT model: policy init and reference). */
  model?: string;
  /** Training data file (JSONL or Parquet). */
  data?: string;
  /** Evaluation data file; when absent, `evalFraction` of the training data is held out. */
  evalData?: string;
  /** Skip malformed data rows (reported) instead of stopping at the first. */
  skipBadRows: boolean;
  evalFraction: number;
  /** The run folder to write; default: a fresh `runs/<name>-<YYYYmmdd-HHMMSS>/` (see `run_folder.ts`). */
  out?: string;
  /** Run name, the start of the run folder's name; default: the loss name. */
  name: string;
  loss: TrainLoss;
  /** β: scale of the implicit reward β·(log π − log μ). */
  beta: number;
  /** α: reward temperature of the soft labels softmax(r / α). */
  alpha: number;
  /** Responses per prompt (K); undefined: all of them. */
  k?: number;
  kMode: "first" | "random";
  pairStrategy: PairStrategy;
  lr: number;
  schedule: ScheduleKind;
  warmupRatio: number;
  /** Overrides `warmupRatio` when set. */
  warmupSteps?: number;
  epochs: number;
  /** Overrides `epochs` when set. */
  maxSteps?: number;
  /** Prompts per micro-batch; an optimizer step takes `gradAccum` micro-batches. */
  batchSize: number;
  gradAccum: number;
  /**
   * With several ranks: 0 keeps AdamW's moments whole on every rank (DDP), 1 shards them across the ranks
   * (ZeRO stage 1). The same weights either way (lib/train/distributed.ts).
   */
  zero: number;
  /** `--nproc N` (N ≥ 2): the entry starts N ranks on this machine (lib/train/nproc.ts); 1 or unset: this process trains. */
  nproc?: number;
  maxLength: number;
  maxPromptLength: number;
  /**
   * Variables for the chat template (`{ enable_thinking: false }` for Qwen3): prompts and responses are
   * rendered with them. Part of the run's identity.
   */
  chatTemplateKwargs?: Record<string, unknown>;
  loraR: number;
  loraAlpha: number;
  loraDropout: number;
  /** Module names LoRA adapts; undefined: the model family's default. */
  loraTargets?: string[];
  /** Full fine-tuning instead of LoRA. */
  full: boolean;
  seed: number;
  device: DeviceRequest;
  precision: "fp32" | "fp16";
  /** Optimizer steps per ONNX Runtime call (a Loop-chunked graph); unset: `defaultStepsPerRun` of the device and mode. */
  stepsPerRun?: number;
  /** Recompute each layer's activations in the backward pass; unset: decided by the memory plan (`AUTO_SHARE`). */
  gradientCheckpointing?: boolean;
  evalEvery?: number;
  saveEvery?: number;
  /**
   * TRL's `eval_strategy`: `steps` every `evalEvery` steps (unset: every `loggingSteps`), `epoch` at each
   * epoch's end, `no` not on the way; unset: as `evalEvery` says. See `stepIntervals` in options.ts.
   */
  evalStrategy?: StepStrategy;
  /** TRL's `save_strategy`: `steps` every `saveEvery` steps (unset: every 500), `epoch`, `no`. */
  saveStrategy?: StepStrategy;
  /** TRL's `logging_strategy`: `steps` every `loggingSteps` steps, `epoch` one line per epoch. */
  loggingStrategy?: "steps" | "epoch";
  keepCheckpoints: number;
  /** A run folder to continue. */
  resume?: string;
  /** Resume although the data or a model changed since the checkpoint (refused otherwise, naming what). */
  allowChangedInputs: boolean;
  /** Gradient clipping by global norm; 0 disables. */
  maxGradNorm: number;
  weightDecay: number;
  /** AdamW's β1, β2 and ε (PyTorch's defaults). */
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
  /** A separate reference model folder; undefined: the model itself (LoRA: with the adapters off). */
  reference?: string;
  /** Dtype of the exported policy's weights; undefined: the model folder's. */
  saveDtype?: "float32" | "float16" | "bfloat16";
  /** Metrics are written every this many steps (each line the window's mean). */
  loggingSteps: number;
  /** Where metrics go besides `metrics.jsonl`, which is always written. */
  reportTo: "jsonl" | "tensorboard" | "none";
  demo: boolean;
  compare: boolean;
  quiet: boolean;
  /** The config file the options were merged with, if any. */
  config?: string;
};

/** When something happens on the way, as TRL's `*_strategy` arguments say. */
export type StepStrategy = "no" | "steps" | "epoch";

/** One of the trainer's options. */
export type TrainOptionSpec = OptionSpec<TrainOptions>;

const positive = (v: number) => (v > 0 ? undefined : "must be > 0");
const nonNegative = (v: number) => (v >= 0 ? undefined : "must be ≥ 0");
const fraction = (v: number) => (v >= 0 && v < 1 ? undefined : "must be in [0, 1)");
const fractionClosed = (v: number) => (v >= 0 && v <= 1 ? undefined : "must be in [0, 1]");
const belowOne = (v: number) => (v >= 0 && v < 1 ? undefined : "must be in [0, 1)");
const uint32 = (v: number) => (v <= 0xffffffff ? undefined : "must be at most 4294967295");

/** Every option, in `--help` order. */
export const OPTION_SPECS: readonly TrainOptionSpec[] = Object.freeze([
  // Data
  {
    key: "model",
    flag: "model",
    kind: "string",
    group: "Data",
    arg: "dir",
    trl: ["model_name_or_path"],
    help: "Hugging Face model folder (the SFT model); required unless --demo or --resume",
    defaultText: "none",
  },
  {
    key: "data",
    flag: "data",
    kind: "string",
    group: "Data",
    arg: "file",
    trl: ["dataset_name"],
    help: "training data, JSONL or Parquet; required unless --demo or --resume",
    defaultText: "none",
  },
  {
    key: "evalData",
    flag: "eval-data",
    kind: "string",
    group: "Data",
    arg: "file",
    help: "evaluation data",
    defaultText: "held out from --data",
  },
  {
    key: "skipBadRows",
    flag: "skip-bad-rows",
    kind: "boolean",
    group: "Data",
    default: false,
    help: "skip malformed data rows (each reported with file:line) instead of stopping at the first",
  },
  {
    key: "evalFraction",
    flag: "eval-fraction",
    kind: "number",
    group: "Data",
    default: 0.05,
    check: fraction,
    help: "fraction of --data held out for evaluation when --eval-data is absent; 0: none",
  },
  {
    key: "k",
    flag: "k",
    kind: "int",
    group: "Data",
    min: 2,
    defaultText: "all",
    unset: "all",
    help: "responses per prompt (K) to use from reward data; 'all' for every one",
  },
  {
    key: "kMode",
    flag: "k-mode",
    kind: "enum",
    group: "Data",
    choices: ["first", "random"],
    default: "first",
    help: "which K responses to keep: the first K, or a seeded random K",
  },
  {
    key: "pairStrategy",
    flag: "pair-strategy",
    kind: "enum",
    group: "Data",
    choices: ["best-vs-random", "best-vs-worst", "all-pairs"],
    default: "best-vs-random",
    help: "how preference losses turn reward data into pairs",
  },
  {
    key: "maxLength",
    flag: "max-length",
    kind: "int",
    group: "Data",
    default: 1024,
    min: 2,
    trl: ["max_length"],
    help: "max tokens of prompt + response",
  },
  {
    key: "maxPromptLength",
    flag: "max-prompt-length",
    kind: "int",
    group: "Data",
    default: 512,
    defaultText: "512, or --max-length − 1 when smaller",
    min: 1,
    trl: ["max_prompt_length"],
    help: "max prompt tokens (longer prompts keep their end)",
  },
  {
    key: "chatTemplateKwargs",
    flag: "chat-template-kwargs",
    kind: "json",
    group: "Data",
    arg: "json",
    defaultText: "none",
    parse: (raw, flag) => parseTemplateKwargs(raw, flag),
    help: `variables for the chat template, a JSON object ('{"enable_thinking": false}' for Qwen3): ` +
      "prompts and responses are rendered with them (give sample and eval the same)",
  },
  // Loss
  {
    key: "loss",
    flag: "loss",
    kind: "enum",
    group: "Loss",
    choices: ["sft", "infonca", "nca", "dpo", "nca_pair", "ipo"],
    default: "nca",
    trl: [T.loss_type],
    help: "training objective",
  },
  {
    key: "beta",
    flag: "beta",
    kind: "number",
    group: "Loss",
    default: 0.01,
    check: positive,
    trl: ["beta"],
    help: "β, scale of the implicit reward β·(log π − log μ)",
  },
  {
    key: "alpha",
    flag: "alpha",
    kind: "number",
    group: "Loss",
    default: 1e-2,
    check: nonNegative,
    help:
      "α, reward temperature: soft labels softmax(r / α); 0: all weight on the best response, ties shared",
  },
  {
    key: "reference",
    flag: "reference",
    kind: "string",
    group: "Loss",
    arg: "dir",
    defaultText: "--model, adapters off",
    help: "a separate reference model folder with the same tokenizer (iterative rounds: --model the last " +
      "policy, --reference the SFT model); its log-probs are computed once and cached",
  },
  // Optimization
  {
    key: "lr",
    flag: "lr",
    kind: "number",
    group: "Optimization",
    default: 5e-6,
    check: positive,
    trl: ["learning_rate"],
    help: "peak learning rate",
  },
  {
    key: "schedule",
    flag: "schedule",
    kind: "enum",
    group: "Optimization",
    choices: ["cosine", "linear", "constant"],
    default: "cosine",
    trl: [T.lr_scheduler_type],
    help: "learning-rate schedule (as in transformers)",
  },
  {
    key: "warmupRatio",
    flag: "warmup-ratio",
    kind: "number",
    group: "Optimization",
    default: 0.1,
    check: fractionClosed,
    trl: ["warmup_ratio"],
    help: "warmup as a fraction of the total steps",
  },
  {
    key: "warmupSteps",
    flag: "warmup-steps",
    kind: "int",
    group: "Optimization",
    min: 0,
    defaultText: "from --warmup-ratio",
    trl: [T.warmup_steps],
    help: "warmup steps (overrides --warmup-ratio)",
  },
  {
    key: "epochs",
    flag: "epochs",
    kind: "number",
    group: "Optimization",
    default: 1,
    check: positive,
    trl: ["num_train_epochs"],
    help: "passes over the training data (may be fractional)",
  },
  {
    key: "maxSteps",
    flag: "max-steps",
    kind: "int",
    group: "Optimization",
    min: 1,
    defaultText: "from --epochs",
    trl: [T.max_steps],
    help: "optimizer steps to run (overrides --epochs)",
  },
  {
    key: "batchSize",
    flag: "batch-size",
    kind: "int",
    group: "Optimization",
    default: 8,
    min: 1,
    trl: ["per_device_train_batch_size"],
    help: "prompts per micro-batch",
  },
  {
    key: "gradAccum",
    flag: "grad-accum",
    kind: "int",
    group: "Optimization",
    default: 1,
    min: 1,
    trl: ["gradient_accumulation_steps"],
    help: "micro-batches accumulated per optimizer step",
  },
  {
    key: "zero",
    flag: "zero",
    kind: "int",
    group: "Optimization",
    default: 0,
    min: 0,
    check: (v) => (v > 1 ? "must be 0 (DDP) or 1 (ZeRO-1)" : undefined),
    resume: "may-change",
    help: "with several ranks (torchrun, mpirun, srun): 0 keeps AdamW's moments on every rank (DDP); 1 " +
      "shards them across the ranks (ZeRO-1), the same weights in 1/N of the optimizer memory",
  },
  {
    key: "nproc",
    flag: "nproc",
    kind: "int",
    group: "Optimization",
    min: 1,
    arg: "n",
    defaultText: "1",
    resume: "may-change",
    help: "start N ranks on this machine: under mpirun -np N on the CPU, N processes with torchrun's " +
      "variables on CUDA (one GPU each); not under a launcher",
  },
  {
    key: "maxGradNorm",
    flag: "max-grad-norm",
    kind: "number",
    group: "Optimization",
    default: 1.0,
    check: nonNegative,
    trl: ["max_grad_norm"],
    help: "clip gradients to this global norm; 0: no clipping",
  },
  {
    key: "weightDecay",
    flag: "weight-decay",
    kind: "number",
    group: "Optimization",
    default: 0,
    check: nonNegative,
    trl: ["weight_decay"],
    help: "AdamW's decoupled weight decay (not on norms and biases)",
  },
  {
    key: "adamBeta1",
    flag: "adam-beta1",
    kind: "number",
    group: "Optimization",
    default: 0.9,
    check: belowOne,
    trl: ["adam_beta1"],
    help: "AdamW's β1, the first moment's decay",
  },
  {
    key: "adamBeta2",
    flag: "adam-beta2",
    kind: "number",
    group: "Optimization",
    default: 0.999,
    check: belowOne,
    trl: ["adam_beta2"],
    help: "AdamW's β2, the second moment's decay",
  },
  {
    key: "adamEpsilon",
    flag: "adam-epsilon",
    kind: "number",
    group: "Optimization",
    default: 1e-8,
    check: positive,
    trl: ["adam_epsilon"],
    help: "AdamW's ε, added to the denominator",
  },
  {
    key: "seed",
    flag: "seed",
    kind: "int",
    group: "Optimization",
    default: 42,
    min: 0,
    check: uint32,
    trl: ["seed"],
    help: "seed for data order, sampling and initialization",
  },
  // Model
  {
    key: "full",
    flag: "full",
    kind: "boolean",
    group: "Model",
    default: false,
    trl: [T.use_peft],
    help: "full fine-tuning instead of LoRA",
  },
  {
    key: "loraR",
    flag: "lora-r",
    kind: "int",
    group: "Model",
    default: 16,
    min: 1,
    trl: ["lora_r"],
    help: "LoRA rank",
  },
  {
    key: "loraAlpha",
    flag: "lora-alpha",
    kind: "number",
    group: "Model",
    default: 16,
    check: positive,
    trl: ["lora_alpha"],
    help: "LoRA scale numerator (scale = alpha / r)",
  },
  {
    key: "loraDropout",
    flag: "lora-dropout",
    kind: "number",
    group: "Model",
    default: 0.05,
    check: fraction,
    trl: ["lora_dropout"],
    help: "dropout on the LoRA input",
  },
  {
    key: "loraTargets",
    flag: "lora-targets",
    kind: "list",
    group: "Model",
    arg: "a,b,..",
    defaultText: "per model family",
    trl: [T.lora_target_modules],
    help: "comma-separated modules to adapt, e.g. q,k,v,o,gate,up,down",
  },
  deviceOption({
    group: "Model",
    default: "auto",
    help: "where to train; auto: CUDA when it works, else CPU",
    resume: "may-change",
  }),
  {
    key: "precision",
    flag: "precision",
    kind: "enum",
    group: "Model",
    choices: ["fp32", "fp16"],
    default: "fp32",
    trl: [T.bf16, T.fp16],
    help: "compute precision (fp16: mixed precision with loss scaling, CUDA only)",
  },
  {
    key: "gradientCheckpointing",
    flag: "gradient-checkpointing",
    kind: "boolean",
    group: "Model",
    defaultText: "auto",
    trl: ["gradient_checkpointing"],
    resume: "may-change",
    help: "recompute each layer's activations in the backward pass instead of keeping them; auto: when " +
      "the memory estimate printed at the start says the run would take over half the CPU's free memory " +
      "(90% of a GPU's) without it",
  },
  {
    key: "stepsPerRun",
    flag: "steps-per-run",
    kind: "int",
    group: "Model",
    min: 1,
    defaultText: "8; 64 for --full on CUDA",
    resume: "may-change",
    help: "optimizer steps per ONNX Runtime call",
  },
  {
    key: "saveDtype",
    flag: "save-dtype",
    kind: "enum",
    group: "Model",
    choices: ["float32", "float16", "bfloat16"],
    hints: { fp32: "float32", fp16: "float16", bf16: "bfloat16", half: "float16" },
    defaultText: "the model's",
    resume: "may-change",
    help: "dtype of the exported policy's weights",
  },
  // Run
  {
    key: "out",
    flag: "out",
    kind: "string",
    group: "Run",
    arg: "dir",
    defaultText: "runs/<name>-<YYYYmmdd-HHMMSS>",
    trl: ["output_dir"],
    resume: "may-change",
    help: "the run folder to write",
  },
  {
    key: "name",
    flag: "name",
    kind: "string",
    group: "Run",
    defaultText: "the loss name",
    trl: ["run_name"],
    resume: "may-change",
    help: "run name, the start of the run folder's name",
  },
  {
    key: "evalEvery",
    flag: "eval-every",
    kind: "int",
    group: "Run",
    min: 1,
    defaultText: "at the end only",
    arg: "steps",
    trl: ["eval_steps"],
    resume: "may-change",
    help: "evaluate after each step that is a multiple of this (a session run ends there)",
  },
  {
    key: "evalStrategy",
    flag: "eval-strategy",
    kind: "enum",
    group: "Run",
    choices: ["no", "steps", "epoch"],
    defaultText: "as --eval-every says",
    resume: "may-change",
    trl: ["eval_strategy", "evaluation_strategy"],
    help: "when to evaluate, as TRL says it: steps: every --eval-every steps (unset: every " +
      "--logging-steps); epoch: at each epoch's end; no: at the end only",
  },
  {
    key: "saveEvery",
    flag: "save-every",
    kind: "int",
    group: "Run",
    min: 1,
    defaultText: "at the end only",
    arg: "steps",
    trl: ["save_steps"],
    resume: "may-change",
    help: "save a resumable checkpoint after each step that is a multiple of this",
  },
  {
    key: "saveStrategy",
    flag: "save-strategy",
    kind: "enum",
    group: "Run",
    choices: ["no", "steps", "epoch"],
    defaultText: "as --save-every says",
    resume: "may-change",
    trl: ["save_strategy"],
    help: "when to save a checkpoint, as TRL says it: steps: every --save-every steps (unset: every " +
      "500, as in transformers); epoch: at each epoch's end; no: at the end only",
  },
  {
    key: "keepCheckpoints",
    flag: "keep-checkpoints",
    kind: "int",
    group: "Run",
    default: 2,
    min: 1,
    trl: ["save_total_limit"],
    resume: "may-change",
    help: "checkpoints kept (older ones are deleted)",
  },
  {
    key: "loggingSteps",
    flag: "logging-steps",
    kind: "int",
    group: "Run",
    default: 1,
    min: 1,
    arg: "steps",
    trl: ["logging_steps"],
    resume: "may-change",
    help: "write metrics every this many steps, each line the mean over them",
  },
  {
    key: "loggingStrategy",
    flag: "logging-strategy",
    kind: "enum",
    group: "Run",
    choices: ["steps", "epoch"],
    defaultText: "steps",
    resume: "may-change",
    trl: [T.logging_strategy],
    help: "when to write metrics, as TRL says it: steps: a line every --logging-steps steps; epoch: one " +
      "line per epoch (its mean)",
  },
  {
    key: "reportTo",
    flag: "report-to",
    kind: "enum",
    group: "Run",
    choices: ["jsonl", "tensorboard", "none"],
    default: "jsonl",
    trl: [T.report_to],
    resume: "may-change",
    help: "where metrics go besides metrics.jsonl (always written): tensorboard writes event files to " +
      "<run>/tensorboard/; jsonl and none add nothing",
  },
  {
    key: "resume",
    flag: "resume",
    kind: "string",
    group: "Run",
    arg: "run-dir",
    defaultText: "none",
    resume: "may-change",
    help: "continue a run from its latest checkpoint",
  },
  {
    key: "allowChangedInputs",
    flag: "allow-changed-inputs",
    kind: "boolean",
    group: "Run",
    default: false,
    resume: "may-change",
    help: "with --resume: continue although the data or a model's files changed since the checkpoint " +
      "(refused otherwise, saying what changed)",
  },
  {
    key: "config",
    flag: "config",
    kind: "string",
    group: "Run",
    arg: "file",
    defaultText: "none",
    resume: "may-change",
    help: "JSON file of options (camelCase, kebab-case or TRL's snake_case names); flags win",
  },
  {
    key: "demo",
    flag: "demo",
    kind: "boolean",
    group: "Run",
    default: false,
    help: "train a tiny built-in model on built-in data (no downloads)",
  },
  {
    key: "compare",
    flag: "compare",
    kind: "boolean",
    group: "Run",
    default: false,
    help: "train each loss on the same data and compare the results",
  },
  {
    key: "quiet",
    flag: "quiet",
    kind: "boolean",
    group: "Run",
    default: false,
    resume: "may-change",
    help: "no progress line, only warnings and errors",
  },
] as TrainOptionSpec[]);
