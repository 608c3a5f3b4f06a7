/**
 * Peak memory of the whole pipeline on models of real shapes: makes a random-weight bf16 folder of the
 * shape (once, cached), reward data of the asked size, runs `deno task train` (reference log-probs,
 * training steps, export) as a child process and, with `--serve`, `deno task serve` on the result with
 * one `/v1/logprobs` request. Prints one JSON line: the trainer's memory estimate, the measured peak of
 * each phase (the trainer's summary; Linux VmHWM, mapped model files included), the server's peak, the
 * times, and how far the estimate is from the training peak.
 *
 *   deno run -A bench/memory.ts --shape tinyllama-1.1b --prompts 2 --k 4 --tokens 200 --steps 2 --serve
 *   deno run -A bench/memory.ts --shape smollm-135m --full
 *
 * Flags: --shape (see bench/_shapes.ts), --full (full fine-tuning; LoRA r=16 otherwise), --prompts (per
 * step, default 2), --k (default 4), --tokens (per response, default 200), --prompt-tokens (default 32),
 * --steps (default 2), --checkpointing on|off|auto (default auto), --serve, --device (default cpu),
 * --models DIR (where the random folders are kept; default ~/.cache/nca-align/bench-models), --keep (keep
 * the run folder).
 * @module
 */
import { join } from "node:path";
import { parseConfig } from "../lib/model/config.ts";
import { deviceFlag, intFlag, parseFlags, runCli, UsageError } from "./_common.ts";
import { randomModelFolder, shapeParameters, SHAPES } from "./_shapes.ts";

const USAGE = `Usage: deno run -A bench/memory.ts --shape NAME [--full] [--prompts N] [--k K] [--tokens T]
  [--prompt-tokens T] [--steps N] [--checkpointing on|off|auto] [--serve] [--device cpu|cuda]
  [--models DIR] [--keep]
Shapes: ${Object.keys(SHAPES).join(", ")}`;

const WORDS =
  "the a is what how you it to of and not yes no hello world answer question good best math code plus"
    .split(" ");

/** The parsed flags. */
export type MemoryBenchArgs = {
  shape: string;
  full: boolean;
  prompts: number;
  k: number;
  tokens: number;
  promptTokens: number;
  steps: number;
  checkpointing: "on" | "off" | "auto";
  serve: boolean;
  device: "cpu" | "cuda" | "auto";
  models: string;
  keep: boolean;
};

/** Parses the flags (exported for the tests). */
export function parseMemoryArgs(argv: string[]): MemoryBenchArgs {
  const f = parseFlags(argv, {
    shape: { type: "string" },
    full: { type: "boolean", default: false },
    prompts: { type: "string", default: "2" },
    k: { type: "string", default: "4" },
    tokens: { type: "string", default: "200" },
    "prompt-tokens": { type: "string", default: "32" },
    steps: { type: "string", default: "2" },
    checkpointing: { type: "string", default: "auto" },
    serve: { type: "boolean", default: false },
    device: { type: "string", default: "cpu" },
    models: { type: "string" },
    keep: { type: "boolean", default: false },
  });
  const shape = String(f.shape ?? "");
  if (!SHAPES[shape]) {
    throw new UsageError(`--shape must be one of ${Object.keys(SHAPES).join(", ")}, got "${shape}"`);
  }
  const checkpointing = f.checkpointing;
  if (checkpointing !== "on" && checkpointing !== "off" && checkpointing !== "auto") {
    throw new UsageError(`--checkpointing must be on, off or auto, got ${JSON.stringify(checkpointing)}`);
  }
  return {
    shape,
    full: f.full === true,
    prompts: intFlag("prompts", f.prompts),
    k: intFlag("k", f.k, 2),
    tokens: intFlag("tokens", f.tokens),
    promptTokens: intFlag("prompt-tokens", f["prompt-tokens"]),
    steps: intFlag("steps", f.steps),
    checkpointing,
    serve: f.serve === true,
    device: deviceFlag(f.device),
    models: typeof f.models === "string"
      ? f.models
      : join(Deno.env.get("HOME") ?? ".", ".cache/nca-align/bench-models"),
    keep: f.keep === true,
  };
}

/** Reward data: `n` prompts of `promptTokens` words with `k` responses of `tokens` words (one token each). */
export function rewardData(n: number, k: number, promptTokens: number, tokens: number, seed = 1): string {
  let s = seed >>> 0;
  const word = () => WORDS[(s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % WORDS.length];
  const text = (len: number) => Array.from({ length: len }, word).join(" ");
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const responses = Array.from({ length: k }, (_, j) => ({ text: text(tokens), reward: (j * 7 + i) % 5 }));
    lines.push(JSON.stringify({ prompt: text(promptTokens), responses }));
  }
  return lines.join("\n") + "\n";
}

