/**
 * GPU check of the data-parallel step (lib/train/distributed.ts), prepared on the CPU and not yet run on a
 * GPU, `--steps` optimizer steps of each case: LoRA (with keyed dropout) and full fine-tuning in fp32
 * (weights within `--tolerance`), and fp16 LoRA (`--fp16`; on CUDA real float16, on the CPU mostly its float32
 * fallback) with dynamic loss scaling from {@link FP16_CHECK_LOSS_SCALE}, whose loss scales and skipped steps
 * must be one process's and its weights within `--fp16-tolerance` (default {@link FP16_CHECK_TOLERANCE}, the
 * CPU tests' for this pairing); the checkpoint scalars (step, loss scale, good steps) must be one process's
 * too:
 * 1. a world of one through the gradient and AdamW graphs against the single-device chunk graph (its Loop),
 *    both at accumulation 2;
 * 2. where two or more GPUs are visible (and `--device cuda`): two ranks, this script again twice with
 *    torchrun's variables (RANK 0/1, LOCAL_RANK, MASTER_ADDR 127.0.0.1, a free MASTER_PORT), each on its own
 *    device over NCCL (the step's host arrays staged through device memory), at accumulation 1 against the
 *    Loop at 2, so that each rank's part of a step is one of the Loop's micro-batches: both sides run the same
 *    passes and only the float32 sum of the micro-batches' gradients is ordered differently (on the CPU the
 *    fp32 cases end bit-identical). LoRA runs without dropout there ({@link twoRankCase} says why). Rank 0
 *    writes its weights for the comparison; both ranks' wall times, loss scales and skipped steps are
 *    reported and compared.
 *
 * ```sh
 * deno run -A bench/gpu/ddp_check.ts [--steps 5] [--mode lora|full|both] [--tolerance 1e-5] \
 *   [--fp16 lora|full|both|none] [--fp16-tolerance 1e-6] [--device cuda]
 * ```
 * One JSON line per result (`$OUT/ddp_check.jsonl` where OUT is set), each comparison with the tolerance it
 * used; exit 1 on any failure, 2 on bad arguments. NCCL must be found (NCCL_LIBRARY=/path/libnccl.so.2
 * where it is not found by itself) for the second check. The comparison of the ranks' results with the Loop
 * runs on the CPU too: tests/bench/gpu_checks_test.ts drives it with lib/runtime/comm's in-process world.
 * @module
 */
import type { Communicator } from "../../lib/runtime/comm/communicator.ts";
import type { ChunkResult } from "../../lib/runtime/training_session.ts";
import { checkReport, type CheckSink, twoRankEnv } from "./_checks.ts";

/** Set (to the file rank 0 writes its weights into) in the ranks this script starts for the 2-GPU check. */
const RANK_OUT = "DDP_CHECK_RANK_OUT";

/**
 * The fp16 cases' first loss scale, the CPU tests': it overflows the fp16 backward pass at first (the first
 * step is skipped and the scale halved on the CPU with this check's model; two steps with the CPU tests'), so
 * skipping and halving are compared too, not only updates.
 */
export const FP16_CHECK_LOSS_SCALE = 2 ** 22;
/** The fp16 weights' relative tolerance: the CPU tests' for 2 ranks at accumulation A against one at 2A. */
export const FP16_CHECK_TOLERANCE = 1e-6;
/** The Loop's accumulation, and the world of one's; each of N ranks runs ACCUMULATION / N. */
const ACCUMULATION = 2;

/** The script's arguments. `fp16` and `fp16Tolerance` are set only where given (defaults: lora, 1e-6). */
export type DdpCheckArgs = {
  steps: number;
  mode: ("lora" | "full")[];
  tolerance: number;
  device: "cuda" | "cpu";
  /** The fp16 cases (default `["lora"]`; `--fp16 none`: none). */
  fp16?: ("lora" | "full")[];
  /** The fp16 weights' tolerance (default {@link FP16_CHECK_TOLERANCE}). */
  fp16Tolerance?: number;
};

