/**
 * Our side of the model parity check: for each model folder that bench/parity/parity.py wrote (a tiny
 * random Llama with GQA, Qwen2, GPT-2, saved by transformers, plus parity.json with a padded batch, the
 * reference log-probs, soft labels, and PyTorch's logits, log-probs, losses and gradients), it
 *
 * - loads the folder with `loadModelFolder` (config.json + safetensors written by PyTorch),
 * - builds our decoder graph with the compared parameters as graph inputs (full-parameter mode: every
 *   other weight is a frozen initializer), the per-sequence log-probs, the DPO or NCA loss of
 *   lib/train/graph_losses.ts and its gradients by lib/graph/autodiff.ts,
 * - runs it on `--device` and prints one JSON line per model × loss with the largest differences.
 *
 * Each comparison reports `max_abs` = max |ours − torch|, `scale` = max |torch|, and `max_rel` = the largest
 * |ours − torch| / |torch| over elements with |torch| ≥ 1e-3 · scale; it passes when
 * max_abs ≤ tol · scale. Logits are compared at real (unpadded) positions only: padded positions score
 * nothing and differ by design (our finite mask bias vs transformers' min-float). The default tolerance is
 * 1e-4 on the CPU and 1e-2 on CUDA, where ONNX Runtime computes fp32 matmuls in TF32.
 *
 * Run: `python3 bench/parity/parity.py --out DIR && deno run -A bench/parity/ours.ts --dir DIR --device cuda`
 * (exit status 1 when a comparison fails).
 * @module
 */
import { join } from "node:path";
import { GraphBuilder, type Value } from "../../lib/graph/builder.ts";
import * as op from "../../lib/graph/ops.ts";
import { gradients } from "../../lib/graph/autodiff.ts";
import { buildDecoder } from "../../lib/model/decoder.ts";
import { sequenceLogProbs } from "../../lib/model/logprobs.ts";
import { loadModelFolder, type ModelFolder, readModelWeights } from "../../lib/model/model_folder.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import { overlayWeights } from "../../lib/model/weights.ts";
import { type Device, type HostTensor, ModelSession } from "../../lib/runtime/session.ts";
import { graphLoss } from "../../lib/train/graph_losses.ts";
import {
  benchDevice,
  deviceFlag,
  listFlag,
  ortVersion,
  parseFlags,
  positiveFlag,
  runCli,
  UsageError,
} from "../_common.ts";

export const USAGE = `Usage: deno run -A bench/parity/ours.ts --dir DIR [flags]

Compares our decoder's logits, log-probs, DPO/NCA losses and gradients with PyTorch's, for the
model folders bench/parity/parity.py wrote into DIR. One JSON line per model × loss.

  --dir DIR                what parity.py --out wrote (required)
  --device cpu|cuda|auto   where our graphs run (default cpu)
  --models LIST            llama,qwen2,gpt2,mistral,qwen3,gemma2,gemma3_text,phi3
                           (default: those in DIR/manifest.json)
  --tol X                  pass when max_abs ≤ tol · max|torch| (default 1e-4 cpu, 1e-2 cuda)
  --help                   this text`;

const FLAGS = {
  dir: { type: "string" },
  device: { type: "string", default: "cpu" },
  models: { type: "string" },
  tol: { type: "string" },
  help: { type: "boolean", default: false, short: "h" },
} as const;

const MODELS = ["llama", "qwen2", "gpt2", "mistral", "qwen3", "gemma2", "gemma3_text", "phi3"] as const;

/** A tensor as parity.json stores it. */
export type FlatTensor = { shape: number[]; data: number[] };

/** What parity.py writes per model (parity.json). */
export type ParityReference = {
  model: string;
  torch?: string;
  transformers?: string;
  rows: number;
  width: number;
  input_ids: number[][];
  attention_mask: number[][];
  labels: number[][];
  logits: FlatTensor;
  logps: FlatTensor;
  losses: Record<string, {
    beta: number;
    k: number;
    ref_logps: FlatTensor;
    soft_labels?: FlatTensor;
    loss: number;
    grads: Record<string, FlatTensor>;
  }>;
};

/** Differences of one tensor. */
export type Diff = { max_abs: number; max_rel: number; scale: number; ok: boolean };

