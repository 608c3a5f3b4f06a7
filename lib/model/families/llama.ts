/**
 * The Llama family (`model_type` llama — Llama 2/3, SmolLM, TinyLlama —, mistral, qwen2 — Qwen2/2.5 —,
 * qwen3): its config (read from and written to `config.json`), its tensor names, and its forward pass:
 *
 * ```
 * h = embed_tokens[ids]
 * for each layer:
 *   a = rmsnorm(h);  q, k, v = q_proj(a), k_proj(a), v_proj(a)      (Qwen2: with bias)
 *   q, k = q_norm(q), k_norm(k)                                       (Qwen3: RMSNorm of each head)
 *   q, k = rotary(q), rotary(k)                                       (rotate-half, rope_theta, scaling)
 *   h += o_proj(attention(q, [past_k; k], [past_v; v]))              (grouped-query heads, causal + mask,
 *                                                                      a sliding window where the layer has one)
 *   h += down_proj(silu(gate_proj(rmsnorm(h))) · up_proj(rmsnorm(h)))
 * logits = rmsnorm(h) · lm_head^T                                     (lm_head = embed_tokens when tied)
 * ```
 * Each layer is a graph segment, so a backward pass can recompute it from its input (see autodiff.ts);
 * the decoder applies the LM head (decoder.ts). {@link LLAMA} is what registry.ts lists.
 * @module
 */
import type { Value } from "../../graph/builder.ts";
import * as op from "../../graph/ops.ts";
import type { FamilyInputs, FamilyModule, FamilyOutputs, KvPair, TensorSpec } from "../types.ts";
import {
  type AttentionBias,
  type FieldReader,
  layerTypes,
  layerWindow,
  readCommon,
  readRope,
  readSizes,
  readWindows,
  requireActivation,
  ROTARY_SIZE_KEYS,
  rotaryJson,
  type RotaryModelConfig,
  rotaryRope,
  validateRotary,
} from "./common.ts";
import {
  applyRotary,
  attention,
  type Ctx,
  embedding,
  linear,
  rmsNorm,
  rotaryTables,
  silu,
  toHeads,
  withPast,
} from "../layers.ts";

// ---------------------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------------------

/** `model_type`s of the Llama family. */
export const LLAMA_MODEL_TYPES = ["llama", "mistral", "qwen2", "qwen3"] as const;
/** A `model_type` of the Llama family. */
export type LlamaModelType = typeof LLAMA_MODEL_TYPES[number];

/** A Llama-family config (llama, mistral, qwen2, qwen3). */
export interface LlamaModelConfig extends RotaryModelConfig {
  family: "llama";
  modelType: LlamaModelType;
  /** RMSNorm of each head's queries and keys before rotary (Qwen3's q_norm/k_norm). */
  qkNorm: boolean;
}

/** Reads a Llama-family `config.json`: Qwen2's hard-wired q/k/v biases, each model type's sliding layers. */
export function parseLlama(r: FieldReader, modelType: LlamaModelType): LlamaModelConfig {
  const sizes = readSizes(r);
  requireActivation(r, ["hidden_act"], ["silu", "swish"], "silu");
  if (r.raw(["partial_rotary_factor"]) && r.json.partial_rotary_factor !== 1) {
    r.fail(`partial_rotary_factor ${JSON.stringify(r.json.partial_rotary_factor)} is not supported (only 1)`);
  }
  let attentionBias: AttentionBias;
  let mlpBias = false;
  if (modelType === "llama") {
    const b = r.bool("attention_bias", false);
    attentionBias = { q: b, k: b, v: b, o: b };
    mlpBias = r.bool("mlp_bias", false);
  } else if (modelType === "qwen2") {
    attentionBias = { q: true, k: true, v: true, o: false };
  } else if (modelType === "qwen3") {
    const b = r.bool("attention_bias", false);
    attentionBias = { q: b, k: b, v: b, o: b };
  } else {
    attentionBias = { q: false, k: false, v: false, o: false };
  }
  const window = r.raw(["sliding_window"]) ? r.positiveInt(["sliding_window"]) : null;
  let windows;
  if (modelType === "mistral") windows = readWindows(r, sizes.numLayers, window, () => true);
  else if (modelType === "qwen2" || modelType === "qwen3") {
    // transformers' Qwen2/Qwen3: layers from max_window_layers on slide, when use_sliding_window is set
    const on = r.bool("use_sliding_window", false);
    const from = r.positiveInt(["max_window_layers"], 28, 0);
    windows = readWindows(r, sizes.numLayers, on ? window : null, (i) => i >= from);
  } else windows = readWindows(r, sizes.numLayers, null, () => false);
  return {
    family: "llama",
    modelType,
    ...sizes,
    attentionBias,
    mlpBias,
    tieWordEmbeddings: r.bool("tie_word_embeddings", false),
    activation: "silu",
    ...readCommon(r),
    ...readRope(r, sizes.headDim),
    ...windows,
    qkNorm: modelType === "qwen3",
  };
}

