/**
 * Sampling throughput of `deno task sample` (lib/loop): K responses per prompt from a random-weight bf16
 * folder of a real shape (bench/_shapes.ts, made once), opened as a plain Hugging Face folder (the decoder
 * built over its safetensors, as the sampler does), prompts of mixed lengths, per batch size.
 *
 *   deno run -A bench/sample.ts --shape smollm-135m --batch 8,32 --prompts 16 --k 4 --tokens 32
 *
 * One JSON line per shape × batch: generated tokens/s and prompts/s over the whole sampling (prefill, every
 * decode step and detokenization), after a warm-up batch. `--ignore-eos` keeps every row to `--tokens`
 * (a random model's EOS comes at random), so runs compare with bench/gpu/sample_torch.py's.
 * @module
 */
import { join } from "node:path";
import { openGenerator } from "../lib/model/open.ts";
import type { PromptRow } from "../lib/loop/prompts.ts";
import { promptJobs, sampleRows } from "../lib/loop/sample_rows.ts";
import { type SampleSettings } from "../lib/loop/sample_settings.ts";
import {
  benchDevice,
  cpuName,
  deviceFlag,
  gpuName,
  intFlag,
  listFlag,
  ortVersion,
  parseFlags,
  round,
  runCli,
} from "./_common.ts";
import { randomModelFolder, SHAPES } from "./_shapes.ts";

export const USAGE = `Usage: deno run -A bench/sample.ts [flags]

Sampling tokens/s (K responses per prompt, batched, mixed prompt lengths) of random-weight bf16 folders of
real shapes, opened as plain Hugging Face folders.

  --shape LIST      shapes (bench/_shapes.ts; default tiny,smollm-135m)
  --batch LIST      sequences per session run (default 8,32)
  --prompts N       prompts (default 16)
  --k N             responses per prompt (default 4)
  --tokens N        new tokens per response at most (default 32)
  --ignore-eos      no stop ids: every response is --tokens long
  --fold LIST       off,on: bf16 weights cast at every use, or once at load (default: the sampler's choice)
  --device D        cpu|cuda|auto (default cpu)
  --threads N       CPU threads inside an operator (default: all cores)
  --models DIR      where the random folders are kept (default ~/.cache/nca-align/bench-models)
  --dump-prompts F  write the prompts' token ids to F ({"prompts": [[ids], …]}, for bench/gpu/sample_torch.py)
  --help            this text`;

/** The parsed flags. */
export type SampleBenchArgs = {
  shapes: string[];
  batches: number[];
  prompts: number;
  k: number;
  tokens: number;
  ignoreEos: boolean;
  folds: ("off" | "on" | "auto")[];
  device: "cpu" | "cuda" | "auto";
  threads?: number;
  models: string;
  dumpPrompts?: string;
};

/** Parses the flags (exported for the tests). */
export function parseSampleBenchArgs(argv: string[]): SampleBenchArgs {
  const f = parseFlags(argv, {
    shape: { type: "string", default: "tiny,smollm-135m" },
    batch: { type: "string", default: "8,32" },
    prompts: { type: "string", default: "16" },
    k: { type: "string", default: "4" },
    tokens: { type: "string", default: "32" },
    "ignore-eos": { type: "boolean", default: false },
    fold: { type: "string", default: "auto" },
    device: { type: "string", default: "cpu" },
    threads: { type: "string" },
    models: { type: "string" },
    "dump-prompts": { type: "string" },
    help: { type: "boolean", default: false, short: "h" },
  });
  return {
    shapes: listFlag("shape", f.shape, Object.keys(SHAPES)),
    batches: String(f.batch).split(",").map((b) => intFlag("batch", b.trim())),
    prompts: intFlag("prompts", f.prompts),
    k: intFlag("k", f.k),
    tokens: intFlag("tokens", f.tokens),
    ignoreEos: f["ignore-eos"] === true,
    folds: listFlag("fold", f.fold, ["off", "on", "auto"] as const),
    device: deviceFlag(f.device),
    threads: f.threads === undefined ? undefined : intFlag("threads", f.threads),
    models: typeof f.models === "string"
      ? f.models
      : join(Deno.env.get("HOME") ?? ".", ".cache/nca-align/bench-models"),
    dumpPrompts: typeof f["dump-prompts"] === "string" ? f["dump-prompts"] : undefined,
  };
}

const WORDS = "the cat and dog write a good story about red blue numbers please help".split(" ");

/** Prompt rows of 3 to 40 words, the same every run. */
function benchPrompts(n: number): PromptRow[] {
  return Array.from({ length: n }, (_, i) => {
    const text = Array.from({ length: 3 + (i * 13) % 38 }, (_, t) => WORDS[(i + 5 * t) % WORDS.length]).join(
      " ",
    );
    return {
      id: i,
      given: text,
      messages: [{ role: "user", content: text }],
      file: "bench",
      line: i + 1,
      unit: "line" as const,
    };
  });
}

/** Runs the benchmark; prints and returns one record per shape × fold × batch. */
export async function main(argv: string[], print = console.log): Promise<Record<string, unknown>[]> {
  if (argv.includes("--help") || argv.includes("-h")) return (print(USAGE), []);
  const a = parseSampleBenchArgs(argv);
  const device = await benchDevice(a.device);
  const hardware = (device === "cuda" ? await gpuName() : null) ?? cpuName();
  const settings: SampleSettings = {
    k: a.k,
    seed: 0,
    temperature: 1,
    topP: 1,
    topK: 0,
    repetitionPenalty: 1,
    maxNewTokens: a.tokens,
    maxPromptLength: null,
  };
  const records: Record<string, unknown>[] = [];
  for (const shape of a.shapes) {
    const dir = await randomModelFolder(a.models, shape);
    for (const fold of a.folds) {
      const decoder = await openGenerator(dir, {
        device,
        threads: a.threads,
        foldWeights: fold === "auto" ? "auto" : fold === "on",
        log: () => {},
        withTokenizer: true,
      });
      try {
        const d = a.ignoreEos ? { ...decoder, eosIds: [] } : decoder;
        const jobs = promptJobs(decoder, benchPrompts(a.prompts), settings);
        if (a.dumpPrompts) {
          await Deno.writeTextFile(
            a.dumpPrompts,
            JSON.stringify({ prompts: jobs.map((j) => j.ids) }),
          );
        }
        for (const batch of a.batches) {
          // warm-up: one batch of a few tokens
          for await (
            const _ of sampleRows(d, jobs.slice(0, 2), { ...settings, maxNewTokens: 2 }, { batch })
          ) {
            // nothing to keep
          }
          let tokens = 0, rows = 0;
          const t0 = performance.now();
          for await (const b of sampleRows(d, jobs, settings, { batch })) {
            tokens += b.tokens;
            rows += b.rows.length;
          }
          const s = (performance.now() - t0) / 1000;
          const rec = {
            bench: "sample",
            shape,
            device,
            hardware,
            ort: ortVersion(),
            backend: decoder.session.backend,
            fold_weights: decoder.foldedWeights,
            batch,
            prompts: rows,
            k: a.k,
            max_new_tokens: a.tokens,
            ignore_eos: a.ignoreEos,
            tokens,
            seconds: round(s),
            tokens_per_s: round(tokens / s, 1),
            prompts_per_s: round(rows / s, 2),
          };
          print(JSON.stringify(rec));
          records.push(rec);
        }
      } finally {
        await decoder.close();
      }
    }
  }
  return records;
}

if (import.meta.main) await runCli(main, USAGE);
