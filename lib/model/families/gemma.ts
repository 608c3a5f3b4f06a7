/**
 * Gemma 2 and Gemma 3 (text) as one readable forward pass:
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
 * @module
 */
import type { Value } from "../../graph/builder.ts";
import * as op from "../../graph/ops.ts";
import { type GemmaModelConfig, layerRope, layerWindow } from "../config.ts";
import type { FamilyInputs, FamilyOutputs, KvPair, TensorSpec } from "../types.ts";
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
    const { invFreq } = layerRope(cfg, i);
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
