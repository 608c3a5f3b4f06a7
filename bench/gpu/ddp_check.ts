/**
 * GPU check of the data-parallel step (lib/train/distributed.ts), prepared on the CPU and not yet run on a
 * GPU, LoRA and full fine-tuning, `--steps` optimizer steps each, weights within fp32 tolerance:
 * 1. a world of one through the gradient and AdamW graphs against the single-device chunk graph (its Loop);
 * 2. where two or more GPUs are visible (and `--device cuda`): two ranks, this script again twice with
 *    torchrun's variables (RANK 0/1, LOCAL_RANK, MASTER_ADDR 127.0.0.1, a free MASTER_PORT), each on its own
 *    device over NCCL (the step's host arrays staged through device memory), each taking its half of every
 *    micro-batch, against the same Loop with the whole batch; rank 0 writes its weights for the comparison,
 *    and both ranks' wall times are reported.
 *
 * ```sh
 * deno run -A bench/gpu/ddp_check.ts [--steps 5] [--mode lora|full|both] [--tolerance 1e-5] [--device cuda]
 * ```
 * One JSON line per result (`$OUT/ddp_check.jsonl` where OUT is set); exit 1 on any failure. NCCL must be
 * found (NCCL_LIBRARY=/path/libnccl.so.2 where it is not found by itself) for the second check.
 * @module
 */
import { checkReport } from "./_checks.ts";

/** Set (to the file rank 0 writes its weights into) in the ranks this script starts for the 2-GPU check. */
const RANK_OUT = "DDP_CHECK_RANK_OUT";

/** The script's arguments. */
export type DdpCheckArgs = {
  steps: number;
  mode: ("lora" | "full")[];
  tolerance: number;
  device: "cuda" | "cpu";
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
      const t = Number(need());
      if (!(t > 0)) throw new Error(`--tolerance must be > 0, got ${value}`);
      out.tolerance = t;
    } else if (flag === "--device") {
      const d = need();
      if (d !== "cuda" && d !== "cpu") throw new Error(`--device must be cuda or cpu, got ${d}`);
      out.device = d;
    } else throw new Error(`unknown argument ${flag} (--steps, --mode, --tolerance, --device)`);
  }
  return out;
}

/** The model, data and steps both checks train on (the same in every process). */
async function setup(args: DdpCheckArgs) {
  const { tinyConfig } = await import("../../tests/fixtures/tiny_config.ts");
  const { initWeights } = await import("../../lib/model/init.ts");
  const { frozenWeights } = await import("../../lib/model/weights.ts");
  const { trainableParamsFor } = await import("../../lib/model/decoder.ts");
  const { alignmentTrainingSpec } = await import("../../lib/train/train_graph.ts");
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
  const chunkOptions = (mode: "lora" | "full") => ({
    loss: "nca" as const,
    k: 2,
    padId: 0,
    accumulation: 2,
    dropout: mode === "lora" ? { seed: 3, fromStep: 0 } : undefined,
  });
  const spec = (mode: "lora" | "full") => {
    const trainable = trainableParamsFor(
      cfg,
      mode === "lora"
        ? { mode: "lora", lora: { r: 4, alpha: 8, dropout: 0.1, targetModules: "all-linear" }, seed: 1 }
        : { mode: "full", weights: W },
    );
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
        accumulation: 2,
      },
    };
  };
  return { examples, reference, steps, lrs, chunkOptions, spec, buildGradientGraph, alignmentTrainingSpec };
}

