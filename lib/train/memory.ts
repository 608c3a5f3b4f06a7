/**
 * What a training run will hold in memory, worked out before any of it is loaded, and the settings that
 * follow: whether each layer's activations are recomputed in the backward pass (activation
 * checkpointing), how many rows the LM head takes at a time, and whether the run fits at all.
 *
 * The estimate adds, in bytes:
 * - `weights`: the frozen weights as stored (bf16 stays bf16; on the CPU they are the model files mapped
 *   into memory); none on a GPU for full fine-tuning, whose graphs read every weight as a trainable
 *   parameter and no weight file (the reference log-probs come from the initial parameters);
 * - `trainable`: parameters, gradients and AdamW's two moments in float32 inside ONNX Runtime, plus the
 *   copies the trainer keeps in JavaScript (parameters and moments) and those a session run hands back;
 * - `activations`: what the forward pass keeps for the backward pass, for one micro-batch: every layer's
 *   saved tensors, or only each layer's input when checkpointing;
 * - `layer`: one layer's working set while its backward pass runs (its recomputed forward included);
 * - `head`: the LM head's block of logits with its log-softmax and gradient, and the head weight cast to
 *   the compute dtype when it is stored narrower;
 * - `runtime`: ONNX Runtime, Deno and the graphs.
 * Per-token sizes count the tensors the toolkit's graphs keep (see lib/model/layers.ts); the constants were
 * checked against measured peaks (bench/memory.ts, BENCHMARKS.md).
 * @module
 */
import type { SegmentMode } from "../graph/autodiff.ts";
import type { ModelConfig } from "../model/config.ts";
import type { StoredWeights } from "../model/stored_weights.ts";
import { STAGING_CHUNK_BYTES } from "../runtime/comm/communicator.ts";

/** What the estimate needs to know about a run. */
export type MemoryInputs = {
  cfg: ModelConfig;
  /** Bytes of every frozen weight as stored, and the LM head weight's stored element size. */
  weightBytes: number;
  headElementBytes: number;
  /** Trainable parameters (LoRA adapters, or every weight). */
  trainableParams: number;
  /** Sequences per micro-batch (prompts × responses) and their padded length. */
  rows: number;
  width: number;
  /** Compute dtype's element size: 4 (fp32) or 2 (fp16). */
  computeBytes: number;
  lora: { dropout: boolean; modules: number; r: number } | null;
  checkpointing: boolean;
  /** LM head rows per block (0: all). */
  chunk: number;
  /** One rank of several (lib/train/distributed.ts): the trainable state per rank, see {@link rankStateBytes}. */
  world?: MemoryWorld;
};

/**
 * Data parallelism: how many ranks, whether AdamW's moments are sharded across them (ZeRO-1), and the
 * device (default the CPU), which decides where the collectives' copies of the gradient are counted.
 */
export type MemoryWorld = { size: number; zero: 0 | 1; device?: "cpu" | "cuda" };

/**
 * The trainable state one rank of a data-parallel run holds on its device, by part (bytes, float32): the
 * parameters and the gradient whole (the gradient graph's input and output), the collectives' copies
 * (`staging`: today the step hands them host arrays — on the CPU the gradient and the gathered parameters
 * in JavaScript, the same memory; on CUDA NCCL's device scratch buffer, at most
 * {@link STAGING_CHUNK_BYTES} since the arrays go in pieces, the host arrays being host memory), AdamW's two
 * moments whole (DDP) or this rank's 1/N slice (ZeRO-1), and the optimizer graph's outputs for its slice
 * (new parameters and moments, the whole state under DDP) while they replace the old ones.
 */
export function rankStateBytes(
  params: number,
  w: MemoryWorld,
): { params: number; gradient: number; staging: number; moments: number; update: number; total: number } {
  const slice = w.zero === 1 ? Math.ceil(params / w.size) : params;
  const parts = {
    params: params * 4,
    gradient: params * 4,
    staging: w.device === "cuda" ? Math.min(params * 4, STAGING_CHUNK_BYTES) : params * 8,
    moments: slice * 8,
    update: slice * 12,
  };
  return { ...parts, total: parts.params + parts.gradient + parts.staging + parts.moments + parts.update };
}

