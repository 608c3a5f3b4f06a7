/**
 * Decoder-only language models: Hugging Face configs and checkpoints, the families of families/ as
 * graphs of the engine (with a KV cache for serving), log-probs for training, LoRA and PEFT adapters,
 * random initialization, model folders in and out, and the serving export with generation over it.
 * @module
 */
export * from "./config.ts";
export * from "./config_json.ts";
export * from "./safetensors.ts";
export * from "./float_codec.ts";
export * from "./weight_files.ts";
export * from "./weights_names.ts";
export * from "./weights.ts";
export * from "./stored_weights.ts";
export * from "./types.ts";
export * from "./decoder.ts";
export * from "./logprobs.ts";
export * from "./lora.ts";
export * from "./peft.ts";
export * from "./init.ts";
export * from "./model_folder.ts";
export * from "./export.ts";
export * from "./generate.ts";
export * from "./sampling.ts";
export * from "./graph_sampler.ts";
export * from "./open.ts";
export * from "./fingerprint.ts";
export * from "./scoring_graph.ts";
export {
  applyRotary,
  attention,
  attentionBias,
  geluNew,
  layerNorm,
  linear,
  MASK_VALUE,
  positionsFromMask,
  rmsNorm,
  rotaryTables,
  silu,
} from "./layers.ts";
export { llamaForward } from "./families/llama.ts";
export { gemmaForward } from "./families/gemma.ts";
export { phi3Forward } from "./families/phi3.ts";
export { gpt2Forward } from "./families/gpt2.ts";
export { type FamilyModule, familyOf } from "./families/registry.ts";
export * from "./rope.ts";
