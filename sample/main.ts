/**
 * `deno task sample`: K responses per prompt from a model, into a JSONL the scorer and the trainer read; and
 * `--merge` for the shards of a sharded run. This file only parses, calls lib/loop and prints; `--help`
 * lists every option.
 * @module
 */
import {
  SAMPLING_GROUP,
  SAMPLING_SPECS,
  type SamplingFlags,
  samplingSettingsFrom,
} from "../lib/loop/sample_flags.ts";
import {
  deviceOption,
  formatCount,
  formatDuration,
  gather,
  helpText,
  type OptionSpec,
  parseArgv,
  parsedOrExitCode,
  progressBar,
  stopOnSignals,
  UsageError,
  usageErrorExit,
} from "../lib/cli/mod.ts";
import type { DeviceRequest } from "../lib/runtime/device.ts";
import {
  mergeSamples,
  type RankSampleResult,
  sampleAsRank,
  type SampleOptions,
  type SampleProgress,
  sampleToFile,
} from "../lib/loop/sample.ts";
import { loopRank } from "../lib/loop/rank_shards.ts";
import { parseShard, SAMPLE_DEFAULTS, SampleOptionError, type Shard } from "../lib/loop/sample_settings.ts";

/** What `deno task sample` reads besides the shared sampling flags. */
type SampleFlags = {
  model?: string;
  prompts?: string;
  out?: string;
  repetitionPenalty?: number;
  batch?: number;
  shard?: Shard;
  device?: DeviceRequest;
  threads?: number;
  quiet?: boolean;
  merge?: string;
};

const IO = "Input and output";
const RUN = "Running";

/** Every option of `deno task sample`. */
export const SAMPLE_SPECS: readonly OptionSpec<SampleFlags & SamplingFlags>[] = [
  {
    key: "model",
    flag: "model",
    kind: "string",
    group: IO,
    arg: "dir",
    help:
      "Hugging Face model folder (config.json, safetensors, tokenizer), exported folder (onnx/model.onnx) " +
      "or training run folder (its policy/); required",
  },
  {
    key: "prompts",
    flag: "prompts",
    kind: "string",
    group: IO,
    arg: "path",
    help: 'data file, folder or quoted glob: plain rows {"prompt": …} / {"messages": […]} (the last ' +
      'assistant turn dropped), or reward / preference / SFT rows (their prompt); "id" (or "prompt_id") is ' +
      "kept, else the row's index; required",
  },
  {
    key: "out",
    flag: "out",
    kind: "string",
    group: IO,
    arg: "file",
    help: "the JSONL to write (its settings go to FILE.meta.json); required",
  },
  {
    key: "merge",
    flag: "merge",
    kind: "string",
    group: IO,
    arg: "out",
    help:
      "merge the shard files given after it (paths, quoted globs or a folder) into OUT, in prompt order, " +
      "checking that every prompt is there exactly once",
  },
  ...SAMPLING_SPECS,
  {
    key: "repetitionPenalty",
    flag: "repetition-penalty",
    kind: "number",
    group: SAMPLING_GROUP,
    check: (v) => (v > 0 ? undefined : "must be > 0"),
    arg: "r",
    defaultText: "generation_config.json's, else 1 (off)",
    help:
      "transformers' repetition_penalty: > 1 makes tokens of the prompt and the response so far less likely",
  },
  {
    key: "batch",
    flag: "batch",
    kind: "int",
    group: RUN,
    min: 1,
    arg: "n",
    defaultText: String(SAMPLE_DEFAULTS.batch),
    help: "sequences per session run",
  },
  {
    key: "shard",
    flag: "shard",
    kind: "string",
    group: RUN,
    parse: (raw) => parseShard(String(raw)),
    arg: "i/n",
    defaultText: "all prompts",
    help: "only the prompts with index % n == i (0-based), for job arrays; merge with --merge",
  },
  deviceOption({ group: RUN, default: "auto", help: "auto: CUDA when it works" }),
  {
    key: "threads",
    flag: "threads",
    kind: "int",
    group: RUN,
    min: 1,
    arg: "n",
    defaultText: "all cores",
    help: "CPU threads inside an operator",
  },
  { key: "quiet", flag: "quiet", kind: "boolean", group: RUN, help: "no progress line" },
];

export const USAGE = helpText(SAMPLE_SPECS, {
  usage: [
    "deno task sample --model M --prompts P --out samples.jsonl [options]",
    "deno task sample --merge out.jsonl shard0.jsonl shard1.jsonl …   (or a quoted glob: 'samples.*.jsonl')",
  ],
  intro: `Samples K responses per prompt; one JSON row per prompt, in prompt order:
  {"id", "prompt", "responses": [{"content", "tokens", "finish_reason"}], "sampler": {…}}
The same command again resumes after the last complete row; other settings for the same --out are refused.`,
  outro: `Stop ids: config.json's and generation_config.json's eos_token_id, the tokenizer's EOS and the chat
template's end-of-turn token. Progress goes to stderr. Ctrl-C writes the finished rows and stops; rerun the
command to continue.`,
});

type Parsed =
  | { help: true }
  | { merge: string; inputs: string[] }
  | { sample: SampleOptions; quiet: boolean; device: DeviceRequest };

