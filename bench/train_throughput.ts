/**
 * Training throughput of the toolkit's training graphs on a GPT-2-124M-shaped model (random init: vocab
 * 50257, 12 layers, hidden 768, 12 heads, 1024 positions), batch 8 × 512 tokens of seeded random ids:
 *
 * - `full`: every weight trains, SFT loss (mean token log-prob);
 * - `lora`: LoRA r = 16 (alpha 32) on c_attn, c_proj (attention and MLP) and c_fc, SFT loss;
 * - `nca`:  the same LoRA, NCA loss with K = 4 (2 prompts × 4 responses = 8 sequences × 512).
 *
 * All use AdamW (weight decay 0.01) with clipping at norm 1, as the trainer does, and run
 * `--steps-per-run` optimizer steps per session run (an ONNX Loop; the trainable state crosses the JS
 * boundary once per run). After `--warmup` untimed runs, ⌈steps / steps-per-run⌉ runs are timed:
 *
 *   tokens_per_s = batch · seq · timed steps / timed wall time      (per-run transfers included)
 *   step_ms      = timed wall time / timed steps
 *   mfu          = flops_per_token · tokens_per_s / peak
 *   flops_per_token = 6·N (full: forward 2N + backward 2N for activations + 2N for weights)
 *                     4·N (LoRA: the frozen weights need no weight gradient; adapters are negligible)
 *   N = every parameter, embeddings included (tied wte counted once), as is conventional; attention's
 *   score FLOPs (12·layers·hidden·seq per token, ~8 % more at 512 tokens) are not counted.
 *   peak = `--peak-tflops`, else by GPU name: H100/H200 SXM dense TF32 494.7 TFLOP/s (the graphs keep fp32
 *   storage; ONNX Runtime's CUDA provider uses TF32 matmuls). On the CPU MFU is null unless given.
 *
 * With `--overhead-runs N` (default 1) a 1-step run is also timed, which splits a run into the in-Loop
 * step (`in_loop_step_ms` = (t(S) − t(1)) / (S − 1)) and the per-run overhead (`run_overhead_ms`).
 * `--profile PREFIX` turns on ONNX Runtime's profiler for the sessions of this invocation (one trace per
 * case, `PREFIX-<case>_<date>.json`, path in the `profile` field); read it with bench/profile_summary.ts,
 * which by default summarizes the last (timed) run. Profiling slows runs down: time without it.
 *
 * Run: `deno run -A bench/train_throughput.ts --device cuda` (one JSON line per case on stdout).
 * Tiny, for tests: `--layers 2 --hidden 32 --heads 4 --vocab 64 --batch 2 --seq 16 --steps 2`.
 * @module
 */
import { initWeights } from "../lib/model/init.ts";
import { countParameters } from "../lib/model/weights.ts";
import {
  benchDevice,
  cpuName,
  defaultPeakTflops,
  deviceFlag,
  gpt2Config,
  gpuName,
  intFlag,
  listFlag,
  median,
  ortVersion,
  parseFlags,
  positiveFlag,
  prepareCase,
  round,
  runCli,
  syntheticChunk,
  timeRun,
  UsageError,
} from "./_common.ts";

export const USAGE = `Usage: deno run -A bench/train_throughput.ts [flags]

Tokens/s and MFU of training steps of a GPT-2-124M-shaped model (random weights and tokens).
One JSON line per case on stdout.

  --device cpu|cuda|auto   where to run (default cpu)
  --cases LIST             full,lora,nca (default all three)
  --batch N                sequences per step (default 8; nca: prompts × K)
  --seq N                  tokens per sequence (default 512)
  --steps N                timed optimizer steps (default 16; rounded up to whole runs)
  --steps-per-run S        optimizer steps per session run (default 8)
  --warmup N               untimed runs first (default 1)
  --overhead-runs N        1-step runs to split off the per-run overhead (default 1; 0 = skip)
  --layers N               (default 12)
  --hidden N               (default 768)
  --heads N                (default 12)
  --vocab N                (default 50257)
  --positions N            position table size (default max(1024, seq))
  --k N                    responses per prompt of the nca case (default 4)
  --lora-r N               LoRA rank (default 16)
  --lora-dropout P         LoRA dropout of the lora and nca cases, masks keyed by the step as in the
                           trainer (default 0)
  --peak-tflops X          peak for MFU (default by GPU name: H100/H200 TF32 494.7)
  --profile PREFIX         ONNX Runtime profiling, one trace per case: PREFIX-<case>_<date>.json
  --threads N              CPU threads inside an operator (default: all cores)
  --seed N                 data and weight seed (default 0)
  --backend LIST           node,ffi: how ONNX Runtime is called (onnxruntime-node, or its C API with the
                           state kept in ONNX Runtime between runs); each case runs once per backend
                           (default: the trainer's choice, ffi on the CPU and node on CUDA)
  --precision fp32|fp16    fp32 storage (TF32 on CUDA) or fp16 mixed precision with loss scaling (default fp32)
  --help                   this text`;

