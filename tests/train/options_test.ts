import assert from "node:assert/strict";
import { join } from "node:path";
import {
  closest,
  defaultTrainOptions,
  editDistance,
  formatDefault,
  givenOptions,
  optionNotices,
  OptionsError,
  parseConfigObject,
  parseTrainArgs,
  parseTrainOptions,
  resolveTrainOptions,
  RESUME_MAY_CHANGE,
  stepIntervals,
  trainHelp,
} from "../../lib/train/options.ts";
import { OPTION_SPECS, type TrainOptions } from "../../lib/train/option_specs.ts";
import { lossByName, softLabels } from "../../lib/losses/mod.ts";

const base = ["--model", "models/sft", "--data", "data/uf.jsonl"];

function parse(...argv: string[]): TrainOptions {
  const r = parseTrainOptions([...base, ...argv]);
  assert.ok(!("help" in r), "unexpected help");
  return r as TrainOptions;
}

/** The OptionsError lines of a failing parse. */
function errorsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof OptionsError, `expected OptionsError, got ${e}`);
    return e.errors;
  }
  assert.fail("expected an OptionsError");
}

function failsWith(argv: string[], message: string | RegExp): void {
  const errors = errorsOf(() => parseTrainOptions([...base, ...argv]));
  const ok = errors.some((e) => (typeof message === "string" ? e === message : message.test(e)));
  assert.ok(ok, `no error matching ${message} in:\n${errors.join("\n")}`);
}

async function withConfig(config: unknown, fn: (path: string) => void): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "config.json");
    await Deno.writeTextFile(path, typeof config === "string" ? config : JSON.stringify(config));
    fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("defaults follow the brief and the paper's recipe", () => {
  const o = parse();
  assert.deepEqual(o, {
    model: "models/sft",
    data: "data/uf.jsonl",
    evalFraction: 0.05,
    name: "nca",
    loss: "nca",
    beta: 0.01,
    alpha: 0.01,
    kMode: "first",
    pairStrategy: "best-vs-random",
    lr: 5e-6,
    schedule: "cosine",
    warmupRatio: 0.1,
    epochs: 1,
    batchSize: 8,
    gradAccum: 1,
    zero: 0,
    maxLength: 1024,
    maxPromptLength: 512,
    loraR: 16,
    loraAlpha: 16,
    loraDropout: 0.05,
    full: false,
    seed: 42,
    device: "auto",
    precision: "fp32",
    keepCheckpoints: 2,
    allowChangedInputs: false,
    maxGradNorm: 1,
    weightDecay: 0,
    adamBeta1: 0.9,
    adamBeta2: 0.999,
    adamEpsilon: 1e-8,
    loggingSteps: 1,
    reportTo: "jsonl",
    skipBadRows: false,
    demo: false,
    compare: false,
    quiet: false,
  });
  for (
    const key of [
      "k",
      "warmupSteps",
      "maxSteps",
      "evalEvery",
      "saveEvery",
      "resume",
      "loraTargets",
      "evalData",
      "out",
      "stepsPerRun",
      "reference",
      "saveDtype",
    ]
  ) {
    assert.equal((o as Record<string, unknown>)[key], undefined, key);
  }
  assert.equal(defaultTrainOptions().name, "nca");
});

Deno.test("every flag parses to its camelCase field", () => {
  const o = parse(
    "--eval-data=e.jsonl",
    "--eval-fraction",
    "0",
    "--out",
    "/tmp/runs",
    "--name",
    "mine",
    "--loss",
    "infonca",
    "--beta",
    "0.1",
    "--alpha",
    "1e-4",
    "--k",
    "3",
    "--k-mode",
    "random",
    "--pair-strategy",
    "all-pairs",
    "--lr",
    "1e-5",
    "--schedule",
    "linear",
    "--warmup-ratio",
    "0",
    "--warmup-steps",
    "7",
    "--epochs",
    "2.5",
    "--max-steps",
    "100",
    "--batch-size",
    "4",
    "--grad-accum",
    "8",
    "--zero",
    "1",
    "--nproc",
    "2",
    "--max-length",
    "512",
    "--max-prompt-length",
    "256",
    "--chat-template-kwargs",
    '{"enable_thinking": false}',
    "--lora-r",
    "8",
    "--lora-alpha",
    "32",
    "--lora-dropout",
    "0",
    "--lora-targets",
    "q, v ,o",
    "--full",
    "--seed",
    "0",
    "--device",
    "cpu",
    "--precision",
    "fp16",
    "--gradient-checkpointing",
    "--steps-per-run",
    "4",
    "--eval-every",
    "50",
    "--save-every",
    "25",
    "--eval-strategy",
    "steps",
    "--save-strategy",
    "steps",
    "--logging-strategy",
    "steps",
    "--keep-checkpoints",
    "3",
    "--resume",
    "runs/x",
    "--allow-changed-inputs",
    "--max-grad-norm",
    "0",
    "--weight-decay",
    "0.01",
    "--adam-beta1",
    "0.8",
    "--adam-beta2",
    "0.95",
    "--adam-epsilon",
    "1e-6",
    "--reference",
    "models/sft",
    "--save-dtype",
    "bfloat16",
    "--logging-steps",
    "10",
    "--report-to",
    "tensorboard",
    "--skip-bad-rows",
    "--demo",
    "--compare",
    "--quiet",
  );
  assert.deepEqual(o, {
    model: "models/sft",
    data: "data/uf.jsonl",
    evalData: "e.jsonl",
    evalFraction: 0,
    out: "/tmp/runs",
    name: "mine",
    loss: "infonca",
    beta: 0.1,
    alpha: 1e-4,
    k: 3,
    kMode: "random",
    pairStrategy: "all-pairs",
    lr: 1e-5,
    schedule: "linear",
    warmupRatio: 0,
    warmupSteps: 7,
    epochs: 2.5,
    maxSteps: 100,
    batchSize: 4,
    gradAccum: 8,
    zero: 1,
    nproc: 2,
    maxLength: 512,
    maxPromptLength: 256,
    chatTemplateKwargs: { enable_thinking: false },
    loraR: 8,
    loraAlpha: 32,
    loraDropout: 0,
    loraTargets: ["q", "v", "o"],
    full: true,
    seed: 0,
    device: "cpu",
    precision: "fp16",
    gradientCheckpointing: true,
    stepsPerRun: 4,
    evalEvery: 50,
    saveEvery: 25,
    evalStrategy: "steps",
    saveStrategy: "steps",
    loggingStrategy: "steps",
    keepCheckpoints: 3,
    resume: "runs/x",
    allowChangedInputs: true,
    maxGradNorm: 0,
    weightDecay: 0.01,
    adamBeta1: 0.8,
    adamBeta2: 0.95,
    adamEpsilon: 1e-6,
    reference: "models/sft",
    saveDtype: "bfloat16",
    loggingSteps: 10,
    reportTo: "tensorboard",
    skipBadRows: true,
    demo: true,
    compare: true,
    quiet: true,
  });
  // The test above covers every option (but --config and --help, tested below).
  const covered = new Set(Object.keys(o));
  for (const s of OPTION_SPECS) if (s.key !== "config") assert.ok(covered.has(s.key), s.flag);
});

