/**
 * The trainer's options read: parsing from the command line with `node:util` `parseArgs`, merging with a
 * JSON `--config` file (flags win), validation with messages that name the flag and the bad value, and the
 * `--help` text. What each option is lives in option_specs.ts.
 *
 * Flags are kebab-case (`--max-prompt-length`), fields camelCase (`maxPromptLength`); a config file may use
 * either spelling, so a run's saved `config.json` (the resolved {@link TrainOptions}) can be passed back as
 * `--config`, or TRL's snake_case names (trl_names.ts), so a TRL run's settings can. A few TRL spellings are
 * flags too (`--learning-rate`, the spec's `aliases`). Everything is synchronous and pure apart from reading
 * the config file.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { OPTION_SPECS, type OptionSpec, type TrainOptions } from "./option_specs.ts";
import { TRL_NAMES } from "./trl_names.ts";

/** Every flag, aliases included, to its option. */
const BY_FLAG = new Map(OPTION_SPECS.flatMap((s) => [s.flag, ...(s.aliases ?? [])].map((f) => [f, s])));
const BY_KEY = new Map(OPTION_SPECS.map((s) => [s.key as string, s]));

/** Invalid options; `errors` has one line per problem (the message joins them). */
export class OptionsError extends Error {
  readonly errors: string[];
  constructor(errors: string[]) {
    super(errors.join("\n"));
    this.name = "OptionsError";
    this.errors = errors;
  }
}

/** Options as given by one source, with that source's name for error messages. */
export type OptionLayer = { values: Partial<TrainOptions>; source: string };

/** Where {@link resolveTrainOptions} records which options a layer set (not serialized with the config). */
const GIVEN = Symbol("given options");

/**
 * The options a person set (flags and `--config`), as opposed to defaults: what `--resume` compares with
 * the run's saved settings. Undefined for a config built by hand.
 */
export function givenOptions(opts: TrainOptions): ReadonlySet<string> | undefined {
  return (opts as { [GIVEN]?: Set<string> })[GIVEN];
}

/** Edit distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length];
}

/** The closest of `candidates` to `word` when it is close enough to be a plausible typo. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

const describe = (v: unknown) => (typeof v === "string" ? JSON.stringify(v) : String(v));

/**
 * Convert one raw value (a flag's string, or a config file's JSON value) to the option's type. Returns the
 * value or an error message naming the flag.
 */
function convert(
  spec: OptionSpec,
  raw: unknown,
  where: string,
  flag = `--${spec.flag}`,
): { value: unknown } | { error: string } {
  const bad = (what: string) => ({ error: `${flag} ${what}, got ${describe(raw)}${where}` });
  if (raw === null) return { value: undefined };
  switch (spec.kind) {
    case "boolean":
      if (typeof raw === "boolean") return { value: raw };
      if (raw === "true" || raw === "false") return { value: raw === "true" };
      return bad("must be true or false");
    case "string":
      if (typeof raw !== "string" || raw === "") return bad("must be a non-empty string");
      return { value: raw };
    case "enum": {
      if (typeof raw === "string" && spec.choices!.includes(raw)) return { value: raw };
      const guess = typeof raw === "string"
        ? (spec.hints && Object.hasOwn(spec.hints, raw.toLowerCase())
          ? spec.hints[raw.toLowerCase()]
          : undefined) ??
          closest(raw, spec.choices!)
        : undefined;
      return {
        error: `${flag} must be one of ${spec.choices!.join(", ")}, got ${describe(raw)}${
          guess ? ` (did you mean ${guess}?)` : ""
        }${where}`,
      };
    }
    case "list": {
      const items = Array.isArray(raw) ? raw : typeof raw === "string" ? raw.split(",") : undefined;
      if (!items || !items.every((x) => typeof x === "string")) return bad("must be a comma-separated list");
      const list = items.map((x: string) => x.trim()).filter((x: string) => x !== "");
      if (list.length === 0) return bad("must name at least one module");
      return { value: list };
    }
    case "number":
    case "int": {
      if (spec.key === "k" && raw === "all") return { value: undefined };
      const n = typeof raw === "number"
        ? raw
        : typeof raw === "string" && raw.trim() !== ""
        ? Number(raw)
        : NaN;
      if (!Number.isFinite(n)) return bad("must be a number");
      if (spec.kind === "int" && !Number.isInteger(n)) {
        return { error: `${flag} must be an integer, got ${String(raw).trim()}${where}` };
      }
      const problem = spec.check?.(n);
      if (problem) return { error: `${flag} ${problem}, got ${String(raw).trim()}${where}` };
      return { value: n + 0 }; // -0 → 0
    }
  }
}

const looksLikeFlag = (s: string) => /^--?[A-Za-z]/.test(s);