/** Parses the arguments, naming what is wrong. */
export function parseDdpCheckArgs(argv: readonly string[]): DdpCheckArgs {
  const out: DdpCheckArgs = { steps: 5, mode: ["lora", "full"], tolerance: 1e-5, device: "cuda" };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i], value = argv[i + 1];
    const need = () => {
      if (value === undefined || value.startsWith("--")) throw new Error(`${flag} needs a value`);
      i++;
      return value;
    };
    const tolerance = () => {
      const t = Number(need());
      if (!(t > 0)) throw new Error(`${flag} must be > 0, got ${value}`);
      return t;
    };
    if (flag === "--steps") {
      const n = Number(need());
      if (!Number.isInteger(n) || n < 1) throw new Error(`--steps must be a whole number ≥ 1, got ${value}`);
      out.steps = n;
    } else if (flag === "--mode") {
      const m = need();
      if (m !== "lora" && m !== "full" && m !== "both") {
        throw new Error(`--mode must be lora, full or both, got ${m}`);
      }
      out.mode = m === "both" ? ["lora", "full"] : [m];
    } else if (flag === "--tolerance") {
      out.tolerance = tolerance();
    } else if (flag === "--fp16") {
      const m = need();
      if (m !== "lora" && m !== "full" && m !== "both" && m !== "none") {
        throw new Error(`--fp16 must be lora, full, both or none, got ${m}`);
      }
      out.fp16 = m === "both" ? ["lora", "full"] : m === "none" ? [] : [m];
    } else if (flag === "--fp16-tolerance") {
      out.fp16Tolerance = tolerance();
    } else if (flag === "--device") {
      const d = need();
      if (d !== "cuda" && d !== "cpu") throw new Error(`--device must be cuda or cpu, got ${d}`);
      out.device = d;
    } else {
      throw new Error(
        `unknown argument ${flag} (--steps, --mode, --tolerance, --fp16, --fp16-tolerance, --device)`,
      );
    }
  }
  return out;
}

/**
 * One case of the check: fp32 (`lora`, `full`) or fp16 (`lora-fp16`, `full-fp16`); `dropout`: LoRA with
 * keyed dropout (fp32 LoRA in the world of one only, see {@link twoRankCase}).
 */
export type DdpCase = { name: string; mode: "lora" | "full"; fp16: boolean; dropout: boolean };

/** The cases `args` asks for, fp32 first: the world of one's. */
export function ddpCases(args: DdpCheckArgs): DdpCase[] {
  return [
    ...args.mode.map((mode) => ({ name: mode, mode, fp16: false, dropout: mode === "lora" })),
    // without dropout, as the CPU tests' fp16 cases
    ...(args.fp16 ?? ["lora"]).map((mode) => ({ name: `${mode}-fp16`, mode, fp16: true, dropout: false })),
  ];
}

/**
 * A case as the 2-GPU check runs it: without dropout, because it pairs each rank's part of a step with one
 * of the Loop's micro-batches ({@link rankAccumulation}) and keyed dropout keys rows by their micro-batch,
 * so the masks of the two sides would differ. (Equal accumulation on both sides keeps the masks but not the
 * numbers: micro-batches of 2 prompts against 4 sum their gradients in another order, and AdamW turns that
 * into up to lr on the elements whose gradient is near its ε: 1.4e-5 relative for full fine-tuning and
 * 4.5e-5 for LoRA on the CPU with this model, over the 1e-5 tolerance, where the pairing is bit-identical.)
 */
export function twoRankCase(c: DdpCase): DdpCase {
  return { ...c, dropout: false };
}

/** The weights' tolerance of a case. */
export function caseTolerance(args: DdpCheckArgs, c: DdpCase): number {
  return c.fp16 ? args.fp16Tolerance ?? FP16_CHECK_TOLERANCE : args.tolerance;
}

