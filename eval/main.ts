/**
 * `deno task eval`: an aligned policy against its reference on a user's prompts, scored by a reward model,
 * a reward function or an LLM judge: mean rewards, win rate, KL(π‖μ), lengths, as a table, JSON and a chart.
 * This file only parses, calls lib/loop/eval.ts and prints; `--help` lists every option.
 * @module
 */
import { join, resolve } from "node:path";
import {
  gather,
  helpText,
  type OptionSpec,
  parseArgv,
  parsedOrExitCode,
  respec,
  stopOnSignals,
  usageErrorExit,
} from "../lib/cli/mod.ts";
import {
  evalProgressWriter,
  evaluateAgainstReference,
  formatEvalTable,
  writeEval,
} from "../lib/loop/eval.ts";
import { SampleOptionError, type SampleSettingsInput } from "../lib/loop/sample_settings.ts";
import { SAMPLING_SPECS, type SamplingFlags, samplingSettingsFrom } from "../lib/loop/sample_flags.ts";
import {
  makeScorer,
  SCORER_NOTES,
  SCORER_SPECS,
  type ScorerFlags,
  type ScorerSpec,
  scorerSpecFrom,
  UsageError,
} from "../lib/loop/scorers/from_flags.ts";
import type { Scorer } from "../lib/loop/scorers/types.ts";
import { type DeviceRequest, resolveDevice } from "../lib/runtime/device.ts";
import { createRunFolder } from "../lib/train/run_folder.ts";
import { type Lock, lockFile, lockFolder } from "../lib/lock.ts";
import { evalShardPath, evaluateAsRank } from "../lib/loop/eval_shards.ts";
import { loopRank } from "../lib/loop/rank_shards.ts";

/** What `deno task eval` reads besides the sampling and scorer flags. */
type EvalFlags = {
  model?: string;
  reference?: string;
  prompts?: string;
  out?: string;
  batch?: number;
  limit?: number;
  quiet?: boolean;
};

const MODELS = "Models and prompts";
const RUN = "Running";

/**
 * Every option of `deno task eval`: its own, the sampling flags with eval's defaults (not the models'
 * generation_config.json), and the scorers' — whose --device and --threads are eval's here (--device for
 * both models and a reward model), and whose --chat-template-kwargs is the sampling one, for both models
 * and a reward model.
 */
export const EVAL_SPECS: readonly OptionSpec<EvalFlags & SamplingFlags & ScorerFlags>[] = [
  {
    key: "model",
    flag: "model",
    kind: "string",
    group: MODELS,
    arg: "dir",
    help: "the policy: a training run folder (its policy/), an exported or a Hugging Face folder; required",
  },
  {
    key: "reference",
    flag: "reference",
    kind: "string",
    group: MODELS,
    arg: "dir",
    help: "the model it is compared with (the SFT model; the same tokenizer); required",
  },
  {
    key: "prompts",
    flag: "prompts",
    kind: "string",
    group: MODELS,
    arg: "path",
    help: "data file, folder or quoted glob, as deno task sample reads them; required",
  },
  {
    key: "out",
    flag: "out",
    kind: "string",
    group: MODELS,
    arg: "dir",
    defaultText: "runs/eval-<time>/",
    help: "where the results go",
  },
  ...respec(SAMPLING_SPECS, {
    k: { help: "responses per prompt and model", defaultText: "4" },
    temperature: {
      defaultText: "1",
      help: "KL(π‖μ) is the policy's only at 1, without top-k/top-p; this, --top-p and --top-k are eval's, " +
        "not the models' generation_config.json",
    },
    "top-p": { defaultText: "1 (off)" },
    "top-k": { defaultText: "0 (off)" },
    "max-new-tokens": { defaultText: "256" },
    "chat-template-kwargs": {
      help: "variables for the chat template of both models (and of a reward model), a JSON object, e.g. " +
        `'{"enable_thinking": false}' for Qwen3`,
    },
    seed: { help: "sample j of a prompt draws from the same seed for both models", defaultText: "0" },
  }),
  {
    key: "batch",
    flag: "batch",
    kind: "int",
    group: RUN,
    min: 1,
    arg: "n",
    default: 32,
    help: "sequences per generation call; a reward model's per forward pass",
  },
  {
    key: "limit",
    flag: "limit",
    kind: "int",
    group: RUN,
    min: 1,
    arg: "n",
    defaultText: "all",
    help: "only the first n prompts",
  },
  { key: "quiet", flag: "quiet", kind: "boolean", group: RUN, help: "no progress line" },
  ...respec(SCORER_SPECS, {
    device: { group: RUN, default: "auto", help: "where both models and a reward model run" },
    threads: { group: RUN, help: "a reward model's ONNX Runtime threads" },
    "chat-template-kwargs": null,
  }),
];

export const EVAL_USAGE = helpText(EVAL_SPECS, {
  usage: "deno task eval --model POLICY --reference REF --prompts P (--reward-model R | --reward-fn F | " +
    "--judge-url U)",
  intro:
    `Samples K responses per prompt from the policy and from the reference (the same seeds), scores them all
with one scorer, and reports each model's mean reward, the policy's win rate over the reference (sample j
against sample j of the same prompt; ties apart), KL(π‖μ) on the policy's samples and the mean lengths: a
table here, and eval.json, both models' scored samples and charts/eval.svg in the output folder.`,
  outro: SCORER_NOTES,
});

/** The parsed command line. */
export type EvalArgs = {
  policy: string;
  reference: string;
  prompts: string;
  out?: string;
  sample: SampleSettingsInput;
  batch: number;
  limit?: number;
  device: DeviceRequest;
  quiet: boolean;
  scorer: ScorerSpec;
};

