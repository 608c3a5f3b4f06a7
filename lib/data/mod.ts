/**
 * Data for alignment training: read JSONL (plain or gzip) and Parquet datasets, given as a file, a
 * folder, a glob or a Hugging Face Hub layout folder, in the formats people bring (reward, UltraFeedback,
 * ChenDRAG, preference, SFT), normalize them, count what is dropped, convert between them for the
 * baselines, tokenize with a chat template and batch P prompts × K responses.
 *
 * @example
 * ```ts
 * import { join } from "node:path";
 * import { batchIndices, loadDataset, loadTokenizer, makeBatch, sequenceLengths } from "./mod.ts";
 * import { tokenizeExamples, writeWordPieceTokenizer } from "./mod.ts";
 * const dir = await Deno.makeTempDir();
 * const rows = [1, 2, 3].map((n) => ({ prompt: `${n} + ${n}?`, chosen: `${n + n}`, rejected: "7" }));
 * await Deno.writeTextFile(join(dir, "pairs.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n"));
 * await writeWordPieceTokenizer(join(dir, "tokenizer"), { // a tiny one; usually the model's folder
 *   specials: ["<pad>", "<eos>", "<unk>"], pad: "<pad>", eos: "<eos>", unk: "<unk>",
 *   tokens: [..."0123456789+?:", "user", "assistant"],
 *   chatTemplate: "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}" +
 *     "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
 * });
 * const ds = await loadDataset(join(dir, "pairs.jsonl")); // preference pairs, detected from the fields
 * const tok = await loadTokenizer(join(dir, "tokenizer"));
 * const tokenized = tokenizeExamples(tok, ds.examples, { maxLength: 1024, maxPromptLength: 512 });
 * for (const idx of batchIndices(sequenceLengths(tokenized), 2, { seed: 0 })) {
 *   const batch = makeBatch(idx.map((i) => tokenized[i]), { padId: tok.pad_token_id ?? 0 });
 *   console.log(batch.prompts, "prompts ×", batch.k, "responses ×", batch.width, "tokens");
 * }
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */

export type {
  Example,
  ExampleKind,
  FormatName,
  Message,
  PreferenceExample,
  RawRecord,
  RewardExample,
  ScoredResponse,
  SftExample,
} from "./types.ts";
export { DataError, FieldError, type RecordUnit } from "./errors.ts";
export { mulberry32, randomInt, type Rng, sampleIndices, shuffleInPlace } from "./random.ts";
export { readJsonl, type ReadJsonlOptions, readLines } from "./jsonl.ts";
export { type FileAsyncBuffer, openAsyncBuffer, readParquet, readParquetMetadata } from "./parquet.ts";
export {
  DATA_EXTENSIONS,
  dataExtension,
  readRecords,
  type ReadRecordsOptions,
  type RecordFileKind,
  recordFileKind,
} from "./records.ts";
export { type ByteSource, openBytes } from "./compression.ts";
export { checkTextEncoding, EncodingError, invalidUtf8Offset } from "./encoding.ts";
export {
  type DataFiles,
  type DataResolveOptions,
  globRegExp,
  naturalCompare,
  resolveDataFiles,
  type SplitFiles,
  type SplitRole,
} from "./sources.ts";
export { sameMessages, splitConversation, toPrompt } from "./messages.ts";
export {
  detectFormat,
  type ExampleOf,
  FORMAT_FIELDS,
  FORMAT_KIND,
  FORMAT_NAMES,
  isFormatName,
  parseChenDrag,
  parsePreference,
  parseRecord,
  parseReward,
  parseSft,
  parseUltraFeedback,
} from "./formats.ts";
export {
  describeSkipped,
  loadDataset,
  type LoadedDataset,
  type LoadInfo,
  type LoadOptions,
  type RecordOrigin,
  type SkippedRecord,
} from "./load.ts";
export {
  count,
  type DataReport,
  dataReport,
  dataReportSummary,
  describeCounts,
  plural,
  type ShapeDrops,
  type TooFewResponses,
} from "./report.ts";
export {
  binarize,
  type BinarizeResult,
  type PairOptions,
  type PairStrategy,
  preferenceToReward,
  rewardToPairs,
  rewardToPreference,
  type SelectOptions,
  selectResponses,
  type SelectResult,
} from "./convert.ts";
export {
  type ChatTokenizer,
  parseTemplateKwargs,
  PLAIN_CHAT_TEMPLATE,
  renderChat,
  type RenderOptions,
  renderPlainChat,
} from "./chat.ts";
export {
  type EncodingTokenizer,
  loadTokenizer,
  type ResponseOptions,
  responseTexts,
  sequenceLengths,
  type TokenizedExample,
  tokenizeExample,
  tokenizeExamples,
  type TokenizeOptions,
  tokenizePrompt,
  type Tokenizer,
  tokenizeResponse,
  tokenizeResponses,
  truncate,
  type TruncationOptions,
} from "./tokenize.ts";
export { type BatchOptions, IGNORE_INDEX, makeBatch, type SequenceBatch } from "./batch.ts";
export { batchIndices, type SamplerOptions } from "./sampler.ts";
export { type WordPieceSpec, writeWordPieceTokenizer } from "./wordpiece.ts";
