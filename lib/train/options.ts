/**
 * The trainer's options read: the command line over a JSON `--config` file over the defaults, cross-checked
 * with messages that name the flag, the bad value and where it came from; the `--help` text; which options
 * a `--resume` may change; and TRL's `*_strategy` turned into steps once a run knows its epoch's length.
 * What each option is lives in option_specs.ts; the engine that reads flags and config objects is
 * lib/cli/options.ts.
 *
 * A config file may use our field names (camelCase), our flags (kebab-case), so a run's saved `config.json`
 * (the resolved {@link TrainOptions}) can be passed back as `--config`, or TRL's snake_case names, so a TRL
 * run's settings can; TRL's names work as flags too (`--learning_rate`, `--learning-rate`). Everything is
 * synchronous and pure apart from reading the config file.
 *
 * @module
 */

import {
  checkValues,
  closest,
  defaultsOf,
  editDistance,
  parseArgv,
  parseConfigObject as parseConfig,
  resumeMayChange,
} from "../cli/options.ts";
import { formatDefault, helpText } from "../cli/help.ts";
import { type OptionLayer as Layer, UsageError } from "../cli/spec.ts";
import { OPTION_SPECS, type TrainOptions } from "./option_specs.ts";

export { closest, editDistance, formatDefault };

/** Invalid options; `errors` has one line per problem (the message joins them). */
export { UsageError as OptionsError };

/** Options as given by one source, with that source's name for error messages. */
export type OptionLayer = Layer<TrainOptions>;

/** Where {@link resolveTrainOptions} records which options a layer set (not serialized with the config). */
const GIVEN = Symbol("given options");

/**
 * The options a person set (flags and `--config`), as opposed to defaults: what `--resume` compares with
 * the run's saved settings. Undefined for a config built by hand.
 */
export function givenOptions(opts: TrainOptions): ReadonlySet<string> | undefined {
  return (opts as { [GIVEN]?: Set<string> })[GIVEN];
}

/** Where {@link resolveTrainOptions} puts what it changed on its own (not serialized with the config). */
const NOTICES = Symbol("option notices");

/**
 * What resolving the options changed or set aside on its own, in words, for the CLI to print: a default that
 * gave way to a value that was set (`--max-length 384` lowers the default `--max-prompt-length`), a step
 * count a TRL strategy makes unused. Empty when nothing.
 */
export function optionNotices(opts: TrainOptions): readonly string[] {
  return (opts as { [NOTICES]?: string[] })[NOTICES] ?? [];
}

/** Options a resumed run may change: where and how it runs, not what it computes (`resume` in the table). */
export const RESUME_MAY_CHANGE: ReadonlySet<string> = resumeMayChange(OPTION_SPECS);

/**
 * Parse argv into a layer of explicitly given options (nothing defaulted) and whether help was asked for.
 * Throws {@link OptionsError} listing every unknown flag (with the closest known one), missing value, bad
 * value and two names that set one option differently; not when help was asked for.
 */
export function parseTrainArgs(argv: readonly string[]): { layer: OptionLayer; help: boolean } {
  const { values, source, help, errors } = parseArgv(OPTION_SPECS, argv, {
    positionalHint: "(options start with --; see --help)",
  });
  if (errors.length && !help) throw new UsageError(errors);
  return { layer: { values, source }, help };
}

/**
 * Options from a parsed config object (camelCase, kebab-case or TRL's snake_case keys; `null` means
 * "unset"). Throws {@link OptionsError} for unknown keys (with the closest known one), bad values and two
 * keys that set one option differently (`lr` and `learning_rate`).
 */
export function parseConfigObject(obj: unknown, source: string): OptionLayer {
  return parseConfig(OPTION_SPECS, obj, source, {
    refuse: { config: "a config file cannot name another config file" },
  });
}

/** Read a JSON config file as an options layer. */
export function readConfigFile(path: string): OptionLayer {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new UsageError(`--config: cannot read ${path}: ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--config: ${path} is not valid JSON: ${(e as Error).message}`);
  }
  return parseConfigObject(obj, path);
}

/** The defaults of every option (`name` defaults to the loss, so it is filled in by resolution). */
export function defaultTrainOptions(): TrainOptions {
  const out = defaultsOf(OPTION_SPECS) as TrainOptions;
  out.name = out.loss;
  return out;
}

/**
 * Defaults, overlaid by each layer in order (later wins; a layer's `undefined` leaves the value alone),
 * then cross-checked. Throws {@link OptionsError} with every problem, naming the flag and where its value
 * came from.
 */