/** Compares `ours` with the reference `ref` (optionally only where `keep[i]`). */
export function compare(
  ours: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: number,
  keep?: boolean[],
): Diff {
  if (ours.length !== ref.length) {
    throw new Error(`size mismatch: ours ${ours.length} values, torch ${ref.length}`);
  }
  let scale = 0;
  for (let i = 0; i < ref.length; i++) if (!keep || keep[i]) scale = Math.max(scale, Math.abs(ref[i]));
  let maxAbs = 0, maxRel = 0;
  for (let i = 0; i < ref.length; i++) {
    if (keep && !keep[i]) continue;
    const d = Math.abs(ours[i] - ref[i]);
    if (!(d <= maxAbs)) maxAbs = d; // NaN propagates
    if (Math.abs(ref[i]) >= 1e-3 * scale && scale > 0) {
      const r = d / Math.abs(ref[i]);
      if (!(r <= maxRel)) maxRel = r;
    }
  }
  const sig = (x: number) => Number(x.toPrecision(4));
  return {
    max_abs: sig(maxAbs),
    max_rel: sig(maxRel),
    scale: sig(scale),
    ok: maxAbs <= tol * Math.max(scale, 1e-30),
  };
}

/** What our graph computes for one model × loss. */
export type OurOutputs = {
  logits: Float32Array;
  logps: Float32Array;
  loss: number;
  grads: Record<string, Float32Array>;
};

/** Builds and runs our graph for one loss of a reference. */
export async function computeOurs(
  folder: ModelFolder,
  ref: ParityReference,
  lossName: string,
  device: Device,
): Promise<OurOutputs> {
  const spec = ref.losses[lossName];
  if (lossName !== "dpo" && lossName !== "nca") throw new Error(`unknown loss "${lossName}" in parity.json`);
  const cfg = folder.config;
  const R = ref.rows, T = ref.width, K = spec.k, P = R / K;
  const g = new GraphBuilder(`parity-${ref.model}-${lossName}`);
  const inputIds = g.input("input_ids", "int32", [R, T]);
  const attentionMask = g.input("attention_mask", "int32", [R, T]);
  const labels = g.input("labels", "int32", [R, T]);
  const reference = g.input("ref_logps", "float32", [P, K]);
  const soft = spec.soft_labels ? g.input("soft_labels", "float32", [P, K]) : undefined;
  const names = Object.keys(spec.grads);
  for (const n of names) {
    if (!folder.stored.has(n)) {
      throw new Error(`${ref.model}: our loader has no weight "${n}" (torch compared it)`);
    }
  }
  const values = await readModelWeights(folder, names);
  const params: Record<string, Value> = {};
  for (const n of names) params[n] = g.input(n, "float32", values.get(n)!.shape);
  // the compared parameters are inputs (trainable, as in full fine-tuning); the rest are read by ONNX
  // Runtime from the folder's safetensors files, as training reads them
  const weights = overlayWeights(params, storedWeights(folder.stored));
  const { logits } = buildDecoder(g, cfg, { inputIds, attentionMask }, { weights });
  const lp = sequenceLogProbs(logits, labels);
  const { loss } = graphLoss(lossName, {
    policy: op.reshape(lp.sums, [-1, K]),
    reference,
    labels: soft,
  }, { beta: spec.beta, k: K });
  const grads = gradients(loss, names.map((n) => params[n]));
  g.output(logits, "logits");
  g.output(lp.sums, "logps");
  g.output(loss, "loss");
  grads.forEach((d, i) => g.output(d, `grad:${names[i]}`));

  const session = await ModelSession.create(g.build(), { device, describe: (n) => g.describe(n) });
  try {
    const i32 = (rows: number[][]): HostTensor => ({
      dtype: "int32",
      dims: [R, T],
      data: Int32Array.from(rows.flat()),
    });
    const f32 = (t: FlatTensor): HostTensor => ({
      dtype: "float32",
      dims: t.shape,
      data: Float32Array.from(t.data),
    });
    const feeds: Record<string, HostTensor> = {
      input_ids: i32(ref.input_ids),
      attention_mask: i32(ref.attention_mask),
      labels: i32(ref.labels),
      ref_logps: f32(spec.ref_logps),
    };
    if (spec.soft_labels) feeds.soft_labels = f32(spec.soft_labels);
    for (const n of names) {
      feeds[n] = { dtype: "float32", dims: values.get(n)!.shape, data: values.get(n)!.data };
    }
    const out = await session.run(feeds);
    const get = (name: string) => out[name].data as Float32Array;
    return {
      logits: get("logits"),
      logps: get("logps"),
      loss: get("loss")[0],
      grads: Object.fromEntries(names.map((n) => [n, get(`grad:${n}`)])),
    };
  } finally {
    await session.release();
  }
}

