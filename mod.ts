/**
 * nca-align: alignment of language models with explicit rewards — InfoNCA and NCA ("Noise Contrastive
 * Alignment of Language Models with Explicit Rewards", Chen et al., NeurIPS 2024), with DPO, NCA-pair and
 * IPO as baselines — trained with ONNX Runtime on CPU or CUDA, in TypeScript on Deno.
 *
 * - Losses: exact TypeScript references with analytic gradients ({@link infoNcaLoss}, {@link ncaLoss},
 *   {@link dpoLoss}, {@link ncaPairLoss}, {@link ipoLoss}), soft labels, implicit rewards, TRL metrics.
 * - Data: JSONL/Parquet readers, dataset formats, conversions, tokenization and batching.
 * - Graphs: an ONNX graph builder with reverse-mode autodiff, in-graph optimizers and Loop-chunked
 *   training graphs; sessions that run them.
 *
 * @example
 * ```ts
 * import { ncaLoss } from "./mod.ts";
 * const { loss, grad } = ncaLoss(
 *   { policy: [[-10, -12, -15, -9]], reference: [[-11, -11, -14, -9]], rewards: [[8, 6, 3, 5]] },
 *   { beta: 0.01, alpha: 1 },
 * );
 * ```
 * @module
 */
export * from "./lib/losses/mod.ts";
export * from "./lib/data/mod.ts";
export * from "./lib/graph/mod.ts";
export * from "./lib/runtime/mod.ts";
export * from "./lib/serve/mod.ts";
export * from "./lib/model/mod.ts";
export * from "./lib/train/mod.ts";
export * from "./lib/loop/mod.ts";
