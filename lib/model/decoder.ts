/**
 * The public entry of lib/model: build a decoder-only transformer (any family of families/) as a graph of
 * the toolkit's engine, for training (full sequences, log-probs, gradients) and for serving (a KV cache in
 * the layout transformers.js feeds), from the SAME code.
 *
 * ## The contract (stable: the export/generation code builds against it)
 *
 * Inputs ({@link DecoderInputs}), with B = batch, T = new tokens, P = cached tokens, S = P + T:
 * - `inputIds` `[B, T]`, int32 or int64 (cast inside).
 * - `attentionMask` `[B, S]` (int32/int64/bool/float; nonzero = real token) covering past AND new tokens.
 *   Left or right padding both work.
 * - `positionIds` `[B, T]` (optional). When absent they are derived from the mask as Hugging Face's
 *   `generate` does: `cumsum(mask) - 1` with masked positions set to 1, the last T columns taken. So left
 *   and right padding give the same log-probs. (HF's plain `forward` uses `arange` instead, which agrees
 *   for right padding: the training layout.)
 * - `past` (optional): per layer `{key, value}`, each `[B, numKvHeads, P, headDim]` (P may be 0). Cast to
 *   the compute dtype.
 * - `logitsToKeep` (optional): an int64 scalar or `[1]` tensor k; logits are computed for the last k
 *   positions only (0 = all), as transformers.js' `num_logits_to_keep`.
 *
 * Outputs ({@link DecoderOutputs}):
 * - `logits` `[B, T, vocab]` (or `[B, k, vocab]`), in the compute dtype.
 * - `present`: per layer `{key, value}` `[B, numKvHeads, P + T, headDim]`: past concatenated with the new
 *   tokens' keys (after rotary) and values. Unused outputs cost nothing (ONNX Runtime prunes them).
 *
 * Attention is causal over absolute indices (query t sees keys ≤ P + t) and masked where the mask is 0,
 * with an additive −1e9 bias (finite: a fully masked row gives a uniform softmax, never NaN). Layers with a
 * sliding window (Mistral, Gemma, Phi-3, some Qwen) also mask keys that many positions back or more.
 *
 * ## Compute dtypes
 * float32 (the default), float64 (finite-difference checks) and float16, mixed precision for CUDA:
 * - frozen weights are fp16 initializers (half the memory); trainable parameters stay float32 graph inputs
 *   (the master weights), cast to fp16 where they are used; embedding rows are gathered before the cast;
 * - hidden states, Gemm/MatMul, activations, residual adds and the KV cache are fp16;
 * - in float32 between casts: RMSNorm/LayerNorm (with float32 norm weights), the rotary tables, and the
 *   attention scores from the mask onwards (additive −1e9 bias, softmax; probabilities cast to fp16);
 * - `logits` come out fp16; {@link sequenceLogProbs} casts them to float32 before the log-softmax and the
 *   label gather, so log-probs, their sums and every loss are float32.
 * Graph inputs and outputs stay float32/int (Deno cannot pass fp16 tensors). Train fp16 graphs with loss
 * scaling (`lossScaling` of `buildTrainingGraph`): fp16 gradients underflow without it.
 *
 * ## Training helpers
 * {@link trainableParamsFor} lists the trainable parameters (LoRA adapters or every weight) with initial
 * values, ready for `buildTrainingGraph`; {@link policyLogProbs} and {@link referenceLogProbs} build the
 * per-sequence log-prob sums the losses consume. The reference model is the same frozen initializers with
 * the adapters off: no second copy of the weights.
 * @module
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
import type { TrainableParam } from "../graph/training.ts";
import * as op from "../graph/ops.ts";
import { layerWindow, type ModelConfig } from "./config.ts";
import { type FloatDType, overlayWeights, type WeightMap, type WeightSource } from "./weights.ts";
import {
  initLoraTensors,
  type LoraConfig,
  loraHook,
  loraModules,
  type LoraRuntime,
  loraRuntime,
  normalizeLoraConfig,
} from "./lora.ts";
import { familyOf } from "./families/registry.ts";
import { expectedTensors } from "./weights_names.ts";
import {
  attentionBias,
  type Ctx,
  dropoutRowIds,
  lmHead,
  positionsFromMask,
  sensitiveDtype,
  weight,
} from "./layers.ts";
import { headLogProbs, type SequenceLogProbs } from "./logprobs.ts";
import type { FamilyOutputs, KvPair } from "./types.ts";

export type { KvPair };

/** What the decoder reads. See the module documentation for shapes. */
export type DecoderInputs = {
  inputIds: Value;
  attentionMask: Value;
  positionIds?: Value;
  past?: KvPair[];
  logitsToKeep?: Value;
};

/** How the decoder is built. */
export type DecoderOptions = {
  /** Compute dtype: float32 (default), float64 (finite-difference checks) or float16 (mixed precision). */
  dtype?: FloatDType;
  /** Where each weight (HF name, HF layout) comes from: initializers, trainable inputs, or both. */
  weights: WeightSource;
  /** LoRA adapters to apply, or null/absent for the base model (the reference model). */
  lora?: LoraRuntime | null;
};