/**
 * Each rank's accumulation in a world of `size`: the Loop's / size, so that a rank's part of a step is one of
 * the Loop's micro-batches (the pairing the tolerances are for; the world of one runs the Loop's).
 */
export function rankAccumulation(size: number): number {
  if (ACCUMULATION % size !== 0) {
    throw new RangeError(
      `the ranks pair with the Loop's ${ACCUMULATION} micro-batches: ${size} ranks do not`,
    );
  }
  return ACCUMULATION / size;
}

/** The model, data and steps both checks train on (the same in every process). */
async function setup(args: DdpCheckArgs) {
  const { tinyConfig } = await import("../../tests/fixtures/tiny_config.ts");
  const { initWeights } = await import("../../lib/model/init.ts");
  const { frozenWeights } = await import("../../lib/model/weights.ts");
  const { trainableParamsFor } = await import("../../lib/model/decoder.ts");
  const { alignmentTrainingSpec, usesDropoutKey } = await import("../../lib/train/train_graph.ts");
  const { buildGradientGraph } = await import("../../lib/graph/distributed.ts");

  const cfg = tinyConfig("llama", { numLayers: 2, hiddenSize: 64, vocabSize: 64 });
  const W = initWeights(cfg, { seed: 2, std: 0.05 });
  let s = 5;
  const tok = (n: number) => Array.from({ length: n }, () => 1 + ((s = (s * 48271) % 2147483647) % 60));
  const G = 8, S = args.steps;
  const examples = Array.from({ length: G * S }, (_, i) => ({
    promptIds: tok(3 + (i % 4)),
    responseIds: [tok(2 + (i % 3)), tok(4)],
    labels: [0.7, 0.3],
  }));
  const reference = examples.map(() => Float32Array.of(-20, -22));
  const steps = Array.from(
    { length: S },
    (_, i) => ({ epoch: 0, indices: [...Array(G).keys()].map((j) => i * G + j) }),
  );
  const lrs: number[] = new Array(S).fill(1e-2);
  const trainableOf = (c: DdpCase) =>
    trainableParamsFor(
      cfg,
      c.mode === "lora"
        ? {
          mode: "lora",
          lora: { r: 4, alpha: 8, dropout: c.dropout ? 0.1 : 0, targetModules: "all-linear" },
          seed: 1,
        }
        : { mode: "full", weights: W },
    );
  const chunkOptions = (c: DdpCase, accumulation: number) => ({
    loss: "nca" as const,
    k: 2,
    padId: 0,
    accumulation,
    dropout: usesDropoutKey(trainableOf(c)) ? { seed: 3, fromStep: 0 } : undefined,
  });
  const spec = (c: DdpCase, accumulation: number) => {
    const trainable = trainableOf(c);
    return {
      trainable,
      spec: {
        cfg,
        frozen: frozenWeights(W),
        trainable,
        loss: "nca" as const,
        beta: 0.1,
        k: 2,
        ranked: false,
        optimizer: { kind: "adamw" as const, weightDecay: 0.01 },
        maxGradNorm: 1,
        accumulation,
        precision: c.fp16 ? "fp16" as const : undefined,
      },
    };
  };
  return { examples, reference, steps, lrs, chunkOptions, spec, buildGradientGraph, alignmentTrainingSpec };
}

type Setup = Awaited<ReturnType<typeof setup>>;

/** What a run of a case leaves for the comparison: the named state, and the per-step loss scaling. */
export type CaseRun = {
  weights: Record<string, Float32Array | number[]>;
  scalars: Record<string, number>;
  scaling: Scaling;
  ms: number;
};

/** Per step: the loss scale (fp16 only, else null), whether it was skipped, whether its norm was finite. */
export type Scaling = { lossScale: number[] | null; skipped: number[]; finiteNorm: boolean[] };

function scalingOf(res: ChunkResult): Scaling {
  return {
    lossScale: res.lossScale ? [...res.lossScale] : null,
    skipped: [...res.skipped],
    finiteNorm: [...res.gradNorm].map(Number.isFinite),
  };
}