export function resolveTrainOptions(...layers: OptionLayer[]): TrainOptions {
  const merged: Record<string, unknown> = { ...defaultTrainOptions() };
  delete merged.name;
  const origin = new Map<string, string>();
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer.values)) {
      if (v === undefined) continue;
      merged[k] = v;
      origin.set(k, layer.source);
    }
  }
  const opts = merged as TrainOptions;
  if (opts.name === undefined) opts.name = opts.loss;
  const where = (key: string) => {
    const src = origin.get(key);
    return src && src !== "command line" ? ` (in ${src})` : "";
  };
  // Each value was checked on its own when parsed; again in case a layer was built by hand.
  const errors = checkValues(OPTION_SPECS, opts, where);
  if (!opts.demo && !opts.resume) {
    if (!opts.model) {
      errors.push("--model is required (a Hugging Face model folder), unless --demo or --resume is given");
    }
    if (!opts.data) {
      errors.push("--data is required (a JSONL or Parquet file), unless --demo or --resume is given");
    }
  }
  const notices: string[] = [];
  // a default gives way to what was set: only two values that were both set, or a set prompt length that
  // the default --max-length does not leave room for, are refused
  if (opts.maxPromptLength >= opts.maxLength && !origin.has("maxPromptLength")) {
    const was = opts.maxPromptLength;
    opts.maxPromptLength = Math.min(was, opts.maxLength - 1);
    notices.push(
      `--max-prompt-length is ${opts.maxPromptLength}, not its default ${was}, which is not below ` +
        `--max-length ${opts.maxLength}${where("maxLength")}; set --max-prompt-length to choose another`,
    );
  }
  if (opts.maxPromptLength >= opts.maxLength) {
    errors.push(
      `--max-prompt-length must be < --max-length (${opts.maxLength}), got ${opts.maxPromptLength}${
        where("maxPromptLength") || where("maxLength")
      }`,
    );
  }
  if (opts.reference !== undefined && opts.loss === "sft") {
    errors.push(
      `--reference is for the alignment losses; --loss sft has no reference model${where("reference")}`,
    );
  }
  // TRL's strategies set aside a step count given with them, as TRL does: said, so it is not a surprise
  const unused = (
    strategy: string | undefined,
    key: "evalEvery" | "saveEvery" | "loggingSteps",
    s: string,
  ) => {
    if (strategy !== "epoch" && strategy !== "no") return;
    if (!origin.has(key)) return;
    const flag = key === "evalEvery"
      ? "--eval-every"
      : key === "saveEvery"
      ? "--save-every"
      : "--logging-steps";
    const what = key === "evalEvery" ? "evaluates" : key === "saveEvery" ? "saves" : "logs";
    notices.push(
      `${flag} ${opts[key]}${where(key)} is not used: --${s} ${strategy} ${what} ` +
        (strategy === "epoch" ? "at each epoch's end" : "at the end only") + " (as in TRL)",
    );
  };
  unused(opts.evalStrategy, "evalEvery", "eval-strategy");
  unused(opts.saveStrategy, "saveEvery", "save-strategy");
  unused(opts.loggingStrategy, "loggingSteps", "logging-strategy");
  if (errors.length) throw new UsageError(errors);
  Object.defineProperty(opts, GIVEN, { value: new Set(origin.keys()), enumerable: false });
  Object.defineProperty(opts, NOTICES, { value: notices, enumerable: false });
  return opts;
}

/** transformers' `save_steps` default, which TRL's `save_strategy: "steps"` uses when none is given. */
export const TRL_SAVE_STEPS = 500;

/** When a run evaluates, saves and writes a metrics line, in steps (undefined: at the end only). */
export type StepIntervals = { evalEvery?: number; saveEvery?: number; loggingSteps: number };

/**
 * When the run evaluates, saves and logs, once it knows how many optimizer steps an epoch has: TRL's
 * strategies as TRL means them (`steps`: every `eval_steps`, which defaults to `logging_steps`, and every
 * `save_steps`, default 500; `epoch`: at each epoch's end; `no`: at the end only), else `--eval-every`,
 * `--save-every` and `--logging-steps`. `stepsPerEpoch` is asked only for an `epoch` strategy.
 */
export function stepIntervals(
  o: Pick<
    TrainOptions,
    "evalEvery" | "saveEvery" | "loggingSteps" | "evalStrategy" | "saveStrategy" | "loggingStrategy"
  >,
  stepsPerEpoch: () => number,
): StepIntervals {
  const loggingSteps = o.loggingStrategy === "epoch" ? stepsPerEpoch() : o.loggingSteps ?? 1;
  const every = (strategy: string | undefined, given: number | undefined, steps: number) =>
    strategy === "no"
      ? undefined
      : strategy === "epoch"
      ? stepsPerEpoch()
      : strategy === "steps"
      ? given ?? steps
      : given;
  return {
    evalEvery: every(o.evalStrategy, o.evalEvery, o.loggingSteps ?? 1),
    saveEvery: every(o.saveStrategy, o.saveEvery, TRL_SAVE_STEPS),
    loggingSteps,
  };
}

/**
 * Parse the trainer's command line: flags over the `--config` file over defaults. Returns the help text
 * instead when `--help`/`-h` is given. Throws {@link OptionsError} for anything invalid.
 *
 * @example
 * ```ts
 * const opts = parseTrainOptions(["--model", "m", "--data", "d.jsonl", "--loss", "dpo", "--beta", "0.1"]);
 * if ("help" in opts) console.log(opts.help);
 * ```
 */
export function parseTrainOptions(argv: readonly string[]): TrainOptions | { help: string } {
  const { layer, help } = parseTrainArgs(argv);
  if (help) return { help: trainHelp() };
  const layers: OptionLayer[] = [];
  if (layer.values.config !== undefined) layers.push(readConfigFile(layer.values.config));
  layers.push(layer);
  return resolveTrainOptions(...layers);
}

/** The `--help` text: every option with its values and default, grouped. */
export function trainHelp(): string {
  return helpText(OPTION_SPECS, {
    usage: "deno task train [options]",
    intro: [
      "Align a language model with InfoNCA/NCA (reward data) or DPO/NCA-pair/IPO (preference data),",
      "or fine-tune it (sft). Example:",
      "  deno task train --model ./zephyr-sft --data ultrafeedback.jsonl --loss nca --beta 0.01 --alpha 0.01",
    ].join("\n"),
    outro: [
      "Boolean flags take --no-<flag> to turn them off (e.g. over a config file).",
      "TRL's names (TRL: above) work as flags, in snake_case or kebab-case (--learning_rate, --learning-rate),",
      "and in a --config file, with TRL's values: --loss_type sigmoid is --loss dpo, --bf16 computes in fp32,",
      "--use_peft false is --full, --max_steps -1 and --warmup_steps 0 leave them unset. A kebab-case",
      "spelling that is our own flag (--max-steps, --warmup-steps, --report-to) keeps our meaning.",
    ].join("\n"),
  });
}