/** The attention biases each model type can express. */
const EXPECTED_BIAS: Record<LlamaModelType, (b: AttentionBias) => boolean> = {
  llama: (b) => b.q === b.k && b.k === b.v && b.v === b.o,
  mistral: (b) => !b.q && !b.k && !b.v && !b.o,
  qwen2: (b) => b.q && b.k && b.v && !b.o,
  qwen3: (b) => b.q === b.k && b.k === b.v && b.v === b.o,
};

function validateLlama(cfg: LlamaModelConfig, fail: (msg: string) => never): void {
  validateRotary(cfg, cfg.headDim, "silu", fail);
  if (!EXPECTED_BIAS[cfg.modelType](cfg.attentionBias)) {
    fail(`attentionBias ${JSON.stringify(cfg.attentionBias)} is not expressible for this model type`);
  }
  // only Llama itself has mlp_bias
  if (cfg.modelType !== "llama" && cfg.mlpBias !== false) {
    fail(`mlpBias ${cfg.mlpBias} is not expressible for this model type`);
  }
}

const ARCHITECTURES: Record<LlamaModelType, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
};

/** The `config.json` of a Llama-family config. */
function llamaToJson(cfg: LlamaModelConfig, tail: Record<string, unknown>): Record<string, unknown> {
  const out = rotaryJson(cfg, ARCHITECTURES[cfg.modelType], tail, cfg.modelType === "qwen2");
  out.hidden_act = "silu";
  if (cfg.modelType === "llama" || cfg.modelType === "qwen3") {
    out.attention_bias = cfg.attentionBias.q;
    if (cfg.modelType === "llama") out.mlp_bias = cfg.mlpBias;
  }
  if (cfg.modelType === "mistral") out.sliding_window = cfg.slidingWindow;
  if (cfg.modelType === "qwen2" || cfg.modelType === "qwen3") Object.assign(out, qwenWindows(cfg));
  return out;
}

/**
 * Qwen's window fields: layers from `max_window_layers` on slide. When the sliding layers are not such a
 * suffix, `layer_types` says which (older transformers would then slide a different set).
 */
