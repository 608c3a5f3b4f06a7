/**
 * Our side of the reward-head parity check: for each reward model folder bench/parity/reward_head.py wrote
 * (tiny random `…ForSequenceClassification` models saved by transformers, plus reward_parity.json with a
 * left- and right-padded batch and transformers' reward of each sequence alone), it loads the folder with
 * `loadRewardModelFolder`, runs `buildRewardGraph` on `--device`, and prints one JSON line per model:
 * `max_abs` = max |ours − torch|, `scale` = max |torch|, `ok` when max_abs ≤ tol · scale (default tol 1e-4
 * on the CPU, 1e-2 on CUDA, where fp32 matmuls run in TF32). Exit status 1 when a model fails.
 *
 * Run: `python3 bench/parity/reward_head.py --out DIR && deno run -A bench/parity/reward_ours.ts --dir DIR`
 * @module
 */
import { join } from "node:path";
import { buildRewardGraph, loadRewardModelFolder } from "../../lib/model/reward_head.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import { ModelSession } from "../../lib/runtime/session.ts";
import {
  benchDevice,
  deviceFlag,
  listFlag,
  parseFlags,
  positiveFlag,
  runCli,
  UsageError,
} from "../_common.ts";

export const USAGE = `Usage: deno run -A bench/parity/reward_ours.ts --dir DIR [flags]

Compares our reward head (lib/model/reward_head.ts) with transformers' AutoModelForSequenceClassification,
for the folders bench/parity/reward_head.py wrote into DIR. One JSON line per model.

  --dir DIR                what reward_head.py --out wrote (required)
  --device cpu|cuda|auto   where our graph runs (default cpu)
  --models LIST            llama,qwen2,gpt2,mistral,qwen3,gemma2,phi3 (default: DIR/reward_manifest.json's)
  --tol X                  pass when max_abs ≤ tol · max|torch| (default 1e-4 cpu, 1e-2 cuda)
  --help                   this text`;

export const MODELS = ["llama", "qwen2", "gpt2", "mistral", "qwen3", "gemma2", "phi3"] as const;

const FLAGS = {
  dir: { type: "string" },
  device: { type: "string", default: "cpu" },
  models: { type: "string" },
  tol: { type: "string" },
  help: { type: "boolean", default: false, short: "h" },
} as const;

/** The parsed flags (null: --help). */
export type RewardParityArgs = {
  dir: string;
  device: "cpu" | "cuda" | "auto";
  models?: (typeof MODELS)[number][];
  tol?: number;
};

/** Parses the flags; a wrong one is a {@link UsageError} naming it. */
export function parseRewardParityArgs(argv: string[]): RewardParityArgs | null {
  const f = parseFlags(argv, FLAGS);
  if (f.help) return null;
  if (typeof f.dir !== "string" || f.dir === "") {
    throw new UsageError("--dir is required (reward_head.py's --out)");
  }
  return {
    dir: f.dir,
    device: deviceFlag(f.device),
    models: f.models === undefined ? undefined : listFlag("models", f.models, MODELS),
    tol: f.tol === undefined ? undefined : positiveFlag("tol", f.tol),
  };
}

/** What reward_head.py writes per model. */
export type RewardReference = {
  model: string;
  torch?: string;
  transformers?: string;
  rows: number;
  width: number;
  input_ids: number[][];
  attention_mask: number[][];
  /** transformers' reward of each sequence alone. */
  rewards: number[];
  /** transformers' rewards of the sequences right-padded in one batch. */
  rewards_padded?: number[];
};

/** max |ours − ref|, max |ref|, and whether the first is within `tol` of the second. */
export function compareRewards(
  ours: ArrayLike<number>,
  ref: readonly number[],
  tol: number,
): { max_abs: number; scale: number; ok: boolean } {
  if (ours.length !== ref.length) throw new Error(`${ours.length} rewards for ${ref.length} references`);
  let maxAbs = 0, scale = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(ours[i] - ref[i]);
    maxAbs = Number.isNaN(d) ? Infinity : Math.max(maxAbs, d);
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  return { max_abs: maxAbs, scale, ok: maxAbs <= tol * Math.max(scale, 1e-6) };
}

/** Our rewards for a reference's batch, from the folder beside it. */
export async function ourRewards(
  folderDir: string,
  ref: RewardReference,
  device: "cpu" | "cuda",
): Promise<Float32Array> {
  const folder = await loadRewardModelFolder(folderDir);
  const g = buildRewardGraph(folder.config, storedWeights(folder.stored));
  const session = await ModelSession.create(g.build(), { device, describe: (n) => g.describe(n) });
  try {
    const dims = [ref.rows, ref.width];
    const out = await session.run({
      input_ids: { dtype: "int32", dims, data: Int32Array.from(ref.input_ids.flat()) },
      attention_mask: { dtype: "int32", dims, data: Int32Array.from(ref.attention_mask.flat()) },
    }, ["rewards"]);
    return out.rewards.data as Float32Array;
  } finally {
    await session.release();
  }
}

/** Runs the comparison; returns the exit status. */
export async function main(argv: string[], print: (line: string) => void = console.log): Promise<number> {
  const a = parseRewardParityArgs(argv);
  if (a === null) {
    print(USAGE);
    return 0;
  }
  const device = await benchDevice(a.device);
  const tol = a.tol ?? (device === "cuda" ? 1e-2 : 1e-4);
  let models: string[] | undefined = a.models;
  if (!models) {
    const manifest = JSON.parse(await Deno.readTextFile(join(a.dir, "reward_manifest.json")));
    models = manifest.models as string[];
  }
  let failed = 0;
  for (const model of models) {
    const dir = join(a.dir, model);
    const ref = JSON.parse(await Deno.readTextFile(join(dir, "reward_parity.json"))) as RewardReference;
    const ours = await ourRewards(dir, ref, device);
    const c = compareRewards(ours, ref.rewards, tol);
    if (!c.ok) failed++;
    print(JSON.stringify({
      bench: "reward_parity",
      model,
      device,
      torch: ref.torch,
      transformers: ref.transformers,
      ...c,
      tol,
      ours: Array.from(ours.slice(0, 3)),
      torch_rewards: ref.rewards.slice(0, 3),
    }));
  }
  return failed ? 1 : 0;
}

if (import.meta.main) await runCli(async (argv) => Deno.exit(await main(argv)), USAGE);
