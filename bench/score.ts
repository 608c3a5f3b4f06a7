/**
 * Scoring throughput of a reward model (`deno task score --reward-model`): a small random
 * `…ForSequenceClassification` folder (fp32, with a word-level tokenizer and a Zephyr-style chat template)
 * is written to a temporary folder, loaded by the reward-model scorer, and `--sequences` (prompt, response)
 * pairs are scored `--batch` per forward pass after a warm-up call: tokenization with the chat template,
 * padding and the forward pass all counted, the load not.
 *
 *   deno run -A bench/score.ts --layers 4 --hidden 256 --prompt 96 --response 96 --batch 8
 *
 * One JSON line: sequences/s, tokens/s, the shape, the machine.
 * @module
 */
import { join } from "node:path";
import { tinyConfig } from "../tests/fixtures/tiny_config.ts";
import { configToJson } from "../lib/model/config_json.ts";
import { initWeights } from "../lib/model/init.ts";
import { saveWeights } from "../lib/model/weight_files.ts";
import { GPT2_PREFIX } from "../lib/model/weights_names.ts";
import { countParameters } from "../lib/model/weights.ts";
import { writeWordPieceTokenizer } from "../lib/data/wordpiece.ts";
import { mulberry32 } from "../lib/data/random.ts";
import { rewardModelScorer } from "../lib/loop/scorers/reward_model.ts";
import type { ScoreItem } from "../lib/loop/scorers/types.ts";
import {
  cpuName,
  deviceFlag,
  gpuName,
  intFlag,
  ortVersion,
  parseFlags,
  round,
  runCli,
  UsageError,
} from "./_common.ts";

export const USAGE = `Usage: deno run -A bench/score.ts [flags]

Sequences/s of a small random reward model through the reward-model scorer (template, tokenizer, forward).

  --family llama|gpt2   the decoder (default llama)
  --layers N            decoder layers (default 4)
  --hidden N            hidden size (default 256; heads of 32)
  --vocab N             vocabulary (default 4096)
  --prompt N            prompt words (one token each; default 96)
  --response N          response words (default 96)
  --batch N             sequences per forward pass (default 8)
  --sequences N         sequences timed (default 64)
  --device D            cpu|cuda|auto (default cpu)
  --threads N           CPU threads inside an operator (default: all cores)
  --help                this text`;

const FLAGS = {
  family: { type: "string", default: "llama" },
  layers: { type: "string", default: "4" },
  hidden: { type: "string", default: "256" },
  vocab: { type: "string", default: "4096" },
  prompt: { type: "string", default: "96" },
  response: { type: "string", default: "96" },
  batch: { type: "string", default: "8" },
  sequences: { type: "string", default: "64" },
  device: { type: "string", default: "cpu" },
  threads: { type: "string" },
  help: { type: "boolean", default: false, short: "h" },
} as const;

/** The parsed flags. */
export type ScoreBenchArgs = {
  family: "llama" | "gpt2";
  layers: number;
  hidden: number;
  vocab: number;
  prompt: number;
  response: number;
  batch: number;
  sequences: number;
  device: "cpu" | "cuda" | "auto";
  threads?: number;
};

/** Parses the flags (null: --help). */
export function parseScoreBenchArgs(argv: string[]): ScoreBenchArgs | null {
  const f = parseFlags(argv, FLAGS);
  if (f.help) return null;
  if (f.family !== "llama" && f.family !== "gpt2") throw new UsageError(`--family must be llama or gpt2`);
  const hidden = intFlag("hidden", f.hidden, 32);
  if (hidden % 32 !== 0) throw new UsageError(`--hidden must be a multiple of 32 (heads of 32)`);
  return {
    family: f.family,
    layers: intFlag("layers", f.layers),
    hidden,
    vocab: intFlag("vocab", f.vocab, 64),
    prompt: intFlag("prompt", f.prompt),
    response: intFlag("response", f.response),
    batch: intFlag("batch", f.batch),
    sequences: intFlag("sequences", f.sequences),
    device: deviceFlag(f.device),
    threads: f.threads === undefined ? undefined : intFlag("threads", f.threads),
  };
}

