/**
 * The command-line engine of every entry (train, sample, score, eval, serve): a declarative table of
 * {@link OptionSpec}s gives each option's flag, value check, `--help` line, config-file names and TRL's
 * names; {@link parseArgv} reads a command line against it, listing every problem at once (unknown flags
 * with the closest known one, missing and bad values, two names setting one option differently);
 * help.ts writes the grouped help; usage.ts is the one usage-error path (`error:`
 * lines, a pointer to `--help`, exit status 2).
 *
 * Flags are kebab-case (`--max-prompt-length`), values keyed by the spec's `key` (camelCase). A spec's
 * `trl` names (TRL's and transformers' snake_case arguments) work as flags in both spellings
 * (`--learning_rate`, `--learning-rate`) and as config-file keys, with TRL's value conventions translated.
 *
 * This module sits below every stage of lib/ and imports none of them.
 * @module
 */

import {
  type Converted,
  type OptionLayer,
  type OptionSpec,
  type ParsedArgv,
  type TrlName,
  UsageError,
} from "./spec.ts";

// ---------------------------------------------------------------------------------------------------------
// Spelling suggestions
// ---------------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------------------

/** One name an option answers to: its flag or an alias (`trl` absent), or one of TRL's names. */
type Entry<O> = {
  spec: OptionSpec<O>;
  trl?: TrlName;
  /** Names of one group set the option in turn (the last wins); two groups that disagree are an error. */
  group: string;
};

type Table<O> = {
  /** Every flag spelling (no `--`) to its option. */
  flags: Map<string, Entry<O>>;
  /** Every config-file key: TRL's names, then the fields and flags. */
  keys: Map<string, Entry<O>>;
  byKey: Map<string, OptionSpec<O>>;
};

const kebab = (name: string) => name.replaceAll("_", "-");
export const trlNames = <O>(s: OptionSpec<O>): TrlName[] =>
  (s.trl ?? []).map((t) => (typeof t === "string" ? { name: t } : t));

const tables = new WeakMap<readonly unknown[], Table<unknown>>();

/**
 * The lookups of a table, built once per table; a flag or key that two options claim is a mistake in the
 * table, thrown at once.
 */
export function tableOf<O>(specs: readonly OptionSpec<O>[]): Table<O> {
  const known = tables.get(specs) as Table<O> | undefined;
  if (known) return known;
  const flags = new Map<string, Entry<O>>();
  const keys = new Map<string, Entry<O>>();
  const byKey = new Map<string, OptionSpec<O>>();
  const claim = (map: Map<string, Entry<O>>, name: string, e: Entry<O>, what: string) => {
    const had = map.get(name);
    if (had && had.spec !== e.spec) {
      throw new Error(`option table: ${what} "${name}" is both --${had.spec.flag}'s and --${e.spec.flag}'s`);
    }
    if (!had) map.set(name, e); // the option's own name stays its own
  };
  for (const s of specs) {
    if (byKey.has(s.key)) throw new Error(`option table: two options set "${s.key}"`);
    if (s.flag === "help" || s.flag === "h") throw new Error("option table: --help is every entry's own");
    byKey.set(s.key, s);
    const own: Entry<O> = { spec: s, group: `--${s.flag}` };
    for (const f of [s.flag, ...(s.aliases ?? [])]) {
      if (flags.get(f)?.spec === s) throw new Error(`option table: --${f} is listed twice`);
      claim(flags, f, own, "flag");
    }
  }
  for (const s of specs) {
    const own: Entry<O> = { spec: s, group: `--${s.flag}` };
    for (const k of [s.key, s.flag, ...(s.aliases ?? [])]) claim(keys, k, own, "config key");
  }
  for (const s of specs) {
    for (const t of trlNames(s)) {
      const e: Entry<O> = { spec: s, trl: t, group: t.name };
      // a name that is already the same option's own keeps its meaning (`seed`; `--warmup-steps 0` is ours:
      // no warmup, `--warmup_steps 0` is TRL's: from the ratio), as a config file's keys do
      claim(keys, t.name, e, "TRL name");
      for (const f of [t.name, kebab(t.name)]) claim(flags, f, e, "flag");
    }
  }
  const table = { flags, keys, byKey };
  tables.set(specs, table as Table<unknown>);
  return table;
}

// ---------------------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------------------

const NUMBER = /^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?\s*$/i;

/** A value as an error message shows it: numbers as written, text quoted. */
function shown(raw: unknown): string {
  if (typeof raw === "string") return NUMBER.test(raw) ? raw.trim() : JSON.stringify(raw);
  return typeof raw === "object" ? JSON.stringify(raw) : String(raw);
}

