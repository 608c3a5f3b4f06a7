/**
 * Hugging Face reward models (`…ForSequenceClassification` with one label) on the toolkit's decoder: the
 * family's body (lib/model/families/, through decoder.ts' `decoderBody`) and the `score` head, a linear
 * `[1, hidden]` without bias applied to the final normalized hidden state of each sequence's last token.
 *
 * Which token: the last position whose attention mask is 1, so left and right padding give the same
 * reward as the unpadded sequence. transformers instead takes the rightmost token that is not
 * `pad_token_id` (`(arange(T) * (input_ids != pad)).argmax(-1)`, ≥ 4.48; before: the first pad − 1). The two
 * agree unless the pad id also occurs as a real token at the end of a sequence — models whose pad token is
 * their EOS, with a template that ends the turn with it — where transformers reads the token before those
 * trailing EOS tokens and this reads the EOS itself. Positions come from the mask too (decoder.ts), which is
 * what transformers computes for right-padded or unpadded rows (its plain forward counts left padding
 * into the positions; rotary models do not notice, GPT-2's learned positions do).
 *
 * Checkpoints: `model.…` (GPT-2: `transformer.…`) + `score.weight`, no LM head; config.json's
 * `architectures` names one of {@link REWARD_ARCHITECTURES} and `id2label` (or `num_labels`) one label.
 * @module
 */
import { GraphBuilder, type Value } from "../graph/builder.ts";
import * as op from "../graph/ops.ts";
import { type ModelConfig, parseConfig } from "./config.ts";
import { decoderBody } from "./decoder.ts";
import { weight } from "./layers.ts";
import { loadModelFolder, type ModelFolder } from "./model_folder.ts";
import { weightEntries } from "./weight_files.ts";
import { canonicalizeCheckpoint, SCORE_WEIGHT, sequenceClassificationTensors } from "./weights_names.ts";
import type { FloatDType, WeightSource } from "./weights.ts";

export { SCORE_WEIGHT };

/** The `architectures` a reward model folder may name, with the `model_type` each is built on. */
export const REWARD_ARCHITECTURES: Readonly<Record<string, string>> = {
  LlamaForSequenceClassification: "llama",
  MistralForSequenceClassification: "mistral",
  Qwen2ForSequenceClassification: "qwen2",
  Qwen3ForSequenceClassification: "qwen3",
  Gemma2ForSequenceClassification: "gemma2",
  Phi3ForSequenceClassification: "phi3",
  GPT2ForSequenceClassification: "gpt2",
};

/** What config.json says about the head: the architecture named (null: none listed) and the label count. */
export type RewardHeadConfig = { architecture: string | null; numLabels: number | null };

/**
 * The head fields of a reward model's config.json: `architectures` must name a supported
 * `…ForSequenceClassification` when it is there, and the labels (`id2label`'s size, else `num_labels`;
 * null when neither is given: then the checkpoint's `score.weight` decides) must be one.
 */
export function readRewardHeadConfig(json: Record<string, unknown>, file: string): RewardHeadConfig {
  const supported = Object.keys(REWARD_ARCHITECTURES).join(", ");
  let architecture: string | null = null;
  const archs = json.architectures;
  if (Array.isArray(archs) && archs.length > 0) {
    const names = archs.filter((a): a is string => typeof a === "string");
    architecture = names.find((a) => Object.hasOwn(REWARD_ARCHITECTURES, a)) ?? null;
    if (architecture === null) {
      const why = names.some((a) => a.endsWith("ForSequenceClassification"))
        ? "is not supported"
        : "is not a reward model (a sequence-classification head is needed)";
      throw new Error(`${file}: architectures ${JSON.stringify(names)} ${why}; supported: ${supported}`);
    }
  }
  let numLabels: number | null = null;
  const id2label = json.id2label;
  if (id2label && typeof id2label === "object" && !Array.isArray(id2label)) {
    numLabels = Object.keys(id2label).length;
  } else if (typeof json.num_labels === "number") numLabels = json.num_labels;
  if (numLabels !== null && numLabels !== 1) {
    const from = id2label ? "id2label" : "num_labels";
    throw new Error(
      `${file}: wrong label count: the head has ${numLabels} labels (${from}); a reward model has exactly ` +
        `1 (a scalar reward), not a classifier's ${numLabels} classes`,
    );
  }
  return { architecture, numLabels };
}