/** Parses the command line (exported for the tests). Throws {@link UsageError} listing every problem. */
export function parseSampleArgs(argv: string[]): Parsed {
  const { values: v, positionals, help, errors } = parseArgv(SAMPLE_SPECS, argv, { positionals: true });
  if (help) return { help: true };
  if (v.merge !== undefined) {
    if (positionals.length === 0) errors.push("--merge OUT needs the shard files after it");
    if (errors.length) throw new UsageError(errors);
    return { merge: v.merge, inputs: positionals };
  }
  if (positionals.length) errors.push(`unexpected argument ${JSON.stringify(positionals[0])}`);
  for (const need of ["model", "prompts", "out"] as const) {
    if (v[need] === undefined) errors.push(`--${need} is required`);
  }
  // the table holds the settings to checkSettings' ranges; its own word, should they part, is a usage error
  const settings = gather(errors, () => {
    try {
      return samplingSettingsFrom(v);
    } catch (e) {
      if (e instanceof SampleOptionError) throw new UsageError(e.message);
      throw e;
    }
  });
  if (errors.length) throw new UsageError(errors);
  const sample: SampleOptions = {
    model: v.model!,
    prompts: v.prompts!,
    out: v.out!,
    ...settings,
    repetitionPenalty: v.repetitionPenalty,
    batch: v.batch,
    threads: v.threads,
    shard: v.shard,
  };
  return { sample, quiet: v.quiet ?? false, device: v.device ?? "auto" };
}

/** One progress line: `sample 120/1000 ███▌  12% | 3.1 prompts/s | 1.2k tok/s | eta 4m 44s`. */
export function progressLine(p: SampleProgress, bar = true): string {
  const pct = p.total ? Math.floor((100 * p.done) / p.total) : 100;
  const head = `sample ${String(p.done).padStart(String(p.total).length)}/${p.total}`;
  const run = p.done - p.resumed;
  const rate = p.seconds > 0 ? run / p.seconds : NaN;
  const parts = [
    bar ? `${head} ${progressBar(p.total ? p.done / p.total : 1, 20)} ${pct}%` : `${head} ${pct}%`,
  ];
  parts.push(`${Number.isFinite(rate) ? rate.toPrecision(3) : "--"} prompts/s`);
  parts.push(`${p.seconds > 0 ? formatCount(p.tokens / p.seconds) : "--"} tok/s`);
  parts.push(
    p.done >= p.total
      ? `took ${formatDuration(p.seconds)}`
      : `eta ${formatDuration((p.total - p.done) / rate)}`,
  );
  return parts.join(" | ");
}

async function main(argv: string[]): Promise<number> {
  const parsed = parsedOrExitCode(
    () => {
      const p = parseSampleArgs(argv);
      return "help" in p ? null : p;
    },
    USAGE,
    "sample",
  );
  if (typeof parsed === "number") return parsed;
  if ("merge" in parsed) {
    try {
      const r = await mergeSamples(parsed.merge, parsed.inputs);
      console.log(`merged ${r.shards} shard${r.shards === 1 ? "" : "s"}, ${r.rows} prompts, into ${r.out}`);
      return 0;
    } catch (e) {
      console.error(`error: ${(e as Error).message}`);
      return 1;
    }
  }

  const tty = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  const write = (text: string) => Deno.stderr.writeSync(encoder.encode(text));
  let live = false, lastPlain = 0;
  const log = (line: string) => {
    write(`${live ? "\r\x1b[K" : ""}${line}\n`);
    live = false;
  };
  // under torchrun, mpirun or srun (no --shard): this rank's shard, merged by rank 0 (docs/distributed.md)
  let place;
  try {
    place = loopRank();
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  const { ranked, who } = place;
  if (ranked && parsed.sample.shard) {
    return usageErrorExit([
      `--shard with ${ranked.size} ranks (${ranked.launcher}): every rank would write the same --out; leave ` +
      `--shard out and each rank samples its share (rank r writes ${parsed.sample.out}.shard-r-of-${ranked.size}, ` +
      "rank 0 merges them)",
    ], "sample");
  }
  using stop = stopOnSignals(
    "interrupted: writing the finished rows (Ctrl-C again to quit now); rerun the command to continue",
    log,
  );
  try {
    const options: SampleOptions = {
      ...parsed.sample,
      device: parsed.device,
      // a rank of several on its local rank's GPU
      deviceId: ranked?.deviceId,
      signal: stop.signal,
      log,
      onProgress: (p) => {
        if (parsed.quiet) return;
        if (tty) {
          write(`\r${progressLine(p)}\x1b[K`);
          live = true;
        } else if (p.seconds - lastPlain >= 10 || p.done >= p.total) {
          write(progressLine(p, false) + "\n");
          lastPlain = p.seconds;
        }
      },
    };
    if (ranked && ranked.rank > 0) options.onProgress = undefined; // rank 0 alone shows progress
    const r: RankSampleResult = ranked ? await sampleAsRank(options, ranked) : await sampleToFile(options);
    if (live) write("\n");
    if (r.interrupted) {
      console.error(
        `${who}stopped after ${r.done} of ${r.total} prompts; rerun the same command to continue`,
      );
      return 130;
    }
    if (ranked) {
      const merged = r.merged;
      console.error(
        merged
          ? `merged the ${merged.shards} ranks' shards, ${merged.rows} prompts, into ${merged.out}`
          : `${who}wrote ${r.out} (shard ${r.meta.shard.index}/${r.meta.shard.count}); rank 0 merges`,
      );
      return 0;
    }
    const shard = r.meta.shard.count > 1 ? ` (shard ${r.meta.shard.index}/${r.meta.shard.count})` : "";
    console.error(
      r.done === r.resumed
        ? `${r.out} already has all ${r.total} prompts${shard}: nothing to do`
        : `wrote ${r.done - r.resumed} prompts × ${r.meta.k} responses to ${r.out}${shard}` +
          (r.resumed ? ` (after ${r.resumed} already there)` : ""),
    );
    return 0;
  } catch (e) {
    if (live) write("\n");
    if (e instanceof SampleOptionError) return usageErrorExit([e.message], "sample");
    const m = e instanceof Error ? e.message : String(e);
    console.error(`error: ${who && !m.startsWith("rank ") ? who : ""}${m}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