Deno.test("the run name defaults to the loss; --k all means every response; --no-<flag> turns a boolean off", () => {
  assert.equal(parse("--loss", "dpo").name, "dpo");
  assert.equal(parse("--k", "4", "--k", "all").k, undefined);
  assert.equal(parse("--quiet", "--no-quiet").quiet, false);
  assert.equal(parse("--full=true").full, true);
  assert.equal(parse("--full=false").full, false);
  assert.equal(parse("--beta", "0.5", "--beta", "0.2").beta, 0.2); // last wins
});

Deno.test("--demo and --resume make --model and --data optional", () => {
  const demo = parseTrainOptions(["--demo"]) as TrainOptions;
  assert.equal(demo.demo, true);
  assert.equal(demo.model, undefined);
  const resume = parseTrainOptions(["--resume", "runs/nca-1"]) as TrainOptions;
  assert.equal(resume.resume, "runs/nca-1");
  assert.deepEqual(errorsOf(() => parseTrainOptions([])), [
    "--model is required (a Hugging Face model folder), unless --demo or --resume is given",
    "--data is required (a JSONL or Parquet file), unless --demo or --resume is given",
  ]);
});

Deno.test("config file: merged under the flags (flags win), camelCase or kebab-case keys", async () => {
  await withConfig(
    {
      model: "cfg/model",
      data: "cfg.jsonl",
      loss: "dpo",
      beta: 0.1,
      "max-length": 2048,
      loraTargets: ["q", "v"],
    },
    (path) => {
      const o = parseTrainOptions([
        "--config",
        path,
        "--beta",
        "0.2",
        "--data",
        "flag.jsonl",
      ]) as TrainOptions;
      assert.equal(o.config, path);
      assert.equal(o.model, "cfg/model"); // from config
      assert.equal(o.data, "flag.jsonl"); // flag wins
      assert.equal(o.beta, 0.2); // flag wins
      assert.equal(o.loss, "dpo");
      assert.equal(o.name, "dpo");
      assert.equal(o.maxLength, 2048);
      assert.deepEqual(o.loraTargets, ["q", "v"]);
      assert.equal(o.lr, 5e-6); // default where neither says
    },
  );
});

Deno.test("a resolved options object round-trips through a config file (a run's config.json)", async () => {
  const o = parse("--loss", "ipo", "--k", "2", "--lora-targets", "q,k");
  await withConfig(o, (path) => {
    const { config, ...again } = parseTrainOptions(["--config", path]) as TrainOptions;
    assert.equal(config, path);
    assert.deepEqual(again, o);
  });
});

Deno.test("config null means unset; numeric strings are accepted", () => {
  const layer = parseConfigObject({ maxSteps: null, lr: "3e-6", full: "true" }, "c.json");
  assert.deepEqual(layer.values, { maxSteps: undefined, lr: 3e-6, full: true });
});

Deno.test("config errors name the key, the value and the file", async () => {
  assert.deepEqual(
    errorsOf(() => parseConfigObject({ bta: 1, lr: -1, loss: "npa" }, "c.json")),
    [
      'c.json: unknown option "bta" (did you mean "beta"?)',
      "--lr must be > 0, got -1 (in c.json)",
      '--loss must be one of sft, infonca, nca, dpo, nca_pair, ipo, got "npa" (did you mean nca?)',
    ].map((e, i) => (i === 2 ? e + " (in c.json)" : e)),
  );
  assert.deepEqual(errorsOf(() => parseConfigObject([1], "c.json")), [
    "c.json: a config file must hold a JSON object of options",
  ]);
  assert.match(errorsOf(() => parseConfigObject({ config: "x" }, "c.json"))[0], /cannot name another config/);
  assert.match(
    errorsOf(() => parseConfigObject({ full: 1 }, "c.json"))[0],
    /--full must be true or false, got 1/,
  );
  assert.match(
    errorsOf(() => parseConfigObject({ loraTargets: [1] }, "c.json"))[0],
    /--lora-targets must be a comma-separated list/,
  );
  await withConfig("{not json", (path) => {
    assert.match(errorsOf(() => parseTrainOptions(["--config", path]))[0], /is not valid JSON/);
  });
  assert.match(errorsOf(() => parseTrainOptions(["--config", "/nonexistent/c.json"]))[0], /cannot read/);
  // A bad value from a config file is reported with the file, after merging.
  await withConfig({ maxPromptLength: 4096 }, (path) => {
    assert.deepEqual(errorsOf(() => parseTrainOptions([...base, "--config", path])), [
      `--max-prompt-length must be < --max-length (1024), got 4096 (in ${path})`,
    ]);
  });
});

