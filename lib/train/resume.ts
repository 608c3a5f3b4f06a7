/**
 * Resuming a run safely: the saved configuration, with only the settings that may change taken from the
 * command (the option table's `resume: "may-change"`), and the inputs compared with what the checkpoint
 * recorded — data and model folders — so a resume on changed inputs is refused, saying what changed, unless
 * `--allow-changed-inputs`.
 * @module
 */
import type { ModelFolder } from "../model/model_folder.ts";
import { compareFolder, type DataDigest, folderDigest, type InputsDigest } from "./inputs_digest.ts";
import { OPTION_SPECS, type TrainConfig } from "./option_specs.ts";
import { defaultTrainOptions, givenOptions, RESUME_MAY_CHANGE } from "./options.ts";
import type { RunInputs } from "./run_inputs.ts";
import { type RunPaths, runPaths } from "./run_folder.ts";

export async function ensureRun(dir: string): Promise<RunPaths> {
  await Deno.mkdir(dir, { recursive: true });
  return runPaths(dir);
}

/**
 * The configuration of a resumed run: the saved one whole, with the settings given now that may change
 * (see {@link RESUME_MAY_CHANGE}). A setting that changes the math and differs from the saved value is
 * refused, naming both. "Given now": the flags and `--config` keys (parseTrainOptions records them); for a
 * config built in code, every value that is not the default.
 */
export async function resumedConfig(run: RunPaths, now: TrainConfig): Promise<TrainConfig> {
  let saved: TrainConfig;
  try {
    saved = JSON.parse(await Deno.readTextFile(run.config));
  } catch {
    throw notARunFolder(run);
  }
  const defaults = defaultTrainOptions() as Record<string, unknown>;
  const nowAll = now as unknown as Record<string, unknown>;
  const given = givenOptions(now) ??
    new Set(Object.keys(now).filter((k) => !sameValue(nowAll[k], defaults[k])));
  const out: Record<string, unknown> = { ...saved };
  const refused: string[] = [];
  for (const key of given) {
    const v = nowAll[key], old = (saved as unknown as Record<string, unknown>)[key];
    if (v === undefined) continue;
    if (RESUME_MAY_CHANGE.has(key)) out[key] = v;
    else if (!sameValue(v, old)) {
      refused.push(`${flagOf(key)} ${JSON.stringify(v)} (the run has ${JSON.stringify(old ?? null)})`);
    }
  }
  if (refused.length) {
    throw new Error(
      `--resume ${run.dir}: a resumed run keeps the settings it started with; these differ: ${
        refused.join(", ")
      }. ` +
        `Leave them out, or start a new run to change them`,
    );
  }
  return out as TrainConfig;
}

/**
 * The digest of the run's inputs: `data`, and the model's (and a `--reference` model's) config and weight
 * files, hashed in the background; `known` (the checkpoint's) spares hashing files that did not change.
 */
export function digestInputs(
  cfg: TrainConfig,
  p: RunInputs,
  ref: ModelFolder | undefined,
  data: DataDigest,
  known?: InputsDigest,
): Promise<InputsDigest> {
  const files = (m: ModelFolder) => [...m.stored.values()].map((t) => t.file);
  return (async () => ({
    data,
    model: await folderDigest(cfg.model, files(p.model), known?.model),
    reference: ref ? await folderDigest(ref.dir, files(ref), known?.reference) : undefined,
  }))();
}

/** How the model folders changed from `then` to `now`, in words. */
export function compareModels(then: InputsDigest, now: InputsDigest): string[] {
  return [
    ...compareFolder("the model", then.model, now.model),
    ...(then.reference && now.reference ? compareFolder("the reference", then.reference, now.reference) : []),
  ];
}

/** Refuses to resume on `changes` to the inputs since `checkpoint`, unless `--allow-changed-inputs`. */
export function refuseChanged(
  changes: string[],
  run: RunPaths,
  checkpoint: string,
  cfg: TrainConfig,
  log: (line: string) => void,
): void {
  if (!changes.length) return;
  if (cfg.allowChangedInputs) {
    log(
      `note: resuming from ${checkpoint} on changed inputs (--allow-changed-inputs): ${changes.join("; ")}`,
    );
    return;
  }
  throw new Error(
    `--resume ${run.dir}: the inputs changed since ${checkpoint}: ${changes.join("; ")}. The run would ` +
      `continue on other inputs than it started with: restore them, start a new run, or pass ` +
      `--allow-changed-inputs to continue anyway`,
  );
}

export function notARunFolder(run: RunPaths): Error {
  return new Error(`--resume ${run.dir}: no readable config.json there (is it a run folder?)`);
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function flagOf(key: string): string {
  return `--${OPTION_SPECS.find((s) => s.key === key)?.flag ?? key}`;
}

/** The settings that define a run's results (checkpoints from another identity are refused). */
export function trainingIdentity(cfg: TrainConfig): Record<string, unknown> {
  const skip = new Set([...RESUME_MAY_CHANGE, "demo", "compare"]);
  return Object.fromEntries(Object.entries(cfg).filter(([k]) => !skip.has(k)));
}