/** Lowercase words of 3+ letters, one token each in the written vocabulary. */
function words(n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) {
    let w = "", x = i + 26 * 26;
    while (x > 0) {
      w = String.fromCharCode(97 + (x % 26)) + w;
      x = Math.floor(x / 26);
    }
    out.push(w);
  }
  return out;
}

const TEMPLATE = "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + " +
  "eos_token + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/** Writes the random reward model folder; returns its parameter count. */
async function writeFolder(dir: string, a: ScoreBenchArgs): Promise<number> {
  const specials = ["<pad>", "<eos>", "<unk>", "<|user|>", "<|assistant|>"];
  await writeWordPieceTokenizer(dir, {
    specials,
    tokens: words(a.vocab - specials.length),
    eos: "<eos>",
    pad: "<pad>",
    unk: "<unk>",
    chatTemplate: TEMPLATE,
  });
  const heads = a.hidden / 32;
  const sizes = {
    vocabSize: a.vocab,
    hiddenSize: a.hidden,
    numHeads: heads,
    maxPositions: 2 * (a.prompt + a.response) + 64,
    eosTokenId: 1,
    padTokenId: 0,
  };
  const cfg = a.family === "gpt2"
    ? tinyConfig("gpt2", sizes)
    : tinyConfig("llama", { ...sizes, bosTokenId: null });
  cfg.numLayers = a.layers;
  const w = initWeights(cfg, { seed: 1, std: 0.05 });
  w.delete("lm_head.weight");
  const rand = mulberry32(2);
  w.set("score.weight", {
    shape: [1, a.hidden],
    data: Float32Array.from({ length: a.hidden }, () => rand() - 0.5),
  });
  const named = new Map(
    [...w].map(([n, t]) => [a.family === "gpt2" && n !== "score.weight" ? GPT2_PREFIX + n : n, t]),
  );
  await saveWeights(dir, named);
  const json = configToJson(cfg);
  json.architectures = [
    a.family === "gpt2" ? "GPT2ForSequenceClassification" : "LlamaForSequenceClassification",
  ];
  json.id2label = { "0": "LABEL_0" };
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(json));
  return countParameters(w);
}

/** Runs the benchmark; prints one JSON line. */
export async function main(argv: string[], print: (line: string) => void = console.log): Promise<void> {
  const a = parseScoreBenchArgs(argv);
  if (a === null) {
    print(USAGE);
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "bench_score_" });
  try {
    const params = await writeFolder(dir, a);
    const scorer = await rewardModelScorer(dir, { device: a.device, threads: a.threads, batch: a.batch });
    try {
      const vocab = words(a.vocab - 5), rand = mulberry32(3);
      const text = (n: number) =>
        Array.from({ length: n }, () => vocab[Math.floor(rand() * vocab.length)]).join(" ");
      const item = (): ScoreItem => ({
        prompt: [{ role: "user", content: text(a.prompt) }],
        response: text(a.response),
        row: {},
      });
      await scorer.score(Array.from({ length: a.batch }, item)); // warm-up
      const items = Array.from({ length: a.sequences }, item);
      const t0 = performance.now();
      await scorer.score(items);
      const s = (performance.now() - t0) / 1000;
      const tokens = a.sequences * (a.prompt + a.response + 4); // + the template's markers and ends
      print(JSON.stringify({
        bench: "score",
        family: a.family,
        layers: a.layers,
        hidden: a.hidden,
        vocab: a.vocab,
        params,
        tokens_per_sequence: a.prompt + a.response + 4,
        batch: a.batch,
        sequences: a.sequences,
        seconds: round(s),
        sequences_per_s: round(a.sequences / s, 2),
        tokens_per_s: Math.round(tokens / s),
        device: scorer.device,
        threads: a.threads ?? navigator.hardwareConcurrency,
        cpu: cpuName(),
        gpu: scorer.device === "cuda" ? await gpuName() : null,
        ort: ortVersion(),
      }));
    } finally {
      await scorer.release();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await runCli(main, USAGE);
