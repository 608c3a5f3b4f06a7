/**
 * The data types every format is normalized to. Training code only ever sees these, whatever
 * the file on disk looked like.
 *
 * @module
 */

/** One chat turn. `role` is usually "system", "user" or "assistant". */
export type Message = { role: string; content: string };

/** A response with its scalar reward (e.g. UltraFeedback's `overall_score`). */
export type ScoredResponse = { content: string; reward: number };

/** x → K ≥ 2 responses with explicit rewards: what InfoNCA and NCA train on. */
export type RewardExample = { prompt: Message[]; responses: ScoredResponse[] };

/** x → (y_w, y_l): what DPO and pairwise NCA train on. */
export type PreferenceExample = { prompt: Message[]; chosen: string; rejected: string };

/** x → y: supervised fine-tuning (the reference model μ). */
export type SftExample = { prompt: Message[]; completion: string };

/** Any normalized example. */
export type Example = RewardExample | PreferenceExample | SftExample;

/** Which normalized type a format produces. */
export type ExampleKind = "reward" | "preference" | "sft";

/**
 * Source formats the loader understands (see formats.ts for the fields each one reads):
 * - `reward`: `prompt` or `messages`, `responses: [{text|content, reward}]`
 * - `ultrafeedback`: openbmb/UltraFeedback raw: `instruction`, `completions[].response`, `.overall_score`
 * - `chendrag`: ChenDRAG/ultrafeedback_reward: `prompt`, `A0..A{K-1}` (conversations), `score_A0..`
 * - `preference`: `prompt`?, `chosen`, `rejected` (strings or conversations)
 * - `sft`: `messages`, or `prompt` + `completion`
 */
export type FormatName = "reward" | "ultrafeedback" | "chendrag" | "preference" | "sft";

/** One raw record from a file, with its 1-based line (JSONL) or row (Parquet) number. */
export type RawRecord = { row: Record<string, unknown>; line: number };