Deno.test("unknown flags are errors that suggest the closest known flag", () => {
  failsWith(["--bta", "1"], "unknown option --bta (did you mean --beta?)");
  failsWith(["--learning-rat", "1"], "unknown option --learning-rat (did you mean --learning-rate?)");
  failsWith(["--save_step", "1"], "unknown option --save_step (did you mean --save-steps?)");
  failsWith(["--max-step", "10"], "unknown option --max-step (did you mean --max-steps?)");
  failsWith(["--lora_rank", "8"], "unknown option --lora_rank (did you mean --lora-r?)");
  failsWith(["--no-beta"], "unknown option --no-beta: --beta is not an on/off flag");
  failsWith(["stray"], /unexpected argument "stray"/);
  // Every problem is reported at once.
  assert.equal(errorsOf(() => parseTrainOptions([...base, "--bta", "1", "--lr", "x"])).length, 2);
});

Deno.test("every validation error names the flag and the bad value", () => {
  const cases: [string[], string][] = [
    [["--beta", "-1"], "--beta must be > 0, got -1"],
    [["--beta", "0"], "--beta must be > 0, got 0"],
    [["--beta", "abc"], '--beta must be a number, got "abc"'],
    [["--alpha", "-0.5"], "--alpha must be ≥ 0, got -0.5"],
    [["--adam-beta1", "1"], "--adam-beta1 must be in [0, 1), got 1"],
    [["--adam-beta2", "-0.1"], "--adam-beta2 must be in [0, 1), got -0.1"],
    [["--adam-epsilon", "0"], "--adam-epsilon must be > 0, got 0"],
    [
      ["--save-dtype", "bf16"],
      '--save-dtype must be one of float32, float16, bfloat16, got "bf16" (did you mean bfloat16?)',
    ],
    [["--report-to", "wandb"], '--report-to must be one of jsonl, tensorboard, none, got "wandb"'],
    [["--logging-steps", "0"], "--logging-steps must be a whole number ≥ 1, got 0"],
    [
      ["--loss", "sft", "--reference", "m"],
      "--reference is for the alignment losses; --loss sft has no reference model",
    ],
    [["--lr", "-5e-6"], "--lr must be > 0, got -5e-6"],
    [["--eval-fraction", "1"], "--eval-fraction must be in [0, 1), got 1"],
    [["--eval-fraction", "-0.1"], "--eval-fraction must be in [0, 1), got -0.1"],
    [["--k", "1"], "--k must be a whole number ≥ 2, got 1"],
    [["--k", "2.5"], "--k must be a whole number ≥ 2, got 2.5"],
    [["--k-mode", "best"], '--k-mode must be one of first, random, got "best"'],
    [
      ["--pair-strategy", "best-vs-wrst"],
      '--pair-strategy must be one of best-vs-random, best-vs-worst, all-pairs, got "best-vs-wrst" (did you mean best-vs-worst?)',
    ],
    [
      ["--loss", "simpo"],
      `--loss must be one of sft, infonca, nca, dpo, nca_pair, ipo, got "simpo" (did you mean ipo?)`,
    ],
    [["--loss", "kahneman"], `--loss must be one of sft, infonca, nca, dpo, nca_pair, ipo, got "kahneman"`],
    [
      ["--schedule", "cosin"],
      '--schedule must be one of cosine, linear, constant, got "cosin" (did you mean cosine?)',
    ],
    [["--warmup-ratio", "1.5"], "--warmup-ratio must be in [0, 1], got 1.5"],
    [["--warmup-steps", "-1"], "--warmup-steps must be a whole number ≥ 0, got -1"],
    [["--epochs", "0"], "--epochs must be > 0, got 0"],
    [["--max-steps", "0"], "--max-steps must be a whole number ≥ 1, got 0"],
    [["--batch-size", "0"], "--batch-size must be a whole number ≥ 1, got 0"],
    [["--batch-size", "2.5"], "--batch-size must be a whole number ≥ 1, got 2.5"],
    [["--grad-accum", "0"], "--grad-accum must be a whole number ≥ 1, got 0"],
    [["--max-length", "1"], "--max-length must be a whole number ≥ 2, got 1"],
    [["--max-prompt-length", "0"], "--max-prompt-length must be a whole number ≥ 1, got 0"],
    [["--max-prompt-length", "1024"], "--max-prompt-length must be < --max-length (1024), got 1024"],
    [["--lora-r", "0"], "--lora-r must be a whole number ≥ 1, got 0"],
    [["--lora-alpha", "0"], "--lora-alpha must be > 0, got 0"],
    [["--lora-dropout", "1"], "--lora-dropout must be in [0, 1), got 1"],
    [["--lora-targets", " , "], '--lora-targets must list at least one value, got " , "'],
    [["--seed", "-1"], "--seed must be a whole number ≥ 0, got -1"],
    [["--seed", "4294967296"], "--seed must be at most 4294967295, got 4294967296"],
    [["--seed", "1.5"], "--seed must be a whole number ≥ 0, got 1.5"],
    [["--device", "gpu"], '--device must be one of cpu, cuda, auto, got "gpu" (did you mean cuda?)'],
    [["--precision", "bf16"], '--precision must be one of fp32, fp16, got "bf16" (did you mean fp16?)'],
    [["--steps-per-run", "0"], "--steps-per-run must be a whole number ≥ 1, got 0"],
    [["--eval-every", "0"], "--eval-every must be a whole number ≥ 1, got 0"],
    [["--save-every", "-5"], "--save-every must be a whole number ≥ 1, got -5"],
    [["--keep-checkpoints", "0"], "--keep-checkpoints must be a whole number ≥ 1, got 0"],
    [["--max-grad-norm", "-1"], "--max-grad-norm must be ≥ 0, got -1"],
    [["--weight-decay", "-0.1"], "--weight-decay must be ≥ 0, got -0.1"],
    [["--full=maybe"], '--full must be true or false, got "maybe"'],
    [["--no-full=1"], "--no-full takes no value"],
    [["--name", ""], '--name must be a non-empty string, got ""'],
    [["--beta"], "--beta needs a value"],
    [["--beta", "--lr", "1"], "--beta needs a value, got the option --lr"],
  ];
  for (const [argv, message] of cases) failsWith(argv, message);
  assert.equal(parse("--out=--x").out, "--x"); // an inline value may start with dashes
  assert.equal(parse("--warmup-steps", "-0").warmupSteps, 0); // a negative-looking number is a value
});

