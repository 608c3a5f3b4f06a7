/**
 * The Llama family (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, SmolLM, TinyLlama) as one readable forward pass:
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
 * the decoder applies the LM head (decoder.ts).
 * @module
 */
import type { Value } from "../../graph/builder.ts";
import * as op from "../../graph/ops.ts";
import { layerRope, layerWindow, type LlamaModelConfig } from "../config.ts";
import type { FamilyInputs, FamilyOutputs, KvPair, TensorSpec } from "../types.ts";
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
  const { invFreq } = layerRope(cfg, 0); // one rope for every layer
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