/** What the decoder returns. */
export type DecoderOutputs = {
  logits: Value;
  present: KvPair[];
};

/**
 * Builds the decoder of `cfg` into `g`. The whole forward pass: embeddings, layers, final norm and LM
 * head. Call it twice in one graph (policy with `lora`, reference without) to share the frozen weights.
 */
export function buildDecoder(
  g: GraphBuilder,
  cfg: ModelConfig,
  inputs: DecoderInputs,
  opts: DecoderOptions,
): DecoderOutputs {
  const { ctx, ids, out } = decoderBody(g, cfg, inputs, opts);
  return {
    logits: lmHead(ctx, out.hidden, out.head, ids, inputs.logitsToKeep, out.logitSoftcap ?? null),
    present: out.present,
  };
}

/**
 * Embeddings and layers of `cfg` (everything but the LM head), with the context the head needs; exported
 * for other heads on the same body (reward_head.ts' score head).
 */
export function decoderBody(
  g: GraphBuilder,
  cfg: ModelConfig,
  inputs: DecoderInputs,
  opts: DecoderOptions,
): { ctx: Ctx; ids: Value; out: FamilyOutputs } {
  const dtype = opts.dtype ?? "float32";
  if (inputs.past && inputs.past.length !== cfg.numLayers) {
    throw new RangeError(`past has ${inputs.past.length} layers, the model ${cfg.numLayers}`);
  }
  const ids = op.cast(inputs.inputIds, "int64");
  if (ids.rank !== 2) throw new RangeError(`inputIds must be [batch, seq], got [${ids.shape}]`);
  if (inputs.attentionMask.rank !== 2) {
    throw new RangeError(`attentionMask must be [batch, past + seq], got [${inputs.attentionMask.shape}]`);
  }
  const positions = inputs.positionIds
    ? op.cast(inputs.positionIds, "int64")
    : positionsFromMask(ids, inputs.attentionMask);
  let lora = opts.lora ?? null;
  // keyed dropout masks per token, not per padded position: the chunking cannot change them
  // (rows preset by policyLogProbs' dropoutRowOffset: a rank's share of a global batch, lib/train/distributed.ts)
  if (lora?.dropoutKey && lora.train && lora.dropout > 0) {
    lora = { ...lora, dropoutRows: lora.dropoutRows ?? dropoutRowIds(ids) };
  }
  const ctx: Ctx = { g, dtype, weights: opts.weights, adapt: lora ? loraHook(lora) : null };
  // one bias per attention window, built before the layers so that no layer's segment owns it
  const biases = new Map<number | null, Value>();
  for (let i = 0; i < cfg.numLayers; i++) {
    const w = layerWindow(cfg, i);
    if (!biases.has(w)) biases.set(w, attentionBias(ids, inputs.attentionMask, sensitiveDtype(dtype), w));
  }
  const bias = (w: number | null) => {
    const b = biases.get(w);
    if (!b) throw new Error(`no attention bias for window ${w}`);
    return b;
  };
  const out = familyOf(cfg).forward(ctx, cfg, { ids, positions, bias, past: inputs.past });
  return { ctx, ids, out };
}

/**
 * Per-sequence log-probs of `batch.labels` under the decoder, the LM head applied in blocks of `chunk`
 * rows (0: all rows at once) inside a segment of its own, so the `[tokens, vocab]` logits never exist for
 * the whole batch (see logprobs.ts' {@link headLogProbs}).
 */
export function decoderLogProbs(
  g: GraphBuilder,
  cfg: ModelConfig,
  batch: LabeledBatch,
  opts: DecoderOptions & { chunk?: number },
): SequenceLogProbs {
  const { ctx, out } = decoderBody(g, cfg, batch, opts);
  return g.segment(
    "head",
    () => headLogProbs(out.hidden, weight(ctx, out.head), batch.labels, opts.chunk ?? 0, out.logitSoftcap),
  );
}

// ---------------------------------------------------------------------------------------------------------
// Training helpers
// ---------------------------------------------------------------------------------------------------------

/** What to train: LoRA adapters (base frozen) or every weight. */
export type TrainableSpec =
  | { mode: "lora"; lora: LoraConfig; seed?: number }
  | { mode: "full"; weights: WeightMap };

/** Trainable parameters for `buildTrainingGraph`, with their initial values and what they mean. */
export type Trainable = {
  mode: "lora" | "full";
  /** The normalized LoRA config (null in full mode). */
  lora: LoraConfig | null;
  /**
   * Parameters named as they are saved: PEFT tensor names (`base_model.model.….lora_A.weight`) in LoRA
   * mode, canonical HF names in full mode. Shapes in HF/PEFT layout; `decay` false for norms and biases.
   */
  params: (TrainableParam & { decay: boolean })[];
  /** Initial values by parameter name. */
  init: Record<string, Float32Array>;
};

