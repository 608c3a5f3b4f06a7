/**
 * The Llama family (Llama 2/3, Mistral, Qwen2/2.5, SmolLM, TinyLlama) as one readable forward pass:
 *
 * ```
 * h = embed_tokens[ids]
 * for each layer:
 *   a = rmsnorm(h);  q, k, v = q_proj(a), k_proj(a), v_proj(a)      (Qwen2: with bias)
 *   q, k = rotary(q), rotary(k)                                       (rotate-half, rope_theta, scaling)
 *   h += o_proj(attention(q, [past_k; k], [past_v; v]))              (grouped-query heads, causal + mask)
 *   h += down_proj(silu(gate_proj(rmsnorm(h))) · up_proj(rmsnorm(h)))
 * logits = rmsnorm(h) · lm_head^T                                     (lm_head = embed_tokens when tied)
 * ```
 * Each layer is a graph segment, so a backward pass can recompute it from its input (see autodiff.ts);
 * the decoder applies the LM head (decoder.ts).
 * @module
 */
import type { Value } from "../graph/builder.ts";
import * as op from "../graph/ops.ts";
import { type LlamaModelConfig, ropeInverseFrequencies } from "./config.ts";
import type { FamilyInputs, FamilyOutputs, KvPair } from "./types.ts";
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
} from "./layers.ts";
import { LLAMA_NAMES, llamaLayerNames } from "./weights_names.ts";

/** The Llama-family decoder: final hidden rows, the head's weight and the per-layer KV cache. */
export function llamaForward(ctx: Ctx, cfg: LlamaModelConfig, inp: FamilyInputs): FamilyOutputs {
  const { ids } = inp;
  const bt = op.shapeOf(ids);
  const eps = cfg.rmsNormEps;
  const rope = rotaryTables(ctx, inp.positions, ropeInverseFrequencies(cfg));
  let h = embedding(ctx, LLAMA_NAMES.embedTokens, ids); // [B·T, D]
  const present: KvPair[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
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
      const q = applyRotary(proj("q_proj", b.q, cfg.numHeads), rope);
      const k = withPast(
        applyRotary(proj("k_proj", b.k, cfg.numKvHeads), rope),
        inp.past?.[i].key,
        ctx.dtype,
      );
      const v = withPast(proj("v_proj", b.v, cfg.numKvHeads), inp.past?.[i].value, ctx.dtype);
      present.push({ key: k, value: v });
      const y = attention(op.transpose(q, [0, 2, 1, 3]), k, v, inp.bias, cfg.numHeads, cfg.numKvHeads);
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
