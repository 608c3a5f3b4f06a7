/**
 * The way back from a normalized config to `config.json`: what an exported model folder carries, so that
 * PyTorch `transformers`, transformers.js and {@link parseConfig} load the same model again. Each family's
 * file writes its own fields (lib/model/families/); this module adds what every family shares.
 * @module
 */
import { type ModelConfig, validateModelConfig } from "./config.ts";
import { familyOf } from "./families/registry.ts";

/**
 * A `config.json` object that `transformers` (and `parseConfig`) loads back into the same model, for
 * exporting trained weights. Only fields the architecture needs are written; the rest take HF defaults.
 */
export function configToJson(cfg: ModelConfig): Record<string, unknown> {
  validateModelConfig(cfg);
  const tail = {
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
    pad_token_id: cfg.padTokenId,
    ...(cfg.torchDtype === null ? {} : { torch_dtype: cfg.torchDtype }),
  };
  return familyOf(cfg).toJson(cfg, tail);
}
