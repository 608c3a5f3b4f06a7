/**
 * Decode throughput of the exported decoder (what `deno task serve` and sampling run) on model shapes
 * people align: a random-weight bf16 folder of the shape (bench/_shapes.ts, made once), exported as the
 * trainer exports `policy/`, then generation of `--tokens` new tokens after a `--prompt`-token prompt, per
 * batch size, per way of reading the bf16 weights (`--fold`), per backend: `node` (onnxruntime-node: the KV
 * cache crosses into JavaScript and back at every step) and `ffi` (ONNX Runtime's C API: the cache stays in
 * ONNX Runtime values, only the logits come back), and per way of choosing tokens (`--sampler`): `host`
 * (the logits come to JavaScript, which samples) or `graph` (lib/model/graph_sampler.ts: ONNX Runtime
 * samples, only ids and log-probs come back). Greedy by default; `--temperature T` samples, each row from
 * its own seed.
 *
 *   deno run -A bench/decode.ts --shape smollm-135m,qwen2.5-0.5b --batch 1,4 --tokens 32
 *   deno run -A bench/decode.ts --shape smollm-135m --batch 1,16 --backend ffi --fold on \
 *     --sampler host,graph --temperature 1
 *
 * One JSON line per shape × batch × fold × backend × sampler: decode tokens/s (batch · new tokens / the
 * time of the generation after a warm-up one, prefill included), ms per step, and whether every case
 * produced the first case's tokens.
 * @module
 */
import { join } from "node:path";
import { readStoredTensor } from "../lib/model/weight_files.ts";
import { exportForServing } from "../lib/model/export.ts";
import { generate } from "../lib/model/generate.ts";
import { GraphSampler } from "../lib/model/graph_sampler.ts";
import { loadModelFolder } from "../lib/model/model_folder.ts";
import { ModelSession } from "../lib/runtime/session.ts";
import {
  benchDevice,
  cpuName,
  deviceFlag,
  gpuName,
  intFlag,
  listFlag,
  ortVersion,
  parseFlags,
  positiveFlag,
  round,
  runCli,
} from "./_common.ts";
import { randomModelFolder, SHAPES } from "./_shapes.ts";

export const USAGE = `Usage: deno run -A bench/decode.ts [flags]

Decode tokens/s of exported random-weight decoders of real shapes, onnxruntime-node against the C API,
sampling in JavaScript against sampling in the graph.

  --shape LIST      shapes (bench/_shapes.ts; default smollm-135m,qwen2.5-0.5b)
  --batch LIST      batch sizes (default 1,4)
  --tokens N        new tokens per sequence (default 32)
  --prompt N        prompt tokens (default 32)
  --backend LIST    node,ffi (default both)
  --fold LIST       off,on: bf16 weights cast at every use, or once at load (the server's choice when the
                    fp32 copy fits an eighth of free memory); default both
  --sampler LIST    host,graph: tokens chosen in JavaScript from the logits, or in ONNX Runtime
                    (lib/model/graph_sampler.ts); default host
  --temperature T   0 (default): greedy; else seeded sampling at T (row b's seed is b)
  --device D        cpu|cuda|auto (default cpu)
  --threads N       CPU threads inside an operator (default: all cores)
  --models DIR      where the random folders are kept (default ~/.cache/nca-align/bench-models)
  --help            this text`;

/** The parsed flags. */
export type DecodeArgs = {
  shapes: string[];
  batches: number[];
  tokens: number;
  prompt: number;
  backends: ("node" | "ffi")[];
  folds: ("off" | "on")[];
  samplers: ("host" | "graph")[];
  temperature: number;
  threads?: number;
  device: "cpu" | "cuda" | "auto";
  models: string;
};