/**
 * Parse argv into a layer of explicitly given options (nothing defaulted), the `--config` path and whether
 * help was asked for. Throws {@link OptionsError} listing every unknown flag (with the closest known one),
 * missing value and bad value.
 */
export function parseTrainArgs(argv: readonly string[]): { layer: OptionLayer; help: boolean } {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
  };
  for (const [flag, s] of BY_FLAG) options[flag] = { type: s.kind === "boolean" ? "boolean" : "string" };
  const { tokens } = parseArgs({
    args: [...argv],
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const errors: string[] = [];
  const values: Partial<Record<keyof TrainOptions, unknown>> = {};
  let help = false;
  let unknownAt = -1; // index of an unknown `--flag`, whose value parseArgs sees as a positional
  for (const t of tokens) {
    if (t.kind === "positional" && t.index === unknownAt + 1) continue;
    if (t.kind === "positional") {
      errors.push(`unexpected argument ${JSON.stringify(t.value)} (options start with --; see --help)`);
      continue;
    }
    if (t.kind !== "option") continue;
    if (t.name === "help") {
      help = true;
      continue;
    }
    let spec = BY_FLAG.get(t.name);
    let negated = false;
    if (!spec && t.name.startsWith("no-") && BY_FLAG.get(t.name.slice(3))?.kind === "boolean") {
      spec = BY_FLAG.get(t.name.slice(3));
      negated = true;
    }
    if (!spec && t.name.startsWith("no-") && BY_FLAG.has(t.name.slice(3))) {
      errors.push(`unknown option ${t.rawName}: --${t.name.slice(3)} is not an on/off flag`);
      continue;
    }
    if (!spec) {
      const guess = closest(t.name.replaceAll("_", "-"), [...BY_FLAG.keys(), "help"]);
      errors.push(`unknown option ${t.rawName}${guess ? ` (did you mean --${guess}?)` : "; see --help"}`);
      if (t.value === undefined) unknownAt = t.index;
      continue;
    }
    if (spec.kind === "boolean") {
      if (t.value !== undefined) {
        const r = negated ? { error: `--no-${spec.flag} takes no value` } : convert(spec, t.value, "");
        if ("error" in r) errors.push(r.error);
        else values[spec.key] = r.value;
      } else {
        values[spec.key] = !negated;
      }
      continue;
    }
    if (t.value === undefined || (!t.inlineValue && looksLikeFlag(t.value))) {
      errors.push(
        `--${spec.flag} needs a value${t.value === undefined ? "" : `, got the option ${t.value}`}`,
      );
      continue;
    }
    const r = convert(spec, t.value, "");
    if ("error" in r) errors.push(r.error);
    else values[spec.key] = r.value;
  }
  if (errors.length && !help) throw new OptionsError(errors);
  return { layer: { values: values as Partial<TrainOptions>, source: "command line" }, help };
}

/** The names a config file may use for options, for "did you mean": ours (camelCase) and TRL's. */
const CONFIG_NAMES = [...[...BY_KEY.keys()].filter((k) => k !== "config"), ...Object.keys(TRL_NAMES)];

/**
 * Options from a parsed config object (camelCase, kebab-case or TRL's snake_case keys; `null` means
 * "unset"). Throws {@link OptionsError} for unknown keys (with the closest known one), bad values and two
 * keys that set one option differently (`lr` and `learning_rate`).
 */
export function parseConfigObject(obj: unknown, source: string): OptionLayer {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new OptionsError([`${source}: a config file must hold a JSON object of options`]);
  }
  const errors: string[] = [];
  const values: Partial<Record<keyof TrainOptions, unknown>> = {};
  const setBy = new Map<string, string>();
  for (const [key, given] of Object.entries(obj)) {
    const trl = Object.hasOwn(TRL_NAMES, key) ? TRL_NAMES[key] : undefined;
    const spec = trl ? BY_KEY.get(trl.key) : BY_KEY.get(key) ?? BY_FLAG.get(key);
    if (spec?.key === "config") {
      errors.push(`${source}: a config file cannot name another config file ("${key}")`);
      continue;
    }
    if (!spec) {
      const guess = closest(key, CONFIG_NAMES);
      errors.push(`${source}: unknown option "${key}"${guess ? ` (did you mean "${guess}"?)` : ""}`);
      continue;
    }
    let raw = given;
    if (trl?.translate) {
      const t = trl.translate(given);
      if ("error" in t) {
        errors.push(`${key} ${t.error} (in ${source})`);
        continue;
      }
      raw = t.value;
    }
    // a TRL name's errors name it and the flag it stands for
    const r = convert(spec, raw, ` (in ${source})`, trl ? `${key} (--${spec.flag})` : undefined);
    if ("error" in r) {
      errors.push(r.error);
      continue;
    }
    if (r.value === undefined) {
      if (!setBy.has(spec.key)) values[spec.key] = undefined; // null: unset
      continue;
    }
    const before = setBy.get(spec.key);
    if (before !== undefined && JSON.stringify(values[spec.key]) !== JSON.stringify(r.value)) {
      errors.push(`${source}: "${before}" and "${key}" both set --${spec.flag}, to different values`);
      continue;
    }
    setBy.set(spec.key, key);
    values[spec.key] = r.value;
  }
  if (errors.length) throw new OptionsError(errors);
  return { values: values as Partial<TrainOptions>, source };
}