/**
 * Parses the arguments; null when help was asked for. Throws {@link UsageError} for a wrong command line,
 * listing every problem.
 */
export function parseEvalArgs(
  argv: string[],
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  readText: (path: string) => string = (p) => Deno.readTextFileSync(p),
): EvalArgs | null {
  const { values: v, help, errors } = parseArgv(EVAL_SPECS, argv);
  if (help) return null;
  for (const flag of ["model", "reference", "prompts"] as const) {
    if (!v[flag]) errors.push(`--${flag} is required`);
  }
  const device = v.device ?? "auto";
  // --device and --chat-template-kwargs are the models' here: the scorer sees them only as a reward model
  const {
    model,
    reference,
    prompts,
    out,
    batch,
    limit,
    quiet,
    k,
    temperature,
    topP,
    topK,
    maxNewTokens,
    maxPromptLength,
    seed,
    templateKwargs,
    device: _device,
    ...scorerFlags
  } = v;
  const scorer = gather(errors, () => scorerSpecFrom(scorerFlags, env, readText));
  const sample = gather(errors, () => {
    try {
      return samplingSettingsFrom({
        k,
        temperature,
        topP,
        topK,
        maxNewTokens,
        maxPromptLength,
        seed,
        templateKwargs,
      });
    } catch (e) {
      if (e instanceof SampleOptionError) throw new UsageError(e.message);
      throw e;
    }
  });
  if (errors.length) throw new UsageError(errors);
  if (scorer!.kind === "reward-model") {
    scorer!.device = device;
    if (templateKwargs) scorer!.templateKwargs = templateKwargs;
  }
  return {
    policy: model!,
    reference: reference!,
    prompts: prompts!,
    out,
    sample: sample!,
    batch: batch ?? 32,
    limit,
    device,
    quiet: quiet ?? false,
    scorer: scorer!,
  };
}

async function main(argv: string[]): Promise<number> {
  const args = parsedOrExitCode(() => parseEvalArgs(argv), EVAL_USAGE, "eval");
  if (typeof args === "number") return args;
  // under torchrun, mpirun or srun: this rank's share of the prompts, merged by rank 0 (docs/distributed.md)
  let place;
  try {
    place = loopRank();
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  const { ranked, who } = place;
  if (ranked && !args.out) {
    return usageErrorExit([
      `${who}--out is required with ${ranked.size} ranks (${ranked.launcher}): every rank writes its share ` +
      "there and rank 0 the evaluation",
    ], "eval");
  }
  // a live progress line on a terminal, plain lines in a log
  const encoder = new TextEncoder();
  const display = evalProgressWriter({
    tty: Deno.stderr.isTerminal(),
    write: (text) => Deno.stderr.writeSync(encoder.encode(text)),
  });
  const log = display.log;
  using stop = stopOnSignals("\ninterrupted: stopping (again to quit now)", log);
  let scorer: Scorer | undefined;
  // rank 0 alone shows progress
  const progress = (p: { phase: string; done: number; total: number }) => {
    if (!args.quiet && !ranked?.rank) display.progress(p);
  };
  let lock: Lock | undefined;
  try {
    // one evaluation per output folder: a second one on the same --out is refused before any work
    const out = args.out ? resolve(args.out) : undefined;
    // several ranks: rank 0 holds the folder, every other rank its shard file
    if (out) {
      await Deno.mkdir(out, { recursive: true });
      lock = ranked?.rank
        ? await lockFile(evalShardPath(out, { index: ranked.rank, count: ranked.size }), { log })
        : await lockFolder(out, { log });
    }
    const { device, notice } = await resolveDevice(args.device, { log });
    if (notice) log(notice);
    // a rank of several on its local rank's GPU: both models and a reward model
    const deviceId = ranked?.deviceId;
    scorer = await makeScorer(
      args.scorer.kind === "reward-model" ? { ...args.scorer, deviceId } : args.scorer,
      { batch: args.batch, skipErrors: false, signal: stop.signal },
      log,
    );
    const options = {
      policy: args.policy,
      reference: args.reference,
      prompts: args.prompts,
      sample: args.sample,
      scorer,
      batch: args.batch,
      device,
      deviceId,
      limit: args.limit,
      log,
      onProgress: progress,
      signal: stop.signal,
    };
    if (ranked) {
      const r = await evaluateAsRank({ ...options, out: out! }, ranked);
      display.end();
      if (r.interrupted) {
        console.error(`${who}interrupted: nothing written; rerun the same command`);
        return 130;
      }
      if (!r.merged) {
        console.error(`${who}evaluated ${r.rows} prompts into ${r.shardFile}; rank 0 merges`);
        return 0;
      }
      await writeEval(out!, r.merged);
      console.log(formatEvalTable(r.merged.report));
      console.log(
        `\nmerged the ${ranked.size} ranks' shares; wrote ${
          join(out!, "eval.json")
        }, the scored samples and ` +
          join(out!, "charts", "eval.svg"),
      );
      return 0;
    }
    const result = await evaluateAgainstReference(options);
    display.end();
    const dir = out ?? (await createRunFolder("runs", "eval")).dir;
    await writeEval(dir, result);
    console.log(formatEvalTable(result.report));
    console.log(
      `\nwrote ${join(dir, "eval.json")}, the scored samples and ${join(dir, "charts", "eval.svg")}`,
    );
    return 0;
  } catch (e) {
    display.end(true);
    const m = (e as Error).message;
    console.error(`error: ${who && !m.startsWith("rank ") ? who : ""}${m}`);
    return stop.signal.aborted ? 130 : 1;
  } finally {
    await scorer?.release();
    await lock?.release();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