/** ORT options of a session of the check: one thread on the CPU, as the CPU tests (a fixed order of sums). */
function sessionOptions(args: DdpCheckArgs, deviceId?: number) {
  return { device: args.device, deviceId, intraOpThreads: args.device === "cpu" ? 1 : undefined };
}

/** One process, the chunk graph's Loop, at accumulation {@link ACCUMULATION}. */
export async function runLoop(args: DdpCheckArgs, c: DdpCase, d?: Setup): Promise<CaseRun> {
  d ??= await setup(args);
  const { TrainingSession } = await import("../../lib/runtime/training_session.ts");
  const { assembleChunk } = await import("../../lib/train/chunks.ts");
  const { buildAlignmentGraph } = await import("../../lib/train/train_graph.ts");
  const t0 = performance.now();
  const a = d.spec(c, ACCUMULATION);
  const loop = await TrainingSession.create(buildAlignmentGraph(a.spec), a.trainable.init, {
    ...sessionOptions(args),
    lossScale: c.fp16 ? FP16_CHECK_LOSS_SCALE : undefined,
  });
  try {
    const res = await loop.run(
      assembleChunk(d.examples, d.steps, d.reference, d.chunkOptions(c, ACCUMULATION)).feeds,
      d.lrs,
    );
    const named = loop.namedState();
    const weights = Object.fromEntries(Object.entries(named.tensors).map(([k, v]) => [k, v.data.slice()]));
    return { weights, scalars: named.scalars, scaling: scalingOf(res), ms: performance.now() - t0 };
  } finally {
    await loop.release();
  }
}

/**
 * One rank of `comm` through the gradient and AdamW graphs at {@link rankAccumulation}, its part of every
 * step. Every rank of `comm` calls it.
 */
export async function runRank(
  args: DdpCheckArgs,
  c: DdpCase,
  comm: Communicator,
  deviceId?: number,
  d?: Setup,
): Promise<CaseRun> {
  d ??= await setup(args);
  const { DistributedSession } = await import("../../lib/train/distributed.ts");
  const { assembleRankChunk } = await import("../../lib/train/rank_data.ts");
  const acc = rankAccumulation(comm.size);
  const b = d.spec(c, acc);
  const t0 = performance.now();
  const s = await DistributedSession.create(
    d.buildGradientGraph(d.alignmentTrainingSpec({ ...b.spec, rowOffset: true })),
    b.trainable.init,
    comm,
    {
      ...sessionOptions(args, deviceId),
      optimizer: b.spec.optimizer,
      maxGradNorm: 1,
      lossScale: c.fp16 ? FP16_CHECK_LOSS_SCALE : undefined,
    },
  );
  try {
    const res = await s.run(
      assembleRankChunk(d.examples, d.steps, d.reference, d.chunkOptions(c, acc), comm, true).feeds,
      d.lrs,
    );
    const named = await s.namedState();
    const weights = Object.fromEntries(Object.entries(named.tensors).map(([k, v]) => [k, v.data.slice()]));
    return { weights, scalars: named.scalars, scaling: scalingOf(res), ms: performance.now() - t0 };
  } finally {
    await s.release();
  }
}

/** The largest difference of `got` from `want`, relative to `want`'s largest magnitude. */
function relativeDiff(
  want: Record<string, ArrayLike<number>>,
  got: Record<string, ArrayLike<number>>,
): number {
  let diff = 0, scale = 0;
  for (const [k, v] of Object.entries(want)) {
    const g = got[k];
    if (!g || g.length !== v.length) return Infinity;
    for (let i = 0; i < v.length; i++) {
      diff = Math.max(diff, Math.abs(g[i] - v[i]));
      scale = Math.max(scale, Math.abs(v[i]));
    }
  }
  return diff / scale;
}

/**
 * How a run's loss scaling differs from one process's (the CPU tests' checks): the loss scales and skipped
 * steps identical, each step's norm finite exactly where one process did not skip it, and at least one step
 * not skipped (else the weights compare nothing). Empty where it does not.
 */
