/**
 * `deno task eval`: an aligned policy against its reference on a user's prompts, scored by a reward model,
 * a reward function or an LLM judge: mean rewards, win rate, KL(π‖μ), lengths, as a table, JSON and a chart.
 * This file only parses, calls lib/loop/eval.ts and prints; `--help` lists every option.
 * @module
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { parsedOrExitCode, stopOnSignals } from "../lib/cli.ts";
import { evaluateAgainstReference, formatEvalTable, writeEval } from "../lib/loop/eval.ts";
import { SampleOptionError, type SampleSettingsInput } from "../lib/loop/sample.ts";
import { SAMPLING_FLAGS, samplingSettingsFrom } from "../lib/loop/sample_flags.ts";
import {
  intFlag,
  makeScorer,
  SCORER_FLAGS,
  SCORER_USAGE,
  type ScorerSpec,
  scorerSpecFrom,
  UsageError,
} from "../lib/loop/scorers/from_flags.ts";
import type { Scorer } from "../lib/loop/scorers/types.ts";
import { type DeviceRequest, parseDevice, resolveDevice } from "../lib/runtime/device.ts";
import { createRunFolder } from "../lib/train/run_folder.ts";
import { type Lock, lockFolder } from "../lib/lock.ts";

export const EVAL_USAGE = `Usage:
  deno task eval --model POLICY --reference REF --prompts P (--reward-model R | --reward-fn F | --judge-url U)

Samples K responses per prompt from the policy and from the reference (the same seeds), scores them all
with one scorer, and reports each model's mean reward, the policy's win rate over the reference (sample j
against sample j of the same prompt; ties apart), KL(π‖μ) on the policy's samples and the mean lengths: a
table here, and eval.json, both models' scored samples and charts/eval.svg in the output folder.

  --model DIR             the policy: a training run folder (its policy/), an exported or a Hugging Face folder
  --reference DIR         the model it is compared with (the SFT model; the same tokenizer)
  --prompts PATH          data file, folder or quoted glob, as deno task sample reads them
  --out DIR               where the results go (default runs/eval-<time>/)
  --k N                   responses per prompt and model (default 4)
  --temperature T         default 1 (KL(π‖μ) is the policy's only at 1, without top-k/top-p)
  --top-p P               default 1 (off)
  --top-k N               default 0 (off)
  --max-new-tokens N      default 256
  --max-prompt-length N   cut longer prompts from their start, as training does
  --seed S                default 0
  --batch N               sequences per generation call; a reward model's per forward pass (default 32)
  --limit N               only the first N prompts
  --device D              cpu | cuda | auto, for both models and a reward model (default auto)
  --threads N             a reward model's ONNX Runtime threads
  --quiet                 no progress line
  -h, --help              this text

${SCORER_USAGE}`;

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

/** Parses the arguments; null when help was asked for. Throws {@link UsageError} for a wrong command line. */
export function parseEvalArgs(
  argv: string[],
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  readText: (path: string) => string = (p) => Deno.readTextFileSync(p),
): EvalArgs | null {
  let v;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        ...SCORER_FLAGS,
        model: { type: "string" },
        reference: { type: "string" },
        prompts: { type: "string" },
        out: { type: "string" },
        ...SAMPLING_FLAGS,
        batch: { type: "string" },
        limit: { type: "string" },
        quiet: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (v.help) return null;
  for (const flag of ["model", "reference", "prompts"] as const) {
    if (!v[flag]) throw new UsageError(`--${flag} is required`);
  }
  let device: DeviceRequest;
  try {
    device = parseDevice(v.device ?? "auto");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  // --device is the models' here: the scorer flags see it only for a reward model
  const { device: _device, ...scorerFlags } = v;
  const scorer = scorerSpecFrom(scorerFlags, env, readText);
  if (scorer.kind === "reward-model") scorer.device = device;
  let sample: SampleSettingsInput;
  try {
    sample = samplingSettingsFrom(v);
  } catch (e) {
    if (e instanceof SampleOptionError) throw new UsageError(e.message);
    throw e;
  }
  return {
    policy: v.model!,
    reference: v.reference!,
    prompts: v.prompts!,
    out: v.out,
    sample,
    batch: intFlag("batch", v.batch, 1) ?? 32,
    limit: intFlag("limit", v.limit, 1),
    device,
    quiet: v.quiet ?? false,
    scorer,
  };
}

async function main(argv: string[]): Promise<number> {
  const args = parsedOrExitCode(() => parseEvalArgs(argv), EVAL_USAGE, "eval");
  if (typeof args === "number") return args;
  const log = (line: string) => console.error(line);
  using stop = stopOnSignals("\ninterrupted: stopping (again to quit now)", log);
  let scorer: Scorer | undefined;
  let shown = "";
  const progress = (p: { phase: string; done: number; total: number }) => {
    if (args.quiet) return;
    const line = `eval: ${p.phase} ${p.done}/${p.total}`;
    if (line !== shown) Deno.stderr.writeSync(new TextEncoder().encode(`\r${line}\x1b[K`));
    shown = line;
  };
  let lock: Lock | undefined;
  try {
    // one evaluation per output folder: a second one on the same --out is refused before any work
    const out = args.out ? resolve(args.out) : undefined;
    if (out) {
      await Deno.mkdir(out, { recursive: true });
      lock = await lockFolder(out, { log });
    }
    const { device, notice } = await resolveDevice(args.device, { log });
    if (notice) log(notice);
    scorer = await makeScorer(
      args.scorer,
      { batch: args.batch, skipErrors: false, signal: stop.signal },
      log,
    );
    const result = await evaluateAgainstReference({
      policy: args.policy,
      reference: args.reference,
      prompts: args.prompts,
      sample: args.sample,
      scorer,
      batch: args.batch,
      device,
      limit: args.limit,
      log,
      onProgress: progress,
      signal: stop.signal,
    });
    if (shown) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
    const dir = out ?? (await createRunFolder("runs", "eval")).dir;
    await writeEval(dir, result);
    console.log(formatEvalTable(result.report));
    console.log(
      `\nwrote ${join(dir, "eval.json")}, the scored samples and ${join(dir, "charts", "eval.svg")}`,
    );
    return 0;
  } catch (e) {
    if (shown) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
    console.error(`error: ${(e as Error).message}`);
    return stop.signal.aborted ? 130 : 1;
  } finally {
    await scorer?.release();
    await lock?.release();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
