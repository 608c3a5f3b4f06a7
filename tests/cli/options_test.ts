/**
 * lib/cli's option engine on a small table of its own: flags, `--no-`, aliases, TRL's names (both
 * spellings, translated values, conflicts), every problem listed at once with the closest known flag,
 * config objects, the generated help, the resume field and the one usage-error path.
 */
import assert from "node:assert/strict";
import {
  checkValues,
  defaultsOf,
  gather,
  helpText,
  type OptionSpec,
  parseArgv,
  parseConfigObject,
  respec,
  resumeMayChange,
  UsageError,
  usageErrorExit,
} from "../../lib/cli/mod.ts";

type Opts = {
  data?: string;
  steps?: number;
  lr?: number;
  mode?: "fast" | "slow";
  quiet?: boolean;
  full?: boolean;
  tags?: string[];
  extra?: Record<string, unknown>;
  out?: string;
};

const SPECS: readonly OptionSpec<Opts>[] = [
  { key: "data", flag: "data", kind: "string", group: "Input", arg: "file", help: "the data" },
  {
    key: "steps",
    flag: "steps",
    kind: "int",
    group: "Input",
    min: 1,
    unset: "all",
    trl: [{ name: "max_steps", translate: (raw) => ({ value: raw === -1 || raw === "-1" ? null : raw }) }],
    defaultText: "all",
    help: "steps to run",
  },
  {
    key: "lr",
    flag: "lr",
    kind: "number",
    group: "Tuning",
    default: 5e-6,
    check: (v) => (v > 0 ? undefined : "must be > 0"),
    trl: ["learning_rate"],
    help: "the learning rate",
  },
  {
    key: "mode",
    flag: "mode",
    kind: "enum",
    group: "Tuning",
    choices: ["fast", "slow"],
    hints: { quick: "fast" },
    default: "fast",
    help: "how",
  },
  {
    key: "quiet",
    flag: "quiet",
    kind: "boolean",
    group: "Run",
    default: false,
    aliases: ["silent"],
    resume: "may-change",
    help: "say less",
  },
  {
    key: "full",
    flag: "full",
    kind: "boolean",
    group: "Tuning",
    trl: [{ name: "use_peft", boolean: true, translate: (raw) => ({ value: !raw }) }],
    help: "all weights",
  },
  { key: "tags", flag: "tags", kind: "list", group: "Run", help: "labels" },
  { key: "extra", flag: "extra", kind: "json", group: "Run", arg: "json", help: "more" },
  { key: "out", flag: "out", kind: "string", group: "Run", resume: "may-change", help: "where" },
];

const parse = (...argv: string[]) => parseArgv(SPECS, argv);

Deno.test("parseArgv: values by key, only those given; inline and separate values; the last of a flag wins", () => {
  const p = parse(
    "--data",
    "d.jsonl",
    "--steps=3",
    "--lr",
    "1e-5",
    "--mode",
    "slow",
    "--tags",
    "a, b,",
    "--lr",
    "2e-5",
  );
  assert.deepEqual(p.errors, []);
  assert.deepEqual(p.values, { data: "d.jsonl", steps: 3, lr: 2e-5, mode: "slow", tags: ["a", "b"] });
  assert.equal(p.help, false);
  assert.equal(p.source, "command line");
  assert.deepEqual(parse("--extra", '{"a": 1}').values, { extra: { a: 1 } });
  assert.deepEqual(parse("--steps", "all").values, { steps: undefined }); // the word that leaves it unset
  assert.deepEqual(parse("--out=--x").values, { out: "--x" }); // an inline value may start with dashes
  assert.deepEqual(parse("--lr", "-0.5").errors, ["--lr must be > 0, got -0.5"]); // a negative number is a value
});

Deno.test("parseArgv: booleans take --x, --x=false, --x false (True, as Python writes it) and --no-x", () => {
  assert.equal(parse("--quiet").values.quiet, true);
  assert.equal(parse("--quiet=false").values.quiet, false);
  assert.equal(parse("--quiet", "False").values.quiet, false);
  assert.equal(parse("--quiet", "True").values.quiet, true);
  assert.equal(parse("--quiet", "--no-quiet").values.quiet, false);
  assert.deepEqual(parse("--no-quiet=1").errors, ["--no-quiet takes no value"]);
  assert.deepEqual(parse("--quiet=maybe").errors, ['--quiet must be true or false, got "maybe"']);
  assert.deepEqual(parse("--no-lr").errors, ["unknown option --no-lr: --lr is not an on/off flag"]);
  // an alias is the same flag
  assert.equal(parse("--silent").values.quiet, true);
  assert.equal(parse("--no-silent").values.quiet, false);
  assert.equal(parse("--quiet", "--silent=false").values.quiet, false); // one name: the last wins
});

