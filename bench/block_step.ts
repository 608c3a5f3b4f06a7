/**
 * Training-engine benchmark on one transformer block: the real GPT-2 decoder with a 1-layer config
 * (hidden 768, 12 heads; a small vocabulary so the embedding and LM head stay negligible), trained with
 * the toolkit's own training graph — forward, backward (our autodiff), clipping and AdamW inside an ONNX
 * `Loop` over the optimizer steps of a session run — on an SFT loss over random tokens.
 *
 * Per case (`full`: every weight trains; `lora`: r = 16 on c_attn, c_proj, c_fc) it prints one JSON line:
 * - `step_ms`: the time of one more optimizer step inside the Loop, (t(S) − t(1)) / (S − 1) from the median
 *   run times at S = `--steps-per-run` and at 1 step: the engine's per-step cost, without the per-run
 *   transfer of the trainable state through the JS boundary;
 * - `run_overhead_ms` = t(1) − step_ms: the per-run cost (state in and out, feeds, session.run);
 * - `wall_step_ms` = t(S) / S and `tokens_per_s` from it: what a training run at S steps per run sees;
 * - `step_nodes`: the nodes of one step (the Loop body, subgraphs counted recursively) before ONNX
 *   Runtime's fusions, with the most frequent operators. On CUDA each node costs ~4 µs of launch overhead
 *   (`launch_floor_ms` = step_nodes × 4 µs), so a small block is launch-bound when step_ms is near it.
 *
 * Run: `deno run -A bench/block_step.ts --device cuda` (defaults: batch 8 × 512 tokens, S = 8, 3 timed
 * runs of each length after 1 warmup of each). `--help` lists the flags.
 * @module
 */
import { initWeights } from "../lib/model/init.ts";
import { countParameters } from "../lib/model/weights.ts";
import {
  benchDevice,
  cpuName,
  CUDA_LAUNCH_MS_PER_NODE,
  deviceFlag,
  gpt2Config,
  gpuName,
  intFlag,
  listFlag,
  median,
  ortVersion,
  parseFlags,
  prepareCase,
  round,
  runCli,
  syntheticChunk,
  timeRun,
} from "./_common.ts";

export const USAGE = `Usage: deno run -A bench/block_step.ts [flags]

One transformer block (1-layer GPT-2 decoder) trained by the toolkit's training graph:
per-step time and the number of nodes per step. One JSON line per case on stdout.

  --device cpu|cuda|auto   where to run (default cpu)
  --cases LIST             full,lora (default both)
  --batch N                sequences per step (default 8)
  --seq N                  tokens per sequence (default 512)
  --steps-per-run S        optimizer steps per session run (default 8, ≥ 2)
  --runs N                 timed runs at S steps and at 1 step each (default 3)
  --warmup N               untimed runs of each length first (default 1)
  --layers N               decoder layers (default 1)
  --hidden N               hidden size (default 768)
  --heads N                attention heads (default 12)
  --vocab N                vocabulary (default 256: embedding and LM head stay small)
  --lora-r N               LoRA rank for the lora case (default 16)
  --threads N              CPU threads inside an operator (default: all cores)
  --seed N                 data and weight seed (default 0)
  --help                   this text`;

const FLAGS = {
  device: { type: "string", default: "cpu" },
  cases: { type: "string", default: "full,lora" },
  batch: { type: "string", default: "8" },
  seq: { type: "string", default: "512" },
  "steps-per-run": { type: "string", default: "8" },
  runs: { type: "string", default: "3" },
  warmup: { type: "string", default: "1" },
  layers: { type: "string", default: "1" },
  hidden: { type: "string", default: "768" },
  heads: { type: "string", default: "12" },
  vocab: { type: "string", default: "256" },
  "lora-r": { type: "string", default: "16" },
  threads: { type: "string" },
  seed: { type: "string", default: "0" },
  help: { type: "boolean", default: false, short: "h" },
} as const;

