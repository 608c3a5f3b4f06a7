/**
 * The paper's loop for a user's own model: sample K responses per prompt (`deno task sample`), score them,
 * train on the scored responses. A plain list of the loop's modules.
 * @module
 */

export * from "./prompts.ts";
export * from "./sample.ts";
export * from "./sample_settings.ts";
export * from "./sample_rows.ts";
export * from "./score.ts";
export * from "./rank_shards.ts";
export * from "./score_shards.ts";
// lib/train already exports a `Scorer` (a log-prob session): the response scorer's interface is re-exported
// as `ResponseScorer` here (scorers/types.ts names it `Scorer`)
export type { ScoreItem, Scorer as ResponseScorer, ScorerKind, SkipOptions } from "./scorers/types.ts";
export { failItem, ScoreError } from "./scorers/types.ts";
export * from "./scorers/reward_model.ts";
export * from "./scorers/reward_fn.ts";
export * from "./scorers/judge.ts";
export * from "./eval.ts";
export * from "./scorers/from_flags.ts";
export * from "./sample_flags.ts";