/** The estimate, in bytes, by part. */
export type MemoryEstimate = {
  weights: number;
  trainable: number;
  activations: number;
  layer: number;
  head: number;
  runtime: number;
  total: number;
};

/** ONNX Runtime, Deno, the tokenizer and the graphs: measured on the CPU, model-independent. */
const RUNTIME_BYTES = 0.6 * 2 ** 30;

/**
 * Elements one layer keeps per token for its backward pass, without checkpointing (compute dtype): the
 * norms' inputs, q, k, v, the attention output, the MLP's gate, up, activation and product, and LoRA's
 * dropped-out inputs when dropout is on; plus the attention probabilities, `heads × seq` per token.
 */
function savedPerToken(cfg: ModelConfig, seq: number, lora: MemoryInputs["lora"]): number {
  const d = cfg.hiddenSize, ff = cfg.intermediateSize;
  const q = cfg.numHeads * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim;
  const gated = cfg.family !== "gpt2";
  let n = 4 * d + 2 * q + 2 * kv + (gated ? 5 : 3) * ff + 2 * cfg.numHeads * seq;
  if (lora) n += lora.modules / cfg.numLayers * lora.r * 2 + (lora.dropout ? 4 * d + q + ff : 0);
  return n;
}

/** The estimate for a run (see the module documentation). */
export function estimateMemory(m: MemoryInputs): MemoryEstimate {
  const tokens = m.rows * m.width;
  const perToken = savedPerToken(m.cfg, m.width, m.lora) * m.computeBytes;
  const layers = m.cfg.numLayers;
  const activations = m.checkpointing
    ? tokens * m.cfg.hiddenSize * m.computeBytes * (layers + 2)
    : tokens * perToken * layers;
  const layer = m.checkpointing ? tokens * perToken * 1.5 : tokens * m.cfg.hiddenSize * m.computeBytes * 4;
  const headRows = m.chunk > 0 ? Math.min(m.chunk, tokens) : tokens;
  const headCast = m.headElementBytes === m.computeBytes
    ? 0
    : m.cfg.vocabSize * m.cfg.hiddenSize * m.computeBytes;
  const head = headRows * m.cfg.vocabSize * 4 * 3 + headCast;
  // in the session: parameter, gradient, two moments; in JavaScript: parameters and moments, and the
  // copies a run hands back
  const trainable = m.world && m.world.size > 1
    ? rankStateBytes(m.trainableParams, m.world).total
    : m.trainableParams * 4 * (4 + 3 + 3);
  const weights = m.weightBytes;
  const total = weights + trainable + activations + layer + head + RUNTIME_BYTES;
  return { weights, trainable, activations, layer, head, runtime: RUNTIME_BYTES, total };
}

/** Bytes of the frozen weights as stored, and the LM head's element size. */
export function storedSizes(
  cfg: ModelConfig,
  stored: StoredWeights,
): { weightBytes: number; headElementBytes: number } {
  let weightBytes = 0;
  for (const t of stored.values()) weightBytes += t.end - t.begin;
  const head = stored.get(cfg.tieWordEmbeddings ? headEmbeddingName(cfg) : "lm_head.weight");
  const headElementBytes = head ? (head.end - head.begin) / (cfg.vocabSize * cfg.hiddenSize) : 4;
  return { weightBytes, headElementBytes };
}

function headEmbeddingName(cfg: ModelConfig): string {
  return cfg.family === "gpt2" ? "wte.weight" : "model.embed_tokens.weight";
}

/** The LM head's rows per block: enough that one block's fp32 logits stay near 128 MiB (0: all at once). */
export function headChunk(cfg: ModelConfig, tokens: number): number {
  const rows = Math.max(64, Math.floor(128 * 2 ** 20 / (cfg.vocabSize * 4)));
  return tokens > rows ? rows : 0;
}

