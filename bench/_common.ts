/**
 * What the training benchmarks share: flag parsing with clear errors, the graph node counts that predict
 * CUDA launch overhead, synthetic batches in the chunk layout of lib/train/chunks.ts, timing, the ONNX
 * Runtime version and the GPU's name (for the peak FLOP/s of MFU).
 * @module
 */
import { tensorBytes } from "../lib/graph/serialize.ts";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import type { Graph } from "../lib/graph/ir.ts";
import { mulberry32 } from "../lib/data/random.ts";
import type { HostTensor } from "../lib/runtime/session.ts";
import { BATCH_INPUTS, dropoutKey } from "../lib/train/chunks.ts";
import { buildAlignmentGraph } from "../lib/train/train_graph.ts";
import type { Gpt2ModelConfig, ModelConfig } from "../lib/model/config.ts";
import { tinyConfig } from "../tests/fixtures/tiny_config.ts";
import { trainableParamsFor } from "../lib/model/decoder.ts";
import type { LoraConfig } from "../lib/model/lora.ts";
import { frozenWeights, type WeightMap } from "../lib/model/weights.ts";
import { TrainingSession } from "../lib/runtime/training_session.ts";
import { resolveDevice } from "../lib/runtime/device.ts";
import { nvidiaSmi } from "../lib/runtime/device_memory.ts";
import type { Device } from "../lib/runtime/tensor.ts";
import { UsageError } from "../lib/cli/spec.ts";

/** A wrong or missing flag (the entries' own): scripts print the message and their usage, and exit 2. */
export { UsageError };

/** Flag definitions for node:util's parseArgs. */
export type FlagSpec = Record<
  string,
  { type: "string" | "boolean"; default?: string | boolean; short?: string }
>;

/**
 * Parses `argv` strictly: an unknown flag, a missing value or a positional argument is a
 * {@link UsageError} naming it.
 */
export function parseFlags(argv: string[], spec: FlagSpec): Record<string, string | boolean | undefined> {
  try {
    const { values } = parseArgs({ args: argv, options: spec, strict: true, allowPositionals: false });
    return values as Record<string, string | boolean | undefined>;
  } catch (e) {
    throw new UsageError(`${(e as Error).message.replace(/\.$/, "")}. Run with --help for the flags.`);
  }
}

