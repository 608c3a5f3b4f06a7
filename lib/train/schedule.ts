/**
 * Learning-rate schedules as pure functions of the step, matching Hugging Face `transformers`
 * (`get_cosine_schedule_with_warmup`, `get_linear_schedule_with_warmup`,
 * `get_constant_schedule_with_warmup`, and `get_cosine_with_min_lr_schedule_with_warmup` for `minLr`), so a
 * run here and a TRL run with the same settings use the same learning rate at every optimizer step.
 *
 * Steps are 0-based like HF's `LambdaLR`: optimizer step `s` uses `lr · factor(s)`, so with warmup the very
 * first step has learning rate 0, and warmup reaches the full rate at step `warmupSteps`. Being pure, the
 * schedule needs no state in a checkpoint: resuming at step `s` gives the same rates.
 *
 * @module
 */

/** The schedule shapes users know from `transformers`' `lr_scheduler_type`. */
export type ScheduleKind = "cosine" | "linear" | "constant";

/** All schedule kinds, for option parsing and help texts. */
export const scheduleKinds: readonly ScheduleKind[] = Object.freeze(["cosine", "linear", "constant"]);

/**
 * A schedule's settings. Give `warmupSteps` or `warmupRatio`; when both are set `warmupSteps` wins, as in
 * `transformers.TrainingArguments.get_warmup_steps`.
 */
export type ScheduleConfig = {
  kind: ScheduleKind;
  /** Peak learning rate (after warmup). */
  lr: number;
  /** Total optimizer steps of the run (HF's `num_training_steps`). */
  totalSteps: number;
  /** Warmup length in steps. */
  warmupSteps?: number;
  /** Warmup as a fraction of `totalSteps`, rounded up (HF: `ceil(total · ratio)`). */
  warmupRatio?: number;
  /** Floor the decay at this rate (cosine and linear; HF's `min_lr`). Default 0. */
  minLr?: number;
};

function fail(message: string): never {
  throw new RangeError(`learning-rate schedule: ${message}`);
}

/** Check a config once, with messages that name the field; every entry point calls it. */
export function validateSchedule(cfg: ScheduleConfig): void {
  if (!(scheduleKinds as readonly string[]).includes(cfg.kind)) {
    fail(`kind must be one of ${scheduleKinds.join(", ")}, got ${JSON.stringify(cfg.kind)}`);
  }
  if (!Number.isFinite(cfg.lr) || cfg.lr < 0) fail(`lr must be a finite number ≥ 0, got ${cfg.lr}`);
  if (!Number.isSafeInteger(cfg.totalSteps) || cfg.totalSteps < 1) {
    fail(`totalSteps must be an integer ≥ 1, got ${cfg.totalSteps}`);
  }
  if (cfg.warmupSteps !== undefined && (!Number.isSafeInteger(cfg.warmupSteps) || cfg.warmupSteps < 0)) {
    fail(`warmupSteps must be an integer ≥ 0, got ${cfg.warmupSteps}`);
  }
  if (
    cfg.warmupRatio !== undefined &&
    (!Number.isFinite(cfg.warmupRatio) || cfg.warmupRatio < 0 || cfg.warmupRatio > 1)
  ) {
    fail(`warmupRatio must be in [0, 1], got ${cfg.warmupRatio}`);
  }
  const minLr = cfg.minLr ?? 0;
  if (!Number.isFinite(minLr) || minLr < 0 || minLr > cfg.lr) {
    fail(`minLr must be in [0, lr = ${cfg.lr}], got ${cfg.minLr}`);
  }
}

/** Warmup length in steps: `warmupSteps` if given, else `ceil(totalSteps · warmupRatio)` as HF computes it, else 0. */
export function warmupStepsOf(cfg: ScheduleConfig): number {
  if (cfg.warmupSteps !== undefined) return cfg.warmupSteps;
  // Exactly HF's float arithmetic, artifacts included (100 · 0.07 = 7.000000000000001 → 8), so step counts match.
  if (cfg.warmupRatio !== undefined) return Math.ceil(cfg.totalSteps * cfg.warmupRatio);
  return 0;
}

/**
 * The multiplier of the peak rate at a 0-based step, the `lr_lambda` of HF's schedulers. Past `totalSteps`
 * the factor stays at its final value (HF's cosine would rise again there; a run never gets that far).
 */
export function lrFactor(step: number, cfg: ScheduleConfig): number {
  const warmup = warmupStepsOf(cfg);
  if (step < warmup) return step / Math.max(1, warmup);
  if (cfg.kind === "constant") return 1;
  const progress = Math.min(1, (step - warmup) / Math.max(1, cfg.totalSteps - warmup));
  const decay = cfg.kind === "cosine"
    ? Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)))
    : Math.max(0, 1 - progress);
  // HF's min-lr variant: factor · (1 − minRate) + minRate, applied after warmup only.
  const minRate = cfg.lr > 0 ? (cfg.minLr ?? 0) / cfg.lr : 0;
  return decay * (1 - minRate) + minRate;
}

/**
 * The learning rate of optimizer step `step` (0-based).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const cosine = { kind: "cosine", lr: 5e-6, warmupSteps: 10, totalSteps: 100 } as const;
 * assert.equal(lrAt(0, cosine), 0); // warm-up from 0
 * assert.equal(lrAt(10, cosine), 5e-6); // the peak, then down to 0 at step 100
 * ```
 */
export function lrAt(step: number, cfg: ScheduleConfig): number {
  validateSchedule(cfg);
  if (!Number.isSafeInteger(step) || step < 0) fail(`step must be an integer ≥ 0, got ${step}`);
  return cfg.lr * lrFactor(step, cfg);
}

/**
 * Learning rates of steps `fromStep .. fromStep + count − 1`, as fp32 so the trainer can feed them straight
 * to a graph chunk that runs `count` optimizer steps.
 */
export function lrsFor(fromStep: number, count: number, cfg: ScheduleConfig): Float32Array {
  validateSchedule(cfg);
  if (!Number.isSafeInteger(fromStep) || fromStep < 0) {
    fail(`fromStep must be an integer ≥ 0, got ${fromStep}`);
  }
  if (!Number.isSafeInteger(count) || count < 0) fail(`count must be an integer ≥ 0, got ${count}`);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = cfg.lr * lrFactor(fromStep + i, cfg);
  return out;
}