/** One line of output. */
export type ParityResult = Record<string, unknown> & {
  bench: "parity";
  model: string;
  loss: string;
  ok: boolean;
};

/** Compares one model × loss. */
export function compareAll(ref: ParityReference, lossName: string, ours: OurOutputs, tol: number) {
  const spec = ref.losses[lossName];
  const V = ref.logits.shape[2];
  const realMask = ref.attention_mask.flat().flatMap((m) => new Array(V).fill(m !== 0));
  const logits = compare(ours.logits, ref.logits.data, tol, realMask);
  const logps = compare(ours.logps, ref.logps.data, tol);
  const loss = compare([ours.loss], [spec.loss], tol);
  const grads: Record<string, Diff> = {};
  for (const [n, t] of Object.entries(spec.grads)) grads[n] = compare(ours.grads[n], t.data, tol);
  let worst = { what: "logits", rel: logits.max_abs / Math.max(logits.scale, 1e-30) };
  const consider = (what: string, d: Diff) => {
    const rel = d.max_abs / Math.max(d.scale, 1e-30);
    if (!(rel <= worst.rel)) worst = { what, rel };
  };
  consider("logps", logps);
  consider("loss", loss);
  for (const [n, d] of Object.entries(grads)) consider(`grad ${n}`, d);
  const ok = logits.ok && logps.ok && loss.ok && Object.values(grads).every((d) => d.ok);
  return {
    ok,
    loss_torch: spec.loss,
    loss_ours: ours.loss,
    logits,
    logps,
    loss_diff: loss,
    grads,
    worst: { what: worst.what, err_over_scale: Number(worst.rel.toPrecision(4)) },
  };
}

/** Runs the comparison for every model in `--dir`; prints and returns one record per model × loss. */
export async function main(
  argv: string[],
  print: (line: string) => void = console.log,
): Promise<ParityResult[]> {
  const f = parseFlags(argv, FLAGS);
  if (f.help) {
    print(USAGE);
    return [];
  }
  if (typeof f.dir !== "string" || f.dir === "") {
    throw new UsageError("--dir is required (what parity.py --out wrote)");
  }
  const dir = f.dir;
  const req = deviceFlag(f.device);
  let models: string[];
  if (f.models !== undefined) models = listFlag("models", f.models, MODELS);
  else {
    try {
      models = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json"))).models;
    } catch (e) {
      throw new Error(
        `${join(dir, "manifest.json")}: ${
          (e as Error).message
        } (run python3 bench/parity/parity.py --out ${dir} first)`,
      );
    }
  }
  const device = await benchDevice(req);
  const tol = f.tol === undefined ? (device === "cuda" ? 1e-2 : 1e-4) : positiveFlag("tol", f.tol);
  const out: ParityResult[] = [];
  for (const model of models) {
    const folderPath = join(dir, model);
    const folder = await loadModelFolder(folderPath);
    const ref: ParityReference = JSON.parse(await Deno.readTextFile(join(folderPath, "parity.json")));
    for (const lossName of Object.keys(ref.losses)) {
      const ours = await computeOurs(folder, ref, lossName, device);
      const rec: ParityResult = {
        bench: "parity",
        model,
        loss: lossName,
        device,
        ort: ortVersion(),
        torch: ref.torch ?? null,
        transformers: ref.transformers ?? null,
        tol,
        ...compareAll(ref, lossName, ours, tol),
      };
      print(JSON.stringify(rec));
      out.push(rec);
    }
  }
  return out;
}

if (import.meta.main) {
  await runCli(async (argv) => {
    const results = await main(argv);
    if (results.some((r) => !r.ok)) {
      console.error(`parity: ${results.filter((r) => !r.ok).length} of ${results.length} comparisons failed`);
      Deno.exit(1);
    }
  }, USAGE);
}