Deno.test("--help (or -h) returns the help text even with other errors", () => {
  for (const argv of [["--help"], ["-h"], ["--bogus", "--help"], ["--beta", "-1", "-h"]]) {
    const r = parseTrainOptions(argv);
    assert.ok("help" in r, argv.join(" "));
    assert.equal(r.help, trainHelp());
  }
});

Deno.test("the help text lists every flag with its default", () => {
  const help = trainHelp();
  for (const s of OPTION_SPECS) {
    const line = help.split("\n").findIndex((l) => l.startsWith(`  --${s.flag} `) || l === `  --${s.flag}`);
    assert.ok(line >= 0, `--${s.flag} missing from help`);
    // The description (ending in "(default: …)") follows, wrapped onto indented lines.
    const lines = help.split("\n");
    let end = line + 1;
    while (end < lines.length && lines[end].startsWith(" ".repeat(10))) end++;
    const text = lines.slice(line, end).join(" ");
    assert.ok(
      lines.slice(line, end).every((l) => l.length <= 100),
      `--${s.flag}: help line over 100 columns`,
    );
    const shown = /\(default: ([^)]*)\)/.exec(text)?.[1];
    assert.ok(shown !== undefined, `--${s.flag}: no default in ${text}`);
    if (s.defaultText !== undefined) assert.equal(shown, s.defaultText);
    else if (typeof s.default === "number") assert.equal(Number(shown), s.default, s.flag);
    else assert.equal(shown, String(s.default));
  }
  assert.ok(
    help.includes("(default: 0.01)") && help.includes("(default: 5e-6)") && help.includes("(default: nca)"),
  );
  assert.ok(help.includes("sft|infonca|nca|dpo|nca_pair|ipo"));
  assert.ok(help.includes("-h, --help"));
});

Deno.test("parseTrainArgs gives only what was on the command line (for merging over a saved config)", () => {
  const { layer, help } = parseTrainArgs(["--beta", "0.2", "--quiet"]);
  assert.equal(help, false);
  assert.deepEqual(layer, { values: { beta: 0.2, quiet: true }, source: "command line" });
  const saved = parse("--loss", "dpo", "--beta", "0.1");
  const merged = resolveTrainOptions({ values: saved, source: "runs/x/config.json" }, layer);
  assert.equal(merged.beta, 0.2);
  assert.equal(merged.loss, "dpo");
  assert.equal(merged.quiet, true);
});

Deno.test("suggestions use edit distance", () => {
  assert.equal(editDistance("kitten", "sitting"), 3);
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(closest("bta", ["beta", "lr"]), "beta");
  assert.equal(closest("zzzzzz", ["beta", "lr"]), undefined);
});

Deno.test("defaults read naturally in --help", () => {
  const spec = (flag: string) => OPTION_SPECS.find((s) => s.flag === flag)!;
  assert.equal(formatDefault(spec("lr")), "5e-6");
  assert.equal(formatDefault(spec("beta")), "0.01");
  assert.equal(formatDefault(spec("max-grad-norm")), "1");
  assert.equal(formatDefault(spec("k")), "all");
  assert.equal(formatDefault(spec("full")), "false");
});

