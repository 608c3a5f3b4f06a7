/**
 * The trainer: `train` runs an alignment (or SFT) pipeline into a run folder; `runDemo` is the offline demo;
 * the pieces (graph losses, chunks, checkpoints, metrics, charts, schedules, options, the data-parallel step
 * and the ranks' plumbing) are exported for pipelines of your own.
 * @module
 */
export { train, type TrainHooks, type TrainResult } from "./trainer.ts";
export { exportPolicy, policyReader } from "./export_policy.ts";
export * from "./run_plan.ts";
// more than one device: the step, what the trainer does as a rank, and --nproc (docs/distributed.md)
export * from "./distributed.ts";
export * from "./rank_data.ts";
export * from "./distributed_run.ts";
export * from "./nproc.ts";
export { resumedConfig, trainingIdentity } from "./resume.ts";
export * from "./option_specs.ts";
export * from "./options.ts";
export * from "./graph_losses.ts";
export * from "./train_graph.ts";
export * from "./chunks.ts";
export * from "./prepare.ts";
export * from "./run_inputs.ts";
export * from "./reference.ts";
export * from "./evaluate.ts";
export * from "./scoring.ts";
export * from "./schedule.ts";
export * from "./memory.ts";
export * from "./metrics_log.ts";
export * from "./charts.ts";
export * from "./bar_chart.ts";
export * from "./svg.ts";
export {
  type CheckpointData,
  type CheckpointMeta,
  hashConfig,
  listCheckpoints,
  loadCheckpoint as loadTrainingCheckpoint,
  loadLatestCheckpoint,
  saveCheckpoint as saveTrainingCheckpoint,
} from "./checkpoint.ts";
export * from "./progress.ts";
export * from "./run_folder.ts";
export { type DemoOptions, type DemoResult, formatDemoTable, runDemo } from "./demo/demo.ts";
