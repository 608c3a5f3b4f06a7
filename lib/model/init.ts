/**
 * Random weights for a config: tiny models for tests and the demo, seeded and deterministic.
 *
 * Follows transformers' `_init_weights`: linear and embedding weights ~ N(0, std²) (initializer_range,
 * 0.02), biases 0, norms the identity (weights 1, Gemma's 0; LayerNorm biases 0). Tests that must see every parameter at work can
 * perturb norms and biases too.
 * @module
 */
import { mulberry32, type Rng } from "../data/random.ts";
import type { ModelConfig } from "./config.ts";
import type { WeightMap } from "./weights.ts";
import { expectedTensors } from "./weights_names.ts";

/** Options for {@link initWeights}. */
export type InitOptions = {
  seed?: number;
  /** Standard deviation of weight matrices and embeddings. Default 0.02 (HF's initializer_range). */
  std?: number;
  /** Standard deviation of biases (default 0, as HF). */
  biasStd?: number;
  /** Norm weights are 1 + N(0, normStd²) (default 0: exactly 1, as HF). */
  normStd?: number;
};

/** A normal sampler (Box–Muller over a uniform source). */
export function gaussian(rng: Rng): () => number {
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = rng();
    const r = Math.sqrt(-2 * Math.log(u)), t = 2 * Math.PI * rng();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
}

function isNorm(name: string): boolean {
  return /(^|\.)(ln_\d|ln_f|\w*norm|\w+_layernorm)\.(weight|bias)$/.test(name);
}

/** Every tensor of `cfg` (canonical HF names and shapes), randomly initialized. */
export function initWeights(cfg: ModelConfig, opts: InitOptions = {}): WeightMap {
  const normal = gaussian(mulberry32(opts.seed ?? 0));
  const std = opts.std ?? 0.02, biasStd = opts.biasStd ?? 0, normStd = opts.normStd ?? 0;
  const out: WeightMap = new Map();
  // Gemma stores norm weights as w − 1 (its norms scale by 1 + w), so "exactly 1" is 0 there
  const one = cfg.family === "gemma" ? 0 : 1;
  for (const { name, shape } of expectedTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (isNorm(name)) {
      const base = name.endsWith(".weight") ? one : 0;
      for (let i = 0; i < n; i++) data[i] = base + normStd * normal();
    } else {
      const s = name.endsWith(".bias") ? biasStd : std;
      for (let i = 0; i < n; i++) data[i] = s * normal();
    }
    out.set(name, { shape: [...shape], data });
  }
  return out;
}