Deno.test("parseArgv: TRL's names in snake_case and kebab-case, translated; two names that disagree are refused", () => {
  for (const flag of ["--learning_rate", "--learning-rate"]) {
    assert.equal(parse(flag, "3e-6").values.lr, 3e-6);
  }
  assert.deepEqual(parse("--max_steps", "-1").values, { steps: undefined });
  assert.equal(parse("--max-steps", "7").values.steps, 7);
  // a TRL on/off name takes no value; its translation applies (use_peft → not --full)
  assert.equal(parse("--use_peft").values.full, false);
  assert.equal(parse("--use-peft", "false").values.full, true);
  assert.equal(parse("--no-use_peft").values.full, true);
  // errors name the TRL flag as given and ours
  assert.deepEqual(parse("--learning_rate", "-1").errors, ["--learning_rate (--lr) must be > 0, got -1"]);
  // two names for one option: refused when they disagree, naming both; fine when they agree
  assert.deepEqual(parse("--lr", "1e-5", "--learning_rate", "2e-5").errors, [
    "--lr 1e-5 and --learning_rate 2e-5 both set --lr, to different values",
  ]);
  assert.deepEqual(parse("--lr", "1e-5", "--learning-rate", "0.00001").errors, []);
  assert.deepEqual(parse("--full", "--use_peft").errors, [
    "--full and --use_peft both set --full, to different values",
  ]);
  // an unset from another name does not undo a value
  assert.equal(parse("--steps", "5", "--max_steps", "-1").values.steps, 5);
  // snake and kebab spellings are one name: the last wins
  assert.equal(parse("--learning_rate", "1e-5", "--learning-rate", "2e-5").values.lr, 2e-5);
});

Deno.test("parseArgv: every problem at once, unknown flags with the closest known one", () => {
  const p = parse(
    "--dat",
    "d",
    "--lr",
    "x",
    "--mode",
    "quick",
    "--steps",
    "0",
    "--stepz",
    "3",
    "stray",
    "-x",
    "--data",
  );
  assert.deepEqual(p.errors, [
    "unknown option --dat (did you mean --data?)",
    '--lr must be a number, got "x"',
    '--mode must be one of fast, slow, got "quick" (did you mean fast?)',
    "--steps must be a whole number ≥ 1, got 0",
    "unknown option --stepz (did you mean --steps?)", // its value, 3, is not also a stray argument
    'unexpected argument "stray" (options start with --)',
    "unknown option -x",
    "--data needs a value",
  ]);
  // a snake_case typo gets the kebab-case flag
  assert.deepEqual(parse("--learning_rat", "1").errors, [
    "unknown option --learning_rat (did you mean --learning-rate?)",
  ]);
  assert.deepEqual(parse("--data", "--lr", "1").errors, ["--data needs a value, got the option --lr"]);
  assert.deepEqual(parse("--steps", "2.5").errors, ["--steps must be a whole number ≥ 1, got 2.5"]);
  assert.deepEqual(parse("--steps", "0x10").errors, ['--steps must be a whole number ≥ 1, got "0x10"']);
  assert.deepEqual(parse("--extra", "[1]").errors, ['--extra must be a JSON object, got "[1]"']);
  assert.deepEqual(parse("--tags", " , ").errors, ['--tags must list at least one value, got " , "']);
  assert.deepEqual(parse("--data", "").errors, ['--data must be a non-empty string, got ""']);
  // --help wins over the errors, which are still listed
  const h = parse("--bogus", "-h");
  assert.equal(h.help, true);
  assert.equal(h.errors.length, 1);
  // positionals: returned when the entry takes them; `--` ends the options
  assert.deepEqual(parseArgv(SPECS, ["a", "--quiet", "--", "--b"], { positionals: true }).positionals, [
    "a",
    "--b",
  ]);
  assert.deepEqual(parseArgv(SPECS, ["x"], { positionalHint: "(pass it with --data)" }).errors, [
    'unexpected argument "x" (pass it with --data)',
  ]);
});

Deno.test("parseConfigObject: fields, flags and TRL's names; null unsets; every problem with the file", () => {
  assert.deepEqual(
    parseConfigObject(SPECS, {
      data: "d",
      "max_steps": -1,
      learning_rate: "3e-6",
      use_peft: false,
      tags: ["a"],
    }, "c.json")
      .values,
    { data: "d", steps: undefined, lr: 3e-6, full: true, tags: ["a"] },
  );
  assert.throws(
    () =>
      parseConfigObject(SPECS, { lr: 1, learning_rate: 2, mod: "fast", steps: 0, out: "x" }, "c.json", {
        refuse: { out: "a config file cannot say where" },
      }),
    (e: Error) =>
      e instanceof UsageError && JSON.stringify(e.errors) === JSON.stringify([
          'c.json: "lr" and "learning_rate" both set --lr, to different values',
          'c.json: unknown option "mod" (did you mean "mode"?)',
          "--steps must be a whole number ≥ 1, got 0 (in c.json)",
          'c.json: a config file cannot say where ("out")',
        ]),
  );
  assert.throws(() => parseConfigObject(SPECS, [1], "c.json"), /must hold a JSON object/);
  // values as parsed can be checked again (a layer built in code)
  assert.deepEqual(checkValues(SPECS, { lr: -1, mode: "fast" }, () => " (in code)"), [
    "--lr must be > 0, got -1 (in code)",
  ]);
});

