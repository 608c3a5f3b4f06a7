/**
 * The model families by name. A family is one file here (its config type, `config.json` reading and
 * writing, tensor names, forward pass and module layout, exported as one {@link FamilyModule}) and one entry
 * below; config.ts, weights_names.ts, config_json.ts, lora.ts and peft.ts reach it through this table.
 * @module
 */
import type { FamilyModule } from "../types.ts";
import { LLAMA, type LlamaModelConfig } from "./llama.ts";
import { GEMMA, type GemmaModelConfig } from "./gemma.ts";
import { PHI3, type Phi3ModelConfig } from "./phi3.ts";
import { GPT2, type Gpt2ModelConfig } from "./gpt2.ts";

export type { FamilyModule };

/** A normalized config; narrow on `family`. */
export type ModelConfig = LlamaModelConfig | GemmaModelConfig | Phi3ModelConfig | Gpt2ModelConfig;

/** The graph families the toolkit implements (one file each, lib/model/families/). */
export type Family = ModelConfig["family"];

/** A supported `model_type`. */
export type ModelType = ModelConfig["modelType"];

type Modules = { [F in Family]: FamilyModule<Extract<ModelConfig, { family: F }>> };

/** The families, in the order error messages list their model types. */
export const FAMILIES: Readonly<Modules> = { llama: LLAMA, gemma: GEMMA, phi3: PHI3, gpt2: GPT2 };

/** The family module of a family name. */
export function familyModule<F extends Family>(family: F): Modules[F] {
  if (!Object.hasOwn(FAMILIES, family)) throw new Error(`unknown model family "${family}"`);
  return FAMILIES[family];
}

/** The family module of a config. */
export function familyOf<C extends ModelConfig>(cfg: C): FamilyModule<C> {
  return familyModule(cfg.family) as unknown as FamilyModule<C>;
}
