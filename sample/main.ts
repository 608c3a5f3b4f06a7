/**
 * `deno task sample`: K responses per prompt from a model, into a JSONL the scorer and the trainer read; and
 * `--merge` for the shards of a sharded run. This file only parses, calls lib/loop and prints; `--help`
 * lists every option.
 * @module
 */
import { parseArgs } from "node:util";
import { SAMPLING_FLAGS, samplingSettingsFrom } from "../lib/loop/sample_flags.ts";
import { numberFlag, stopOnSignals, UsageError } from "../lib/cli.ts";
import { type DeviceRequest, parseDevice } from "../lib/runtime/device.ts";
import { formatCount, formatDuration, progressBar } from "../lib/train/progress.ts";
import {
  checkSettings,
  mergeSamples,
  parseShard,
  SAMPLE_DEFAULTS,
  SampleOptionError,
  type SampleOptions,
  type SampleProgress,
  sampleToFile,
} from "../lib/loop/sample.ts";

export const USAGE = `Usage:
  deno task sample --model M --prompts P --out samples.jsonl [options]
  deno task sample --merge out.jsonl shard0.jsonl shard1.jsonl …   (or a quoted glob: 'samples.*.jsonl')

Samples K responses per prompt; one JSON row per prompt, in prompt order:
  {"id", "prompt", "responses": [{"content", "tokens", "finish_reason"}], "sampler": {…}}
The same command again resumes after the last complete row; other settings for the same --out are refused.

  --model DIR             Hugging Face model folder (config.json, safetensors, tokenizer), exported folder
                          (onnx/model.onnx) or training run folder (its policy/)
  --prompts PATH          data file, folder or quoted glob: plain rows {"prompt": …} / {"messages": […]} (the
                          last assistant turn dropped), or reward / preference / SFT rows (their prompt);
                          "id" (or "prompt_id") is kept, else the row's index
  --out FILE              the JSONL to write (its settings go to FILE.meta.json)
  --k N                   responses per prompt (default ${SAMPLE_DEFAULTS.k})
  --temperature T         default: generation_config.json's, else 1 (0: greedy)
  --top-p P               default: generation_config.json's, else 1 (off)
  --top-k N               default: generation_config.json's, else 0 (off)
  --repetition-penalty R  default: generation_config.json's, else 1 (off)
  --max-new-tokens N      default ${SAMPLE_DEFAULTS.maxNewTokens}
  --max-prompt-length N   cut longer prompts from their start, as training does (default: no cut)
  --seed S                default ${SAMPLE_DEFAULTS.seed}; sample j of a prompt draws from its own seed of (S, id, j),
                          so batch size, sharding and resuming do not change the output
  --batch N               sequences per session run (default ${SAMPLE_DEFAULTS.batch})
  --shard i/n             only the prompts with index % n == i (0-based), for job arrays; merge with --merge
  --device D              cpu | cuda | auto (default auto: CUDA when it works)
  --threads N             CPU threads inside an operator (default: all cores)
  --quiet                 no progress line
  --merge OUT FILES…      merge the shard files (paths, quoted globs or a folder) into OUT, in prompt order,
                          checking that every prompt is there exactly once
  --help                  this text

Stop ids: config.json's and generation_config.json's eos_token_id, the tokenizer's EOS and the chat
template's end-of-turn token. Progress goes to stderr. Ctrl-C writes the finished rows and stops; rerun the
command to continue.`;

type Parsed =
  | { help: true }
  | { merge: string; inputs: string[] }
  | { sample: SampleOptions; quiet: boolean; device: DeviceRequest };

/** Parses the command line (exported for the tests). */
export function parseSampleArgs(argv: string[]): Parsed {
  let values: Record<string, string | boolean | undefined>, positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        model: { type: "string" },
        prompts: { type: "string" },
        out: { type: "string" },
        ...SAMPLING_FLAGS,
        "repetition-penalty": { type: "string" },
        batch: { type: "string" },
        shard: { type: "string" },
        device: { type: "string", default: "auto" },
        threads: { type: "string" },
        quiet: { type: "boolean", default: false },
        merge: { type: "string" },
        help: { type: "boolean", default: false, short: "h" },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\.$/, ""));
  }
  if (values.help) return { help: true };
  const str = (k: string) => values[k] as string | undefined;
  if (values.merge !== undefined) {
    if (positionals.length === 0) throw new UsageError("--merge OUT needs the shard files after it");
    return { merge: str("merge")!, inputs: positionals };
  }
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  for (const need of ["model", "prompts", "out"]) {
    if (values[need] === undefined) throw new UsageError(`--${need} is required`);
  }
  const device = (() => {
    try {
      return parseDevice(str("device")!);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  })();
  const sample: SampleOptions = {
    model: str("model")!,
    prompts: str("prompts")!,
    out: str("out")!,
    ...samplingSettingsFrom(values as Record<string, string | undefined>),
    repetitionPenalty: numberFlag("repetition-penalty", str("repetition-penalty")),
    batch: numberFlag("batch", str("batch")),
    threads: numberFlag("threads", str("threads")),
    shard: values.shard === undefined ? undefined : parseShard(str("shard")!),
  };
  checkSettings(sample);
  if (sample.batch !== undefined && !(Number.isSafeInteger(sample.batch) && sample.batch >= 1)) {
    throw new UsageError(`--batch must be a whole number ≥ 1, got ${sample.batch}`);
  }
  if (sample.threads !== undefined && !(Number.isSafeInteger(sample.threads) && sample.threads >= 1)) {
    throw new UsageError(`--threads must be a whole number ≥ 1, got ${sample.threads}`);
  }
  return { sample, quiet: values.quiet as boolean, device };
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
  let parsed: Parsed;
  try {
    parsed = parseSampleArgs(argv);
  } catch (e) {
    if (e instanceof UsageError || e instanceof SampleOptionError) {
      console.error(`error: ${e.message}\n(see deno task sample --help)`);
      return 2;
    }
    throw e;
  }
  if ("help" in parsed) {
    console.log(USAGE);
    return 0;
  }
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
  using stop = stopOnSignals(
    "interrupted: writing the finished rows (Ctrl-C again to quit now); rerun the command to continue",
    log,
  );
  try {
    const r = await sampleToFile({
      ...parsed.sample,
      device: parsed.device,
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
    });
    if (live) write("\n");
    if (r.interrupted) {
      console.error(`stopped after ${r.done} of ${r.total} prompts; rerun the same command to continue`);
      return 130;
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
    if (e instanceof SampleOptionError) {
      console.error(`error: ${e.message}\n(see deno task sample --help)`);
      return 2;
    }
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