Deno.test("TRL's argument names in a config file map to our options", () => {
  const trl = {
    model_name_or_path: "models/zephyr-sft",
    dataset_name: "data/uf.parquet",
    output_dir: "runs/dpo-trl",
    run_name: "dpo-trl",
    learning_rate: 5e-7,
    per_device_train_batch_size: 2,
    gradient_accumulation_steps: 16,
    num_train_epochs: 3,
    max_steps: -1,
    max_length: 1024,
    max_prompt_length: 512,
    lr_scheduler_type: "linear",
    logging_steps: 10,
    save_steps: 100,
    eval_steps: 50,
    save_total_limit: 3,
    warmup_ratio: 0.05,
    warmup_steps: 0,
    adam_beta1: 0.85,
    adam_beta2: 0.98,
    adam_epsilon: 1e-6,
    weight_decay: 0.01,
    max_grad_norm: 10,
    seed: 7,
    beta: 0.1,
    loss_type: "sigmoid",
    bf16: true,
    report_to: ["tensorboard"],
    gradient_checkpointing: true,
    use_peft: true,
    lora_r: 64,
    lora_alpha: 128,
    lora_dropout: 0.1,
    lora_target_modules: ["q_proj", "v_proj"],
  };
  assert.deepEqual(parseConfigObject(trl, "trl.json").values, {
    model: "models/zephyr-sft",
    data: "data/uf.parquet",
    out: "runs/dpo-trl",
    name: "dpo-trl",
    lr: 5e-7,
    batchSize: 2,
    gradAccum: 16,
    epochs: 3,
    maxSteps: undefined, // TRL's -1: from the epochs
    maxLength: 1024,
    maxPromptLength: 512,
    schedule: "linear",
    loggingSteps: 10,
    saveEvery: 100,
    evalEvery: 50,
    keepCheckpoints: 3,
    warmupRatio: 0.05,
    warmupSteps: undefined, // TRL's 0: from the ratio
    adamBeta1: 0.85,
    adamBeta2: 0.98,
    adamEpsilon: 1e-6,
    weightDecay: 0.01,
    maxGradNorm: 10,
    seed: 7,
    beta: 0.1,
    loss: "dpo",
    precision: "fp32", // bf16: computed in fp32, the weights stay bf16 in the files
    reportTo: "tensorboard",
    gradientCheckpointing: true,
    full: false,
    loraR: 64,
    loraAlpha: 128,
    loraDropout: 0.1,
    loraTargets: ["q_proj", "v_proj"],
  });
  // the same keys a run's config.json would hold work too, and mix with TRL's
  const mixed = parseConfigObject({ lr: 1e-6, per_device_train_batch_size: 4, "grad-accum": 2 }, "m.json");
  assert.deepEqual(mixed.values, { lr: 1e-6, batchSize: 4, gradAccum: 2 });
});

Deno.test("TRL values translate where TRL's convention differs, and the rest is refused with what to use", () => {
  const v = (o: Record<string, unknown>) => parseConfigObject(o, "c.json").values;
  assert.equal(v({ loss_type: "ipo" }).loss, "ipo");
  assert.equal(v({ loss_type: ["sigmoid"] }).loss, "dpo");
  assert.equal(v({ loss_type: "nca_pair" }).loss, "nca_pair");
  assert.equal(v({ fp16: true }).precision, "fp16");
  assert.equal(v({ fp16: false, bf16: false }).precision, undefined);
  assert.equal(v({ report_to: "none" }).reportTo, "none");
  assert.equal(v({ report_to: [] }).reportTo, "none");
  assert.equal(v({ report_to: "all" }).reportTo, "tensorboard");
  assert.equal(v({ use_peft: false }).full, true);
  assert.equal(v({ lora_target_modules: "all-linear" }).loraTargets, undefined);
  assert.deepEqual(v({ lora_target_modules: "q_proj,k_proj" }).loraTargets, ["q_proj", "k_proj"]);
  assert.equal(v({ lr_scheduler_type: "constant_with_warmup" }).schedule, "constant");
  assert.equal(v({ max_steps: 200, warmup_steps: 10 }).maxSteps, 200);
  assert.equal(v({ warmup_steps: 10 }).warmupSteps, 10);
  assert.deepEqual(errorsOf(() => v({ loss_type: "hinge" })), [
    'loss_type "hinge" has no counterpart here: TRL\'s "sigmoid" is --loss dpo, "ipo" is --loss ipo, ' +
    '"nca_pair" is --loss nca_pair; InfoNCA and NCA on reward data are --loss infonca|nca (in c.json)',
  ]);
  assert.match(errorsOf(() => v({ report_to: ["wandb"] }))[0], /^report_to \["wandb"\]: only "tensorboard"/);
  assert.match(errorsOf(() => v({ lr_scheduler_type: "cosine_with_restarts" }))[0], /not supported/);
  // bad values name TRL's key and the flag it stands for
  assert.deepEqual(errorsOf(() => v({ learning_rate: -1 })), [
    "learning_rate (--lr) must be > 0, got -1 (in c.json)",
  ]);
  assert.deepEqual(errorsOf(() => v({ bf16: true, fp16: true })), [
    'c.json: "bf16" and "fp16" both set --precision, to different values',
  ]);
  assert.deepEqual(errorsOf(() => v({ lr: 1e-6, learning_rate: 2e-6 })), [
    'c.json: "lr" and "learning_rate" both set --lr, to different values',
  ]);
  assert.equal(v({ lr: 1e-6, learning_rate: 1e-6 }).lr, 1e-6); // the same value twice is fine
  // unknown keys: the closest name, ours or TRL's, and the file
  assert.deepEqual(errorsOf(() => v({ learning_rat: 1, per_device_batch_size: 2, optim: "adamw" })), [
    'c.json: unknown option "learning_rat" (did you mean "learning_rate"?)',
    'c.json: unknown option "per_device_batch_size" (did you mean "per_device_train_batch_size"?)',
    'c.json: unknown option "optim"',
  ]);
});