/**
 * The trainable parameters of a model. LoRA: A kaiming-uniform (PEFT's init, seeded), B zero, so the
 * policy starts equal to the reference. Full: every tensor of the config in checkpoint order (a tied
 * embedding once; extra tensors in `weights` ignored), initial values from `weights` (not copied: the
 * training session copies them).
 */
export function trainableParamsFor(cfg: ModelConfig, spec: TrainableSpec): Trainable {
  if (spec.mode === "lora") {
    const lora = normalizeLoraConfig(spec.lora);
    const tensors = initLoraTensors(cfg, lora, spec.seed ?? 0);
    const params = [];
    for (const m of loraModules(cfg, lora)) {
      params.push({ name: m.names.a, shape: [lora.r, m.inFeatures], decay: true });
      params.push({ name: m.names.b, shape: [m.outFeatures, lora.r], decay: true });
    }
    return {
      mode: "lora",
      lora,
      params,
      init: Object.fromEntries(params.map((p) => [p.name, tensors.get(p.name)!.data])),
    };
  }
  const params = [];
  const init: Record<string, Float32Array> = {};
  for (const { name, shape } of expectedTensors(cfg)) {
    const t = spec.weights.get(name);
    if (!t) throw new Error(`full fine-tuning: weight "${name}" is missing`);
    if (t.data.length !== shape.reduce((a, b) => a * b, 1)) {
      throw new RangeError(`full fine-tuning: weight "${name}" does not have shape [${shape}]`);
    }
    params.push({ name, shape, decay: !noDecay(name) });
    init[name] = t.data;
  }
  return { mode: "full", lora: null, params, init };
}

/** Hugging Face Trainer's rule: no weight decay on biases and normalization weights. */
function noDecay(name: string): boolean {
  return name.endsWith(".bias") || /(^|\.)(ln_\w+|ln_f|\w*norm|\w+_layernorm)\.weight$/.test(name);
}

/** A labelled batch inside a graph: ids and mask `[N, T]`, labels `[N, T]` (−100 = not scored, unshifted). */
export type LabeledBatch = { inputIds: Value; attentionMask: Value; labels: Value };

/** Options of the log-prob helpers. */
export type LogProbOptions = {
  dtype?: FloatDType;
  /** Apply LoRA dropout (training). Default true for the policy. */
  train?: boolean;
  /** Keys LoRA dropout masks per step (see `LoraRuntime.dropoutKey`): exact resumes. */
  dropoutKey?: Value;
  /** Rows per block of the LM head and log-softmax (0 or absent: all at once). */
  chunk?: number;
  /** Draw keyed dropout masks again in the backward pass (graphs with per-segment backward passes). */
  recomputeDropout?: boolean;
  /**
   * Rows of the global micro-batch before this batch's first (a scalar): keyed masks are then those its rows
   * get in the whole micro-batch, so a rank's share of it draws what one process would (data parallelism).
   */
  dropoutRowOffset?: Value;
};

/**
 * The policy's per-sequence log-probs: the decoder with the trainable `params` (as `buildTrainingGraph`
 * hands them to its forward function) over the `frozen` weights, scored on the labels.
 */
export function policyLogProbs(
  g: GraphBuilder,
  cfg: ModelConfig,
  trainable: Trainable,
  params: Record<string, Value>,
  frozen: WeightSource,
  batch: LabeledBatch,
  opts: LogProbOptions = {},
): SequenceLogProbs {
  const dtype = opts.dtype ?? "float32";
  let weights = frozen, lora: LoraRuntime | null = null;
  if (trainable.mode === "full") weights = overlayWeights(params, frozen);
  else {lora = loraRuntime(cfg, trainable.lora!, params, {
      train: opts.train ?? true,
      dropoutKey: opts.dropoutKey,
      recompute: opts.recomputeDropout,
    });}
  if (lora && opts.dropoutRowOffset && opts.dropoutKey && lora.train && lora.dropout > 0) {
    // row b of the global micro-batch has ids b · 65536 + t (layers.ts' dropoutRowIds): exact in float64
    const shift = op.mul(op.cast(opts.dropoutRowOffset, "float64"), g.scalar(65536, "float64"));
    lora = { ...lora, dropoutRows: op.add(dropoutRowIds(batch.inputIds), shift) };
  }
  return decoderLogProbs(g, cfg, batch, { dtype, weights, lora, chunk: opts.chunk });
}

/** The reference model's per-sequence log-probs: the frozen weights, no adapters. */
export function referenceLogProbs(
  g: GraphBuilder,
  cfg: ModelConfig,
  frozen: WeightSource,
  batch: LabeledBatch,
  opts: { dtype?: FloatDType; chunk?: number } = {},
): SequenceLogProbs {
  return decoderLogProbs(g, cfg, batch, {
    dtype: opts.dtype,
    weights: frozen,
    lora: null,
    chunk: opts.chunk,
  });
}