const FLAGS = {
  device: { type: "string", default: "cpu" },
  cases: { type: "string", default: "full,lora,nca" },
  batch: { type: "string", default: "8" },
  seq: { type: "string", default: "512" },
  steps: { type: "string", default: "16" },
  "steps-per-run": { type: "string", default: "8" },
  warmup: { type: "string", default: "1" },
  "overhead-runs": { type: "string", default: "1" },
  layers: { type: "string", default: "12" },
  hidden: { type: "string", default: "768" },
  heads: { type: "string", default: "12" },
  vocab: { type: "string", default: "50257" },
  positions: { type: "string" },
  k: { type: "string", default: "4" },
  "lora-r": { type: "string", default: "16" },
  "lora-dropout": { type: "string", default: "0" },
  "peak-tflops": { type: "string" },
  profile: { type: "string" },
  threads: { type: "string" },
  seed: { type: "string", default: "0" },
  precision: { type: "string", default: "fp32" },
  backend: { type: "string" },
  help: { type: "boolean", default: false, short: "h" },
} as const;

/** The cases: what trains and on which loss. */
export const CASES = {
  full: { mode: "full", loss: "sft" },
  lora: { mode: "lora", loss: "sft" },
  nca: { mode: "lora", loss: "nca" },
} as const;
type CaseName = keyof typeof CASES;

/** One line of output. */
export type ThroughputResult = Record<string, unknown> & {
  bench: "train_throughput";
  case: CaseName;
  tokens_per_s: number;
  step_ms: number;
  mfu: number | null;
};

