/**
 * The model families by name: each is one forward file with its tensor names. A new family is a file
 * here, an entry below, and its `model_type`s in config.ts.
 * @module
 */
import type { Family, ModelConfig } from "../config.ts";
import type { Ctx } from "../layers.ts";
import type { FamilyInputs, FamilyOutputs, TensorSpec } from "../types.ts";
import { llamaForward, llamaTensors } from "./llama.ts";
import { gemmaForward, gemmaTensors } from "./gemma.ts";
import { phi3Forward, phi3Tensors } from "./phi3.ts";
import { gpt2Forward, gpt2Tensors } from "./gpt2.ts";

/** What the decoder and the weight code need from a family. */
export type FamilyModule<C extends ModelConfig> = {
  /** Embeddings and layers: the final normalized rows, the head's weight, the KV cache. */
  forward(ctx: Ctx, cfg: C, inputs: FamilyInputs): FamilyOutputs;
  /** Every parameter tensor of a checkpoint, in module order, HF names and shapes. */
  tensors(cfg: C): TensorSpec[];
  /** Linear weights are `[out, in]` (`linear`) or GPT-2's Conv1D `[in, out]`. */
  layout: "linear" | "conv1d";
  /** The prefix PEFT puts before canonical module paths (GPT-2's checkpoints nest them in `transformer.`). */
  peftPrefix: string;
};

type Modules = { [F in Family]: FamilyModule<Extract<ModelConfig, { family: F }>> };

const FAMILIES: Modules = {
  llama: { forward: llamaForward, tensors: llamaTensors, layout: "linear", peftPrefix: "" },
  gemma: { forward: gemmaForward, tensors: gemmaTensors, layout: "linear", peftPrefix: "" },
  phi3: { forward: phi3Forward, tensors: phi3Tensors, layout: "linear", peftPrefix: "" },
  gpt2: { forward: gpt2Forward, tensors: gpt2Tensors, layout: "conv1d", peftPrefix: "transformer." },
};

/** The family module of a config. */
export function familyOf<C extends ModelConfig>(cfg: C): FamilyModule<C> {
  return FAMILIES[cfg.family] as unknown as FamilyModule<C>;
}
