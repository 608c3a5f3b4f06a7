/**
 * A small seeded PRNG and the few helpers built on it. Everything random in data preparation
 * (pair sampling, response subsets, batch order) goes through here so a seed reproduces a run.
 *
 * @module
 */

/** A source of uniform numbers in [0, 1). */
export type Rng = () => number;

/**
 * mulberry32: 32 bits of state, fast, good enough for shuffling and sampling (not for crypto).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const rng = mulberry32(42);
 * assert.equal(rng(), 0.6011037519201636); // the same on every run
 * ```
 */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A uniform integer in [0, n). */
export function randomInt(rng: Rng, n: number): number {
  return Math.floor(rng() * n);
}

/** Fisher–Yates shuffle in place; returns the same array. */
export function shuffleInPlace<T>(items: T[], rng: Rng): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = randomInt(rng, i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

/** `k` distinct indices from [0, n), in increasing order (so the original order is kept). */
export function sampleIndices(n: number, k: number, rng: Rng): number[] {
  if (k > n || k < 0) throw new RangeError(`cannot sample ${k} of ${n}`);
  const all = Array.from({ length: n }, (_, i) => i);
  // Partial Fisher–Yates: the first k slots become a uniform sample.
  for (let i = 0; i < k; i++) {
    const j = i + randomInt(rng, n - i);
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, k).sort((a, b) => a - b);
}