/** A loaded reward model folder: a model folder whose `stored` holds the body and `score.weight`. */
export type RewardModelFolder = ModelFolder & { architecture: string | null };

/**
 * Loads a reward model folder (config, weights' headers, tokenizer location), with clear errors for what
 * makes it unusable as one: a causal LM or an unsupported head, a head of more than one label, no
 * `score.weight`.
 */
export async function loadRewardModelFolder(dir: string): Promise<RewardModelFolder> {
  const file = `${dir.replace(/\/+$/, "")}/config.json`;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${file}: not found`);
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  const cfg = parseConfig(json, file);
  const head = readRewardHeadConfig(json, file);
  const entries = canonicalizeCheckpoint(cfg, await weightEntries(dir));
  const score = entries.get(SCORE_WEIGHT);
  if (!score) {
    const lm = entries.has("lm_head.weight") ? " (it has lm_head.weight: a causal LM)" : "";
    throw new Error(
      `${dir}: no "${SCORE_WEIGHT}" in the checkpoint${lm}: not a reward model; a …ForSequenceClassification ` +
        `checkpoint holds the decoder and the score head [1, ${cfg.hiddenSize}]`,
    );
  }
  if (score.shape.length === 2 && score.shape[1] === cfg.hiddenSize && score.shape[0] !== 1) {
    throw new Error(
      `${dir}: wrong label count: "${SCORE_WEIGHT}" is [${score.shape}], a head of ${score.shape[0]} ` +
        `labels; a reward model has exactly 1`,
    );
  }
  const folder = await loadModelFolder(dir, { tensors: (c) => sequenceClassificationTensors(c, 1) });
  return { ...folder, architecture: head.architecture };
}

/** Inputs of {@link rewardScores}: `[B, T]` ids and mask (any int dtype; nonzero mask = real token). */
export type RewardInputs = { inputIds: Value; attentionMask: Value };

/**
 * The reward of each row `[B]`, in the compute dtype: the score head on the final hidden state at the
 * row's last real position (see the module documentation for how this relates to transformers' rule).
 */
export function rewardScores(
  g: GraphBuilder,
  cfg: ModelConfig,
  inputs: RewardInputs,
  opts: { weights: WeightSource; dtype?: FloatDType },
): Value {
  const { ctx, ids, out } = decoderBody(g, cfg, inputs, { weights: opts.weights, dtype: opts.dtype });
  // the last position with mask 1: argmax of t · mask, as transformers' (arange · non_pad).argmax(-1); in
  // float32 (exact below 2^24 positions), which has an ArgMax kernel on every provider
  const mask = op.cast(op.cast(inputs.attentionMask, "bool"), "float32");
  const width = op.squeeze(op.shapeOf(ids, 1, 2), [0]);
  const rows = op.squeeze(op.shapeOf(ids, 0, 1), [0]);
  const t = op.range(g.scalar(0, "float32"), op.cast(width, "float32"), g.scalar(1, "float32"), ids.shape[1]);
  const last = op.cast(op.argMax(op.mul(mask, op.unsqueeze(t, [0])), -1), "int64"); // [B]
  const b = op.range(g.scalar(0, "int64"), rows, g.scalar(1, "int64"), ids.shape[0]);
  const pooled = op.gather(out.hidden, op.add(op.mul(b, width), last)); // [B, D] of the [B·T, D] rows
  const score = op.gemm(pooled, weight(ctx, SCORE_WEIGHT), null, { transB: true }); // [B, 1]
  return op.reshape(score, [-1]);
}

/**
 * A graph scoring sequences with a reward model: inputs `input_ids`, `attention_mask` `[rows, width]`
 * int32, output `rewards` `[rows]` (float32; float64 when computing in float64, for exact checks).
 */
export function buildRewardGraph(
  cfg: ModelConfig,
  weights: WeightSource,
  opts: { dtype?: FloatDType } = {},
): GraphBuilder {
  const g = new GraphBuilder("reward-model");
  const inputIds = g.input("input_ids", "int32", ["rows", "width"]);
  const attentionMask = g.input("attention_mask", "int32", ["rows", "width"]);
  const r = rewardScores(g, cfg, { inputIds, attentionMask }, { weights, dtype: opts.dtype });
  g.output(r.dtype === "float16" ? op.cast(r, "float32") : r, "rewards");
  return g;
}
