/**
 * Numerically stable scalar primitives. Implicit rewards β·(log π − log μ) can reach thousands in
 * magnitude late in training; the naive log(1 + e^x) or e^x / Σ e^x overflow there and poison the
 * run with Infinity/NaN. Every function here is finite for every finite input.
 *
 * @module
 */

/**
 * softplus(x) = log(1 + e^x), computed as max(x, 0) + log1p(e^{−|x|}) so it never overflows and keeps
 * full precision for large negative x.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(softplus(0), Math.LN2);
 * assert.equal(softplus(1e4), 1e4); // the naive Math.log(1 + Math.exp(1e4)) gives Infinity
 * ```
 */
export function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

/**
 * log σ(z) = −softplus(−z): the log-likelihood term of every logistic loss, stable for any z.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(logSigmoid(-1e4), -1e4); // the naive Math.log(1 / (1 + Math.exp(1e4))) gives -Infinity
 * ```
 */
export function logSigmoid(z: number): number {
  return -softplus(-z);
}

/**
 * σ(z) = 1 / (1 + e^{−z}) without overflow: the exponential is always taken of a non-positive number.
 */
export function sigmoid(z: number): number {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

/**
 * log Σ_i e^{s·x_i} (s = `scale`, default 1), shifted by the maximum so no exponential overflows. Returns
 * −Infinity for an empty list (the log of an empty sum). Takes any array-like (logits of a vocabulary too).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(logSumExp([1000, 1000]), 1000 + Math.LN2);
 * ```
 */
export function logSumExp(xs: ArrayLike<number>, scale = 1): number {
  let m = -Infinity;
  for (let i = 0; i < xs.length; i++) if (xs[i] * scale > m) m = xs[i] * scale;
  if (m === -Infinity || m === Infinity || Number.isNaN(m)) return m;
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += Math.exp(xs[i] * scale - m);
  return m + Math.log(s);
}

/**
 * softmax(x / T)_i = e^{x_i/T − lse(x/T)}: probabilities that sum to 1 for inputs of any scale (T, the
 * temperature, defaults to 1; sampling uses it).
 */
export function softmax(xs: ArrayLike<number>, temperature = 1): number[] {
  if (!(temperature > 0)) throw new RangeError(`softmax needs a positive temperature, got ${temperature}`);
  const scale = 1 / temperature;
  const lse = logSumExp(xs, scale);
  return Array.from(xs, (v) => Math.exp(v * scale - lse));
}

/**
 * log softmax(x)_i = x_i − log Σ_j e^{x_j}, without forming the probabilities first.
 */
export function logSoftmax(xs: ArrayLike<number>): number[] {
  const lse = logSumExp(xs);
  return Array.from(xs, (v) => v - lse);
}
