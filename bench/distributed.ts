/**
 * Data-parallel training (lib/train/distributed.ts), on the CPU:
 * 1. bytes communicated per optimizer step and rank, counted at the communicator (each collective's ring
 *    traffic), against theory: a ring all-reduce of P float32 moves 2·(N−1)/N·P·4 bytes per rank; ZeRO-1's
 *    reduce-scatter plus all-gather move the same;
 * 2. 1 process against 2 ranks under `mpirun` (skipped without it) on one small model, the same global batch:
 *    tokens/s as the run's metrics report them;
 * 3. on paper, 8 × H100: the step from the single-GPU measurement in BENCHMARKS.md plus the gradient's
 *    collective over NVLink or InfiniBand, and the per-rank memory of 7B full fine-tuning (DDP, ZeRO-1).
 *
 * ```sh
 * deno run -A bench/distributed.ts            # all three; --no-mpirun skips 2
 * ```
 * @module
 */
import { tinyConfig } from "../tests/fixtures/tiny_config.ts";
import { initWeights } from "../lib/model/init.ts";
import { frozenWeights } from "../lib/model/weights.ts";
import { trainableParamsFor } from "../lib/model/decoder.ts";
import { alignmentTrainingSpec } from "../lib/train/train_graph.ts";
import { buildGradientGraph } from "../lib/graph/distributed.ts";
import type { CommBuffer, Communicator } from "../lib/runtime/comm/communicator.ts";
import { localWorld } from "../lib/runtime/comm/local.ts";
import { findMpirun, MPI_AS_ROOT_ENV } from "../lib/runtime/comm/mpi.ts";
import { DistributedSession } from "../lib/train/distributed.ts";
import { assembleRankChunk } from "../lib/train/rank_data.ts";
import type { PlannedStep } from "../lib/train/chunks.ts";
import type { PreparedExample } from "../lib/train/prepare.ts";
import { rankStateBytes } from "../lib/train/memory.ts";

const bytesOf = (b: CommBuffer) => ("byteLength" in b ? b.byteLength : b.length * 4);

/** `comm` counting each collective's ring traffic per rank (what one rank sends). */
export function countingComm(comm: Communicator, into: { bytes: number }): Communicator {
  const N = comm.size, f = (N - 1) / N;
  return {
    rank: comm.rank,
    size: N,
    localRank: comm.localRank,
    backend: comm.backend,
    allReduce: (buf, op) => (into.bytes += 2 * f * bytesOf(buf), comm.allReduce(buf, op)),
    reduceScatter: (send, recv, op) => (into.bytes += f * bytesOf(send), comm.reduceScatter(send, recv, op)),
    allGather: (send, recv) => (into.bytes += f * bytesOf(recv), comm.allGather(send, recv)),
    broadcast: (buf, root) => (into.bytes += bytesOf(buf), comm.broadcast(buf, root)),
    barrier: () => comm.barrier(),
    abort: (r) => comm.abort(r),
    [Symbol.asyncDispose]: () => comm[Symbol.asyncDispose](),
  };
}

/** Part 1: bytes per step and rank for DDP and ZeRO-1 on 2 in-process ranks, full fine-tuning. */
export async function communicationVolume(steps = 3) {
  const cfg = tinyConfig("llama", { numLayers: 2, hiddenSize: 64, vocabSize: 64 });
  const W = initWeights(cfg, { seed: 1, std: 0.05 });
  let s = 11;
  const tok = (n: number) => Array.from({ length: n }, () => 1 + ((s = (s * 48271) % 2147483647) % 60));
  const examples: PreparedExample[] = Array.from({ length: 8 * steps }, () => ({
    promptIds: tok(6),
    responseIds: [tok(5), tok(7)],
    labels: [0.6, 0.4],
  }));
  const reference = examples.map(() => Float32Array.of(-20, -21));
  const plan: PlannedStep[] = Array.from({ length: steps }, (_, i) => ({
    epoch: 0,
    indices: [...Array(8).keys()].map((j) => i * 8 + j),
  }));
  const rows = [];
  for (const zero of [0, 1] as const) {
    const counts = [{ bytes: 0 }, { bytes: 0 }];
    const comms = localWorld(2).map((c, r) => countingComm(c, counts[r]));
    const sessions = await Promise.all(comms.map((comm) => {
      const trainable = trainableParamsFor(cfg, { mode: "full", weights: W });
      const spec = alignmentTrainingSpec({
        cfg,
        frozen: frozenWeights(W),
        trainable,
        loss: "nca",
        beta: 0.1,
        k: 2,
        ranked: false,
        optimizer: { kind: "adamw", weightDecay: 0.01 },
        maxGradNorm: 1,
        rowOffset: true,
      });
      return DistributedSession.create(buildGradientGraph(spec), trainable.init, comm, {
        optimizer: spec.optimizer,
        maxGradNorm: 1,
        zero,
        hashEvery: 0,
      });
    }));
    for (const c of counts) c.bytes = 0; // the initial broadcast is not a step's
    const t0 = performance.now();
    await Promise.all(sessions.map((se) => {
      const t = assembleRankChunk(
        examples,
        plan,
        reference,
        { loss: "nca", k: 2, padId: 0, accumulation: 1 },
        se.comm,
        true,
      );
      return se.run(t.feeds, new Array(steps).fill(1e-3));
    }));
    const ms = (performance.now() - t0) / steps;
    const P = sessions[0].size, N = 2;
    rows.push({
      mode: zero ? "ZeRO-1" : "DDP",
      params: P,
      measured: counts[0].bytes / steps,
      theory: 2 * (N - 1) / N * P * 4,
      optimizerStateBytes: sessions[0].optimizerStateBytes,
      msPerStep: ms,
    });
    for (const se of sessions) await se.release();
  }
  return rows;
}

