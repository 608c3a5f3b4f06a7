/**
 * A tiny servable world for the server tests, built in a temp folder in well under a second:
 *
 * ```
 * root/
 *   tokenizer/                       the test tokenizer (WordPiece, Zephyr-style chat template)
 *   base/                            the "SFT" reference model: a tiny random Llama, exported for serving
 *   runs/demo-20260101-120000/       a run folder as the trainer writes it
 *     config.json  reference.json  metrics.jsonl  summary.json
 *     policy/                        the "aligned" model: the base weights, perturbed
 * ```
 *
 * The model has a 4096-token context so that a generation can run long enough to test the server while
 * it is busy.
 * @module
 */
import { join } from "node:path";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { exportForServing } from "../../lib/model/export.ts";
import { gaussian, initWeights } from "../../lib/model/init.ts";
import type { WeightMap } from "../../lib/model/weights.ts";
import { mulberry32 } from "../../lib/data/random.ts";
import { type StartOptions, startServer } from "../../lib/serve/server.ts";
import type { RunningServer } from "../../lib/serve/server.ts";
import { writeTinyTokenizer } from "../fixtures/tokenizer.ts";

/** The run's β and α (what /v1/logprobs defaults to). */
export const RUN_BETA = 0.5;
export const RUN_ALPHA = 0.25;
/** Steps in the fake metrics log. */
export const RUN_STEPS = 40;
export const RUN_NAME = "demo-20260101-120000";

/** Paths of the built fixture. */
export type Fixture = {
  root: string;
  tokenizerDir: string;
  baseDir: string;
  runsDir: string;
  runDir: string;
  policyDir: string;
  eosId: number;
  cleanup(): Promise<void>;
};

/** The tiny model's config: the test tokenizer's 128 tokens, EOS = `<eos>` (1), no BOS. */
export const CFG = tinyConfig("llama", {
  vocabSize: 128,
  maxPositions: 4096,
  bosTokenId: null,
  eosTokenId: 1,
});

function perturbed(weights: WeightMap, seed: number, std: number): WeightMap {
  const normal = gaussian(mulberry32(seed));
  const out: WeightMap = new Map();
  for (const [name, t] of weights) {
    out.set(name, { shape: [...t.shape], data: t.data.map((v) => v + std * normal()) });
  }
  return out;
}

/** Synthetic training metrics with TRL's names: NCA-like curves (chosen rewards stay up). */
function metricsLines(): string {
  const lines: string[] = [];
  for (let step = 1; step <= RUN_STEPS; step++) {
    const t = step / RUN_STEPS;
    const rec: Record<string, number> = {
      step,
      epoch: t,
      loss: 1.4 * Math.exp(-2 * t) + 0.3 + 0.02 * Math.sin(step),
      "rewards/chosen": 0.05 * t,
      "rewards/rejected": -0.6 * t,
      "rewards/margins": 0.65 * t,
      "rewards/accuracies": Math.min(1, 0.5 + t),
      "logps/chosen": -20 + 2 * t,
      "logps/rejected": -22 - 8 * t,
      lr: 5e-6,
    };
    if (step % 10 === 0) rec["eval/loss"] = 1.3 * Math.exp(-1.8 * t) + 0.35;
    lines.push(JSON.stringify(rec));
  }
  return lines.join("\n") + "\n";
}

/** Builds the fixture in a fresh temp folder. */
export async function buildFixture(): Promise<Fixture> {
  const root = await Deno.makeTempDir({ prefix: "serve_test_" });
  const tokenizerDir = join(root, "tokenizer");
  const { eosId } = await writeTinyTokenizer(tokenizerDir, { chatTemplate: true });
  const baseDir = join(root, "base");
  const base = initWeights(CFG, { seed: 1, std: 0.3, normStd: 0.1 });
  await exportForServing(baseDir, { cfg: CFG, weights: base, tokenizerDir });

  const runsDir = join(root, "runs");
  const runDir = join(runsDir, RUN_NAME);
  const policyDir = join(runDir, "policy");
  await exportForServing(policyDir, { cfg: CFG, weights: perturbed(base, 2, 0.05), tokenizerDir });
  const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";
  await Deno.writeTextFile(
    join(runDir, "config.json"),
    json({ model: baseDir, loss: "nca", beta: RUN_BETA, alpha: RUN_ALPHA, k: 4, name: "demo", seed: 0 }),
  );
  await Deno.writeTextFile(
    join(runDir, "reference.json"),
    json({ model: baseDir, modelType: "llama", reference: "the base weights", fingerprint: "test" }),
  );
  await Deno.writeTextFile(join(runDir, "metrics.jsonl"), metricsLines());
  await Deno.writeTextFile(
    join(runDir, "summary.json"),
    json({ records: RUN_STEPS, steps: RUN_STEPS, loss: "nca" }),
  );
  return {
    root,
    tokenizerDir,
    baseDir,
    runsDir,
    runDir,
    policyDir,
    eosId,
    cleanup: () => Deno.remove(root, { recursive: true }),
  };
}

/** Starts a quiet server on a free port of 127.0.0.1 (one ONNX thread, so parallel test files share cores). */
export function serve(opts: StartOptions): Promise<RunningServer> {
  return startServer({ port: 0, host: "127.0.0.1", quiet: true, threads: 1, ...opts });
}