Deno.test("a TRL config file runs through parseTrainOptions, flags over it", async () => {
  await withConfig(
    {
      model_name_or_path: "m",
      dataset_name: "d.jsonl",
      loss_type: "sigmoid",
      learning_rate: 1e-6,
      bf16: true,
    },
    (path) => {
      const o = parseTrainOptions(["--config", path, "--learning-rate", "2e-6"]) as TrainOptions;
      assert.equal(o.model, "m");
      assert.equal(o.data, "d.jsonl");
      assert.equal(o.loss, "dpo");
      assert.equal(o.name, "dpo");
      assert.equal(o.lr, 2e-6);
      assert.equal(o.precision, "fp32");
    },
  );
});

Deno.test("TRL's spellings work as flags, and --help names them", () => {
  const o = parse(
    "--learning-rate",
    "1e-6",
    "--per-device-train-batch-size",
    "2",
    "--gradient-accumulation-steps",
    "4",
    "--num-train-epochs",
    "3",
    "--save-steps",
    "100",
    "--eval-steps",
    "50",
    "--logging-steps",
    "10",
    "--output-dir",
    "runs/x",
    "--save-total-limit",
    "5",
    "--run-name",
    "r",
  );
  assert.deepEqual(
    [o.lr, o.batchSize, o.gradAccum, o.epochs, o.saveEvery, o.evalEvery, o.loggingSteps, o.out],
    [1e-6, 2, 4, 3, 100, 50, 10, "runs/x"],
  );
  assert.equal(o.keepCheckpoints, 5);
  assert.equal(o.name, "r");
  const help = trainHelp();
  // each option's line names TRL's names for it
  const entry = (flag: string) => {
    const lines = help.split("\n");
    const at = lines.findIndex((l) => l.startsWith(`  --${flag} `));
    let end = at + 1;
    while (end < lines.length && lines[end].startsWith(" ".repeat(10))) end++;
    return lines.slice(at, end).join(" ");
  };
  for (
    const [flag, trl] of [
      ["lr", "learning_rate"],
      ["batch-size", "per_device_train_batch_size"],
      ["grad-accum", "gradient_accumulation_steps"],
      ["epochs", "num_train_epochs"],
      ["save-every", "save_steps"],
      ["eval-every", "eval_steps"],
      ["out", "output_dir"],
      ["precision", "bf16, fp16"],
    ]
  ) {
    assert.match(entry(flag), new RegExp(`\\(TRL: ${trl}\\)`), flag);
  }
  for (
    const flag of ["--weight-decay", "--adam-beta1", "--adam-beta2", "--adam-epsilon", "--logging-steps"]
  ) {
    assert.ok(help.includes(`\n  ${flag} `), flag);
  }
  assert.ok(help.includes("TRL's names"));
});

Deno.test("--alpha 0 is accepted: the soft labels put all weight on the best responses, ties shared", () => {
  const o = parse("--alpha", "0", "--beta", "1");
  assert.equal(o.alpha, 0);
  assert.deepEqual(softLabels([[3, 1, 3, 0]], o.alpha), [[0.5, 0, 0.5, 0]]);
  // NCA per prompt: −Σ p_i log σ(z_i) − (1/K) Σ log σ(−z_i), z = β·(log π − log μ) = [1, 0, −1, 2]
  const x = { policy: [[-1, -2, -4, -1]], reference: [[-2, -2, -3, -3]], rewards: [[3, 1, 3, 0]] };
  const logSig = (t: number) => -Math.log1p(Math.exp(-t));
  const z = [1, 0, -1, 2];
  const want = -0.5 * logSig(1) - 0.5 * logSig(-1) - z.reduce((a, t) => a + logSig(-t), 0) / 4;
  const got = lossByName.nca(x, { beta: o.beta, alpha: o.alpha }).loss;
  assert.ok(Math.abs(got - want) < 1e-12, `${got} vs ${want}`);
  // and it is the limit α → 0
  const near = lossByName.nca(x, { beta: o.beta, alpha: 1e-9 }).loss;
  assert.ok(Math.abs(near - want) < 1e-12, `${near} vs ${want}`);
});

Deno.test("a default --max-prompt-length gives way to a smaller --max-length; set values that conflict are refused", async () => {
  // the default 512 is not below 384: lowered, with a notice, and nothing counts it as set
  const lowered = parse("--max-length", "384");
  assert.equal(lowered.maxLength, 384);
  assert.equal(lowered.maxPromptLength, 383);
  assert.equal(optionNotices(lowered).length, 1);
  assert.match(
    optionNotices(lowered)[0],
    /--max-prompt-length is 383, not its default 512.*--max-length 384/,
  );
  assert.deepEqual([...givenOptions(lowered)!].sort(), ["data", "maxLength", "model"]);
  // a default that fits stays, silently
  assert.equal(parse("--max-length", "600").maxPromptLength, 512);
  assert.deepEqual(optionNotices(parse("--max-length", "600")), []);
  assert.equal(parse("--max-length", "384", "--max-prompt-length", "100").maxPromptLength, 100);
  // the same from a config file, TRL's name or ours
  await withConfig({ max_length: 384 }, (path) => {
    assert.equal(parse("--config", path).maxPromptLength, 383);
  });
  // both set and in conflict: refused, wherever each came from
  failsWith(
    ["--max-length", "384", "--max-prompt-length", "512"],
    "--max-prompt-length must be < --max-length (384), got 512",
  );
  await withConfig({ maxPromptLength: 512 }, (path) => {
    failsWith(
      ["--config", path, "--max-length", "384"],
      `--max-prompt-length must be < --max-length (384), got 512 (in ${path})`,
    );
  });
  // a set prompt length that the default --max-length does not leave room for is refused too
  failsWith(["--max-prompt-length", "1024"], "--max-prompt-length must be < --max-length (1024), got 1024");
});