/** Part 2: one process against `mpirun -np 2`, the same global batch; mean tokens/s after the first chunk. */
async function mpirunThroughput(): Promise<{ ranks: number; tokensPerS: number; wallS: number }[] | string> {
  const mpirun = findMpirun();
  if (!mpirun) return "mpirun is not installed: skipped";
  const { tinySetup } = await import("../tests/train/_fixtures.ts");
  const s = await tinySetup();
  const args = (out: string, batch: number) => [
    ...[
      "task",
      "train",
      "--model",
      s.model,
      "--data",
      `${s.dir}/reward.jsonl`,
      "--loss",
      "nca",
      "--epochs",
      "4",
    ],
    ...["--max-length", "48", "--max-prompt-length", "24", "--lora-r", "4", "--device", "cpu", "--quiet"],
    ...["--eval-fraction", "0.17", "--steps-per-run", "2", "--batch-size", String(batch), "--out", out],
  ];
  const env = { ...MPI_AS_ROOT_ENV };
  const out = [];
  for (const ranks of [1, 2]) {
    const dir = `${s.dir}/r${ranks}`;
    const t0 = performance.now();
    const cmd = ranks === 1
      ? new Deno.Command(Deno.execPath(), { args: args(dir, 4), stdout: "null", stderr: "piped" })
      : new Deno.Command(mpirun, {
        args: ["-np", "2", "--oversubscribe", "--bind-to", "none", Deno.execPath(), ...args(dir, 2)],
        env,
        stdout: "null",
        stderr: "piped",
      });
    const r = await cmd.output();
    if (r.code !== 0) throw new Error(new TextDecoder().decode(r.stderr));
    const wallS = (performance.now() - t0) / 1000;
    const recs = (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    )
      .filter((x) => typeof x.tokens_per_s === "number" && x.step > 2);
    out.push({ ranks, tokensPerS: recs.reduce((a, x) => a + x.tokens_per_s, 0) / recs.length, wallS });
  }
  await Deno.remove(s.dir, { recursive: true });
  return out;
}

/** Part 3: on paper (see BENCHMARKS.md for the inputs). */
export function onPaper() {
  const GB = 1e9;
  const links = {
    "NVLink 4 (H100 SXM, ~360 GB/s busbw)": 360 * GB,
    "InfiniBand NDR 400 Gb/s per GPU": 50 * GB,
  };
  // measured single-GPU steps (H200, BENCHMARKS.md "Training throughput on a GPU", in-Loop ms/step)
  const cases = [
    { name: "GPT-2 124M LoRA r=16", params: 1.62e6, stepMs: 39.5, tokens: 8 * 512 },
    { name: "GPT-2 124M full", params: 124.4e6, stepMs: 49.4, tokens: 8 * 512 },
  ];
  const N = 8, hostGBs = 2.7; // device↔host through the JS boundary, each way (BENCHMARKS.md, gpu/README.md)
  const rows = [];
  for (const c of cases) {
    // onnxruntime-node: the gradient leaves the device and the parameters come back once per step; the C
    // API: the collectives work on the device values in place
    for (const path of ["staged (onnxruntime-node)", "in place (C API)"]) {
      for (const [link, bw] of Object.entries(links)) {
        const ring = 2 * (N - 1) / N * c.params * 4 / bw * 1000;
        const host = path.startsWith("staged") ? 2 * c.params * 4 / (hostGBs * GB) * 1000 : 0;
        const step = c.stepMs + ring + host;
        rows.push({
          case: c.name,
          path,
          link,
          ringMs: ring,
          hostMs: host,
          stepMs: step,
          tokensPerS: N * c.tokens / step * 1000,
          efficiency: c.stepMs / step,
        });
      }
    }
  }
  const P7 = 7.24e9; // Mistral-7B
  const memory = [0, 1].map((zero) => ({
    zero,
    ...rankStateBytes(P7, { size: 8, zero: zero as 0 | 1, device: "cuda" }),
  }));
  return { rows, memory };
}

if (import.meta.main) {
  const gib = (b: number) => (b / 2 ** 30).toFixed(1);
  console.log("## 1. bytes per optimizer step and rank (2 in-process ranks, full fine-tuning)");
  for (const r of await communicationVolume()) {
    console.log(
      `| ${r.mode} | ${r.params.toLocaleString("en")} | ${Math.round(r.measured).toLocaleString("en")} | ${
        Math.round(r.theory).toLocaleString("en")
      } | ${(r.measured / r.theory).toFixed(3)} | ${r.optimizerStateBytes.toLocaleString("en")} | ${
        r.msPerStep.toFixed(1)
      } |`,
    );
  }
  if (!Deno.args.includes("--no-mpirun")) {
    console.log("## 2. one process against mpirun -np 2 (same global batch)");
    console.log(await mpirunThroughput());
  }
  console.log("## 3. on paper: 8 × H100");
  const p = onPaper();
  for (const r of p.rows) {
    console.log(
      `| ${r.case} | ${r.path} | ${r.link} | ${r.ringMs.toFixed(2)} | ${r.hostMs.toFixed(1)} | ${
        r.stepMs.toFixed(1)
      } | ${Math.round(r.tokensPerS).toLocaleString("en")} | ${(r.efficiency * 100).toFixed(0)}% |`,
    );
  }
  for (const m of p.memory) {
    console.log(
      `| 7B full, 8 ranks, --zero ${m.zero} | params ${gib(m.params)} | gradient ${
        gib(m.gradient)
      } | staging ${gib(m.staging)} | moments ${gib(m.moments)} | update ${gib(m.update)} | total ${
        gib(m.total)
      } GiB |`,
    );
  }
}