export function scalingDifferences(want: Scaling, got: Scaling): string[] {
  const out: string[] = [];
  const same = (a: unknown[] | null, b: unknown[] | null) =>
    a === b || (!!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]));
  if (!same(got.lossScale, want.lossScale)) {
    out.push(`loss scales ${JSON.stringify(got.lossScale)}, one process ${JSON.stringify(want.lossScale)}`);
  }
  if (!same(got.skipped, want.skipped)) {
    out.push(`skipped steps ${JSON.stringify(got.skipped)}, one process ${JSON.stringify(want.skipped)}`);
  }
  const wrongNorm = got.finiteNorm.findIndex((f, i) => f !== !want.skipped[i]);
  if (wrongNorm >= 0) {
    out.push(
      `step ${wrongNorm + 1}: the norm is ${got.finiteNorm[wrongNorm] ? "finite" : "not finite"} where one ` +
        `process ${want.skipped[wrongNorm] ? "skipped" : "did not skip"} it`,
    );
  }
  if (want.skipped.every((x) => x === 1)) out.push("every step skipped: no update to compare");
  return out;
}

/** `{a: 1, b: 2}` whatever the keys' order. */
const sortedJson = (o: Record<string, number>) =>
  JSON.stringify(Object.entries(o).sort(([a], [b]) => a < b ? -1 : 1));

/**
 * Compares a run with the Loop's: the weights (where given) within the case's tolerance, the checkpoint
 * scalars equal, the loss scaling as {@link scalingDifferences}. Emits one line (`check`, the case, the
 * relative difference, the tolerance, and `extra`) and pushes the failures, prefixed with the case.
 */
export function compareWithLoop(
  sink: CheckSink,
  check: string,
  args: DdpCheckArgs,
  c: DdpCase,
  loop: CaseRun,
  got: { weights?: CaseRun["weights"]; scalars: CaseRun["scalars"]; scaling: Scaling },
  extra: Record<string, unknown> = {},
): void {
  const tolerance = caseTolerance(args, c);
  const relative = got.weights ? relativeDiff(loop.weights, got.weights) : null;
  const problems = scalingDifferences(loop.scaling, got.scaling);
  if (relative !== null && !(relative < tolerance)) {
    problems.unshift(`weights: relative difference ${relative} ≥ ${tolerance}`);
  }
  if (sortedJson(got.scalars) !== sortedJson(loop.scalars)) {
    problems.push(`scalars ${JSON.stringify(got.scalars)}, one process ${JSON.stringify(loop.scalars)}`);
  }
  sink.emit({
    check,
    case: c.name,
    mode: c.mode,
    precision: c.fp16 ? "fp16" : "fp32",
    dropout: c.dropout,
    steps: args.steps,
    relative,
    tolerance,
    ...(c.fp16 ? { lossScale: got.scaling.lossScale, skipped: got.scaling.skipped } : {}),
    ...extra,
    ok: problems.length === 0,
    ...(problems.length ? { problems } : {}),
  });
  for (const p of problems) {
    sink.failures.push(`${c.name}: ${check}${"rank" in extra ? ` rank ${extra.rank}` : ""}: ${p}`);
  }
}

/** GPUs this process may use: CUDA_VISIBLE_DEVICES's count where set, else `nvidia-smi -L`'s (0 without). */
export async function visibleGpus(
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Promise<number> {
  const listed = env.CUDA_VISIBLE_DEVICES;
  if (listed !== undefined) {
    return listed.split(",").filter((d) => d.trim() !== "" && d.trim() !== "-1").length;
  }
  try {
    const out = await new Deno.Command("nvidia-smi", { args: ["-L"], stdout: "piped", stderr: "null" })
      .output();
    if (!out.success) return 0;
    return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.startsWith("GPU ")).length;
  } catch {
    return 0;
  }
}