/** One line of output. */
export type BlockStepResult = Record<string, unknown> & {
  bench: "block_step";
  case: "full" | "lora";
  step_ms: number;
  step_nodes: number;
};

/** Runs the benchmark; prints and returns one record per case. `--help` prints the usage and returns []. */
export async function main(
  argv: string[],
  print: (line: string) => void = console.log,
): Promise<BlockStepResult[]> {
  const f = parseFlags(argv, FLAGS);
  if (f.help) {
    print(USAGE);
    return [];
  }
  const cases = listFlag("cases", f.cases, ["full", "lora"] as const);
  const batch = intFlag("batch", f.batch), seq = intFlag("seq", f.seq);
  const S = intFlag("steps-per-run", f["steps-per-run"], 2);
  const runs = intFlag("runs", f.runs), warmup = intFlag("warmup", f.warmup, 0);
  const sizes = {
    layers: intFlag("layers", f.layers),
    hidden: intFlag("hidden", f.hidden),
    heads: intFlag("heads", f.heads),
    vocab: intFlag("vocab", f.vocab, 2),
    positions: Math.max(seq, 64),
  };
  const loraR = intFlag("lora-r", f["lora-r"]);
  const threads = f.threads === undefined ? undefined : intFlag("threads", f.threads);
  const seed = intFlag("seed", f.seed, 0);
  const req = deviceFlag(f.device);

  const device = await benchDevice(req);
  const cfg = gpt2Config(sizes);
  const weights = initWeights(cfg, { seed });
  const feeds = syntheticChunk({
    steps: S,
    rows: batch,
    width: seq,
    vocab: sizes.vocab,
    loss: "sft",
    k: 1,
    seed,
  });
  const hardware = device === "cuda" ? await gpuName() : cpuName();
  const out: BlockStepResult[] = [];
  for (const name of cases) {
    const c = await prepareCase({ cfg, weights, mode: name, loss: "sft", k: 1, loraR, device, threads });
    try {
      for (let i = 0; i < warmup; i++) {
        await timeRun(c.session, feeds, S);
        await timeRun(c.session, feeds, 1);
      }
      const many: number[] = [], one: number[] = [];
      let loss = NaN;
      for (let i = 0; i < runs; i++) {
        const r = await timeRun(c.session, feeds, S);
        many.push(r.ms);
        loss = r.loss;
        one.push((await timeRun(c.session, feeds, 1)).ms);
      }
      const tS = median(many), t1 = median(one);
      // the in-Loop cost of a step; noise can make it exceed t(1) on tiny graphs, never below 0
      const step = Math.max((tS - t1) / (S - 1), 0);
      const rec: BlockStepResult = {
        bench: "block_step",
        case: name,
        device,
        hardware,
        ort: ortVersion(),
        layers: sizes.layers,
        hidden: sizes.hidden,
        heads: sizes.heads,
        vocab: sizes.vocab,
        batch,
        seq,
        steps_per_run: S,
        runs,
        params: countParameters(weights),
        trainable_params: c.trainableParams,
        step_ms: round(step),
        wall_step_ms: round(tS / S),
        run_overhead_ms: round(Math.max(t1 - step, 0)),
        run_ms: round(tS),
        one_step_run_ms: round(t1),
        tokens_per_s: round((batch * seq) / (tS / S / 1000), 1),
        step_nodes: c.stats.stepNodes,
        graph_nodes: c.stats.graphNodes,
        launch_floor_ms: round(c.stats.stepNodes * CUDA_LAUNCH_MS_PER_NODE),
        step_ops: Object.fromEntries(c.stats.stepOps),
        build_s: round(c.buildS),
        session_s: round(c.sessionS),
        loss: round(loss, 5),
      };
      print(JSON.stringify(rec));
      out.push(rec);
    } finally {
      await c.session.release();
    }
  }
  return out;
}

if (import.meta.main) await runCli(main, USAGE);