function qwenWindows(cfg: LlamaModelConfig): Record<string, unknown> {
  if (cfg.slidingWindow === null) {
    return { use_sliding_window: false, sliding_window: null, max_window_layers: cfg.numLayers };
  }
  const slides = cfg.slidingLayers ?? Array(cfg.numLayers).fill(true);
  const from = slides.indexOf(true);
  const suffix = slides.every((s, i) => s === i >= from);
  return {
    use_sliding_window: true,
    sliding_window: cfg.slidingWindow,
    max_window_layers: from,
    ...(suffix ? {} : { layer_types: layerTypes(cfg) }),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Tensors and forward
// ---------------------------------------------------------------------------------------------------------

/** Llama-family names outside the decoder layers. */
export const LLAMA_NAMES = {
  embedTokens: "model.embed_tokens.weight",
  norm: "model.norm.weight",
  /** Absent from checkpoints when the embeddings are tied. */
  lmHead: "lm_head.weight",
} as const;

/** Weight and bias names of one linear/norm module. */
export interface ParamNames {
  weight: string;
  bias: string;
}

function params(prefix: string): ParamNames {
  return { weight: `${prefix}.weight`, bias: `${prefix}.bias` };
}

/** Names of decoder layer `i` of a Llama-family model. */
export interface LlamaLayerNames {
  qProj: ParamNames;
  kProj: ParamNames;
  vProj: ParamNames;
  oProj: ParamNames;
  gateProj: ParamNames;
  upProj: ParamNames;
  downProj: ParamNames;
  inputLayernorm: string;
  postAttentionLayernorm: string;
  /** Qwen3's per-head norms (`[headDim]`). */
  qNorm: string;
  kNorm: string;
}

/** Tensor names of Llama-family decoder layer `i` (`model.layers.{i}.…`). */
export function llamaLayerNames(i: number): LlamaLayerNames {
  const p = `model.layers.${i}`;
  return {
    qProj: params(`${p}.self_attn.q_proj`),
    kProj: params(`${p}.self_attn.k_proj`),
    vProj: params(`${p}.self_attn.v_proj`),
    oProj: params(`${p}.self_attn.o_proj`),
    gateProj: params(`${p}.mlp.gate_proj`),
    upProj: params(`${p}.mlp.up_proj`),
    downProj: params(`${p}.mlp.down_proj`),
    inputLayernorm: `${p}.input_layernorm.weight`,
    postAttentionLayernorm: `${p}.post_attention_layernorm.weight`,
    qNorm: `${p}.self_attn.q_norm.weight`,
    kNorm: `${p}.self_attn.k_norm.weight`,
  };
}

/** Every tensor of a Llama-family checkpoint, in module order (the LM head only when untied). */
export function llamaTensors(cfg: LlamaModelConfig): TensorSpec[] {
  const { hiddenSize: h, intermediateSize: ff, vocabSize: v } = cfg;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const out: TensorSpec[] = [{ name: LLAMA_NAMES.embedTokens, shape: [v, h] }];
  const linear = (names: ParamNames, outDim: number, inDim: number, bias: boolean) => {
    out.push({ name: names.weight, shape: [outDim, inDim] });
    if (bias) out.push({ name: names.bias, shape: [outDim] });
  };
  for (let i = 0; i < cfg.numLayers; i++) {
    const n = llamaLayerNames(i);
    out.push({ name: n.inputLayernorm, shape: [h] });
    linear(n.qProj, qDim, h, cfg.attentionBias.q);
    linear(n.kProj, kvDim, h, cfg.attentionBias.k);
    linear(n.vProj, kvDim, h, cfg.attentionBias.v);
    linear(n.oProj, h, qDim, cfg.attentionBias.o);
    if (cfg.qkNorm) {
      out.push({ name: n.qNorm, shape: [cfg.headDim] }, { name: n.kNorm, shape: [cfg.headDim] });
    }
    out.push({ name: n.postAttentionLayernorm, shape: [h] });
    linear(n.gateProj, ff, h, cfg.mlpBias);
    linear(n.upProj, ff, h, cfg.mlpBias);
    linear(n.downProj, h, ff, cfg.mlpBias);
  }
  out.push({ name: LLAMA_NAMES.norm, shape: [h] });
  if (!cfg.tieWordEmbeddings) out.push({ name: LLAMA_NAMES.lmHead, shape: [v, h] });
  return out;
}

/** The Llama-family decoder: final hidden rows, the head's weight and the per-layer KV cache. */
export function llamaForward(ctx: Ctx, cfg: LlamaModelConfig, inp: FamilyInputs): FamilyOutputs {
  const { ids } = inp;
  const bt = op.shapeOf(ids);
  const eps = cfg.rmsNormEps;
  const { invFreq } = rotaryRope(cfg, cfg.headDim); // one rope for every layer
  const rope = rotaryTables(ctx, inp.positions, invFreq);
  let h = embedding(ctx, LLAMA_NAMES.embedTokens, ids); // [B·T, D]
  const present: KvPair[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const bias = inp.bias(layerWindow(cfg, i));
    h = ctx.g.segment(`layer${i}`, () => {
      const n = llamaLayerNames(i), p = `model.layers.${i}`;
      const b = cfg.attentionBias;
      // attention
      const a = rmsNorm(ctx, h, n.inputLayernorm, eps);
      const proj = (name: string, bias: boolean, heads: number) =>
        toHeads(
          linear(ctx, `${p}.self_attn.${name}`, a, { layout: "linear", bias }),
          bt,
          heads,
          cfg.headDim,
          ids.shape,
        );
      const headNorm = (x: Value, name: string) => cfg.qkNorm ? rmsNorm(ctx, x, name, eps) : x;
      const q = applyRotary(headNorm(proj("q_proj", b.q, cfg.numHeads), n.qNorm), rope);
      const k = withPast(
        applyRotary(headNorm(proj("k_proj", b.k, cfg.numKvHeads), n.kNorm), rope),
        inp.past?.[i].key,
        ctx.dtype,
      );
      const v = withPast(proj("v_proj", b.v, cfg.numKvHeads), inp.past?.[i].value, ctx.dtype);
      present.push({ key: k, value: v });
      const y = attention(op.transpose(q, [0, 2, 1, 3]), k, v, bias, cfg.numHeads, cfg.numKvHeads);
      const r = op.add(h, linear(ctx, `${p}.self_attn.o_proj`, y, { layout: "linear", bias: b.o }));
      // SwiGLU MLP
      const m = rmsNorm(ctx, r, n.postAttentionLayernorm, eps);
      const mlp = (name: string, x: Value) =>
        linear(ctx, `${p}.mlp.${name}`, x, { layout: "linear", bias: cfg.mlpBias });
      return op.add(r, mlp("down_proj", op.mul(silu(mlp("gate_proj", m)), mlp("up_proj", m))));
    });
  }
  return {
    hidden: rmsNorm(ctx, h, LLAMA_NAMES.norm, eps),
    head: cfg.tieWordEmbeddings ? LLAMA_NAMES.embedTokens : LLAMA_NAMES.lmHead,
    present,
  };
}

/** The Llama family, as registry.ts lists it. */
export const LLAMA: FamilyModule<LlamaModelConfig> = {
  modelTypes: LLAMA_MODEL_TYPES,
  parse: parseLlama,
  sizeKeys: ROTARY_SIZE_KEYS,
  validate: validateLlama,
  toJson: llamaToJson,
  rotaryDim: (cfg) => cfg.headDim,
  layerRope: (cfg) => rotaryRope(cfg, cfg.headDim),
  tensors: llamaTensors,
  forward: llamaForward,
  embedding: LLAMA_NAMES.embedTokens,
  layers: "model.layers",
  prefix: "",
  layout: "linear",
};