/**
 * One raw value (a flag's text, or a config file's JSON value) as the option's type, or the error, which
 * starts with `name` (the flag as given) and ends with `where` (" (in config.json)").
 */
function convert<O>(spec: OptionSpec<O>, raw: unknown, name: string, where: string): Converted {
  const bad = (what: string) => ({ error: `${name} ${what}, got ${shown(raw)}${where}` });
  if (raw === null || raw === undefined) return { value: undefined };
  if (spec.unset !== undefined && raw === spec.unset) return { value: undefined };
  if (spec.parse) {
    try {
      return { value: spec.parse(raw, name) };
    } catch (e) {
      return { error: `${(e as Error).message}${where}` };
    }
  }
  switch (spec.kind) {
    case "boolean": {
      if (typeof raw === "boolean") return { value: raw };
      const t = typeof raw === "string" ? raw.toLowerCase() : undefined;
      if (t === "true" || t === "false") return { value: t === "true" };
      return bad("must be true or false");
    }
    case "string":
      if (typeof raw !== "string" || raw === "") return bad("must be a non-empty string");
      return { value: raw };
    case "enum": {
      const choices = spec.choices ?? [];
      if (typeof raw === "string" && choices.includes(raw)) return { value: raw };
      const hint = typeof raw === "string" && spec.hints && Object.hasOwn(spec.hints, raw.toLowerCase())
        ? spec.hints[raw.toLowerCase()]
        : undefined;
      const guess = typeof raw === "string" ? hint ?? closest(raw, choices) : undefined;
      return {
        error: `${name} must be one of ${choices.join(", ")}, got ${shown(raw)}${
          guess ? ` (did you mean ${guess}?)` : ""
        }${where}`,
      };
    }
    case "list": {
      const items = Array.isArray(raw) ? raw : typeof raw === "string" ? raw.split(",") : undefined;
      if (!items || !items.every((x) => typeof x === "string")) return bad("must be a comma-separated list");
      const list = items.map((x: string) => x.trim()).filter((x: string) => x !== "");
      if (list.length === 0) return bad("must list at least one value");
      return { value: list };
    }
    case "json": {
      let v = raw;
      if (typeof raw === "string") {
        try {
          v = JSON.parse(raw);
        } catch {
          return bad("must be a JSON object");
        }
      }
      if (typeof v !== "object" || v === null || Array.isArray(v)) return bad("must be a JSON object");
      return { value: v };
    }
    case "number":
    case "int": {
      const n = typeof raw === "number"
        ? raw
        : typeof raw === "string" && NUMBER.test(raw)
        ? Number(raw)
        : NaN;
      const min = spec.min;
      if (spec.kind === "int") {
        if (!Number.isSafeInteger(n) || (min !== undefined && n < min)) {
          return bad(`must be a whole number${min !== undefined ? ` ≥ ${min}` : ""}`);
        }
      } else {
        if (!Number.isFinite(n)) return bad("must be a number");
        if (min !== undefined && n < min) return bad(`must be ≥ ${min}`);
      }
      const problem = spec.check?.(n);
      if (problem) return bad(problem);
      return { value: n + 0 }; // -0 → 0
    }
  }
}

/**
 * A TRL name's value: translated to ours where TRL's differs (an error there starts with `given`, the name
 * as given), then read as the option's (an error there starts with `name`, which adds the flag it sets).
 */
function convertTrl<O>(
  spec: OptionSpec<O>,
  t: TrlName,
  raw: unknown,
  given: string,
  name: string,
  where: string,
): Converted {
  if (!t.translate) return convert(spec, raw, name, where);
  const r = t.translate(raw);
  if ("error" in r) return { error: `${given} ${r.error}${where}` };
  return convert(spec, r.value, name, where);
}

/** Booleans as a flag's text or a config value: `true`/`false` in any case (Python writes `True`). */
function asBoolean(raw: unknown): boolean | undefined {
  if (typeof raw === "boolean") return raw;
  const t = typeof raw === "string" ? raw.toLowerCase() : undefined;
  return t === "true" ? true : t === "false" ? false : undefined;
}

/** Records values as they come, refusing two names of one option that set it differently. */
class Setter<O> {
  readonly values: Record<string, unknown> = {};
  readonly #by = new Map<string, { group: string; said: string; value: unknown }>();
  constructor(readonly errors: string[], readonly conflict: (a: string, b: string, flag: string) => string) {}