Deno.test("the table: defaults, what a resumed run may change, patches for another entry, clashes refused", () => {
  assert.deepEqual(defaultsOf(SPECS), { lr: 5e-6, mode: "fast", quiet: false });
  assert.deepEqual([...resumeMayChange(SPECS)].sort(), ["out", "quiet"]);
  const other = respec(SPECS, { lr: { default: 1e-3, group: "Run" }, tags: null });
  assert.equal(other.find((s) => s.flag === "lr")!.default, 1e-3);
  assert.equal(other.some((s) => s.flag === "tags"), false);
  assert.equal(SPECS.find((s) => s.flag === "lr")!.default, 5e-6, "the table itself is unchanged");
  assert.throws(() => respec(SPECS, { nope: null }), /no option --nope/);
  const clash: OptionSpec<Opts>[] = [
    { key: "data", flag: "data", kind: "string", group: "G", help: "x" },
    { key: "out", flag: "out", kind: "string", group: "G", aliases: ["data"], help: "y" },
  ];
  assert.throws(() => parseArgv(clash, []), /flag "data" is both --data's and --out's/);
});

Deno.test("helpText: usage, sections in order of first use, placeholders, other names, defaults, 100 columns", () => {
  const help = helpText(SPECS, {
    usage: "deno task demo [options]",
    intro: "Does things.",
    outro: "The end.",
  });
  const lines = help.split("\n");
  assert.equal(lines[0], "Usage: deno task demo [options]");
  assert.equal(lines[2], "Does things.");
  assert.deepEqual(lines.filter((l) => /^\S.*:$/.test(l)), ["Input:", "Tuning:", "Run:"]);
  assert.ok(lines.every((l) => l.length <= 100), "wrapped to 100 columns");
  const row = (flag: string) => lines.find((l) => l.startsWith(`  --${flag}`))!;
  assert.match(row("data"), /^ {2}--data <file> +the data$/);
  assert.match(row("steps"), /--steps <int> +steps to run \(TRL: max_steps\) \(default: all\)/);
  assert.match(row("lr"), /--lr <number> +the learning rate \(TRL: learning_rate\) \(default: 5e-6\)/);
  assert.match(row("mode"), /--mode fast\|slow +how \(default: fast\)/);
  assert.match(row("quiet"), /--quiet +say less \(alias --silent\) \(default: false\)/);
  assert.match(row("extra"), /--extra <json> +more$/);
  // -h, --help closes the last section; the outro follows
  const helpAt = lines.findIndex((l) => l.startsWith("  -h, --help"));
  assert.ok(helpAt > lines.indexOf("Run:"));
  assert.equal(lines.at(-2), "The end.");
  // several usages
  assert.match(helpText(SPECS, { usage: ["a", "b"] }), /^Usage:\n {2}a\n {2}b\n/);
});

Deno.test("the usage-error path: error lines, where the options are, exit status 2; gather collects", () => {
  const out: string[] = [];
  const code = usageErrorExit(new UsageError(["one", "two"]), "demo", (l) => out.push(l));
  assert.equal(code, 2);
  assert.deepEqual(out, ["error: one", "error: two", "(deno task demo --help for the options)"]);
  const errors: string[] = ["first"];
  assert.equal(
    gather(errors, () => {
      throw new UsageError(["second", "third"]);
    }),
    undefined,
  );
  assert.equal(gather(errors, () => 7), 7);
  assert.deepEqual(errors, ["first", "second", "third"]);
  assert.throws(() =>
    gather(errors, () => {
      throw new RangeError("not a usage error");
    }), RangeError);
});

/** The five entries, as their tasks run them. */
const ENTRIES = ["train", "sample", "score", "eval", "serve"] as const;

async function runEntry(name: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(`../../${name}/main.ts`, import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("every entry: an unknown flag is the same usage error, exit 2; --help prints its help, exit 0", async () => {
  const runs = await Promise.all(
    ENTRIES.flatMap((name) => [runEntry(name, ["--bogus"]), runEntry(name, ["--help"])]),
  );
  ENTRIES.forEach((name, i) => {
    const [bad, help] = [runs[2 * i], runs[2 * i + 1]];
    assert.equal(bad.code, 2, `${name} --bogus: ${bad.err}`);
    assert.equal(bad.out, "", `${name} --bogus prints nothing on stdout`);
    const lines = bad.err.trimEnd().split("\n");
    assert.ok(lines.includes("error: unknown option --bogus"), `${name}: ${bad.err}`);
    assert.ok(lines.slice(0, -1).every((l) => l.startsWith("error: ")), `${name}: ${bad.err}`);
    assert.equal(lines.at(-1), `(deno task ${name} --help for the options)`);
    assert.equal(help.code, 0, `${name} --help: ${help.err}`);
    assert.match(help.out, /^Usage:/, name);
    assert.match(help.out, /\n {2}-h, --help {2,}show this help\n/, name);
  });
});