/**
 * TRL's names as README's "Training your own model" lists them, each with a config value and the same value
 * as a flag's text (nothing for an on/off flag): a flag, in snake_case or kebab-case, reads as the config.
 */
const TRL_CASES: [name: string, config: unknown, flag: string[]][] = [
  ["model_name_or_path", "models/zephyr-sft", ["models/zephyr-sft"]],
  ["dataset_name", "data/uf.parquet", ["data/uf.parquet"]],
  ["output_dir", "runs/dpo-trl", ["runs/dpo-trl"]],
  ["run_name", "dpo-trl", ["dpo-trl"]],
  ["learning_rate", 5e-7, ["5e-7"]],
  ["per_device_train_batch_size", 2, ["2"]],
  ["gradient_accumulation_steps", 16, ["16"]],
  ["num_train_epochs", 3, ["3"]],
  ["max_steps", -1, ["-1"]],
  ["max_steps", 200, ["200"]],
  ["max_length", 1024, ["1024"]],
  ["max_prompt_length", 256, ["256"]],
  ["lr_scheduler_type", "constant_with_warmup", ["constant_with_warmup"]],
  ["lr_scheduler_type", "linear", ["linear"]],
  ["warmup_ratio", 0.05, ["0.05"]],
  ["warmup_steps", 0, ["0"]],
  ["warmup_steps", 10, ["10"]],
  ["logging_steps", 10, ["10"]],
  ["logging_strategy", "epoch", ["epoch"]],
  ["save_steps", 100, ["100"]],
  ["save_strategy", "epoch", ["epoch"]],
  ["save_strategy", "no", ["no"]],
  ["eval_steps", 50, ["50"]],
  ["eval_strategy", "steps", ["steps"]],
  ["evaluation_strategy", "epoch", ["epoch"]],
  ["save_total_limit", 3, ["3"]],
  ["adam_beta1", 0.85, ["0.85"]],
  ["adam_beta2", 0.98, ["0.98"]],
  ["adam_epsilon", 1e-6, ["1e-6"]],
  ["weight_decay", 0.01, ["0.01"]],
  ["max_grad_norm", 10, ["10"]],
  ["seed", 7, ["7"]],
  ["beta", 0.1, ["0.1"]],
  ["loss_type", "sigmoid", ["sigmoid"]],
  ["loss_type", "ipo", ["ipo"]],
  ["loss_type", "nca_pair", ["nca_pair"]],
  ["fp16", true, []],
  ["bf16", true, []],
  ["bf16", false, ["false"]],
  ["report_to", "tensorboard", ["tensorboard"]],
  ["report_to", ["tensorboard", "none"], ["tensorboard,none"]],
  ["report_to", "none", ["none"]],
  ["gradient_checkpointing", true, []],
  ["use_peft", true, []],
  ["use_peft", false, ["false"]],
  ["lora_r", 64, ["64"]],
  ["lora_alpha", 128, ["128"]],
  ["lora_dropout", 0.1, ["0.1"]],
  ["lora_target_modules", ["q_proj", "v_proj"], ["q_proj,v_proj"]],
  ["lora_target_modules", "all-linear", ["all-linear"]],
];

/** Kebab-case spellings that are our own flags, which keep our reading of these values. */
const OURS = new Set(["max_steps -1", "warmup_steps 0", 'report_to ["tensorboard","none"]']);

Deno.test("every TRL name works as a flag, snake_case and kebab-case, read as in a config file", () => {
  const flagValues = (argv: string[]) => parseTrainArgs(argv).layer.values;
  for (const [name, config, text] of TRL_CASES) {
    const want = parseConfigObject({ [name]: config }, "c.json").values;
    const label = `${name} ${JSON.stringify(config)}`;
    assert.deepEqual(flagValues([`--${name}`, ...text]), want, `--${label}`);
    const kebab = name.replaceAll("_", "-");
    if (OURS.has(`${name} ${JSON.stringify(config)}`)) continue;
    assert.deepEqual(flagValues([`--${kebab}`, ...text]), want, `--${kebab} ${JSON.stringify(config)}`);
  }
  // where the kebab-case spelling is our own flag, ours it stays: --warmup-steps 0 is no warmup
  assert.deepEqual(flagValues(["--warmup-steps", "0"]), { warmupSteps: 0 });
  assert.deepEqual(flagValues(["--warmup_steps", "0"]), { warmupSteps: undefined });
  assert.throws(() => flagValues(["--max-steps", "-1"]), /--max-steps must be a whole number ≥ 1, got -1/);
  // the table above has every TRL name the options know, and the README's paragraph names each
  const known = new Set(
    OPTION_SPECS.flatMap((s) => (s.trl ?? []).map((t) => (typeof t === "string" ? t : t.name))),
  );
  assert.deepEqual([...new Set(TRL_CASES.map(([n]) => n))].sort(), [...known].sort());
  // a whole TRL command line, as TRL's scripts take it, resolves like its config file
  const argv = [
    "--model_name_or_path=m",
    "--dataset_name",
    "d.jsonl",
    "--loss_type",
    "sigmoid",
    "--learning_rate",
    "5e-7",
    "--bf16",
    "--use_peft",
    "--lora_r",
    "32",
    "--max_steps=-1",
    "--gradient_checkpointing",
    "--report_to",
    "none",
  ];
  const viaFlags = parseTrainOptions(argv) as TrainOptions;
  const viaConfig = resolveTrainOptions(
    parseConfigObject({
      model_name_or_path: "m",
      dataset_name: "d.jsonl",
      loss_type: "sigmoid",
      learning_rate: 5e-7,
      bf16: true,
      use_peft: true,
      lora_r: 32,
      max_steps: -1,
      gradient_checkpointing: true,
      report_to: "none",
    }, "c.json"),
  );
  assert.deepEqual(viaFlags, viaConfig);
  assert.deepEqual(
    [viaFlags.loss, viaFlags.lr, viaFlags.precision, viaFlags.full, viaFlags.loraR, viaFlags.maxSteps],
    ["dpo", 5e-7, "fp32", false, 32, undefined],
  );
});

