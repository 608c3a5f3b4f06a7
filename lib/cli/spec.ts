/**
 * What an option is: the {@link OptionSpec} every entry's table is made of (flag, kind, check, help line,
 * TRL's names, resume safety), the {@link UsageError} of a wrong command line, and the layers of values a
 * command line or a config file gives. The parser is options.ts, the help help.ts.
 * @module
 */

/** How a value is read. `json`: a JSON object, given as the flag's text or a config file's value. */
export type OptionKind = "string" | "number" | "int" | "enum" | "boolean" | "list" | "json";

/** A value converted to the option's type, or what is wrong with it (the text after the option's name). */
export type Converted = { value: unknown } | { error: string };

/**
 * One of TRL's (or transformers') names for an option, where its values differ from ours: `translate`
 * turns TRL's value into ours (`{ value: null }`: leave the option unset, as `max_steps: -1` means).
 */
export type TrlName = {
  name: string;
  /** TRL's argument is on/off (`--bf16`): as a flag it takes no value; `translate` gets true or false. */
  boolean?: boolean;
  translate?: (raw: unknown) => Converted;
};

/** How one option is parsed, checked and documented. `O` is the object the parsed values fill. */
export type OptionSpec<O> = {
  /** The field of `O` the value goes to. */
  key: Extract<keyof O, string>;
  /** The flag, without `--`. */
  flag: string;
  kind: OptionKind;
  /** The `--help` section it is listed in (sections come in the order of their first option). */
  group: string;
  help: string;
  /** Default value (undefined: unset unless given). The parser never fills it in: see {@link defaultsOf}. */
  default?: unknown;
  /** How the default reads in `--help` when it is not a plain value; "" shows none. */
  defaultText?: string;
  /** `enum`: the values allowed. */
  choices?: readonly string[];
  /** `enum`: likely mistakes and the choice meant (`gpu` → `cuda`), preferred over spelling suggestions. */
  hints?: Readonly<Record<string, string>>;
  /** `int`, `number`: the smallest value allowed. */
  min?: number;
  /** `int`, `number`: returns what else is wrong ("must be > 0") or undefined. */
  check?: (v: number) => string | undefined;
  /**
   * A reading of the option's own instead of its kind's: the flag's text (or a config file's value) to the
   * value, throwing an Error whose message names `flag` and says what is wrong.
   */
  parse?: (raw: unknown, flag: string) => unknown;
  /** A word that leaves the option unset, for an option whose default is "everything" (`--k all`). */
  unset?: string;
  /** Placeholder in `--help`. */
  arg?: string;
  /** Other flags for the option (kebab-case, without `--`). */
  aliases?: readonly string[];
  /** A `--resume`d run may change it: it says where and how a run goes, not what it computes. */
  resume?: "may-change";
  /** TRL's and transformers' names for it (snake_case); a plain string takes the option's own values. */
  trl?: readonly (string | TrlName)[];
};

/**
 * `--device cpu|cuda|auto`, as every command spells it (`gpu` and `nvidia` hint at `cuda`): its section,
 * default and help line are the command's.
 */
export function deviceOption<O extends { device?: unknown }>(
  o: { group: string; default: "cpu" | "cuda" | "auto"; help: string; resume?: "may-change" },
): OptionSpec<O> {
  return {
    key: "device" as Extract<keyof O, string>,
    flag: "device",
    kind: "enum",
    choices: ["cpu", "cuda", "auto"],
    hints: { gpu: "cuda", nvidia: "cuda" },
    ...o,
  };
}

/** A wrong command line (or config file): `errors` has one line per problem; the message joins them. */
export class UsageError extends Error {
  override name = "UsageError";
  readonly errors: string[];
  constructor(errors: string | readonly string[]) {
    const list = typeof errors === "string" ? [errors] : [...errors];
    super(list.join("\n"));
    this.errors = list;
  }
}

/** Values from one source (the command line, a config file), with the source's name for messages. */
export type OptionLayer<O> = { values: Partial<O>; source: string };

/** What {@link parseArgv} read: the values given, positionals, whether `--help` was asked, every problem. */
export type ParsedArgv<O> = OptionLayer<O> & { help: boolean; positionals: string[]; errors: string[] };
