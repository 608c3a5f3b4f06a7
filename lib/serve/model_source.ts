/**
 * What `--model` points at, resolved: a training run folder (runs/<name>-<stamp>/, whose `policy/` is served
 * and whose `reference.json` names the reference model), an exported model folder (`onnx/model.onnx`
 * beside a Hugging Face config) or a plain Hugging Face folder (its decoder built at load, as `sample` does:
 * lib/model/open.ts). With no `--model`, the latest demo run. The run's β and α become the
 * inspection endpoint's defaults, so its implicit rewards are the ones the trainer optimized.
 * @module
 */
import { join, resolve } from "node:path";
import { findLatestRun, runPaths } from "../train/run_folder.ts";
import { locateModel, type ModelKind, type ModelLocation } from "../model/open.ts";
import { isFile, readJsonObject } from "../files.ts";

/** β and α when the model was not trained here (TRL's DPO default β; α = 1, plain softmax labels). */
export const FALLBACK_BETA = 0.1;
export const FALLBACK_ALPHA = 1;

/** The served model and where everything about it lives. */
export type ModelSource = {
  /** The name clients pass as `model`: the run folder's or the model folder's name. */
  id: string;
  /** The Hugging Face folder that is served (config, tokenizer, safetensors; `onnx/model.onnx` when exported). */
  modelDir: string;
  /** What `--model` was. */
  kind: ModelKind;
  /** The model as lib/model/open.ts located it (its config read, a plain folder's weights checked). */
  location: ModelLocation;
  /** The run folder, when serving a run. */
  runDir: string | null;
  /** The reference model's folder (Hugging Face layout), or null when there is none. */
  referenceDir: string | null;
  /** Where the reference came from. */
  referenceFrom: "--reference" | "reference.json" | "config.json" | null;
  /** Implicit-reward scale and soft-label temperature: the run's, else the fallbacks. */
  beta: number;
  alpha: number;
  /** The run's loss ("nca", "infonca", "dpo", …), when known. */
  loss: string | null;
  /**
   * The chat template variables the run trained with (its `chatTemplateKwargs`, e.g. Qwen3's
   * `enable_thinking`), the default of every request's `chat_template_kwargs`, so prompts and candidates
   * render as in training; null when none.
   */
  templateKwargs: Record<string, unknown> | null;
  /** The run's config.json, when serving a run. */
  trainConfig: Record<string, unknown> | null;
  /** Things worth telling the user at start-up (a recorded reference that is gone, …). */
  notices: string[];
};

/** Where to look and what the user asked for. */
export type ModelSourceOptions = {
  /** `--model`: a run folder, an exported model folder or a Hugging Face folder. Default: the latest `demo-*` run in `runsDir`. */
  model?: string;
  /** `--reference`: a model folder to use as the reference instead of what the run recorded. */
  reference?: string;
  /** Where runs are (default "runs"). */
  runsDir?: string;
};

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function positive(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : undefined;
}

function nonNegative(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : undefined;
}

/** Resolves `--model` / `--reference` into a {@link ModelSource}; throws saying what was expected where. */
export async function resolveModelSource(o: ModelSourceOptions = {}): Promise<ModelSource> {
  const runsDir = o.runsDir ?? "runs";
  let given = o.model;
  if (given === undefined) {
    given = await findLatestRun(runsDir, "demo");
    if (given === undefined) {
      throw new Error(
        `no --model given and no demo run in ${resolve(runsDir)}: run \`deno task train\` first, ` +
          `or pass --model <run folder or model folder>`,
      );
    }
  }
  const located = await locateModel(given);
  const dir = located.given;
  const run = runPaths(dir);
  const notices: string[] = [];
  const modelDir = located.dir;
  const runDir = located.kind === "run" ? dir : null;

  const trainConfig = runDir ? await readJsonObject(run.config) : null;
  const referenceJson = runDir ? await readJsonObject(run.reference) : null;
  let referenceDir: string | null = null;
  let referenceFrom: ModelSource["referenceFrom"] = null;
  if (o.reference !== undefined) {
    referenceDir = resolve(o.reference);
    referenceFrom = "--reference";
    if (!(await isFile(join(referenceDir, "config.json")))) {
      throw new Error(
        `--reference ${o.reference}: no config.json there (a Hugging Face model folder is expected)`,
      );
    }
  } else {
    const recorded: [string, ModelSource["referenceFrom"]][] = [];
    if (typeof referenceJson?.model === "string") recorded.push([referenceJson.model, "reference.json"]);
    if (typeof trainConfig?.model === "string") recorded.push([resolve(trainConfig.model), "config.json"]);
    for (const [path, from] of recorded) {
      if (await isFile(join(path, "config.json"))) {
        referenceDir = path;
        referenceFrom = from;
        break;
      }
      notices.push(`the reference model recorded in ${from} (${path}) is not there any more`);
    }
    if (runDir && referenceDir === null) {
      notices.push(
        "no reference model: /v1/logprobs reports policy log-probs only (pass --reference <folder>)",
      );
    }
  }

  return {
    id: located.name,
    modelDir,
    kind: located.kind,
    location: located,
    runDir,
    referenceDir,
    referenceFrom,
    beta: positive(trainConfig?.beta) ?? FALLBACK_BETA,
    alpha: nonNegative(trainConfig?.alpha) ?? FALLBACK_ALPHA,
    loss: typeof trainConfig?.loss === "string" ? trainConfig.loss : null,
    trainConfig,
    templateKwargs: isRecord(trainConfig?.chatTemplateKwargs) ? trainConfig.chatTemplateKwargs : null,
    notices,
  };
}
