/**
 * Phi-3 (Phi-3, Phi-3.5, Phi-4-mini) as one readable forward pass:
 *
 * ```
 * h = embed_tokens[ids]
 * for each layer:
 *   q, k, v = split(qkv_proj(rmsnorm(h)))                   (fused, [heads·hd | kv·hd | kv·hd])
 *   q, k = rotary(q), rotary(k)                              (the first rotaryDim dims of each head;
 *                                                              longrope: short factors, cos/sin scaled)
 *   h += o_proj(attention(q, [past_k; k], [past_v; v]))     (sliding window when the config has one)
 *   gate, up = split(gate_up_proj(rmsnorm(h)))               (fused, [ff | ff])
 *   h += down_proj(up · silu(gate))
 * logits = rmsnorm(h) · lm_head^T                            (Phi-4-mini: tied to embed_tokens)
 * ```
 * Each layer is a graph segment (see autodiff.ts); the decoder applies the LM head.
 * @module
 */
import * as op from "../../graph/ops.ts";
import { layerRope, layerWindow, type Phi3ModelConfig } from "../config.ts";
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

const EMBED = "model.embed_tokens.weight", NORM = "model.norm.weight";

/** Every tensor of a Phi-3 checkpoint, in module order (the LM head only when untied). */
export function phi3Tensors(cfg: Phi3ModelConfig): TensorSpec[] {
  const { hiddenSize: h, intermediateSize: ff, vocabSize: v, headDim: hd } = cfg;
  const qkv = (cfg.numHeads + 2 * cfg.numKvHeads) * hd, b = cfg.attentionBias.q;
  const out: TensorSpec[] = [{ name: EMBED, shape: [v, h] }];
  const linear = (name: string, outDim: number, inDim: number, bias = false) => {
    out.push({ name: `${name}.weight`, shape: [outDim, inDim] });
    if (bias) out.push({ name: `${name}.bias`, shape: [outDim] });
  };
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [h] });
    linear(`${p}.self_attn.qkv_proj`, qkv, h, b);
    linear(`${p}.self_attn.o_proj`, h, cfg.numHeads * hd, b);
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [h] });
    linear(`${p}.mlp.gate_up_proj`, 2 * ff, h);
    linear(`${p}.mlp.down_proj`, h, ff);
  }
  out.push({ name: NORM, shape: [h] });
  if (!cfg.tieWordEmbeddings) out.push({ name: "lm_head.weight", shape: [v, h] });
  return out;
}

/** The Phi-3 decoder: final hidden rows, the head's weight and the per-layer KV cache. */
export function phi3Forward(ctx: Ctx, cfg: Phi3ModelConfig, inp: FamilyInputs): FamilyOutputs {
  const { ids } = inp;
  const bt = op.shapeOf(ids);
  const eps = cfg.rmsNormEps, hd = cfg.headDim, ff = cfg.intermediateSize;
  const { invFreq, scale } = layerRope(cfg, 0);
  const rope = rotaryTables(ctx, inp.positions, invFreq, scale);
  const b = cfg.attentionBias.q;
  let h = embedding(ctx, EMBED, ids); // [B·T, D]
  const present: KvPair[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const bias = inp.bias(layerWindow(cfg, i));
    h = ctx.g.segment(`layer${i}`, () => {
      const p = `model.layers.${i}`;
      const a = rmsNorm(ctx, h, `${p}.input_layernorm.weight`, eps);
      const fused = linear(ctx, `${p}.self_attn.qkv_proj`, a, { layout: "linear", bias: b });
      const sizes = [cfg.numHeads * hd, cfg.numKvHeads * hd, cfg.numKvHeads * hd];
      const [q, k, v] = op.split(fused, sizes, -1).map((x, j) =>
        toHeads(x, bt, j === 0 ? cfg.numHeads : cfg.numKvHeads, hd, ids.shape)
      );
      const keys = withPast(applyRotary(k, rope), inp.past?.[i].key, ctx.dtype);
      const values = withPast(v, inp.past?.[i].value, ctx.dtype);
      present.push({ key: keys, value: values });
      const qT = op.transpose(applyRotary(q, rope), [0, 2, 1, 3]);
      const y = attention(qT, keys, values, bias, cfg.numHeads, cfg.numKvHeads);
      const r = op.add(h, linear(ctx, `${p}.self_attn.o_proj`, y, { layout: "linear", bias: b }));
      const m = rmsNorm(ctx, r, `${p}.post_attention_layernorm.weight`, eps);
      const [gate, up] = op.split(
        linear(ctx, `${p}.mlp.gate_up_proj`, m, { layout: "linear", bias: false }),
        [
          ff,
          ff,
        ],
        -1,
      );
      const down = linear(ctx, `${p}.mlp.down_proj`, op.mul(up, silu(gate)), {
        layout: "linear",
        bias: false,
      });
      return op.add(r, down);
    });
  }
  return {
    hidden: rmsNorm(ctx, h, NORM, eps),
    head: cfg.tieWordEmbeddings ? EMBED : "lm_head.weight",
    present,
  };
}