/** What one rank reports of a case (a JSON line of its stdout): all but the weights. */
export type RankLine = {
  rank: number;
  case: string;
  device?: number;
  accumulation: number;
  ms: number;
  scalars: Record<string, number>;
} & Scaling;

/**
 * Every case ({@link twoRankCase}) on this rank of `comm`: its report lines, and its weights per case (as
 * JSON carries them). What each process of the 2-GPU check runs (tests run it with an in-process world).
 */
export async function rankCases(
  args: DdpCheckArgs,
  comm: Communicator,
  deviceId?: number,
): Promise<{ lines: RankLine[]; weights: Record<string, Record<string, number[]>> }> {
  const d = await setup(args);
  const lines: RankLine[] = [], weights: Record<string, Record<string, number[]>> = {};
  for (const c of ddpCases(args).map(twoRankCase)) {
    const run = await runRank(args, c, comm, deviceId, d);
    lines.push({
      rank: comm.rank,
      case: c.name,
      device: deviceId,
      accumulation: rankAccumulation(comm.size),
      ms: run.ms,
      scalars: run.scalars,
      ...run.scaling,
    });
    weights[c.name] = Object.fromEntries(Object.entries(run.weights).map(([k, v]) => [k, [...v]]));
  }
  return { lines, weights };
}

/**
 * The 2-GPU comparison: each rank's line reported; per case ({@link twoRankCase}), rank 0's weights, and
 * every rank's loss scaling and checkpoint scalars, against `loops` (the Loop's runs of the same cases; see
 * {@link compareWithLoop}). The ranks' parameters are the same: DistributedSession's namedState compares
 * them before it hands them out. A case some rank did not report fails.
 */
export function compareRanks(
  sink: CheckSink,
  args: DdpCheckArgs,
  loops: Record<string, CaseRun>,
  lines: RankLine[],
  weights: Record<string, Record<string, number[]>>,
  extra: Record<string, unknown> = {},
): void {
  for (const l of lines) sink.emit({ check: "two-gpus rank", ...l });
  for (const c of ddpCases(args).map(twoRankCase)) {
    const mine = lines.filter((l) => l.case === c.name).sort((a, b) => a.rank - b.rank);
    const complete = mine.length === 2 && mine[0].rank === 0 && mine[1].rank === 1 && !!weights[c.name];
    if (!complete || !loops[c.name]) {
      const problem = !loops[c.name]
        ? "the Loop did not run (see world-of-one)"
        : `rank 0's weights and both ranks' lines expected, got the lines of ranks ${
          JSON.stringify(mine.map((l) => l.rank))
        }${weights[c.name] ? "" : " and no weights"}`;
      sink.emit({ check: "two-gpus", case: c.name, ok: false, problems: [problem] });
      sink.failures.push(`${c.name}: two-gpus: ${problem}`);
      continue;
    }
    for (const l of mine) {
      compareWithLoop(sink, "two-gpus", args, c, loops[c.name], {
        weights: l.rank === 0 ? weights[c.name] : undefined,
        scalars: l.scalars,
        scaling: l,
      }, { rank: l.rank, accumulation: l.accumulation, loopAccumulation: ACCUMULATION, ...extra });
    }
  }
}

/**
 * One rank of the 2-GPU check (started by {@link twoRanks}): the world from torchrun's variables, NCCL on
 * the local rank's device, `--steps` steps of this rank's shares; rank 0 writes the weights to `outFile`.
 */
async function rankMain(args: DdpCheckArgs, outFile: string) {
  const { openCommunicator, rankCudaDevice } = await import("../../lib/runtime/comm/launch.ts");
  await using comm = await openCommunicator({ device: "cuda", timeoutMs: 120_000 });
  const { lines, weights } = await rankCases(args, comm, rankCudaDevice(comm));
  for (const l of lines) console.log(JSON.stringify(l));
  if (comm.rank === 0) await Deno.writeTextFile(outFile, JSON.stringify(weights));
}