/** Read a JSON config file as an options layer. */
export function readConfigFile(path: string): OptionLayer {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new OptionsError([`--config: cannot read ${path}: ${(e as Error).message}`]);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new OptionsError([`--config: ${path} is not valid JSON: ${(e as Error).message}`]);
  }
  return parseConfigObject(obj, path);
}

/** The defaults of every option (`name` defaults to the loss, so it is filled in by resolution). */
export function defaultTrainOptions(): TrainOptions {
  const out: Record<string, unknown> = {};
  for (const s of OPTION_SPECS) if (s.default !== undefined) out[s.key] = s.default;
  out.name = out.loss;
  return out as TrainOptions;
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
  const where = (key: keyof TrainOptions) => {
    const src = origin.get(key);
    return src && src !== "command line" ? ` (in ${src})` : "";
  };
  const errors: string[] = [];
  // Each value was checked on its own when parsed; re-check in case a layer was built by hand.
  for (const spec of OPTION_SPECS) {
    const v = (opts as Record<string, unknown>)[spec.key];
    if (v === undefined) continue;
    const r = convert(spec, v, where(spec.key));
    if ("error" in r) errors.push(r.error);
  }
  if (!opts.demo && !opts.resume) {
    if (!opts.model) {
      errors.push("--model is required (a Hugging Face model folder), unless --demo or --resume is given");
    }
    if (!opts.data) {
      errors.push("--data is required (a JSONL or Parquet file), unless --demo or --resume is given");
    }
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
  if (errors.length) throw new OptionsError(errors);
  Object.defineProperty(opts, GIVEN, { value: new Set(origin.keys()), enumerable: false });
  return opts;
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

/** How a default reads in `--help`: `5e-6` rather than `0.000005`. */
export function formatDefault(spec: OptionSpec): string {
  if (spec.defaultText !== undefined) return spec.defaultText;
  const v = spec.default;
  if (typeof v === "number" && v !== 0 && Math.abs(v) < 1e-3) return v.toExponential();
  return String(v);
}

/** Width the help text is wrapped to. */
const HELP_COLUMNS = 100;

/** Greedy word wrap of `words` (a word may hold spaces: it is never split); a long word gets its own line. */
function wrap(words: readonly string[], width: number): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of words) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  out.push(line);
  return out;
}

/** The `--help` text: every option with its values and default, grouped. */
export function trainHelp(): string {
  const lines = [
    "Usage: deno task train [options]",
    "",
    "Align a language model with InfoNCA/NCA (reward data) or DPO/NCA-pair/IPO (preference data),",
    "or fine-tune it (sft). Example:",
    "  deno task train --model ./zephyr-sft --data ultrafeedback.jsonl --loss nca --beta 0.01 --alpha 0.01",
  ];
  const rows: { group: string; left: string; right: string[] }[] = OPTION_SPECS.map((s) => {
    const arg = s.kind === "boolean"
      ? ""
      : s.kind === "enum"
      ? ` ${s.choices!.join("|")}`
      : ` <${s.arg ?? (s.kind === "list" ? "list" : s.kind === "string" ? "text" : s.kind)}>`;
    return {
      group: s.group,
      left: `  --${s.flag}${arg}`,
      right: [
        ...s.help.split(" "),
        ...(s.aliases?.length ? [`(alias ${s.aliases.map((a) => `--${a}`).join(", ")})`] : []),
        `(default: ${formatDefault(s)})`,
      ],
    };
  });
  rows.push({ group: "Run", left: "  -h, --help", right: ["show", "this", "help"] });
  const width = 30;
  const textWidth = HELP_COLUMNS - width;
  let group = "";
  for (const r of rows) {
    if (r.group !== group) {
      lines.push("", `${r.group}:`);
      group = r.group;
    }
    const text = wrap(r.right, textWidth).map((l) => " ".repeat(width) + l);
    if (r.left.length + 1 > width) lines.push(r.left, ...text);
    else lines.push(r.left.padEnd(width) + text[0].trimStart(), ...text.slice(1));
  }
  lines.push(
    "",
    "Boolean flags take --no-<flag> to turn them off (e.g. over a config file).",
    "A --config file may use TRL's names (learning_rate, per_device_train_batch_size, num_train_epochs,",
    'loss_type "sigmoid"|"ipo"|"nca_pair", bf16, fp16, report_to, lora_r, model_name_or_path, …).',
  );
  return lines.join("\n") + "\n";
}
