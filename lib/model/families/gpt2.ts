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
import * as op from "../../graph/ops.ts";
import type { Gpt2ModelConfig } from "../config.ts";
import type { FamilyInputs, FamilyOutputs, KvPair, TensorSpec } from "../types.ts";
import { attention, type Ctx, embedding, geluNew, layerNorm, linear, toHeads, withPast } from "../layers.ts";
import type { ParamNames } from "./llama.ts";

/** The prefix `GPT2LMHeadModel` checkpoints put before the `GPT2Model` names. */
export const GPT2_PREFIX = "transformer.";

function params(prefix: string): ParamNames {
  return { weight: `${prefix}.weight`, bias: `${prefix}.bias` };
}

/** GPT-2 names outside the blocks; `prefix` is "" (canonical, as the `gpt2` repo stores them) or "transformer.". */
export function gpt2GlobalNames(prefix = ""): { wte: string; wpe: string; lnF: ParamNames; lmHead: string } {
  return {
    wte: `${prefix}wte.weight`,
    wpe: `${prefix}wpe.weight`,
    lnF: params(`${prefix}ln_f`),
    lmHead: "lm_head.weight",
  };
}

/** Names of GPT-2 block `i`. */
export interface Gpt2LayerNames {
  ln1: ParamNames;
  /** Fused q/k/v Conv1D, weight `[hidden, 3 * hidden]`. */
  cAttn: ParamNames;
  attnCProj: ParamNames;
  ln2: ParamNames;
  cFc: ParamNames;
  mlpCProj: ParamNames;
}

/** Tensor names of GPT-2 block `i` (`h.{i}.…`, optionally prefixed). */
export function gpt2LayerNames(i: number, prefix = ""): Gpt2LayerNames {
  const p = `${prefix}h.${i}`;
  return {
    ln1: params(`${p}.ln_1`),
    cAttn: params(`${p}.attn.c_attn`),
    attnCProj: params(`${p}.attn.c_proj`),
    ln2: params(`${p}.ln_2`),
    cFc: params(`${p}.mlp.c_fc`),
    mlpCProj: params(`${p}.mlp.c_proj`),
  };
}

/** Every tensor of a GPT-2 checkpoint (canonical, unprefixed names), in module order. */
export function gpt2Tensors(cfg: Gpt2ModelConfig): TensorSpec[] {
  const { hiddenSize: h, intermediateSize: ff, vocabSize: v } = cfg;
  const g = gpt2GlobalNames();
  const out: TensorSpec[] = [{ name: g.wte, shape: [v, h] }, { name: g.wpe, shape: [cfg.maxPositions, h] }];
  const conv1d = (names: ParamNames, inDim: number, outDim: number) => {
    out.push({ name: names.weight, shape: [inDim, outDim] }, { name: names.bias, shape: [outDim] });
  };
  const norm = (names: ParamNames) =>
    out.push({ name: names.weight, shape: [h] }, { name: names.bias, shape: [h] });
  for (let i = 0; i < cfg.numLayers; i++) {
    const n = gpt2LayerNames(i);
    norm(n.ln1);
    conv1d(n.cAttn, h, 3 * h);
    conv1d(n.attnCProj, h, h);
    norm(n.ln2);
    conv1d(n.cFc, h, ff);
    conv1d(n.mlpCProj, ff, h);
  }
  norm(g.lnF);
  if (!cfg.tieWordEmbeddings) out.push({ name: g.lmHead, shape: [v, h] });
  return out;
}

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
      const y = attention(op.transpose(q, [0, 2, 1, 3]), keys, values, inp.bias(null), H, H);
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
