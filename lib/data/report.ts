/**
 * Every row a run does not train on, counted: malformed rows skipped, prompts with fewer than K
 * responses, prompts whose responses all tie (no preference pair). A dataset that quietly shrinks is
 * the hardest data problem to notice, so the trainer prints this and keeps it in `summary.json`.
 *
 * @module
 */

import { describeSkipped, type LoadedDataset, type SkippedRecord } from "./load.ts";
import type { FormatName } from "./types.ts";

/** Prompts dropped because they had fewer than `k` responses; `byK`: how many had each count. */
export type TooFewResponses = { k: number; count: number; byK: Record<number, number> };

/** What shaping a dataset for a loss dropped (lib/train/prepare.ts fills it). */
export type ShapeDrops = {
  tooFewResponses?: TooFewResponses;
  /** Prompts of reward data whose responses all have one reward: no pair for a pairwise loss. */
  allTies: number;
};

/** One data argument, from the path given to the examples the loss gets. */
export type DataReport = {
  /** The path, folder or glob as given. */
  source: string;
  files: string[];
  /** The split read from a Hub layout folder, and the others there (not read). */
  split?: string;
  otherSplits: { name: string; pattern: string; files: number }[];
  /** Data files in a Hub layout folder outside every split (not read). */
  unsplit: string[];
  format: FormatName;
  /** Records read, good and skipped. */
  rows: number;
  skippedRows: SkippedRecord[];
  tooFewResponses?: TooFewResponses;
  allTies: number;
  /** What the loss trains on: prompts, or pairs when a pairwise loss binarizes reward data. */
  examples: number;
  unit: "prompts" | "pairs";
};

/** The report of a loaded dataset and what shaping it dropped. */
export function dataReport(
  ds: LoadedDataset,
  drops: ShapeDrops,
  examples: number,
  unit: DataReport["unit"],
): DataReport {
  return {
    source: ds.input.source,
    files: ds.input.files,
    split: ds.input.split,
    otherSplits: ds.input.otherSplits.map((s) => ({
      name: s.name,
      pattern: s.pattern,
      files: s.files.length,
    })),
    unsplit: ds.input.unsplit,
    format: ds.format,
    rows: ds.records,
    skippedRows: ds.skipped,
    tooFewResponses: drops.tooFewResponses,
    allTies: drops.allTies,
    examples,
    unit,
  };
}

/** `n` with thousands separators, as counts read in messages: `12,000`. */
export function count(n: number): string {
  return n.toLocaleString("en-US");
}

/** `1 row`, `12 rows`: a count and its noun. */
export function plural(n: number, noun: string): string {
  return `${count(n)} ${noun}${n === 1 ? "" : "s"}`;
}

/** `12 with 3 responses, 988 with 4` from `{3: 12, 4: 988}`. */
export function describeCounts(byK: Record<number, number>): string {
  return Object.entries(byK).map(([k, n]) => [Number(k), n]).sort((a, b) => a[0] - b[0])
    .map(([k, n], i) => `${count(n)} with ${k}${i === 0 ? ` response${k === 1 ? "" : "s"}` : ""}`).join(", ");
}

/** The report for `summary.json`: counts, and the first `listed` skipped rows as messages. */
export function dataReportSummary(r: DataReport, listed = 20): Record<string, unknown> {
  return {
    source: r.source,
    files: r.files,
    ...(r.split === undefined ? {} : { split: r.split, other_splits: r.otherSplits.map((s) => s.name) }),
    format: r.format,
    rows: r.rows,
    skipped_rows: r.skippedRows.length,
    ...(r.skippedRows.length ? { skipped: r.skippedRows.slice(0, listed).map(describeSkipped) } : {}),
    too_few_responses: r.tooFewResponses
      ? { k: r.tooFewResponses.k, count: r.tooFewResponses.count, by_k: r.tooFewResponses.byK }
      : { count: 0 },
    all_ties: r.allTies,
    [r.unit]: r.examples,
  };
}
