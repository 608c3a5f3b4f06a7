/**
 * Hugging Face tensor names and shapes for each supported family, so that importing a checkpoint, building
 * a graph and exporting weights all agree on one naming scheme — the one `transformers` uses, which makes
 * exported folders load in Python unchanged.
 *
 * Shapes are in HF layout: `nn.Linear` weights are `[out, in]` (Llama), GPT-2's `Conv1D` weights are
 * `[in, out]`.
 *
 * @module
 */

import type { Gpt2ModelConfig, LlamaModelConfig, ModelConfig } from "./config.ts";

/** A tensor's name and shape. */
export interface TensorSpec {
  name: string;
  shape: number[];
}

/** Weight and bias names of one linear/Conv1D/norm module. */
export interface ParamNames {
  weight: string;
  bias: string;
}

function params(prefix: string): ParamNames {
  return { weight: `${prefix}.weight`, bias: `${prefix}.bias` };
}

// ---------------------------------------------------------------------------------------------------------
// Llama family (llama, mistral, qwen2)
// ---------------------------------------------------------------------------------------------------------

/** Llama-family names outside the decoder layers. */
export const LLAMA_NAMES = {
  embedTokens: "model.embed_tokens.weight",
  norm: "model.norm.weight",
  /** Absent from checkpoints when the embeddings are tied. */
  lmHead: "lm_head.weight",
} as const;

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
  };
}

function llamaTensors(cfg: LlamaModelConfig): TensorSpec[] {
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
    out.push({ name: n.postAttentionLayernorm, shape: [h] });
    linear(n.gateProj, ff, h, cfg.mlpBias);
    linear(n.upProj, ff, h, cfg.mlpBias);
    linear(n.downProj, h, ff, cfg.mlpBias);
  }
  out.push({ name: LLAMA_NAMES.norm, shape: [h] });
  if (!cfg.tieWordEmbeddings) out.push({ name: LLAMA_NAMES.lmHead, shape: [v, h] });
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// GPT-2
// ---------------------------------------------------------------------------------------------------------

/** The prefix `GPT2LMHeadModel` checkpoints put before the `GPT2Model` names. */
export const GPT2_PREFIX = "transformer.";

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

function gpt2Tensors(cfg: Gpt2ModelConfig): TensorSpec[] {
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

// ---------------------------------------------------------------------------------------------------------
// Expected tensors and validation
// ---------------------------------------------------------------------------------------------------------

/**
 * Every parameter tensor a checkpoint of this config holds, with its HF shape, in module order. The LM
 * head is listed only when untied. GPT-2 names are canonical (unprefixed); see `canonicalTensorName`.
 */
export function expectedTensors(cfg: ModelConfig): TensorSpec[] {
  return cfg.family === "llama" ? llamaTensors(cfg) : gpt2Tensors(cfg);
}

/** Non-parameter buffers some checkpoints carry (causal masks, cached rotary frequencies); safe to ignore. */
export function isIgnorableBuffer(name: string): boolean {
  return /(^|\.)h\.\d+\.attn\.(bias|masked_bias)$/.test(name) || /\.rotary_emb\.inv_freq$/.test(name);
}

/**
 * The canonical name of a checkpoint tensor: GPT-2's `transformer.` prefix (GPT2LMHeadModel) is stripped so
 * both checkpoint flavours map onto one set of names; other names are unchanged.
 */
export function canonicalTensorName(cfg: ModelConfig, name: string): string {
  return cfg.family === "gpt2" && name.startsWith(GPT2_PREFIX) ? name.slice(GPT2_PREFIX.length) : name;
}

/** A checkpoint's tensors re-keyed by canonical name (tensor objects are shared, not copied). */
export function canonicalizeCheckpoint<T>(cfg: ModelConfig, tensors: ReadonlyMap<string, T>): Map<string, T> {
  const out = new Map<string, T>();
  for (const [name, t] of tensors) {
    const canonical = canonicalTensorName(cfg, name);
    if (out.has(canonical)) {
      throw new Error(`tensor "${canonical}" appears both with and without the "${GPT2_PREFIX}" prefix`);
    }
    out.set(canonical, t);
  }
  return out;
}

/** What a checkpoint has compared with what a config needs. */
export interface CheckpointReport {
  missing: string[];
  shapeMismatches: { name: string; expected: number[]; actual: number[] }[];
  /** Tensors the config does not use (ignorable buffers and a redundant tied `lm_head.weight` excluded). */
  unexpected: string[];
}

/** Compare a checkpoint with a config without throwing (names may carry GPT-2's `transformer.` prefix). */
export function checkCheckpoint(
  cfg: ModelConfig,
  tensors: ReadonlyMap<string, { shape: readonly number[] }>,
): CheckpointReport {
  const byName = canonicalizeCheckpoint(cfg, tensors);
  const report: CheckpointReport = { missing: [], shapeMismatches: [], unexpected: [] };
  const expected = expectedTensors(cfg);
  const known = new Set(expected.map((t) => t.name));
  for (const spec of expected) {
    const t = byName.get(spec.name);
    if (!t) report.missing.push(spec.name);
    else if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      report.shapeMismatches.push({ name: spec.name, expected: spec.shape, actual: [...t.shape] });
    }
  }
  for (const name of byName.keys()) {
    if (known.has(name) || isIgnorableBuffer(name)) continue;
    if (cfg.tieWordEmbeddings && name === "lm_head.weight") continue;
    report.unexpected.push(name);
  }
  return report;
}

/**
 * Throw when a checkpoint cannot be used with a config, naming every missing tensor and every shape
 * mismatch (e.g. a config/checkpoint pair from different model sizes). Unexpected extra tensors are
 * returned in the report rather than rejected, as `transformers` only warns about them.
 */
export function validateCheckpoint(
  cfg: ModelConfig,
  tensors: ReadonlyMap<string, { shape: readonly number[] }>,
  source = "checkpoint",
): CheckpointReport {
  const report = checkCheckpoint(cfg, tensors);
  if (report.missing.length === 0 && report.shapeMismatches.length === 0) return report;
  const lines: string[] = [];
  const limit = 20;
  for (const name of report.missing.slice(0, limit)) lines.push(`  missing: ${name}`);
  if (report.missing.length > limit) lines.push(`  … and ${report.missing.length - limit} more missing`);
  for (const m of report.shapeMismatches.slice(0, limit)) {
    lines.push(
      `  shape mismatch: ${m.name} expected [${m.expected.join(", ")}] got [${m.actual.join(", ")}]`,
    );
  }
  if (report.shapeMismatches.length > limit) {
    lines.push(`  … and ${report.shapeMismatches.length - limit} more shape mismatches`);
  }
  throw new Error(
    `${source} does not match the ${cfg.modelType} config (${report.missing.length} missing, ${report.shapeMismatches.length} shape mismatches):\n${
      lines.join("\n")
    }`,
  );
}