/** Two free ports in a row (NCCL listens on MASTER_PORT + 1). */
function freePorts(): number {
  for (let tries = 0; tries < 50; tries++) {
    const a = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const p = (a.addr as Deno.NetAddr).port;
    try {
      Deno.listen({ hostname: "127.0.0.1", port: p + 1 }).close();
      a.close();
      return p;
    } catch {
      a.close();
    }
  }
  throw new Error("no two free ports in a row");
}

/**
 * Starts this script twice as ranks 0 and 1 of a torchrun-style world on GPUs 0 and 1, waits (at most 5
 * minutes), and returns rank 0's weights per case, with each rank's output lines; throws naming a rank that
 * failed.
 */
async function twoRanks(argv: readonly string[]) {
  const port = freePorts();
  const dir = await Deno.makeTempDir({ prefix: "ddp-check-" });
  const outFile = `${dir}/weights.json`;
  const script = new URL(import.meta.url).pathname;
  try {
    const t0 = performance.now();
    const ranks = await Promise.all([0, 1].map((rank) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", script, ...argv],
        env: {
          ...twoRankEnv(rank, port),
          [RANK_OUT]: outFile,
        },
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(300_000),
      }).output()
    ));
    const wallMs = performance.now() - t0;
    const lines: RankLine[] = [];
    for (const [rank, out] of ranks.entries()) {
      const text = new TextDecoder().decode(out.stdout);
      for (const l of text.split("\n").filter((l) => l.startsWith("{"))) lines.push(JSON.parse(l));
      if (out.code !== 0) {
        throw new Error(
          `rank ${rank} exited ${out.code}: ${new TextDecoder().decode(out.stderr).slice(-2000)}`,
        );
      }
    }
    const weights = JSON.parse(await Deno.readTextFile(outFile)) as Record<string, Record<string, number[]>>;
    return { weights, lines, wallMs };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function main(args: DdpCheckArgs, argv: readonly string[]) {
  const report = checkReport("ddp_check");
  const { singleCommunicator } = await import("../../lib/runtime/comm/communicator.ts");
  const d = await setup(args);
  const gpus = args.device === "cuda" ? await visibleGpus() : 0;
  /** The Loop's run per case as the 2-GPU check runs it ({@link twoRankCase}): what it compares with. */
  const loops: Record<string, CaseRun> = {};
  for (const c of ddpCases(args)) {
    // a case that cannot run (fp16 on a device without its kernels, say) is a failure, not the end of the rest
    try {
      const loop = await runLoop(args, c, d);
      const one = await runRank(args, c, singleCommunicator(), undefined, d);
      compareWithLoop(report, "world-of-one", args, c, loop, one, {
        device: args.device,
        loopMs: loop.ms,
        distributedMs: one.ms,
      });
      if (gpus >= 2) loops[c.name] = c.dropout ? await runLoop(args, twoRankCase(c), d) : loop;
    } catch (e) {
      report.emit({ check: "world-of-one", case: c.name, ok: false, error: (e as Error).message });
      report.failures.push(`${c.name}: world-of-one: ${(e as Error).message}`);
    }
  }
  if (gpus < 2) {
    report.emit({
      check: "two-gpus",
      skipped: args.device === "cuda" ? `${gpus} GPU visible: two ranks need two` : "--device cpu",
    });
  } else {
    try {
      const { weights, lines, wallMs } = await twoRanks(argv);
      compareRanks(report, args, loops, lines, weights, { wallMs, gpus });
    } catch (e) {
      report.failures.push(`two GPUs: ${(e as Error).message}`);
    }
  }
  await report.finish({ gpus });
}

if (import.meta.main) {
  let args: DdpCheckArgs;
  try {
    args = parseDdpCheckArgs(Deno.args);
  } catch (e) {
    console.error(`ddp_check: ${(e as Error).message}`);
    Deno.exit(2);
  }
  const outFile = Deno.env.get(RANK_OUT);
  if (outFile) await rankMain(args, outFile);
  else await main(args, Deno.args);
}
