/**
 * Next-token selection for generation: log-softmax, temperature, top-k, top-p (nucleus) and seeded
 * sampling over one row of logits. Pure functions over plain arrays, so generation (and a server's
 * `logprobs`) can be tested without a model.
 *
 * Filters apply in the order `transformers` applies its logits warpers: temperature, then top-k, then
 * top-p on what is left; a repetition penalty ({@link applyRepetitionPenalty}) comes before them, as its
 * logits processor does. The log-probabilities reported for chosen tokens and alternatives always come
 * from the model's own distribution (temperature 1, nothing filtered), as OpenAI's `logprobs` are.
 *
 * @module
 */
import { mulberry32, type Rng } from "../data/random.ts";
import { logSumExp, softmax } from "../losses/stable.ts";

export { mulberry32, type Rng };

/** How to pick the next token. `temperature: 0` means greedy (argmax). */
export type SamplingParams = {
  /** Divides the logits; 0 picks the most likely token. Default 1. */
  temperature?: number;
  /** Keep the smallest set of most likely tokens whose probability mass reaches `topP` (0 < p ≤ 1). */
  topP?: number;
  /** Keep only the `topK` most likely tokens (0 or undefined: no limit). */
  topK?: number;
};

/** A token with its log-probability. */
export type TokenIdLogprob = { token: number; logprob: number };

/** Index of the largest value (the first one on ties, like `torch.argmax`). NaNs are never chosen. */
export function argmax(values: ArrayLike<number>): number {
  let best = -1, bestV = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v > bestV || (best < 0 && v === -Infinity)) {
      best = i;
      bestV = v;
    }
  }
  if (best < 0) throw new RangeError("argmax of an empty (or all-NaN) row");
  return best;
}

/**
 * Indices of the `k` largest values, largest first (lower index first on ties). O(n log k): a bounded
 * heap, so a 150k-token vocabulary costs one pass, not a sort.
 */
export function topKIndices(values: ArrayLike<number>, k: number): number[] {
  const n = values.length;
  k = Math.min(Math.max(0, Math.floor(k)), n);
  if (k === 0) return [];
  // "a ranks below b": smaller value, or equal value and larger index.
  const below = (a: number, b: number) => values[a] < values[b] || (values[a] === values[b] && a > b);
  const heap: number[] = []; // min-heap by rank: heap[0] is the weakest kept index
  const up = (i: number) => {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!below(heap[i], heap[p])) break;
      [heap[i], heap[p]] = [heap[p], heap[i]];
      i = p;
    }
  };
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < heap.length && below(heap[l], heap[m])) m = l;
      if (r < heap.length && below(heap[r], heap[m])) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  };
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(values[i])) continue;
    if (heap.length < k) {
      heap.push(i);
      up(heap.length - 1);
    } else if (below(heap[0], i)) {
      heap[0] = i;
      down(0);
    }
  }
  return heap.sort((a, b) => (below(a, b) ? 1 : below(b, a) ? -1 : 0));
}

/**
 * The nucleus of a distribution: the smallest set of most likely tokens whose probability mass is at
 * least `p`, most likely first (always at least one token). `probs` need not be normalized when
 * `total` is given. Looks at the top 64 tokens first and widens only when they do not reach `p`.
 */
export function nucleus(probs: ArrayLike<number>, p: number, total = 1): number[] {
  if (!(p > 0 && p <= 1)) throw new RangeError(`top_p must be in (0, 1], got ${p}`);
  const target = p * total;
  for (let k = Math.min(64, probs.length);; k = Math.min(4 * k, probs.length)) {
    const idx = topKIndices(probs, k);
    let mass = 0;
    for (let i = 0; i < idx.length; i++) {
      mass += probs[idx[i]];
      if (mass >= target) return idx.slice(0, i + 1);
    }
    if (k === probs.length) return idx; // rounding left the full set just short of p·total
  }
}

/** The `k` most likely tokens under `logprobs` with their log-probabilities, most likely first. */
export function topLogprobs(logprobs: ArrayLike<number>, k: number): TokenIdLogprob[] {
  return topKIndices(logprobs, k).map((token) => ({ token, logprob: logprobs[token] }));
}

/**
 * The candidate tokens and their (unnormalized) probabilities after temperature, top-k and top-p, most
 * likely first. Exposed for tests and for callers that want to show the sampling distribution.
 */
export function candidates(
  logits: ArrayLike<number>,
  params: SamplingParams,
): { tokens: number[]; probs: number[] } {
  const temperature = params.temperature ?? 1;
  const probs = softmax(logits, temperature);
  let tokens: number[];
  const topK = params.topK ?? 0;
  if (topK < 0 || !Number.isInteger(topK)) throw new RangeError(`top_k must be a whole number, got ${topK}`);
  if (topK > 0 && topK < probs.length) tokens = topKIndices(probs, topK);
  else tokens = [];
  const topP = params.topP ?? 1;
  if (topP < 1) {
    if (tokens.length) {
      let total = 0;
      for (const t of tokens) total += probs[t];
      const sub = tokens.map((t) => probs[t]);
      tokens = nucleus(sub, topP, total).map((i) => tokens[i]);
    } else tokens = nucleus(probs, topP);
  } else if (!tokens.length) {
    tokens = Array.from({ length: probs.length }, (_, i) => i);
  }
  return { tokens, probs: tokens.map((t) => probs[t]) };
}

