/**
 * Hugging Face tensor names and shapes, so that importing a checkpoint, building a graph and exporting
 * weights all agree on one naming scheme — the one `transformers` uses, which makes exported folders load
 * in Python unchanged. Each family lists its own tensors (lib/model/families/); this module checks a
 * checkpoint against them.
 *
 * Shapes are in HF layout: `nn.Linear` weights are `[out, in]`, GPT-2's `Conv1D` weights are `[in, out]`.
 *
 * @module
 */

import { basename } from "node:path";
import { type Family, type ModelConfig, rawConfigSizes } from "./config.ts";
import { familyModule, familyOf } from "./families/registry.ts";
import type { TensorSpec } from "./types.ts";

export type { TensorSpec };
export { LLAMA_NAMES, type LlamaLayerNames, llamaLayerNames, type ParamNames } from "./families/llama.ts";
export { GPT2_PREFIX, gpt2GlobalNames, type Gpt2LayerNames, gpt2LayerNames } from "./families/gpt2.ts";

// ---------------------------------------------------------------------------------------------------------
// Expected tensors and validation
// ---------------------------------------------------------------------------------------------------------

/**
 * Every parameter tensor a checkpoint of this config holds, with its HF shape, in module order. The LM
 * head is listed only when untied. GPT-2 names are canonical (unprefixed); see `canonicalTensorName`.
 */
export function expectedTensors(cfg: ModelConfig): TensorSpec[] {
  return familyOf(cfg).tensors(cfg);
}

/** The reward head of `…ForSequenceClassification` checkpoints: `nn.Linear(hidden, num_labels, bias=False)`. */
export const SCORE_WEIGHT = "score.weight";

/**
 * The tensors of a `…ForSequenceClassification` checkpoint (a reward model): the decoder body's (no LM head)
 * and the `score` head `[numLabels, hidden]`. The base model keeps its names (`model.…`; GPT-2's
 * `transformer.…`, canonicalized as for the causal LM).
 */
export function sequenceClassificationTensors(cfg: ModelConfig, numLabels: number): TensorSpec[] {
  const body = expectedTensors(cfg).filter((t) => t.name !== "lm_head.weight");
  return [...body, { name: SCORE_WEIGHT, shape: [numLabels, cfg.hiddenSize] }];
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
  const { prefix } = familyOf(cfg);
  return prefix !== "" && name.startsWith(prefix) ? name.slice(prefix.length) : name;
}

/** A checkpoint's tensors re-keyed by canonical name (tensor objects are shared, not copied). */
export function canonicalizeCheckpoint<T>(cfg: ModelConfig, tensors: ReadonlyMap<string, T>): Map<string, T> {
  const out = new Map<string, T>();
  for (const [name, t] of tensors) {
    const canonical = canonicalTensorName(cfg, name);
    if (out.has(canonical)) {
      throw new Error(
        `tensor "${canonical}" appears both with and without the "${familyOf(cfg).prefix}" prefix`,
      );
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
  expected: TensorSpec[] = expectedTensors(cfg),
): CheckpointReport {
  const byName = canonicalizeCheckpoint(cfg, tensors);
  const report: CheckpointReport = { missing: [], shapeMismatches: [], unexpected: [] };
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
 * returned in the report rather than rejected, as `transformers` only warns about them. `expected`: the
 * tensors to require (default: the causal LM's, {@link expectedTensors}).
 */
export function validateCheckpoint(
  cfg: ModelConfig,
  tensors: ReadonlyMap<string, { shape: readonly number[] }>,
  source = "checkpoint",
  expected?: TensorSpec[],
): CheckpointReport {
  const report = checkCheckpoint(cfg, tensors, expected);
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

// ---------------------------------------------------------------------------------------------------------
// Sizes against the weights, before the config is parsed
// ---------------------------------------------------------------------------------------------------------

/**
 * The decoder layer a checkpoint tensor belongs to: `N` of `model.layers.N.…` (Llama, Gemma, Phi-3, and
 * their reward models), of GPT-2's `h.N.…` or `transformer.h.N.…`; null for tensors outside the layers.
 */
export function layerIndexOf(family: Family, name: string): number | null {
  const { prefix, layers } = familyModule(family);
  const rest = prefix !== "" && name.startsWith(prefix) ? name.slice(prefix.length) : name;
  if (!rest.startsWith(`${layers}.`)) return null;
  const m = /^(\d+)\./.exec(rest.slice(layers.length + 1));
  return m ? Number(m[1]) : null;
}

/** A size field worth comparing: a positive safe integer (anything else is left to the parser's message). */
function sizeValue(f: { value: unknown } | undefined): number | null {
  return f && typeof f.value === "number" && Number.isSafeInteger(f.value) && f.value > 0 ? f.value : null;
}

/**
 * Checks a raw `config.json` (`file`, as read) against the weights' headers before the config is parsed:
 * the number of decoder layers the weights hold against `num_hidden_layers` (GPT-2: `n_layer`: no more than
 * the weights hold), and the
 * token embedding's shape against `vocab_size` × `hidden_size`. Parsing and the tensor name lists allocate
 * per layer, so a config that claims 10^9 layers must be refused here, by what the weights hold, not after
 * it has filled the memory. Throws naming the file, the field, its value and what the weights hold.
 */
export function checkConfigAgainstWeights(
  json: unknown,
  file: string,
  tensors: ReadonlyMap<string, { shape: readonly number[]; file?: string }>,
): void {
  const raw = rawConfigSizes(json);
  if (!raw) return; // not an object, or an unsupported model_type: the parser says so
  const numLayers = sizeValue(raw.layers);
  if (numLayers !== null) {
    const layers = new Map<number, string>();
    for (const name of tensors.keys()) {
      const i = layerIndexOf(raw.family, name);
      if (i !== null && !layers.has(i)) layers.set(i, name.slice(0, name.indexOf(`.${i}.`) + `.${i}`.length));
    }
    // fewer layers than the weights hold is allowed (transformers loads the first ones, the rest unused)
    if (layers.size < numLayers) {
      const ids = [...layers.keys()].sort((a, b) => a - b);
      const pattern = `${familyModule(raw.family).layers}.N.…`;
      const held = ids.length === 0
        ? `no layers (no tensor named ${pattern})`
        : ids.length === 1
        ? `1 layer (${layers.get(ids[0])})`
        : `${ids.length} layers (${layers.get(ids[0])} … ${layers.get(ids.at(-1)!)})`;
      throw new Error(`${file}: ${raw.layers!.key} is ${numLayers} but the weights hold ${held}`);
    }
  }
  const vocab = sizeValue(raw.vocab), hidden = sizeValue(raw.hidden);
  const { embedding: embed, prefix } = familyModule(raw.family);
  const name = [embed, prefix + embed].find((n) => tensors.has(n));
  if (vocab === null || hidden === null || name === undefined) return; // a missing embedding is reported later
  const t = tensors.get(name)!;
  if (t.shape.length !== 2 || t.shape[0] !== vocab || t.shape[1] !== hidden) {
    const where = t.file ? ` (in ${basename(t.file)})` : "";
    throw new Error(
      `${file}: ${raw.vocab!.key} × ${
        raw.hidden!.key
      } is ${vocab} × ${hidden} but the weights' ${name}${where} ` +
        `is [${t.shape.join(", ")}]`,
    );
  }
}
