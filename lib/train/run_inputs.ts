/**
 * What a run trains on: the model folder with its tokenizer, and the data shaped for the loss (reward data
 * for InfoNCA/NCA, pairs for DPO/NCA-pair/IPO, completions for SFT), split into training and held-out
 * prompts and tokenized.
 * @module
 */
import { loadDataset, type LoadedDataset } from "../data/load.ts";
import { loadTokenizer } from "../data/tokenize.ts";
import { loadModelFolder, type ModelFolder } from "../model/model_folder.ts";
import type { TrainConfig } from "./option_specs.ts";
import { type PreparedExample, prepareExamples, shapeExamples, splitHeldOut } from "./prepare.ts";

/** A run's loaded inputs: the model and the data prepared for the loss. */
export type RunInputs = {
  model: ModelFolder;
  padId: number;
  eosId: number;
  train: PreparedExample[];
  eval: PreparedExample[];
  k: number;
  ranked: boolean;
};

/** Loads the model folder, its tokenizer and the data, shaped, split and tokenized for the run's loss. */
export async function loadRunInputs(cfg: TrainConfig, log: (l: string) => void): Promise<RunInputs> {
  const model = await loadModelFolder(cfg.model);
  if (!model.tokenizerDir) {
    throw new Error(
      `${cfg.model}: no tokenizer.json in the model folder (the toolkit needs the tokenizer files)`,
    );
  }
  const tokenizer = await loadTokenizer(model.tokenizerDir);
  const padId = tokenizer.pad_token_id ?? tokenizer.eos_token_id;
  const eosId = tokenizer.eos_token_id;
  if (typeof eosId !== "number") throw new Error(`${model.tokenizerDir}: the tokenizer has no EOS token`);
  const shapeOpts = {
    loss: cfg.loss,
    k: cfg.k,
    kMode: cfg.kMode,
    pairStrategy: cfg.pairStrategy,
    seed: cfg.seed,
  };
  const load = async (path: string): Promise<LoadedDataset> => {
    const ds = await loadDataset(path);
    log(`data ${path}: ${ds.examples.length} ${ds.format} records`);
    return ds;
  };
  const all = shapeExamples(await load(cfg.data), shapeOpts);
  const split = cfg.evalData
    ? { train: all, eval: shapeExamples(await load(cfg.evalData), shapeOpts) }
    : splitHeldOut(all, cfg.evalFraction, cfg.seed);
  const tokOpts = { maxLength: cfg.maxLength, maxPromptLength: cfg.maxPromptLength, alpha: cfg.alpha };
  const trainEx = prepareExamples(tokenizer, split.train, tokOpts);
  const evalEx = prepareExamples(tokenizer, split.eval, tokOpts);
  const k = trainEx[0]?.responseIds.length ?? 0;
  if (!k) throw new Error(`${cfg.data}: no training examples`);
  return {
    model,
    padId: typeof padId === "number" ? padId : eosId,
    eosId,
    train: trainEx,
    eval: evalEx.filter((e) => e.responseIds.length === k),
    k,
    ranked: trainEx[0].rewards !== undefined,
  };
}