/** The largest difference of `got` from `want`, relative to `want`'s largest magnitude. */
function relativeDiff(
  want: Record<string, { data: Float32Array }>,
  got: Record<string, { data: ArrayLike<number> }>,
): number {
  let diff = 0, scale = 0;
  for (const [k, v] of Object.entries(want)) {
    const g = got[k];
    if (!g || g.data.length !== v.data.length) return Infinity;
    for (let i = 0; i < v.data.length; i++) {
      diff = Math.max(diff, Math.abs(g.data[i] - v.data[i]));
      scale = Math.max(scale, Math.abs(v.data[i]));
    }
  }
  return diff / scale;
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

/**
 * One rank of the 2-GPU check (started by {@link twoRanks}): the world from torchrun's variables, NCCL on
 * the local rank's device, `--steps` steps of this rank's shares; rank 0 writes the weights to `outFile`.
 */
async function rankMain(args: DdpCheckArgs, outFile: string) {
  const { openCommunicator } = await import("../../lib/runtime/comm/launch.ts");
  const { rankCudaDevice } = await import("../../lib/runtime/comm/launch.ts");
  const { DistributedSession, assembleRankChunk } = await import("../../lib/train/distributed.ts");
  const d = await setup(args);
  await using comm = await openCommunicator({ device: "cuda", timeoutMs: 120_000 });
  const deviceId = rankCudaDevice(comm);
  const result: Record<string, Record<string, number[]>> = {};
  for (const mode of args.mode) {
    const b = d.spec(mode);
    const t0 = performance.now();
    await using s = await DistributedSession.create(
      d.buildGradientGraph(d.alignmentTrainingSpec({ ...b.spec, rowOffset: true })),
      b.trainable.init,
      comm,
      { device: "cuda", deviceId, optimizer: b.spec.optimizer, maxGradNorm: 1 },
    );
    await s.run(
      assembleRankChunk(d.examples, d.steps, d.reference, d.chunkOptions(mode), comm, true).feeds,
      d.lrs,
    );
    const state = (await s.namedState()).tensors;
    console.log(JSON.stringify({ rank: comm.rank, mode, device: deviceId, ms: performance.now() - t0 }));
    result[mode] = Object.fromEntries(Object.entries(state).map(([k, v]) => [k, [...v.data]]));
  }
  if (comm.rank === 0) await Deno.writeTextFile(outFile, JSON.stringify(result));
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
 * minutes), and returns rank 0's weights per mode, with each rank's output lines; throws naming a rank that
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
          RANK: String(rank),
          WORLD_SIZE: "2",
          LOCAL_RANK: String(rank),
          LOCAL_WORLD_SIZE: "2",
          MASTER_ADDR: "127.0.0.1",
          MASTER_PORT: String(port),
          [RANK_OUT]: outFile,
        },
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(300_000),
      }).output()
    ));
    const wallMs = performance.now() - t0;
    const lines: Record<string, unknown>[] = [];
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
  const { TrainingSession } = await import("../../lib/runtime/training_session.ts");
  const { singleCommunicator } = await import("../../lib/runtime/comm/communicator.ts");
  const { DistributedSession, assembleRankChunk } = await import("../../lib/train/distributed.ts");
  const { assembleChunk } = await import("../../lib/train/chunks.ts");
  const { buildAlignmentGraph } = await import("../../lib/train/train_graph.ts");
  const { examples, reference, steps, lrs, chunkOptions, spec, buildGradientGraph, alignmentTrainingSpec } =
    await setup(args);
  const S = args.steps;
  /** The Loop's weights per mode: what both checks compare with. */
  const loops: Record<string, Record<string, { data: Float32Array }>> = {};
  for (const mode of args.mode) {
    const o = chunkOptions(mode);
    const t0 = performance.now();
    const a = spec(mode);
    const loop = await TrainingSession.create(buildAlignmentGraph(a.spec), a.trainable.init, {
      device: args.device,
    });
    await loop.run(assembleChunk(examples, steps, reference, o).feeds, lrs);
    const want = loop.namedState().tensors;
    loops[mode] = want;
    const loopMs = performance.now() - t0;
    const b = spec(mode);
    const t1 = performance.now();
    const one = await DistributedSession.create(
      buildGradientGraph(alignmentTrainingSpec({ ...b.spec, rowOffset: true })),
      b.trainable.init,
      singleCommunicator(),
      { device: args.device, optimizer: b.spec.optimizer, maxGradNorm: 1 },
    );
    await one.run(assembleRankChunk(examples, steps, reference, o, one.comm, true).feeds, lrs);
    const got = (await one.namedState()).tensors;
    const oneMs = performance.now() - t1;
    const rel = relativeDiff(want, got);
    report.emit({
      check: "world-of-one",
      device: args.device,
      mode,
      steps: S,
      relative: rel,
      loopMs,
      distributedMs: oneMs,
    });
    if (!(rel < args.tolerance)) report.failures.push(`${mode}: world of one vs the Loop: ${rel}`);
    await loop.release();
    await one.release();
  }
  const gpus = args.device === "cuda" ? await visibleGpus() : 0;
  if (gpus < 2) {
    report.emit({
      check: "two-gpus",
      skipped: args.device === "cuda" ? `${gpus} GPU visible: two ranks need two` : "--device cpu",
    });
  } else {
    try {
      const { weights, lines, wallMs } = await twoRanks(argv);
      for (const l of lines) report.emit({ check: "two-gpus rank", ...l });
      for (const mode of args.mode) {
        const got = Object.fromEntries(Object.entries(weights[mode]).map(([k, v]) => [k, { data: v }]));
        const rel = relativeDiff(loops[mode], got);
        report.emit({ check: "two-gpus", mode, steps: S, relative: rel, wallMs, gpus });
        if (!(rel < args.tolerance)) report.failures.push(`${mode}: 2 GPUs vs the Loop on one: ${rel}`);
      }
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
