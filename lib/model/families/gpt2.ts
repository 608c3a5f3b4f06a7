/**
 * The GPT-2 family (`model_type` gpt2): its config (read from and written to `config.json`), its tensor
 * names, and its forward pass:
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
 * graph segment (see autodiff.ts); the decoder applies the LM head. {@link GPT2} is what registry.ts lists.
 * @module
 */
import * as op from "../../graph/ops.ts";
import type { FamilyInputs, FamilyModule, FamilyOutputs, KvPair, TensorSpec } from "../types.ts";
import {
  type BaseModelConfig,
  CONFIG_LIMITS,
  type FieldReader,
  readCommon,
  type SizeKeys,
} from "./common.ts";
import { attention, type Ctx, embedding, geluNew, layerNorm, linear, toHeads, withPast } from "../layers.ts";
import type { ParamNames } from "./llama.ts";

// ---------------------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------------------

/** A GPT-2 config. */
export interface Gpt2ModelConfig extends BaseModelConfig {
  family: "gpt2";
  modelType: "gpt2";
  layerNormEps: number;
}

/** GPT-2's own size keys first, then the generic ones. */
const GPT2_SIZE_KEYS: SizeKeys = {
  layers: ["n_layer", "num_hidden_layers"],
  vocab: ["vocab_size"],
  hidden: ["n_embd", "hidden_size"],
};

/** Reads a GPT-2 `config.json` (`n_embd`, `n_layer`, …), refusing the variants the toolkit does not build. */
export function parseGpt2(r: FieldReader): Gpt2ModelConfig {
  const L = CONFIG_LIMITS, K = GPT2_SIZE_KEYS;
  const hiddenSize = r.positiveInt(K.hidden, undefined, 1, L.hiddenSize);
  const numHeads = r.positiveInt(["n_head", "num_attention_heads"], undefined, 1, L.numHeads);
  const act = r.string(["activation_function"]) ?? "gelu_new";
  if (act !== "gelu_new" && act !== "gelu_pytorch_tanh" && act !== "gelu_fast") {
    r.fail(`activation_function "${act}" is not supported (supported: "gelu_new", "gelu_pytorch_tanh")`);
  }
  if (!r.bool("scale_attn_weights", true)) r.fail(`scale_attn_weights=false is not supported`);
  if (r.bool("scale_attn_by_inverse_layer_idx", false)) {
    r.fail(`scale_attn_by_inverse_layer_idx=true is not supported`);
  }
  if (r.bool("add_cross_attention", false)) r.fail(`add_cross_attention=true is not supported`);
  if (hiddenSize % numHeads !== 0) r.fail(`n_embd ${hiddenSize} is not divisible by n_head ${numHeads}`);
  return {
    family: "gpt2",
    modelType: "gpt2",
    vocabSize: r.positiveInt(K.vocab, undefined, 1, L.vocabSize),
    hiddenSize,
    numLayers: r.positiveInt(K.layers, undefined, 1, L.numLayers),
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    intermediateSize: r.positiveInt(["n_inner"], 4 * hiddenSize, 1, L.intermediateSize),
    maxPositions: r.positiveInt(
      ["n_positions", "n_ctx", "max_position_embeddings"],
      undefined,
      1,
      L.maxPositions,
    ),
    attentionBias: { q: true, k: true, v: true, o: true },
    mlpBias: true,
    tieWordEmbeddings: r.bool("tie_word_embeddings", true),
    activation: "gelu_new",
    ...readCommon(r),
    layerNormEps: r.positiveNumber(["layer_norm_epsilon"], 1e-5),
  };
}

function validateGpt2(cfg: Gpt2ModelConfig, fail: (msg: string) => never): void {
  if (cfg.numKvHeads !== cfg.numHeads) {
    fail(`GPT-2 has no grouped-query attention (numKvHeads must equal numHeads)`);
  }
  if (cfg.headDim * cfg.numHeads !== cfg.hiddenSize) fail(`GPT-2 headDim must be hiddenSize / numHeads`);
  if (!(cfg.layerNormEps > 0)) fail(`layer_norm_epsilon must be positive`);
  if (cfg.activation !== "gelu_new") fail(`activation must be "gelu_new"`);
  const b = cfg.attentionBias;
  if (!(b.q && b.k && b.v && b.o)) {
    fail(`attentionBias ${JSON.stringify(cfg.attentionBias)} is not expressible for this model type`);
  }
  if (cfg.mlpBias !== true) fail(`mlpBias ${cfg.mlpBias} is not expressible for this model type`);
}

/** The `config.json` of a GPT-2 config. */
function gpt2ToJson(cfg: Gpt2ModelConfig, tail: Record<string, unknown>): Record<string, unknown> {
  return {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    activation_function: "gelu_new",
    vocab_size: cfg.vocabSize,
    n_embd: cfg.hiddenSize,
    n_layer: cfg.numLayers,
    n_head: cfg.numHeads,
    n_inner: cfg.intermediateSize,
    n_positions: cfg.maxPositions,
    n_ctx: cfg.maxPositions,
    layer_norm_epsilon: cfg.layerNormEps,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    ...tail,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Tensors and forward
// ---------------------------------------------------------------------------------------------------------

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

/** The GPT-2 family, as registry.ts lists it. */
export const GPT2: FamilyModule<Gpt2ModelConfig> = {
  modelTypes: ["gpt2"],
  parse: parseGpt2,
  sizeKeys: GPT2_SIZE_KEYS,
  validate: validateGpt2,
  toJson: gpt2ToJson,
  rotaryDim: () => null,
  layerRope: null,
  tensors: gpt2Tensors,
  forward: gpt2Forward,
  embedding: gpt2GlobalNames().wte,
  layers: "h",
  prefix: GPT2_PREFIX,
  layout: "conv1d",
};
