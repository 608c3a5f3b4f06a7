/**
 * nca-align: alignment of language models with explicit rewards — InfoNCA and NCA ("Noise Contrastive
 * Alignment of Language Models with Explicit Rewards", Chen et al., NeurIPS 2024), with DPO, NCA-pair and
 * IPO as baselines — trained with ONNX Runtime on CPU or CUDA, in TypeScript on Deno.
 *
 * This entry holds what most scripts use: the losses, reading and converting datasets, and the trainer's
 * entry points. Each area has its own sub-path (deno.json's `exports`) with everything it exports:
 *
 * - `./losses` (lib/losses/mod.ts): exact TypeScript references with analytic gradients ({@link infoNcaLoss},
 *   {@link ncaLoss}, {@link dpoLoss}, {@link ncaPairLoss}, {@link ipoLoss}), soft labels, implicit rewards,
 *   TRL-named metrics. All of it is re-exported here.
 * - `./data` (lib/data/mod.ts): JSONL/Parquet readers, dataset formats, conversions, chat templates,
 *   tokenization and batching. The readers, formats and conversions are re-exported here.
 * - `./graph` (lib/graph/mod.ts): the ONNX graph builder, reverse-mode autodiff, optimizers, Loop-chunked
 *   training graphs, serialization.
 * - `./runtime` (lib/runtime/mod.ts): ONNX Runtime sessions (CPU/CUDA), its C API from Deno, training
 *   sessions, device selection and memory.
 * - `./model` (lib/model/mod.ts): decoder-only transformers (the families), Hugging Face configs and weights,
 *   LoRA/PEFT, the serving export, generation.
 * - `./train` (lib/train/mod.ts): the trainer and its pieces (options, graph losses, chunks, checkpoints,
 *   metrics, charts, the demo). {@link train}, {@link runDemo} and the option parsing are re-exported here.
 * - `./loop` (lib/loop/mod.ts): sampling K responses, scorers (reward model, reward function, judge),
 *   evaluation against the reference.
 * - `./serve` (lib/serve/mod.ts): the OpenAI-compatible server with the log-prob inspector and dashboard.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ncaLoss } from "./mod.ts";
 * const { loss, grad } = ncaLoss(
 *   { policy: [[-10, -12, -15, -9]], reference: [[-11, -11, -14, -9]], rewards: [[8, 6, 3, 5]] },
 *   { beta: 0.01, alpha: 1 },
 * );
 * assert.ok(loss > 0 && grad[0].length === 4); // grad = dLoss/dpolicy, one per response
 * ```
 * @module
 */
export * from "./lib/losses/mod.ts";
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
} from "./lib/data/mod.ts";
export {
  binarize,
  DataError,
  detectFormat,
  FieldError,
  FORMAT_NAMES,
  loadDataset,
  type LoadedDataset,
  type LoadOptions,
  type PairStrategy,
  parseRecord,
  preferenceToReward,
  readJsonl,
  readParquet,
  readRecords,
  resolveDataFiles,
  rewardToPreference,
  selectResponses,
} from "./lib/data/mod.ts";
export {
  type DemoOptions,
  type DemoResult,
  formatDemoTable,
  parseTrainOptions,
  runDemo,
  train,
  type TrainConfig,
  type TrainHooks,
  type TrainOptions,
  type TrainResult,
} from "./lib/train/mod.ts";