/** Parses the flags (exported for the tests). */
export function parseDecodeArgs(argv: string[]): DecodeArgs {
  const f = parseFlags(argv, {
    shape: { type: "string", default: "smollm-135m,qwen2.5-0.5b" },
    batch: { type: "string", default: "1,4" },
    tokens: { type: "string", default: "32" },
    prompt: { type: "string", default: "32" },
    backend: { type: "string", default: "node,ffi" },
    fold: { type: "string", default: "off,on" },
    sampler: { type: "string", default: "host" },
    temperature: { type: "string", default: "0" },
    threads: { type: "string" },
    device: { type: "string", default: "cpu" },
    models: { type: "string" },
    help: { type: "boolean", default: false, short: "h" },
  });
  const shapes = listFlag("shape", f.shape, Object.keys(SHAPES));
  const batches = String(f.batch).split(",").map((b) => intFlag("batch", b.trim()));
  return {
    shapes,
    batches,
    tokens: intFlag("tokens", f.tokens),
    prompt: intFlag("prompt", f.prompt),
    backends: listFlag("backend", f.backend, ["node", "ffi"] as const),
    folds: listFlag("fold", f.fold, ["off", "on"] as const),
    samplers: listFlag("sampler", f.sampler, ["host", "graph"] as const),
    temperature: f.temperature === "0" ? 0 : positiveFlag("temperature", f.temperature),
    threads: f.threads === undefined ? undefined : intFlag("threads", f.threads),
    device: deviceFlag(f.device),
    models: typeof f.models === "string"
      ? f.models
      : join(Deno.env.get("HOME") ?? ".", ".cache/nca-align/bench-models"),
  };
}

/** The exported decoder of a shape's random folder (made once, beside it). */
async function exported(models: string, shape: string): Promise<string> {
  const dir = await randomModelFolder(models, shape);
  const out = `${dir}-policy`;
  const onnx = join(out, "onnx", "model.onnx");
  try {
    await Deno.stat(onnx);
    return onnx;
  } catch {
    // not made yet
  }
  const m = await loadModelFolder(dir);
  await exportForServing(out, {
    cfg: m.config,
    weights: (n) => readStoredTensor(m.stored.get(n)!),
    dtype: "bfloat16",
    tokenizerDir: dir,
  });
  return onnx;
}

/** Runs the benchmark; prints and returns one record per shape × batch × fold × backend × sampler. */
export async function main(argv: string[], print = console.log): Promise<Record<string, unknown>[]> {
  if (argv.includes("--help") || argv.includes("-h")) return (print(USAGE), []);
  const a = parseDecodeArgs(argv);
  const device = await benchDevice(a.device);
  const gpu = device === "cuda" ? await gpuName() : null;
  const records: Record<string, unknown>[] = [];
  for (const shape of a.shapes) {
    const onnx = await exported(a.models, shape);
    const vocab = Number(SHAPES[shape].vocab_size);
    for (const batch of a.batches) {
      const prompts = Array.from(
        { length: batch },
        (_, b) => Array.from({ length: a.prompt }, (_, t) => (t * 31 + b * 7 + 3) % vocab),
      );
      const tokens: number[][][] = [];
      for (const fold of a.folds) {
        for (const backend of a.backends) {
          const session = await ModelSession.create(onnx, {
            intraOpThreads: a.threads,
            device,
            backend,
            foldWeights: fold === "on",
          });
          try {
            for (const samplerKind of a.samplers) {
              const sampler = samplerKind === "graph" ? await GraphSampler.beside(session) : undefined;
              try {
                const opts = {
                  maxNewTokens: a.tokens,
                  temperature: a.temperature,
                  seeds: prompts.map((_, b) => b),
                  sampler,
                };
                await generate(session, prompts, { ...opts, maxNewTokens: 2 }); // warm-up
                const t0 = performance.now();
                const r = await generate(session, prompts, opts);
                const s = (performance.now() - t0) / 1000;
                tokens.push(r.rows.map((row) => row.tokens));
                const rec = {
                  bench: "decode",
                  shape,
                  backend: session.backend,
                  fold_weights: fold === "on",
                  sampler: samplerKind,
                  temperature: a.temperature,
                  device,
                  hardware: gpu ?? cpuName(),
                  ort: ortVersion(),
                  batch,
                  prompt_tokens: a.prompt,
                  new_tokens: a.tokens,
                  steps: r.steps,
                  tokens_per_s: round((batch * a.tokens) / s, 1),
                  step_ms: round((s * 1000) / r.steps),
                  same_tokens_as_first_case: JSON.stringify(tokens[0]) === JSON.stringify(tokens.at(-1)),
                };
                print(JSON.stringify(rec));
                records.push(rec);
              } finally {
                await sampler?.release();
              }
            }
          } finally {
            await session.release();
          }
        }
      }
    }
  }
  return records;
}

if (import.meta.main) await runCli(main, USAGE);
