/**
 * The Gemma family, Gemma 2 and Gemma 3 text (`model_type` gemma2, gemma3_text): its config (read from and
 * written to `config.json`), its tensor names, and its forward pass:
 *
 * ```
 * h = embed_tokens[ids] · √hidden
 * for each layer:                                                  (norm(x) = x / rms(x) · (1 + w))
 *   a = norm(h);  q, k, v = q_proj(a), k_proj(a), v_proj(a)
 *   q, k = q_norm(q), k_norm(k)                                     (Gemma 3: per head)
 *   q, k = rotary(q), rotary(k)                                     (Gemma 3: sliding layers with their own base)
 *   s = cap·tanh(q·kᵀ / √query_pre_attn_scalar / cap)              (Gemma 2: cap 50; Gemma 3: no cap)
 *   h += post_attention_norm(o_proj(softmax(s + mask) · v))        (sliding window on sliding layers)
 *   h += post_feedforward_norm(down_proj(gelu_tanh(gate_proj(m)) · up_proj(m))),  m = pre_feedforward_norm(h)
 * logits = cap·tanh(norm(h) · embed_tokensᵀ / cap)                  (Gemma 2: cap 30)
 * ```
 * Each layer is a graph segment (see autodiff.ts); the decoder applies the LM head and its soft cap.
 * {@link GEMMA} is what registry.ts lists.
 * @module
 */
import type { Value } from "../../graph/builder.ts";
import * as op from "../../graph/ops.ts";
import type { FamilyInputs, FamilyModule, FamilyOutputs, KvPair, TensorSpec } from "../types.ts";
import {
  asObject,
  FieldReader,
  type LayerRope,
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
  geluNew,
  linear,
  rmsNorm,
  type Rotary,
  rotaryTables,
  toHeads,
  withPast,
} from "../layers.ts";

// ---------------------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------------------

/** `model_type`s of the Gemma family. */
export const GEMMA_MODEL_TYPES = ["gemma2", "gemma3_text"] as const;
/** A `model_type` of the Gemma family. */
export type GemmaModelType = typeof GEMMA_MODEL_TYPES[number];

/** A Gemma 2 / Gemma 3 text config. */
export interface GemmaModelConfig extends RotaryModelConfig {
  family: "gemma";
  modelType: GemmaModelType;
  /** Rope base of the sliding layers (Gemma 3's `rope_local_base_freq`, unscaled); Gemma 2: `ropeTheta`. */
  ropeLocalTheta: number;
  /** Attention scores are scaled by `queryPreAttnScalar^-½` (not headDim^-½). */
  queryPreAttnScalar: number;
  /** `cap·tanh(x / cap)` on the attention scores (Gemma 2: 50), or null. */
  attnLogitSoftcap: number | null;
  /** `cap·tanh(x / cap)` on the logits (Gemma 2: 30), or null. */
  finalLogitSoftcap: number | null;
  /** Gemma 3's q_norm/k_norm. */
  qkNorm: boolean;
}

/** Gemma 3's local rope base: `rope_local_base_freq`, or v5's `rope_parameters.sliding_attention`. */
function readLocalTheta(r: FieldReader, fallback: number): number {
  const params = asObject(r, r.json, "rope_parameters");
  const local = params && typeof params.sliding_attention === "object"
    ? asObject(r, params, "sliding_attention")
    : null;
  if (local?.rope_theta !== undefined) {
    return new FieldReader(local, r.file, r.modelType).positiveNumber(["rope_theta"], fallback);
  }
  return r.positiveNumber(["rope_local_base_freq"], fallback);
}