  set(e: Entry<O>, said: string, value: unknown): void {
    const key = e.spec.key;
    const before = this.#by.get(key);
    const other = before !== undefined && before.group !== e.group && before.value !== undefined;
    if (value === undefined) {
      // unset (`--k all`, TRL's `max_steps: -1`) does not undo another name's value
      if (!other) {
        this.values[key] = undefined;
        this.#by.set(key, { group: e.group, said, value });
      }
      return;
    }
    if (other && JSON.stringify(before.value) !== JSON.stringify(value)) {
      this.errors.push(this.conflict(before.said, said, e.spec.flag));
      return;
    }
    this.values[key] = value;
    this.#by.set(key, { group: e.group, said, value });
  }
}

/** Whether an argument is a flag (`--x`, `-h`) rather than a value (`-0.5`, `-`). */
const looksLikeFlag = (s: string) => /^--?[A-Za-z]/.test(s);

/** Options for {@link parseArgv}. */
export type ParseArgvOptions = {
  /** Positional arguments are returned (sample's `--merge OUT FILES…`); otherwise each is an error. */
  positionals?: boolean;
  /** What an unexpected argument's error adds (default: "(options start with --)"). */
  positionalHint?: string;
};

/**
 * Reads a command line against `specs`: the values given (nothing defaulted; an option left out has no key),
 * the positionals, whether `-h`/`--help` was given, and every problem, in order: an unknown flag (with the
 * closest known one), `--no-x` of an option that is not on/off, a missing or bad value, two names that set
 * one option to different values (`--lr 1e-5 --learning_rate 2e-5`). The same flag twice: the last wins.
 * Booleans are `--x`, `--x=false`, `--x false` or `--no-x`. Throws nothing for a wrong command line.
 */
