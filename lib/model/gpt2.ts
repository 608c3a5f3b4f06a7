/**
 * GPT-2 as one readable forward pass:
 *
 * ```
 * h = wte[ids] + wpe[positions]
 * for each block:
 *   q, k, v = split(c_attn(ln_1(h)))                      (fused Conv1D, weight [in, 3·hidden])
 *   h += attn.c_proj(attention(q, [past_k; k], [past_v; v]))
 *   h += mlp.c_proj(gelu_new(c_fc(ln_2(h))))
 * logits = ln_f(h) · wte^T                                 (lm_head.weight when untied)
 * ```
 * Positions come from the attention mask (see decoder.ts), so left padding works too. Each block is a
 * graph segment (see autodiff.ts); the decoder applies the LM head.
 * @module
 */
import * as op from "../graph/ops.ts";
import type { Gpt2ModelConfig } from "./config.ts";
import type { FamilyInputs, FamilyOutputs, KvPair } from "./types.ts";
import { attention, type Ctx, embedding, geluNew, layerNorm, linear, toHeads, withPast } from "./layers.ts";
import { gpt2GlobalNames } from "./weights_names.ts";

const conv = { layout: "conv1d", bias: true } as const;

/** The GPT-2 decoder: final hidden rows, the head's weight and the per-layer KV cache. */
export function gpt2Forward(ctx: Ctx, cfg: Gpt2ModelConfig, inp: FamilyInputs): FamilyOutputs {
  const { ids } = inp;
  const bt = op.shapeOf(ids);
  const names = gpt2GlobalNames();
  const eps = cfg.layerNormEps;
  const D = cfg.hiddenSize, H = cfg.numHeads, hd = cfg.headDim;
  const tok = embedding(ctx, names.wte, ids);
  const pos = embedding(ctx, names.wpe, inp.positions);
  let h = op.add(tok, pos); // [B·T, D]
  const present: KvPair[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    h = ctx.g.segment(`layer${i}`, () => {
      const p = `h.${i}`;
      const a = layerNorm(ctx, h, `${p}.ln_1`, eps);
      const [q, k, v] = op.split(linear(ctx, `${p}.attn.c_attn`, a, conv), [D, D, D], -1)
        .map((x) => toHeads(x, bt, H, hd, ids.shape));
      const keys = withPast(k, inp.past?.[i].key, ctx.dtype);
      const values = withPast(v, inp.past?.[i].value, ctx.dtype);
      present.push({ key: keys, value: values });
      const y = attention(op.transpose(q, [0, 2, 1, 3]), keys, values, inp.bias, H, H);
      const r = op.add(h, linear(ctx, `${p}.attn.c_proj`, y, conv));
      const m = layerNorm(ctx, r, `${p}.ln_2`, eps);
      return op.add(r, linear(ctx, `${p}.mlp.c_proj`, geluNew(linear(ctx, `${p}.mlp.c_fc`, m, conv)), conv));
    });
  }
  return {
    hidden: layerNorm(ctx, h, "ln_f", eps),
    head: cfg.tieWordEmbeddings ? names.wte : names.lmHead,
    present,
  };
}