Deno.test("two names for one option that disagree are refused naming both; TRL's bad values name the flag", () => {
  failsWith(
    ["--lr", "1e-5", "--learning_rate", "2e-5"],
    "--lr 1e-5 and --learning_rate 2e-5 both set --lr, to different values",
  );
  failsWith(["--bf16", "--fp16"], "--bf16 and --fp16 both set --precision, to different values");
  failsWith(
    ["--precision", "fp16", "--bf16"],
    "--precision fp16 and --bf16 both set --precision, to different values",
  );
  failsWith(
    ["--eval-every", "10", "--eval-steps", "20"],
    /--eval-every 10 and --eval-steps 20 both set --eval-every/,
  );
  assert.equal(parse("--lr", "1e-5", "--learning-rate", "1e-5").lr, 1e-5); // the same value twice is fine
  failsWith(["--learning_rate", "-1"], "--learning_rate (--lr) must be > 0, got -1");
  failsWith(
    ["--loss_type", "hinge"],
    /^--loss_type "hinge" has no counterpart here: TRL's "sigmoid" is --loss dpo/,
  );
  failsWith(
    ["--save_strategy", "best"],
    '--save_strategy must be one of no, steps, epoch, got "best"',
  );
  failsWith(
    ["--logging_strategy", "no"],
    /^--logging_strategy "no" is not supported: metrics\.jsonl is always written/,
  );
  assert.match(
    errorsOf(() => parseConfigObject({ logging_strategy: "no" }, "c.json"))[0],
    /^logging_strategy "no" is not supported.*\(in c\.json\)$/,
  );
});

Deno.test("TRL's strategies: steps, epoch and no, in steps once an epoch's length is known", () => {
  const perEpoch = () => 7;
  const at = (o: Partial<TrainOptions>) => stepIntervals({ loggingSteps: 1, ...o }, perEpoch);
  // without a strategy: our flags as they are
  assert.deepEqual(at({}), { evalEvery: undefined, saveEvery: undefined, loggingSteps: 1 });
  assert.deepEqual(at({ evalEvery: 5, saveEvery: 10 }), { evalEvery: 5, saveEvery: 10, loggingSteps: 1 });
  // steps: every eval_steps (default: logging_steps) and every save_steps (default: 500)
  assert.deepEqual(at({ evalStrategy: "steps", saveStrategy: "steps", loggingSteps: 4 }), {
    evalEvery: 4,
    saveEvery: 500,
    loggingSteps: 4,
  });
  assert.deepEqual(at({ evalStrategy: "steps", evalEvery: 3, saveStrategy: "steps", saveEvery: 9 }), {
    evalEvery: 3,
    saveEvery: 9,
    loggingSteps: 1,
  });
  // epoch: at each epoch's end; no: only at the end (a step count given with it is not used)
  assert.deepEqual(at({ evalStrategy: "epoch", evalEvery: 3, saveStrategy: "no", saveEvery: 9 }), {
    evalEvery: 7,
    saveEvery: undefined,
    loggingSteps: 1,
  });
  assert.deepEqual(at({ loggingStrategy: "epoch", loggingSteps: 2 }).loggingSteps, 7);
  // the epoch's length is asked only when needed
  assert.deepEqual(stepIntervals({ loggingSteps: 1, evalStrategy: "no" }, () => assert.fail("asked")), {
    evalEvery: undefined,
    saveEvery: undefined,
    loggingSteps: 1,
  });
  // a step count a strategy sets aside is said, not silently dropped
  const o = parse(
    "--eval_strategy",
    "epoch",
    "--eval_steps",
    "50",
    "--save-strategy",
    "no",
    "--save-every",
    "5",
  );
  assert.deepEqual(optionNotices(o), [
    "--eval-every 50 is not used: --eval-strategy epoch evaluates at each epoch's end (as in TRL)",
    "--save-every 5 is not used: --save-strategy no saves at the end only (as in TRL)",
  ]);
  assert.deepEqual(optionNotices(parse("--eval_strategy", "steps", "--eval_steps", "50")), []);
});

Deno.test("the options a --resume may change are marked in the table", () => {
  assert.deepEqual([...RESUME_MAY_CHANGE].sort(), [
    "allowChangedInputs",
    "config",
    "device",
    "evalEvery",
    "evalStrategy",
    "gradientCheckpointing",
    "keepCheckpoints",
    "loggingSteps",
    "loggingStrategy",
    "name",
    "nproc",
    "out",
    "quiet",
    "reportTo",
    "resume",
    "saveDtype",
    "saveEvery",
    "saveStrategy",
    "stepsPerRun",
    "zero",
  ]);
});