/** One line per part, for the run's log. */
export function describeEstimate(e: MemoryEstimate): string {
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  return `memory estimate: ${gib(e.total)} (weights ${gib(e.weights)}, trainable state ${
    gib(e.trainable)
  }, ` +
    `activations ${gib(e.activations)}, one layer ${gib(e.layer)}, LM head ${gib(e.head)}, runtime ${
      gib(e.runtime)
    })`;
}

/** How the backward pass of the layers is built for a run. */
export function segmentMode(checkpointing: boolean, castsWeights: boolean): SegmentMode {
  return checkpointing ? "recompute" : castsWeights ? "save" : "inline";
}

/** The settings a run's memory asks for, with the estimate they give. */
export type RunPlan = {
  checkpointing: boolean;
  segments: SegmentMode;
  chunk: number;
  estimate: MemoryEstimate;
  /** The estimate without checkpointing (what deciding it was based on). */
  without: MemoryEstimate;
};

/** What planning needs from the run: its model, data and trainable parameters. */
export type PlanInputs = {
  cfg: ModelConfig;
  stored: StoredWeights;
  /** Sequences per micro-batch and the longest padded sequence of the data. */
  rows: number;
  width: number;
  trainableParams: number;
  lora: MemoryInputs["lora"];
  computeBytes: number;
  /** `--gradient-checkpointing`: on, off, or undefined (decided here). */
  checkpointing?: boolean;
  /** Bytes the device can give the run (free memory); unknown: checkpointing stays off unless asked. */
  budget?: number;
  /** Where the run goes: how much of the budget a run without checkpointing may take (see {@link AUTO_SHARE}). */
  device?: "cpu" | "cuda";
  /** One rank of several: the trainable state is a rank's (see {@link rankStateBytes}). */
  world?: MemoryWorld;
};

/**
 * The share of the free memory a run may take before checkpointing turns on by itself. On the CPU, half:
 * the machine is shared with the system, the page cache and the user's other programs, and the estimate
 * may be 25% off (a TinyLlama-1.1B LoRA step without checkpointing would take 13.9 GiB of a 24 GiB machine,
 * with it 4.3). On a GPU the run has the device to itself; 10% stays for the allocator's fragmentation.
 */
export const AUTO_SHARE = { cpu: 0.5, cuda: 0.9 } as const;

/**
 * Decides checkpointing (when not given: on when the run without it would take more than the device's
 * {@link AUTO_SHARE} of the budget) and the LM
 * head's block size, and returns the estimate of the settings chosen.
 */
export function planRun(i: PlanInputs): RunPlan {
  const sizes = storedSizes(i.cfg, i.stored);
  // full fine-tuning on a GPU loads no frozen weight on the device (see the module documentation)
  if (i.lora === null && i.device === "cuda") sizes.weightBytes = 0;
  const chunk = headChunk(i.cfg, i.rows * i.width);
  const castsWeights = [...i.stored.values()].some((t) => storedBytes(t.dtype) !== i.computeBytes);
  const base = { cfg: i.cfg, ...sizes, trainableParams: i.trainableParams, rows: i.rows, width: i.width };
  const of = (checkpointing: boolean) =>
    estimateMemory({
      ...base,
      computeBytes: i.computeBytes,
      lora: i.lora,
      checkpointing,
      chunk,
      world: i.world,
    });
  const without = of(false);
  const share = AUTO_SHARE[i.device ?? "cpu"];
  const checkpointing = i.checkpointing ?? (i.budget !== undefined && without.total > share * i.budget);
  return {
    checkpointing,
    segments: segmentMode(checkpointing, castsWeights),
    chunk,
    estimate: checkpointing ? of(true) : without,
    without,
  };
}

function storedBytes(dtype: string): number {
  return dtype === "F64" ? 8 : dtype === "F32" ? 4 : 2;
}