/** The resident peak of a running process (Linux VmHWM), polled. */
function peakOf(pid: number): number {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(s.match(/^VmHWM:\s+(\d+) kB/m)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

const gib = (b: number) => Math.round(b / 2 ** 30 * 100) / 100;

async function main(argv: string[]) {
  if (argv.includes("--help") || argv.includes("-h")) return void console.log(USAGE);
  const a = parseMemoryArgs(argv);
  const repo = new URL("..", import.meta.url).pathname;
  const t0 = performance.now();
  const model = await randomModelFolder(a.models, a.shape);
  const makeS = (performance.now() - t0) / 1000;
  const work = await Deno.makeTempDir({ prefix: `memory-${a.shape}-` });
  const data = join(work, "reward.jsonl");
  await Deno.writeTextFile(data, rewardData(a.prompts * a.steps, a.k, a.promptTokens, a.tokens));
  const run = join(work, "run");
  const maxLength = a.promptTokens + a.tokens + 16;
  const args = [
    "run",
    "-A",
    "--v8-flags=--expose-gc",
    join(repo, "train/main.ts"),
    "--model",
    model,
    "--data",
    data,
    "--loss",
    "nca",
    "--k",
    String(a.k),
    "--batch-size",
    String(a.prompts),
    "--max-steps",
    String(a.steps),
    "--eval-fraction",
    "0",
    "--max-length",
    String(maxLength),
    "--max-prompt-length",
    String(a.promptTokens + 8),
    "--lora-r",
    "16",
    "--lr",
    "1e-5",
    "--device",
    a.device,
    "--out",
    run,
    "--quiet",
  ];
  if (a.full) args.push("--full");
  if (a.checkpointing !== "auto") {
    args.push(a.checkpointing === "on" ? "--gradient-checkpointing" : "--no-gradient-checkpointing");
  }
  const t1 = performance.now();
  const train = new Deno.Command(Deno.execPath(), { args, cwd: repo, stdout: "piped", stderr: "piped" })
    .spawn();
  const out = await train.output();
  const trainS = (performance.now() - t1) / 1000;
  const stdout = new TextDecoder().decode(out.stdout), stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`training failed (exit ${out.code}):\n${stdout}\n${stderr}`);
  const summary = JSON.parse(await Deno.readTextFile(join(run, "summary.json")));
  const peaks: Record<string, number> = summary.peak_memory_gib;
  const estimate: Record<string, number> = summary.memory_estimate_gib;
  const trainPeak = Math.max(peaks.load ?? 0, peaks.reference ?? 0, peaks.train ?? 0);

  let servePeak: number | undefined, scoreS: number | undefined;
  if (a.serve) ({ servePeak, scoreS } = await serveOnce(repo, run, a));

  const cfg = parseConfig(SHAPES[a.shape], a.shape);
  const record = {
    bench: "memory",
    shape: a.shape,
    params: shapeParameters(a.shape),
    mode: a.full ? "full" : "lora r=16",
    device: a.device,
    loss: "nca",
    batch: `${a.prompts} × ${a.k} × ${a.tokens + a.promptTokens} tokens`,
    steps: a.steps,
    vocab: cfg.vocabSize,
    gradient_checkpointing: summary.gradient_checkpointing,
    estimate_gib: estimate,
    peak_gib: { ...peaks, overall: Math.max(...Object.values(peaks)), serve: servePeak && gib(servePeak) },
    estimate_vs_training_peak: Math.round((estimate.total / trainPeak - 1) * 1000) / 1000,
    seconds: { make_folder: Math.round(makeS), train_and_export: Math.round(trainS), logprobs: scoreS },
    log: stdout.split("\n").filter((l) => /memory estimate|checkpointing|reference log-probs/.test(l)),
  };
  console.log(JSON.stringify(record));
  if (!a.keep) await Deno.remove(work, { recursive: true });
}

/** Serves the run, asks `/v1/logprobs` once (K candidates of the bench's length), returns the server's peak. */
async function serveOnce(
  repo: string,
  run: string,
  a: MemoryBenchArgs,
): Promise<{ servePeak: number; scoreS: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      join(repo, "serve/main.ts"),
      "--model",
      run,
      "--port",
      "0",
      "--device",
      a.device,
    ],
    cwd: repo,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let url: string | undefined, buffered = "";
  let peak = 0;
  while (!url) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the server exited before listening:\n${buffered}`);
    buffered += value;
    url = buffered.match(/listening on (http:\/\/\S+)/)?.[1];
  }
  const poll = setInterval(() => (peak = Math.max(peak, peakOf(child.pid))), 100);
  try {
    const t0 = performance.now();
    const res = await fetch(`${url}/v1/logprobs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        prompt: rewardData(1, 1, a.promptTokens, 1).match(/"prompt":"([^"]*)"/)![1],
        candidates: JSON.parse(rewardData(1, a.k, 1, a.tokens)).responses.map((r: { text: string }) =>
          r.text
        ),
      }),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(`/v1/logprobs answered ${res.status}: ${JSON.stringify(body)}`);
    const scoreS = Math.round((performance.now() - t0) / 100) / 10;
    peak = Math.max(peak, peakOf(child.pid));
    return { servePeak: peak, scoreS };
  } finally {
    clearInterval(poll);
    child.kill("SIGTERM");
    await child.status;
    reader.releaseLock();
  }
}

if (import.meta.main) await runCli(main, USAGE);