/** A flag as an integer ≥ `min`. */
export function intFlag(name: string, value: unknown, min = 1): number {
  const n = Number(value);
  if (typeof value !== "string" || value.trim() === "" || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name} must be an integer ≥ ${min}, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** A flag as a finite number > 0. */
export function positiveFlag(name: string, value: unknown): number {
  const n = Number(value);
  if (typeof value !== "string" || value.trim() === "" || !Number.isFinite(n) || n <= 0) {
    throw new UsageError(`--${name} must be a positive number, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** A comma-separated list whose items must be among `allowed`. */
export function listFlag<T extends string>(name: string, value: unknown, allowed: readonly T[]): T[] {
  const items = String(value ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new UsageError(`--${name} needs at least one of ${allowed.join(", ")}`);
  for (const it of items) {
    if (!(allowed as readonly string[]).includes(it)) {
      throw new UsageError(`--${name}: unknown "${it}" (choose from ${allowed.join(", ")})`);
    }
  }
  return items as T[];
}

/** `--device`: cpu, cuda or auto. */
export function deviceFlag(value: unknown): "cpu" | "cuda" | "auto" {
  if (value === "cpu" || value === "cuda" || value === "auto") return value;
  throw new UsageError(`--device must be cpu, cuda or auto, got ${JSON.stringify(value)}`);
}

/**
 * The `if (import.meta.main)` body of a script: runs `main`, prints a usage error (with the usage text) to
 * stderr and exits 2, any other error with its stack and exit 1.
 */
export async function runCli(main: (argv: string[]) => Promise<unknown>, usage: string): Promise<void> {
  try {
    await main(Deno.args);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}\n\n${usage}`);
      Deno.exit(2);
    }
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    Deno.exit(1);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Graph statistics
// ---------------------------------------------------------------------------------------------------------

/** Nodes of a graph, counting the nodes of every subgraph (Loop bodies) too; control-flow nodes included. */
export function countNodes(g: Graph, byOp?: Map<string, number>): number {
  let n = 0;
  for (const node of g.nodes) {
    n++;
    byOp?.set(node.op, (byOp.get(node.op) ?? 0) + 1);
    for (const a of Object.values(node.attrs)) if (a.type === "graph") n += countNodes(a.value, byOp);
  }
  return n;
}

/** Statistics of a chunked training graph: the whole graph, and one optimizer step (the Loop body). */
export type GraphStats = {
  /** Every node, subgraphs included. */
  graphNodes: number;
  /** Nodes of the outer Loop's body, recursively: what runs once per optimizer step. */
  stepNodes: number;
  /** The step's most frequent operators, most frequent first. */
  stepOps: [string, number][];
  /** Frozen weights and constants stored in the model. */
  initializerBytes: number;
};

/** Node counts of a training graph built by `buildTrainingGraph` (a top-level Loop over the steps). */
export function graphStats(g: Graph, topOps = 12): GraphStats {
  const loops = g.nodes.filter((n) => n.op === "Loop");
  const byOp = new Map<string, number>();
  let stepNodes = 0;
  for (const l of loops) {
    const body = l.attrs.body;
    if (body?.type === "graph") stepNodes += countNodes(body.value, byOp);
  }
  const initializerBytes = g.initializers.reduce((s, t) => s + tensorBytes(t), 0);
  return {
    graphNodes: countNodes(g),
    stepNodes,
    stepOps: [...byOp].sort((a, b) => b[1] - a[1]).slice(0, topOps),
    initializerBytes,
  };
}

/** Launch overhead of one tiny CUDA node measured on an H200 (ONNX Runtime 1.29; shared/gpu/README.md), ms. */
export const CUDA_LAUNCH_MS_PER_NODE = 0.004;

// ---------------------------------------------------------------------------------------------------------
// Synthetic batches
// ---------------------------------------------------------------------------------------------------------

/** What a synthetic chunk looks like. */
export type SyntheticChunk = {
  steps: number;
  /** Sequences per step (prompts × K). */
  rows: number;
  width: number;
  vocab: number;
  /** "sft": token counts; reward losses: reference log-probs and soft labels. */
  loss: "sft" | "nca" | "infonca" | "dpo";
  k: number;
  seed: number;
  /** Adds the per-step `dropout_key` input of graphs with LoRA dropout (the trainer's keys, seed 0). */
  dropoutKey?: boolean;
};

/**
 * Feeds of a chunk in the layout of lib/train/chunks.ts: `input_ids`, `attention_mask`, `labels`
 * `[steps, rows, width]` int32 (seeded random ids, no padding, every token a label), and `token_counts`
 * (SFT) or `ref_logps` + `soft_labels` `[steps, prompts, K]`.
 */
export function syntheticChunk(o: SyntheticChunk): Record<string, HostTensor> {
  const { steps, rows, width, k } = o;
  if (rows % k !== 0) throw new UsageError(`the batch (${rows} sequences) must be a multiple of K = ${k}`);
  const rand = mulberry32(o.seed);
  const n = steps * rows * width;
  const ids = new Int32Array(n);
  for (let i = 0; i < n; i++) ids[i] = Math.floor(rand() * o.vocab);
  const prompts = rows / k;
  const lead = [steps, rows, width];
  const feeds: Record<string, HostTensor> = {
    [BATCH_INPUTS.inputIds]: { dtype: "int32", dims: lead, data: ids },
    [BATCH_INPUTS.attentionMask]: { dtype: "int32", dims: lead, data: new Int32Array(n).fill(1) },
    [BATCH_INPUTS.labels]: { dtype: "int32", dims: lead, data: ids },
  };
  if (o.dropoutKey) {
    const keys = Float32Array.from({ length: steps }, (_, i) => dropoutKey(o.seed, i, 0));
    feeds[BATCH_INPUTS.dropoutKey] = { dtype: "float32", dims: [steps], data: keys };
  }
  const pk = steps * prompts * k, dims = [steps, prompts, k];
  if (o.loss === "sft") {
    feeds[BATCH_INPUTS.tokens] = { dtype: "float32", dims, data: new Float32Array(pk).fill(width - 1) };
    return feeds;
  }
  // reference log-probs near those of a random model (uniform over the vocabulary), and soft labels
  // softmax(reward) over each prompt's K responses
  const ref = new Float32Array(pk), soft = new Float32Array(pk);
  const base = -(width - 1) * Math.log(o.vocab);
  for (let p = 0; p < steps * prompts; p++) {
    let z = 0;
    for (let j = 0; j < k; j++) {
      ref[p * k + j] = base + 4 * (rand() - 0.5);
      soft[p * k + j] = Math.exp(3 * rand());
      z += soft[p * k + j];
    }
    for (let j = 0; j < k; j++) soft[p * k + j] /= z;
  }
  feeds[BATCH_INPUTS.reference] = { dtype: "float32", dims, data: ref };
  if (o.loss === "nca" || o.loss === "infonca") {
    feeds[BATCH_INPUTS.softLabels] = { dtype: "float32", dims, data: soft };
  }
  return feeds;
}

/** The first `steps` steps of stacked feeds (a view, no copy). */
export function firstSteps(feeds: Record<string, HostTensor>, steps: number): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  for (const [name, t] of Object.entries(feeds)) {
    const per = t.data.length / t.dims[0];
    out[name] = {
      ...t,
      dims: [steps, ...t.dims.slice(1)],
      data: t.data.subarray(0, steps * per),
    } as HostTensor;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------------------

/** The ONNX Runtime version of the loaded package. */
export function ortVersion(): string {
  return ort.env.versions.node ?? ort.env.versions.common;
}

/** The first GPU's name from nvidia-smi, or null (no GPU, no nvidia-smi, or no --allow-run). */
export async function gpuName(): Promise<string | null> {
  const out = await nvidiaSmi(["--query-gpu=name", "--format=csv,noheader"]);
  return out?.split("\n")[0].trim() || null;
}

/** This machine's CPU model (Linux), for reports. */
export function cpuName(): string | null {
  try {
    const m = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.+)/);
    return m ? `${m[1].trim()} (${navigator.hardwareConcurrency} threads)` : null;
  } catch {
    return null;
  }
}

/**
 * Dense peak TFLOP/s of a GPU for the precision the graphs compute in (fp32 storage: TF32 tensor cores),
 * from its name: H100/H200 SXM 494.7 (TF32) and 989.4 (bf16). Null when unknown.
 */
export function defaultPeakTflops(
  gpu: string | null,
  precision: "tf32" | "bf16" | "fp16" = "tf32",
): number | null {
  if (!gpu || !/H100|H200/i.test(gpu)) return null;
  return precision === "tf32" ? 494.7 : 989.4;
}

/** Median of a non-empty list. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Rounds for JSON output (3 significant decimals after the point by default). */
export function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// ---------------------------------------------------------------------------------------------------------
// Training cases
// ---------------------------------------------------------------------------------------------------------

/** GPT-2-shaped sizes. */
export type Gpt2Sizes = { layers: number; hidden: number; heads: number; vocab: number; positions: number };

/** A GPT-2 config of the given sizes (gelu_new, tied embeddings, intermediate 4·hidden). */
export function gpt2Config(s: Gpt2Sizes): Gpt2ModelConfig {
  if (s.hidden % s.heads !== 0) {
    throw new UsageError(`--hidden ${s.hidden} must be a multiple of --heads ${s.heads}`);
  }
  return tinyConfig("gpt2", {
    numLayers: s.layers,
    hiddenSize: s.hidden,
    numHeads: s.heads,
    vocabSize: s.vocab,
    maxPositions: s.positions,
  });
}

/** PEFT-style LoRA on GPT-2's c_attn, c_proj (attention and MLP) and c_fc, alpha = 2r, no dropout by default. */
export function benchLora(r: number, dropout = 0): LoraConfig {
  return { r, alpha: 2 * r, dropout, targetModules: ["c_attn", "c_proj", "c_fc"] };
}

/** One benchmark case: what trains, on which loss. */
export type CaseSpec = {
  cfg: ModelConfig;
  weights: WeightMap;
  mode: "full" | "lora";
  loss: "sft" | "nca";
  /** Responses per prompt (1 for SFT). */
  k: number;
  loraR: number;
  /** LoRA dropout; above 0 the graph takes a per-step `dropout_key` (see {@link syntheticChunk}). */
  loraDropout?: number;
  device: Device;
  threads?: number;
  profilePrefix?: string;
  /** fp16: mixed precision with dynamic loss scaling (CUDA). Default fp32 (TF32 matmuls on CUDA). */
  precision?: "fp32" | "fp16";
  /** How ONNX Runtime is called (see `SessionOptions.backend`); default: the trainer's choice. */
  backend?: "node" | "ffi";
};

/** A loaded case: its session and what it is made of. */
export type PreparedCase = {
  session: TrainingSession;
  stats: GraphStats;
  trainableParams: number;
  /** Seconds to build the graph (forward, autodiff, optimizer). */
  buildS: number;
  /** Seconds to serialize it and create the ONNX Runtime session. */
  sessionS: number;
};

/** Builds the alignment training graph of a case (AdamW, clipping at 1) and loads it. */
export async function prepareCase(s: CaseSpec): Promise<PreparedCase> {
  const t0 = performance.now();
  const trainable = s.mode === "full"
    ? trainableParamsFor(s.cfg, { mode: "full", weights: s.weights })
    : trainableParamsFor(s.cfg, { mode: "lora", lora: benchLora(s.loraR, s.loraDropout ?? 0), seed: 0 });
  const built = buildAlignmentGraph({
    cfg: s.cfg,
    frozen: frozenWeights(s.weights),
    trainable,
    loss: s.loss,
    beta: 0.1,
    k: s.k,
    ranked: false,
    optimizer: { kind: "adamw", weightDecay: 0.01 },
    maxGradNorm: 1,
    precision: s.precision,
  });
  const stats = graphStats(built.graph.build());
  const t1 = performance.now();
  const session = await TrainingSession.create(built, trainable.init, {
    device: s.device,
    intraOpThreads: s.threads,
    profilePrefix: s.profilePrefix,
    backend: s.backend,
    // protobuf stops at 2 GB: bigger frozen weights go to an external blob
    serialize: stats.initializerBytes > 1.5e9 ? { externalDataThreshold: 1 << 20 } : undefined,
  });
  const trainableParams = trainable.params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  return {
    session,
    stats,
    trainableParams,
    buildS: (t1 - t0) / 1000,
    sessionS: (performance.now() - t1) / 1000,
  };
}

/** Times one session run of the first `steps` steps of `feeds`; throws when a loss is not finite. */
export async function timeRun(
  session: TrainingSession,
  feeds: Record<string, HostTensor>,
  steps: number,
  lr = 1e-4,
): Promise<{ ms: number; loss: number }> {
  const part = firstSteps(feeds, steps);
  const t0 = performance.now();
  const r = await session.run(part, new Array(steps).fill(lr));
  const ms = performance.now() - t0;
  const loss = r.loss[r.loss.length - 1];
  if (!Number.isFinite(loss)) throw new Error(`the loss is not finite (${loss}) after ${steps} steps`);
  return { ms, loss };
}

/** Resolves `--device`, printing the notice of an `auto` fallback to stderr. */
export async function benchDevice(req: "cpu" | "cuda" | "auto"): Promise<Device> {
  const { device, notice } = await resolveDevice(req);
  if (notice) console.error(notice);
  return device;
}
