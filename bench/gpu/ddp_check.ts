/**
 * GPU check of the data-parallel step (lib/train/distributed.ts), prepared on the CPU and not yet run on a
 * GPU: a world of one through the gradient and AdamW graphs on CUDA against the single-device chunk graph
 * (its Loop), LoRA and full fine-tuning, `--steps` optimizer steps each, weights within fp32 tolerance; and,
 * where two devices are visible, what the 2-GPU run needs (several CUDA ranks are refused today: the step
 * exchanges the gradient through host memory and NCCL takes device buffers only — the line says so).
 *
 * ```sh
 * deno run -A bench/gpu/ddp_check.ts [--steps 5] [--mode lora|full|both] [--tolerance 1e-5] [--device cuda]
 * ```
 * One JSON line per result (`$OUT/ddp_check.jsonl` where OUT is set); exit 1 on any failure.
 * @module
 */
import { checkReport } from "./_checks.ts";

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

async function main(args: DdpCheckArgs) {
  const report = checkReport("ddp_check");
  const { tinyConfig } = await import("../../tests/fixtures/tiny_config.ts");
  const { initWeights } = await import("../../lib/model/init.ts");
  const { frozenWeights } = await import("../../lib/model/weights.ts");
  const { trainableParamsFor } = await import("../../lib/model/decoder.ts");
  const { alignmentTrainingSpec, buildAlignmentGraph } = await import("../../lib/train/train_graph.ts");
  const { buildGradientGraph } = await import("../../lib/graph/distributed.ts");
  const { TrainingSession } = await import("../../lib/runtime/training_session.ts");
  const { singleCommunicator } = await import("../../lib/runtime/comm/communicator.ts");
  const { DistributedSession, assembleRankChunk } = await import("../../lib/train/distributed.ts");
  const { assembleChunk } = await import("../../lib/train/chunks.ts");

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
  const lrs = new Array(S).fill(1e-2);
  for (const mode of args.mode) {
    const spec = () => {
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
    const keyed = mode === "lora";
    const o = {
      loss: "nca" as const,
      k: 2,
      padId: 0,
      accumulation: 2,
      dropout: keyed ? { seed: 3, fromStep: 0 } : undefined,
    };
    const t0 = performance.now();
    const a = spec();
    const loop = await TrainingSession.create(buildAlignmentGraph(a.spec), a.trainable.init, {
      device: args.device,
    });
    await loop.run(assembleChunk(examples, steps, reference, o).feeds, lrs);
    const want = loop.namedState().tensors;
    const loopMs = performance.now() - t0;
    const b = spec();
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
    let diff = 0, scale = 0;
    for (const [k, v] of Object.entries(want)) {
      for (let i = 0; i < v.data.length; i++) {
        diff = Math.max(diff, Math.abs(got[k].data[i] - v.data[i]));
        scale = Math.max(scale, Math.abs(v.data[i]));
      }
    }
    const rel = diff / scale;
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
  report.emit({
    check: "two-gpus",
    status: "not supported yet",
    why:
      "several CUDA ranks are refused: the step exchanges the gradient through host memory; NCCL takes device buffers",
  });
  await report.finish();
}

if (import.meta.main) {
  let args: DdpCheckArgs;
  try {
    args = parseDdpCheckArgs(Deno.args);
  } catch (e) {
    console.error(`ddp_check: ${(e as Error).message}`);
    Deno.exit(2);
  }
  await main(args);
}