/** Reads a Gemma 2 / Gemma 3 text `config.json`: soft caps, which layers slide, Gemma 3's local rope base. */
export function parseGemma(r: FieldReader, modelType: GemmaModelType): GemmaModelConfig {
  const sizes = readSizes(r);
  requireActivation(
    r,
    ["hidden_activation", "hidden_act"],
    ["gelu_pytorch_tanh", "gelu_new", "gelu_fast"],
    "gelu_pytorch_tanh",
  );
  const b = r.bool("attention_bias", false);
  const gemma3 = modelType === "gemma3_text";
  const rope = readRope(r, sizes.headDim, gemma3 ? 1e6 : 10000);
  // Gemma 2: every other layer slides, starting with the first; Gemma 3: five of every six
  const pattern = gemma3 ? r.positiveInt(["sliding_window_pattern"], 6) : 2;
  const window = r.raw(["sliding_window"]) ? r.positiveInt(["sliding_window"]) : 4096;
  return {
    family: "gemma",
    modelType,
    ...sizes,
    attentionBias: { q: b, k: b, v: b, o: b },
    mlpBias: false,
    tieWordEmbeddings: r.bool("tie_word_embeddings", true),
    activation: "gelu_new",
    ...readCommon(r),
    ...rope,
    ...readWindows(r, sizes.numLayers, window, (i) => (i + 1) % pattern !== 0),
    ropeLocalTheta: gemma3 ? readLocalTheta(r, 10000) : rope.ropeTheta,
    queryPreAttnScalar: r.positiveNumber(["query_pre_attn_scalar"], 256),
    attnLogitSoftcap: r.optionalPositive("attn_logit_softcapping"),
    finalLogitSoftcap: r.optionalPositive("final_logit_softcapping"),
    qkNorm: gemma3,
  };
}

function validateGemma(cfg: GemmaModelConfig, fail: (msg: string) => never): void {
  validateRotary(cfg, cfg.headDim, "gelu_new", fail);
  const b = cfg.attentionBias;
  if (!(b.q === b.k && b.k === b.v && b.v === b.o)) {
    fail(`attentionBias ${JSON.stringify(cfg.attentionBias)} is not expressible for this model type`);
  }
  if (cfg.mlpBias !== false) fail(`mlpBias ${cfg.mlpBias} is not expressible for this model type`);
}

/** The rope of layer `i`: Gemma 3's sliding layers use their own base, unscaled. */
export function gemmaLayerRope(cfg: GemmaModelConfig, i: number): LayerRope {
  const local = cfg.modelType === "gemma3_text" && layerWindow(cfg, i) !== null;
  return rotaryRope(cfg, cfg.headDim, local ? cfg.ropeLocalTheta : null);
}

const ARCHITECTURES: Record<GemmaModelType, string> = {
  gemma2: "Gemma2ForCausalLM",
  gemma3_text: "Gemma3ForCausalLM",
};

/** The `config.json` of a Gemma config. */
function gemmaToJson(cfg: GemmaModelConfig, tail: Record<string, unknown>): Record<string, unknown> {
  return {
    ...rotaryJson(cfg, ARCHITECTURES[cfg.modelType], tail),
    hidden_activation: "gelu_pytorch_tanh",
    attention_bias: cfg.attentionBias.q,
    query_pre_attn_scalar: cfg.queryPreAttnScalar,
    attn_logit_softcapping: cfg.attnLogitSoftcap,
    final_logit_softcapping: cfg.finalLogitSoftcap,
    ...(cfg.modelType === "gemma3_text" ? { rope_local_base_freq: cfg.ropeLocalTheta } : {}),
    // Gemma has a window in every config; "no sliding layer" is written as full attention everywhere
    sliding_window: cfg.slidingWindow ?? 4096,
    layer_types: layerTypes(cfg),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Tensors and forward
// ---------------------------------------------------------------------------------------------------------

const EMBED = "model.embed_tokens.weight", NORM = "model.norm.weight";

/** Every tensor of a Gemma checkpoint, in module order (the LM head only when untied). */
export function gemmaTensors(cfg: GemmaModelConfig): TensorSpec[] {
  const { hiddenSize: h, intermediateSize: ff, vocabSize: v, headDim: hd } = cfg;
  const out: TensorSpec[] = [{ name: EMBED, shape: [v, h] }];
  const linear = (name: string, outDim: number, inDim: number, bias = false) => {
    out.push({ name: `${name}.weight`, shape: [outDim, inDim] });
    if (bias) out.push({ name: `${name}.bias`, shape: [outDim] });
  };
  const b = cfg.attentionBias.q;
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [h] });
    linear(`${p}.self_attn.q_proj`, cfg.numHeads * hd, h, b);
    linear(`${p}.self_attn.k_proj`, cfg.numKvHeads * hd, h, b);
    linear(`${p}.self_attn.v_proj`, cfg.numKvHeads * hd, h, b);
    linear(`${p}.self_attn.o_proj`, h, cfg.numHeads * hd, b);
    if (cfg.qkNorm) {
      out.push({ name: `${p}.self_attn.q_norm.weight`, shape: [hd] });
      out.push({ name: `${p}.self_attn.k_norm.weight`, shape: [hd] });
    }
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [h] });
    out.push({ name: `${p}.pre_feedforward_layernorm.weight`, shape: [h] });
    linear(`${p}.mlp.gate_proj`, ff, h);
    linear(`${p}.mlp.up_proj`, ff, h);
    linear(`${p}.mlp.down_proj`, h, ff);
    out.push({ name: `${p}.post_feedforward_layernorm.weight`, shape: [h] });
  }
  out.push({ name: NORM, shape: [h] });
  if (!cfg.tieWordEmbeddings) out.push({ name: "lm_head.weight", shape: [v, h] });
  return out;
}