/**
 * Pick the next token from one row of logits: argmax when `temperature` is 0, otherwise a draw from the
 * filtered distribution using one number from `rng`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mulberry32 } from "../data/random.ts";
 * const rng = mulberry32(7);
 * assert.equal(sampleToken([1, 3, 2], { temperature: 0 }, rng), 1); // argmax
 * const drawn = sampleToken([1, 3, 2], { temperature: 0.8, topP: 0.9 }, rng); // the same for seed 7
 * assert.ok(drawn === 1 || drawn === 2); // top-p 0.9 keeps tokens 1 and 2
 * ```
 */
export function sampleToken(logits: ArrayLike<number>, params: SamplingParams, rng: Rng): number {
  const temperature = params.temperature ?? 1;
  if (temperature < 0 || Number.isNaN(temperature)) {
    throw new RangeError(`temperature must be ≥ 0, got ${temperature}`);
  }
  if (temperature === 0) return argmax(logits);
  const topK = params.topK ?? 0;
  if ((topK === 0 || topK >= logits.length) && (params.topP ?? 1) >= 1) {
    return drawUnfiltered(logits, temperature, rng);
  }
  const { tokens, probs } = candidates(logits, params);
  let total = 0;
  for (const q of probs) total += q;
  if (!(total > 0 && Number.isFinite(total))) {
    throw new RangeError("nothing to sample from: the logits are empty, NaN or infinite");
  }
  let u = rng() * total;
  for (let i = 0; i < tokens.length; i++) {
    u -= probs[i];
    if (u < 0) return tokens[i];
  }
  return tokens[tokens.length - 1]; // u landed on the rounding error at the top
}

/**
 * {@link sampleToken} without top-k or top-p: the same numbers in the same order as the filtered path
 * (softmax(logits / T) summed in index order, one draw walked in index order), so the same token, but in
 * two passes over the row and no arrays: allocating two vocabulary-sized arrays per token cost 9 ms of
 * the 10 a token took with a 49k vocabulary on the CPU.
 */
function drawUnfiltered(logits: ArrayLike<number>, temperature: number, rng: Rng): number {
  const scale = 1 / temperature;
  const lse = logSumExp(logits, scale);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += Math.exp(logits[i] * scale - lse);
  if (!(total > 0 && Number.isFinite(total))) {
    throw new RangeError("nothing to sample from: the logits are empty, NaN or infinite");
  }
  let u = rng() * total;
  for (let i = 0; i < logits.length; i++) {
    u -= Math.exp(logits[i] * scale - lse);
    if (u < 0) return i;
  }
  return logits.length - 1; // u landed on the rounding error at the top
}

/**
 * transformers' `RepetitionPenaltyLogitsProcessor`: the logit of every token in `seen` (the prompt and the
 * output so far) is divided by `penalty` when positive and multiplied by it when negative, so `penalty > 1`
 * makes a repeat less likely. Returns a new row (or `logits` itself when the penalty is 1).
 */
export function applyRepetitionPenalty(
  logits: Float32Array,
  seen: Iterable<number>,
  penalty: number,
): Float32Array {
  if (!(penalty > 0 && Number.isFinite(penalty))) {
    throw new RangeError(`repetition_penalty must be > 0, got ${penalty}`);
  }
  if (penalty === 1) return logits;
  const out = logits.slice();
  for (const t of seen) {
    if (t < 0 || t >= out.length) continue;
    const v = logits[t];
    out[t] = v < 0 ? v * penalty : v / penalty;
  }
  return out;
}

/** A token's log-probability under the model's own distribution (temperature 1, no filtering). */
export function tokenLogprob(logits: ArrayLike<number>, token: number): number {
  return logits[token] - logSumExp(logits);
}

/**
 * Sampling defaults of a model (its generation_config.json's, as vLLM takes them): used where a request does
 * not set the parameter.
 */
export type SamplingDefaults = {
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
};

/**
 * The sampling defaults in a generation_config.json (`temperature`, `top_p`, `top_k`,
 * `repetition_penalty`); values out of range are left out and said through `warn`. `do_sample` is not
 * read (as vLLM: a request's temperature decides).
 */
export function samplingDefaultsOf(
  gen: Record<string, unknown> | null,
  warn: (line: string) => void = () => {},
): SamplingDefaults {
  const out: SamplingDefaults = {};
  if (!gen) return out;
  const take = (field: string, ok: (v: number) => boolean, key: keyof SamplingDefaults) => {
    const v = gen[field];
    if (v === undefined || v === null) return;
    if (typeof v === "number" && Number.isFinite(v) && ok(v)) out[key] = v;
    else warn(`generation_config.json: ${field} = ${JSON.stringify(v)} is not a valid value; not used`);
  };
  take("temperature", (v) => v >= 0, "temperature");
  take("top_p", (v) => v > 0 && v <= 1, "topP");
  take("top_k", (v) => Number.isInteger(v) && v >= -1, "topK");
  take("repetition_penalty", (v) => v > 0, "repetitionPenalty");
  if (out.topK !== undefined && out.topK < 0) out.topK = 0;
  return out;
}