/** Runs the benchmark; prints and returns one record per case. `--help` prints the usage and returns []. */
export async function main(
  argv: string[],
  print: (line: string) => void = console.log,
): Promise<ThroughputResult[]> {
  const f = parseFlags(argv, FLAGS);
  if (f.help) {
    print(USAGE);
    return [];
  }
  const cases = listFlag("cases", f.cases, Object.keys(CASES) as CaseName[]);
  const batch = intFlag("batch", f.batch), seq = intFlag("seq", f.seq);
  const S = intFlag("steps-per-run", f["steps-per-run"]);
  const runs = Math.ceil(intFlag("steps", f.steps) / S);
  const warmup = intFlag("warmup", f.warmup, 0),
    overheadRuns = intFlag("overhead-runs", f["overhead-runs"], 0);
  const sizes = {
    layers: intFlag("layers", f.layers),
    hidden: intFlag("hidden", f.hidden),
    heads: intFlag("heads", f.heads),
    vocab: intFlag("vocab", f.vocab, 2),
    positions: f.positions === undefined ? Math.max(1024, seq) : intFlag("positions", f.positions),
  };
  if (sizes.positions < seq) {
    throw new UsageError(`--positions ${sizes.positions} is shorter than --seq ${seq}`);
  }
  const k = intFlag("k", f.k, 2);
  if (cases.includes("nca") && batch % k !== 0) {
    throw new UsageError(`--batch ${batch} must be a multiple of --k ${k} for the nca case`);
  }
  const loraR = intFlag("lora-r", f["lora-r"]);
  const loraDropout = Number(f["lora-dropout"]);
  if (!(loraDropout >= 0 && loraDropout < 1)) {
    throw new UsageError(`--lora-dropout must be in [0, 1), got "${f["lora-dropout"]}"`);
  }
  const peakFlag = f["peak-tflops"] === undefined ? undefined : positiveFlag("peak-tflops", f["peak-tflops"]);
  const profile = f.profile === undefined ? undefined : String(f.profile);
  if (profile === "") throw new UsageError("--profile needs a path prefix");
  const threads = f.threads === undefined ? undefined : intFlag("threads", f.threads);
  const seed = intFlag("seed", f.seed, 0);
  const req = deviceFlag(f.device);
  const precision = listFlag("precision", f.precision, ["fp32", "fp16"] as const);
  if (precision.length !== 1) throw new UsageError("--precision takes one of fp32, fp16");

  const device = await benchDevice(req);
  const gpu = device === "cuda" ? await gpuName() : null;
  const peak = peakFlag ??
    (device === "cuda" ? defaultPeakTflops(gpu, precision[0] === "fp16" ? "fp16" : "tf32") : null);
  const cfg = gpt2Config(sizes);
  const weights = initWeights(cfg, { seed });
  const N = countParameters(weights);
  const out: ThroughputResult[] = [];
  const backends: ("node" | "ffi" | undefined)[] = f.backend === undefined
    ? [undefined]
    : listFlag("backend", f.backend, ["node", "ffi"] as const);
  for (const name of cases) {
    for (const backend of backends) {
      const { mode, loss } = CASES[name];
      const K = loss === "sft" ? 1 : k;
      const dropout = mode === "lora" ? loraDropout : 0;
      const feeds = syntheticChunk({
        steps: S,
        rows: batch,
        width: seq,
        vocab: sizes.vocab,
        loss,
        k: K,
        seed,
        dropoutKey: dropout > 0,
      });
      const profilePrefix = profile ? `${profile}-${name}` : undefined;
      const c = await prepareCase({
        cfg,
        weights,
        mode,
        loss,
        k: K,
        loraR,
        loraDropout: dropout,
        device,
        threads,
        profilePrefix,
        precision: precision[0],
        backend,
      });
      let rec: ThroughputResult, trace: string | undefined;
      try {
        for (let i = 0; i < warmup; i++) await timeRun(c.session, feeds, S);
        // 1-step runs before the timed ones, so that the last run (what a profile summary reads) is timed
        const ones: number[] = [];
        for (let i = 0; i < overheadRuns; i++) {
          if (i === 0) await timeRun(c.session, feeds, 1); // a new trip count: warm it up
          ones.push((await timeRun(c.session, feeds, 1)).ms);
        }
        const times: number[] = [];
        let lastLoss = NaN;
        for (let i = 0; i < runs; i++) {
          const r = await timeRun(c.session, feeds, S);
          times.push(r.ms);
          lastLoss = r.loss;
        }
        const wallMs = times.reduce((a, b) => a + b, 0), steps = runs * S;
        const tokensPerStep = batch * seq;
        const tokensPerS = (tokensPerStep * steps) / (wallMs / 1000);
        const flopsPerToken = (mode === "full" ? 6 : 4) * N;
        const tS = median(times);
        const inLoop = ones.length ? Math.max((tS - median(ones)) / Math.max(S - 1, 1), 0) : null;
        rec = {
          bench: "train_throughput",
          case: name,
          backend: c.session.session.backend,
          precision: precision[0],
          mode,
          loss,
          k: K,
          device,
          hardware: gpu ?? (device === "cpu" ? cpuName() : null),
          ort: ortVersion(),
          layers: sizes.layers,
          hidden: sizes.hidden,
          heads: sizes.heads,
          vocab: sizes.vocab,
          batch,
          seq,
          tokens_per_step: tokensPerStep,
          steps,
          steps_per_run: S,
          params: N,
          trainable_params: c.trainableParams,
          lora_dropout: mode === "lora" ? loraDropout : null,
          tokens_per_s: round(tokensPerS, 1),
          step_ms: round(wallMs / steps),
          run_ms: round(tS),
          in_loop_step_ms: inLoop === null ? null : round(inLoop),
          run_overhead_ms: inLoop === null ? null : round(Math.max(median(ones) - inLoop, 0)),
          flops_per_token: flopsPerToken,
          model_tflops: round((flopsPerToken * tokensPerS) / 1e12, 4),
          peak_tflops: peak,
          mfu: peak ? round((flopsPerToken * tokensPerS) / (peak * 1e12), 4) : null,
          mfu_formula: `${mode === "full" ? 6 : 4}·N·tokens/s / peak; N = ${N} (all parameters, embeddings ` +
            `included, attention score FLOPs excluded); peak = ${peak ?? "unknown"} TFLOP/s` +
            (peak && peakFlag === undefined ? " (dense TF32 of the GPU)" : ""),
          step_nodes: c.stats.stepNodes,
          build_s: round(c.buildS),
          session_s: round(c.sessionS),
          last_loss: round(lastLoss, 5),
          profiled: profile !== undefined,
        };
      } finally {
        trace = await c.session.release();
      }
      if (trace) rec.profile = trace;
      print(JSON.stringify(rec));
      out.push(rec);
    }
  }
  return out;
}

if (import.meta.main) await runCli(main, USAGE);