/** The Gemma decoder: final hidden rows, the head's weight and soft cap, and the per-layer KV cache. */
export function gemmaForward(ctx: Ctx, cfg: GemmaModelConfig, inp: FamilyInputs): FamilyOutputs {
  const { ids } = inp;
  const bt = op.shapeOf(ids);
  const eps = cfg.rmsNormEps;
  const norm = (x: Value, name: string) => rmsNorm(ctx, x, name, eps, 1);
  const ropes = new Map<string, Rotary>(); // Gemma 3: one table for the sliding layers, one for the others
  const ropeOf = (i: number) => {
    const { invFreq } = gemmaLayerRope(cfg, i);
    const key = invFreq.join();
    if (!ropes.has(key)) ropes.set(key, rotaryTables(ctx, inp.positions, invFreq));
    return ropes.get(key)!;
  };
  let h = op.mul(embedding(ctx, EMBED, ids), Math.sqrt(cfg.hiddenSize)); // [B·T, D]
  const present: KvPair[] = [];
  const lin = (name: string, x: Value, bias = false) => linear(ctx, name, x, { layout: "linear", bias });
  for (let i = 0; i < cfg.numLayers; i++) {
    const rope = ropeOf(i), bias = inp.bias(layerWindow(cfg, i));
    h = ctx.g.segment(`layer${i}`, () => {
      const p = `model.layers.${i}`, b = cfg.attentionBias.q;
      // attention, normalized before and after
      const a = norm(h, `${p}.input_layernorm.weight`);
      const proj = (name: string, heads: number) =>
        toHeads(lin(`${p}.self_attn.${name}`, a, b), bt, heads, cfg.headDim, ids.shape);
      const headNorm = (x: Value, name: string) => cfg.qkNorm ? norm(x, `${p}.self_attn.${name}.weight`) : x;
      const q = applyRotary(headNorm(proj("q_proj", cfg.numHeads), "q_norm"), rope);
      const k = withPast(
        applyRotary(headNorm(proj("k_proj", cfg.numKvHeads), "k_norm"), rope),
        inp.past?.[i].key,
        ctx.dtype,
      );
      const v = withPast(proj("v_proj", cfg.numKvHeads), inp.past?.[i].value, ctx.dtype);
      present.push({ key: k, value: v });
      const y = attention(op.transpose(q, [0, 2, 1, 3]), k, v, bias, cfg.numHeads, cfg.numKvHeads, {
        scale: 1 / Math.sqrt(cfg.queryPreAttnScalar),
        softcap: cfg.attnLogitSoftcap,
      });
      const r = op.add(h, norm(lin(`${p}.self_attn.o_proj`, y, b), `${p}.post_attention_layernorm.weight`));
      // GeGLU MLP, normalized before and after
      const m = norm(r, `${p}.pre_feedforward_layernorm.weight`);
      const f = lin(
        `${p}.mlp.down_proj`,
        op.mul(geluNew(lin(`${p}.mlp.gate_proj`, m)), lin(`${p}.mlp.up_proj`, m)),
      );
      return op.add(r, norm(f, `${p}.post_feedforward_layernorm.weight`));
    });
  }
  return {
    hidden: norm(h, NORM),
    head: cfg.tieWordEmbeddings ? EMBED : "lm_head.weight",
    present,
    logitSoftcap: cfg.finalLogitSoftcap,
  };
}

/** The Gemma family, as registry.ts lists it. */
export const GEMMA: FamilyModule<GemmaModelConfig> = {
  modelTypes: GEMMA_MODEL_TYPES,
  textParts: { gemma3: "gemma3_text" },
  parse: parseGemma,
  sizeKeys: ROTARY_SIZE_KEYS,
  validate: validateGemma,
  toJson: gemmaToJson,
  rotaryDim: (cfg) => cfg.headDim,
  layerRope: gemmaLayerRope,
  tensors: gemmaTensors,
  forward: gemmaForward,
  embedding: EMBED,
  layers: "model.layers",
  prefix: "",
  layout: "linear",
};
