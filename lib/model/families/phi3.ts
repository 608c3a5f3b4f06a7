/**
 * The Phi-3 family (`model_type` phi3: Phi-3, Phi-3.5, Phi-4-mini): its config (read from and written to
 * `config.json`), its tensor names, and its forward pass:
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
 * Each layer is a graph segment (see autodiff.ts); the decoder applies the LM head. {@link PHI3} is what
 * registry.ts lists.
 * @module
 */
import * as op from "../../graph/ops.ts";
import type { FamilyInputs, FamilyModule, FamilyOutputs, KvPair, TensorSpec } from "../types.ts";
import {
  type FieldReader,
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

/** A Phi-3 config (Phi-3, Phi-3.5, Phi-4-mini): fused qkv and gate/up projections, partial rotary. */
export interface Phi3ModelConfig extends RotaryModelConfig {
  family: "phi3";
  modelType: "phi3";
  /** Rotated dimensions of each head: headDim × partial_rotary_factor. */
  rotaryDim: number;
}

/** Reads a Phi-3 `config.json`: partial rotary, longrope's original length at the top level. */
export function parsePhi3(r: FieldReader): Phi3ModelConfig {
  const sizes = readSizes(r);
  requireActivation(r, ["hidden_act"], ["silu", "swish"], "silu");
  const factor = r.positiveNumber(["partial_rotary_factor"], 1);
  if (factor > 1) r.fail(`partial_rotary_factor must be at most 1, got ${factor}`);
  const rotaryDim = Math.floor(sizes.headDim * factor);
  if (rotaryDim % 2 !== 0 || rotaryDim === 0) {
    r.fail(`partial_rotary_factor ${factor} gives ${rotaryDim} rotary dimensions; an even number is needed`);
  }
  const b = r.bool("attention_bias", false);
  const window = r.raw(["sliding_window"]) ? r.positiveInt(["sliding_window"]) : null;
  return {
    family: "phi3",
    modelType: "phi3",
    ...sizes,
    attentionBias: { q: b, k: b, v: b, o: b },
    mlpBias: false,
    tieWordEmbeddings: r.bool("tie_word_embeddings", false),
    activation: "silu",
    ...readCommon(r),
    ...readRope(r, rotaryDim),
    ...readWindows(r, sizes.numLayers, window, () => true),
    rotaryDim,
  };
}

function validatePhi3(cfg: Phi3ModelConfig, fail: (msg: string) => never): void {
  validateRotary(cfg, cfg.rotaryDim, "silu", fail);
  const b = cfg.attentionBias;
  if (!(b.q === b.k && b.k === b.v && b.v === b.o)) {
    fail(`attentionBias ${JSON.stringify(cfg.attentionBias)} is not expressible for this model type`);
  }
  if (cfg.mlpBias !== false) fail(`mlpBias ${cfg.mlpBias} is not expressible for this model type`);
}

/** The `config.json` of a Phi-3 config. */
function phi3ToJson(cfg: Phi3ModelConfig, tail: Record<string, unknown>): Record<string, unknown> {
  const out = rotaryJson(cfg, "Phi3ForCausalLM", tail);
  out.hidden_act = "silu";
  out.partial_rotary_factor = cfg.rotaryDim / cfg.headDim;
  out.attention_bias = cfg.attentionBias.q;
  out.sliding_window = cfg.slidingWindow;
  if (cfg.ropeScaling) {
    // older transformers want exactly type/short_factor/long_factor in Phi-3's rope_scaling
    const { original_max_position_embeddings: original, ...rest } = cfg.ropeScaling;
    out.original_max_position_embeddings = original;
    out.rope_scaling = rest;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Tensors and forward
// ---------------------------------------------------------------------------------------------------------

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
  const { invFreq, scale } = rotaryRope(cfg, cfg.rotaryDim);
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

/** The Phi-3 family, as registry.ts lists it. */
export const PHI3: FamilyModule<Phi3ModelConfig> = {
  modelTypes: ["phi3"],
  parse: parsePhi3,
  sizeKeys: ROTARY_SIZE_KEYS,
  validate: validatePhi3,
  toJson: phi3ToJson,
  rotaryDim: (cfg) => cfg.rotaryDim,
  layerRope: (cfg) => rotaryRope(cfg, cfg.rotaryDim),
  tensors: phi3Tensors,
  forward: phi3Forward,
  embedding: EMBED,
  layers: "model.layers",
  prefix: "",
  layout: "linear",
};