export function parseArgv<O>(
  specs: readonly OptionSpec<O>[],
  argv: readonly string[],
  o: ParseArgvOptions = {},
): ParsedArgv<O> {
  const t = tableOf(specs);
  const errors: string[] = [];
  const out = new Setter<O>(errors, (a, b, flag) => `${a} and ${b} both set --${flag}, to different values`);
  const positionals: string[] = [];
  let help = false;
  const positional = (arg: string) => {
    if (o.positionals) positionals.push(arg);
    else {errors.push(
        `unexpected argument ${JSON.stringify(arg)} ${o.positionalHint ?? "(options start with --)"}`,
      );}
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      for (const p of argv.slice(i + 1)) positional(p);
      break;
    }
    if (!looksLikeFlag(arg)) {
      positional(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const rawName = eq < 0 ? arg : arg.slice(0, eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    if (rawName === "-h" || rawName === "--help") {
      help = true;
      continue;
    }
    const name = rawName.startsWith("--") ? rawName.slice(2) : "";
    let entry = name ? t.flags.get(name) : undefined;
    const onOff = (e: Entry<O> | undefined) =>
      e !== undefined && (e.trl?.boolean ?? e.spec.kind === "boolean");
    let negated = false;
    if (!entry && name.startsWith("no-")) {
      const plain = t.flags.get(name.slice(3));
      if (onOff(plain)) [entry, negated] = [plain, true];
      else if (plain) {
        errors.push(`unknown option ${rawName}: --${name.slice(3)} is not an on/off flag`);
        continue;
      }
    }
    if (!entry) {
      const guess = name
        ? closest(kebab(name), [...new Set([...t.flags.keys()].map(kebab)), "help"])
        : undefined;
      errors.push(`unknown option ${rawName}${guess ? ` (did you mean --${guess}?)` : ""}`);
      // its value, if it has one, is not a stray argument
      if (inline === undefined && i + 1 < argv.length && !looksLikeFlag(argv[i + 1])) i++;
      continue;
    }
    const { spec } = entry;
    const typed = `--${negated ? name.slice(3) : name}`;
    // the option's name in messages: its flag (an alias is the flag); one of TRL's names as given, with the
    // flag it stands for unless that is its kebab-case spelling
    const said = !entry.trl
      ? `--${spec.flag}`
      : kebab(typed) === `--${spec.flag}`
      ? typed
      : `${typed} (--${spec.flag})`;
    let raw: unknown;
    let text = "";
    if (onOff(entry)) {
      if (negated) {
        if (inline !== undefined) {
          errors.push(`${rawName} takes no value`);
          continue;
        }
        raw = false;
      } else if (inline !== undefined) {
        raw = asBoolean(inline);
        if (raw === undefined) {
          errors.push(`${said} must be true or false, got ${JSON.stringify(inline)}`);
          continue;
        }
      } else if (i + 1 < argv.length && asBoolean(argv[i + 1]) !== undefined) {
        raw = asBoolean(argv[++i]);
      } else {
        raw = true;
      }
    } else {
      if (inline !== undefined) raw = inline;
      else if (i + 1 < argv.length && !looksLikeFlag(argv[i + 1])) raw = argv[++i];
      else {
        const next = argv[i + 1];
        errors.push(`${typed} needs a value${next === undefined ? "" : `, got the option ${next}`}`);
        continue;
      }
      text = ` ${raw}`;
    }
    const r = entry.trl ? convertTrl(spec, entry.trl, raw, typed, said, "") : convert(spec, raw, said, "");
    if ("error" in r) errors.push(r.error);
    else out.set(entry, `${negated ? rawName : typed}${text}`, r.value);
  }
  return { values: out.values as Partial<O>, source: "command line", help, positionals, errors };
}

/** Options for {@link parseConfigObject}. */
export type ConfigOptions<O> = {
  /** Options a config file may not set, with why (`config`: "a config file cannot name another config file"). */
  refuse?: Partial<Record<Extract<keyof O, string>, string>>;
};

/**
 * Values from a parsed config object: keys are the fields (camelCase), the flags (kebab-case) or TRL's names
 * (snake_case, their values translated); `null` means unset. Throws {@link UsageError} listing every unknown
 * key (with the closest known name), bad value and two keys that set one option differently.
 */
export function parseConfigObject<O>(
  specs: readonly OptionSpec<O>[],
  obj: unknown,
  source: string,
  o: ConfigOptions<O> = {},
): OptionLayer<O> {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new UsageError(`${source}: a config file must hold a JSON object of options`);
  }
  const t = tableOf(specs);
  const refuse = (o.refuse ?? {}) as Record<string, string>;
  const errors: string[] = [];
  const out = new Setter<O>(
    errors,
    (a, b, flag) => `${source}: "${a}" and "${b}" both set --${flag}, to different values`,
  );
  const names = [
    ...[...t.byKey.keys()].filter((k) => !Object.hasOwn(refuse, k)),
    ...[...t.keys.entries()].filter(([, e]) => e.trl).map(([k]) => k),
  ];
  for (const [key, given] of Object.entries(obj)) {
    const entry = t.keys.get(key);
    if (entry && Object.hasOwn(refuse, entry.spec.key)) {
      errors.push(`${source}: ${refuse[entry.spec.key]} ("${key}")`);
      continue;
    }
    if (!entry) {
      const guess = closest(key, names);
      errors.push(`${source}: unknown option "${key}"${guess ? ` (did you mean "${guess}"?)` : ""}`);
      continue;
    }
    const where = ` (in ${source})`;
    const r = entry.trl
      ? convertTrl(entry.spec, entry.trl, given, key, `${key} (--${entry.spec.flag})`, where)
      : convert(entry.spec, given, `--${entry.spec.flag}`, where);
    if ("error" in r) errors.push(r.error);
    else out.set({ ...entry, group: key }, key, r.value); // each key of a file is a name of its own
  }
  if (errors.length) throw new UsageError(errors);
  return { values: out.values as Partial<O>, source };
}

/**
 * Every problem with values as parsed (a layer built in code, or several merged): each is read again as
 * its option's (a `parse` option's value must still be its input). `where` says where a key came from.
 */
export function checkValues<O>(
  specs: readonly OptionSpec<O>[],
  values: Partial<O>,
  where: (key: string) => string = () => "",
): string[] {
  const errors: string[] = [];
  for (const spec of specs) {
    const v = (values as Record<string, unknown>)[spec.key];
    if (v === undefined) continue;
    const r = convert(spec, v, `--${spec.flag}`, where(spec.key));
    if ("error" in r) errors.push(r.error);
  }
  return errors;
}

/** The defaults of every option that has one. */
export function defaultsOf<O>(specs: readonly OptionSpec<O>[]): Partial<O> {
  const out: Record<string, unknown> = {};
  for (const s of specs) if (s.default !== undefined) out[s.key] = s.default;
  return out as Partial<O>;
}

/** The options a resumed run may change (`resume: "may-change"`). */
export function resumeMayChange<O>(specs: readonly OptionSpec<O>[]): ReadonlySet<string> {
  return new Set(specs.filter((s) => s.resume === "may-change").map((s) => s.key));
}

/**
 * A table with some options changed (their help, default or group, for another entry) or left out
 * (`null`), by flag. A flag that is not in the table is a mistake, thrown.
 */
export function respec<O>(
  specs: readonly OptionSpec<O>[],
  patches: Readonly<Record<string, Partial<OptionSpec<O>> | null>>,
): OptionSpec<O>[] {
  for (const f of Object.keys(patches)) {
    if (!specs.some((s) => s.flag === f)) throw new Error(`respec: no option --${f} in the table`);
  }
  return specs.flatMap((s) => {
    if (!Object.hasOwn(patches, s.flag)) return [s];
    const p = patches[s.flag];
    return p === null ? [] : [{ ...s, ...p }];
  });
}
