/**
 * The way back from a normalized config to `config.json`: what an exported model folder carries, so that
 * PyTorch `transformers`, transformers.js and {@link parseConfig} load the same model again.
 * @module
 */
import {
  type GemmaModelConfig,
  type Gpt2ModelConfig,
  type ModelConfig,
  type ModelType,
  type RotaryModelConfig,
  validateModelConfig,
} from "./config.ts";

const ARCHITECTURES: Record<ModelType, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
  gemma2: "Gemma2ForCausalLM",
  gemma3_text: "Gemma3ForCausalLM",
  phi3: "Phi3ForCausalLM",
  gpt2: "GPT2LMHeadModel",
};

/**
 * A `config.json` object that `transformers` (and `parseConfig`) loads back into the same model, for
 * exporting trained weights. Only fields the architecture needs are written; the rest take HF defaults.
 */
export function configToJson(cfg: ModelConfig): Record<string, unknown> {
  validateModelConfig(cfg);
  const tokens = {
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
    pad_token_id: cfg.padTokenId,
  };
  const dtype = cfg.torchDtype === null ? {} : { torch_dtype: cfg.torchDtype };
  if (cfg.family === "gpt2") return { ...gpt2Json(cfg), ...tokens, ...dtype };
  const defaultHeadDim = cfg.hiddenSize / cfg.numHeads === cfg.headDim;
  const out: Record<string, unknown> = {
    architectures: [ARCHITECTURES[cfg.modelType]],
    model_type: cfg.modelType,
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    ...(cfg.modelType !== "qwen2" || !defaultHeadDim ? { head_dim: cfg.headDim } : {}),
    max_position_embeddings: cfg.maxPositions,
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: cfg.ropeScaling === null ? null : { ...cfg.ropeScaling },
    tie_word_embeddings: cfg.tieWordEmbeddings,
    ...tokens,
    ...dtype,
  };
  if (cfg.family === "gemma") Object.assign(out, gemmaJson(cfg));
  else out.hidden_act = "silu";
  if (cfg.family === "phi3") {
    out.partial_rotary_factor = cfg.rotaryDim / cfg.headDim;
    out.attention_bias = cfg.attentionBias.q;
    out.sliding_window = cfg.slidingWindow;
    if (cfg.ropeScaling) {
      // older transformers want exactly type/short_factor/long_factor in Phi-3's rope_scaling
      const { original_max_position_embeddings: original, ...rest } = cfg.ropeScaling;
      out.original_max_position_embeddings = original;
      out.rope_scaling = rest;
    }
  } else if (cfg.modelType === "llama" || cfg.modelType === "qwen3") {
    out.attention_bias = cfg.attentionBias.q;
    if (cfg.modelType === "llama") out.mlp_bias = cfg.mlpBias;
  }
  if (cfg.modelType === "mistral") out.sliding_window = cfg.slidingWindow;
  if (cfg.modelType === "qwen2" || cfg.modelType === "qwen3") Object.assign(out, qwenWindows(cfg));
  return out;
}

function gpt2Json(cfg: Gpt2ModelConfig): Record<string, unknown> {
  return {
    architectures: [ARCHITECTURES.gpt2],
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
  };
}

function gemmaJson(cfg: GemmaModelConfig): Record<string, unknown> {
  return {
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

/** `layer_types` as transformers ≥ 4.53 writes it (older versions ignore it and use their own rule). */
function layerTypes(cfg: RotaryModelConfig): string[] {
  return Array.from(
    { length: cfg.numLayers },
    (_, i) =>
      cfg.slidingWindow !== null && (cfg.slidingLayers === null || cfg.slidingLayers[i])
        ? "sliding_attention"
        : "full_attention",
  );
}

/**
 * Qwen's window fields: layers from `max_window_layers` on slide. When the sliding layers are not such a
 * suffix, `layer_types` says which (older transformers would then slide a different set).
 */
function qwenWindows(cfg: RotaryModelConfig): Record<string, unknown> {
  if (cfg.slidingWindow === null) {
    return { use_sliding_window: false, sliding_window: null, max_window_layers: cfg.numLayers };
  }
  const slides = cfg.slidingLayers ?? Array(cfg.numLayers).fill(true);
  const from = slides.indexOf(true);
  const suffix = slides.every((s, i) => s === i >= from);
  return {
    use_sliding_window: true,
    sliding_window: cfg.slidingWindow,
    max_window_layers: from,
    ...(suffix ? {} : { layer_types: layerTypes(cfg) }),
  };
}
