/**
 * What a run trains on: the model folder with its tokenizer, and the data shaped for the loss (reward data
 * for InfoNCA/NCA, pairs for DPO/NCA-pair/IPO, completions for SFT), split into training and held-out
 * prompts and tokenized.
 * @module
 */
import { join } from "node:path";
import { DataError } from "../data/errors.ts";
import { describeSkipped, loadDataset, type LoadedDataset } from "../data/load.ts";
import {
  count,
  type DataReport,
  dataReport,
  dataReportSummary,
  describeCounts,
  plural,
} from "../data/report.ts";
import type { SplitRole } from "../data/sources.ts";
import { maxSupportedLength } from "../model/config.ts";
import { checkSpecialIdsInVocab, loadTokenizer, truncationStats } from "../data/tokenize.ts";
import { loadModelFolder, type ModelFolder } from "../model/model_folder.ts";
import type { TrainConfig } from "./option_specs.ts";
import { type PreparedExample, prepareExamples, shapeDataset, splitHeldOut } from "./prepare.ts";

/** A run's loaded inputs: the model and the data prepared for the loss. */
export type RunInputs = {
  model: ModelFolder;
  padId: number;
  eosId: number;
  train: PreparedExample[];
  eval: PreparedExample[];
  k: number;
  ranked: boolean;
  /** What the data reports said (rows, files, drops), for `summary.json`'s `data`. */
  data: Record<string, unknown>;
};

/** Loads the model folder, its tokenizer and the data, shaped, split and tokenized for the run's loss. */
export async function loadRunInputs(cfg: TrainConfig, log: (l: string) => void): Promise<RunInputs> {
  const model = await loadModelFolder(cfg.model);
  if (!model.tokenizerDir) {
    throw new Error(
      `${cfg.model}: no tokenizer.json in the model folder (the toolkit needs the tokenizer files)`,
    );
  }
  // sequences past what the model handles exactly are cut there (a tiny model's 64 positions, longrope's
  // original length), with a word, rather than trained on wrong positions
  const exact = maxSupportedLength(model.config);
  const maxLength = Math.min(cfg.maxLength, exact);
  if (maxLength < cfg.maxLength) {
    const why = exact < model.config.maxPositions ? "longrope's original length" : "max_position_embeddings";
    log(
      `--max-length ${cfg.maxLength} is more than the model handles exactly: sequences are cut at ${exact} (${why})`,
    );
  }
  const tokenizer = await loadTokenizer(model.tokenizerDir, { log });
  const padId = tokenizer.pad_token_id ?? tokenizer.eos_token_id;
  const eosId = tokenizer.eos_token_id;
  if (typeof eosId !== "number") throw new Error(`${model.tokenizerDir}: the tokenizer has no EOS token`);
  // where the model meets the tokenizer: every id training appends or pads with must be an embedding row
  checkSpecialIdsInVocab(
    tokenizer,
    model.config.vocabSize,
    model.tokenizerDir,
    join(cfg.model, "config.json"),
  );
  const shapeOpts = {
    loss: cfg.loss,
    k: cfg.k,
    kMode: cfg.kMode,
    pairStrategy: cfg.pairStrategy,
    seed: cfg.seed,
  };
  const load = async (path: string, role: SplitRole): Promise<LoadedDataset> => {
    try {
      return await loadDataset(path, { skipBad: cfg.skipBadRows, role });
    } catch (e) {
      if (e instanceof DataError && !cfg.skipBadRows) e.message += " (--skip-bad-rows skips such rows)";
      throw e;
    }
  };
  const shape = (ds: LoadedDataset, label: string) => {
    const shaped = shapeDataset(ds, shapeOpts);
    const report = dataReport(ds, shaped.drops, shaped.examples.length, shaped.unit);
    for (const line of dataReportLines(report, label)) log(line);
    return { examples: shaped.examples, report };
  };
  const all = shape(await load(cfg.data, "train"), "data");
  const evalShaped = cfg.evalData ? shape(await load(cfg.evalData, "eval"), "eval data") : undefined;
  const split = evalShaped
    ? { train: all.examples, eval: evalShaped.examples }
    : splitHeldOut(all.examples, cfg.evalFraction, cfg.seed);
  const maxPromptLength = Math.min(cfg.maxPromptLength, maxLength - 1);
  const stats = truncationStats();
  // prompts and responses rendered as the template renders them, with the run's template variables
  const tokOpts = {
    maxLength,
    maxPromptLength,
    alpha: cfg.alpha,
    stats,
    templateKwargs: cfg.chatTemplateKwargs,
  };
  const trainEx = prepareExamples(tokenizer, split.train, tokOpts);
  const evalEx = prepareExamples(tokenizer, split.eval, tokOpts);
  // a cut response loses its end-of-response token too: say how much was cut, so nobody trains on it unaware
  if (stats.prompts || stats.responses) {
    const n = trainEx.length + evalEx.length;
    const parts = [];
    if (stats.prompts) {
      parts.push(
        `${plural(stats.prompts, "prompt")} of ${n} cut at their start to ${maxPromptLength} tokens ` +
          `(${stats.promptTokens} tokens dropped; --max-prompt-length)`,
      );
    }
    if (stats.responses) {
      parts.push(
        `${plural(stats.responses, "response")} cut at their end to fit ${maxLength} tokens ` +
          `(${stats.responseTokens} tokens dropped, their end-of-response token with them; --max-length)`,
      );
    }
    log(`truncation: ${parts.join("; ")}`);
  }
  const k = trainEx[0]?.responseIds.length ?? 0;
  if (!k) throw new Error(`${cfg.data}: no training examples`);
  const evalK = evalEx.filter((e) => e.responseIds.length === k);
  if (evalK.length < evalEx.length) {
    log(`eval data: ${plural(evalEx.length - evalK.length, "prompt")} without K = ${k} responses dropped`);
  }
  const data: Record<string, unknown> = { train: dataReportSummary(all.report) };
  if (evalShaped) {
    data.eval = { ...dataReportSummary(evalShaped.report), other_k: evalEx.length - evalK.length };
  }
  return {
    model,
    padId: typeof padId === "number" ? padId : eosId,
    eosId,
    train: trainEx,
    eval: evalK,
    k,
    ranked: trainEx[0].rewards !== undefined,
    data,
  };
}

/**
 * The report as the trainer prints it: each skipped row (the first `listed`), then one line of counts:
 * `data: 1,000 rows from 2 files (reward); 3 rows skipped (--skip-bad-rows); 12 prompts with fewer than
 * 4 responses dropped (12 with 3 responses); 5 all-tie prompts made no pair; 985 prompts`.
 */
export function dataReportLines(r: DataReport, label = "data", listed = 20): string[] {
  const lines = r.skippedRows.slice(0, listed).map((s) => `  skipped ${describeSkipped(s)}`);
  if (r.skippedRows.length > listed) lines.push(`  … and ${count(r.skippedRows.length - listed)} more`);
  const files = r.files.length === 1 ? r.files[0] : `${count(r.files.length)} files`;
  const split = r.split === undefined ? "" : `, split ${r.split} of ${r.source}`;
  const parts = [`${label}: ${plural(r.rows, "row")} from ${files} (${r.format}${split})`];
  if (r.skippedRows.length) parts.push(`${plural(r.skippedRows.length, "row")} skipped (--skip-bad-rows)`);
  const few = r.tooFewResponses;
  if (few?.count) {
    parts.push(
      `${plural(few.count, "prompt")} with fewer than ${few.k} responses dropped (${
        describeCounts(few.byK)
      })`,
    );
  }
  if (r.allTies) parts.push(`${plural(r.allTies, "all-tie prompt")} made no pair`);
  parts.push(plural(r.examples, r.unit.slice(0, -1)));
  lines.push(parts.join("; "));
  if (r.otherSplits.length) {
    const others = r.otherSplits.map((s) => `${s.name} ("${s.pattern}")`).join(", ");
    lines.push(`  not read: the splits ${others}; pass one to --eval-data to evaluate on it`);
  }
  if (r.unsplit.length) {
    lines.push(`  not read: ${count(r.unsplit.length)} files outside the splits, e.g. ${r.unsplit[0]}`);
  }
  return lines;
}
