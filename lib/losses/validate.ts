/**
 * Input checks shared by the losses. Bad shapes or non-finite numbers would otherwise turn into a
 * silent NaN loss deep inside a training run; these checks fail at once with a message that says
 * which array, row and column is wrong. TypeError: wrong structure or content; RangeError: a number
 * outside its allowed range (β, α, K, batch size).
 *
 * @module
 */

/** Shape of a validated `[batch][K]` matrix. */
export type MatrixShape = { batch: number; k: number };

/** What a loss requires of its input. */
export type InputRequirements = {
  /** Name of the calling function, used as the prefix of every message. */
  fn: string;
  /** Whether the loss needs explicit rewards (InfoNCA, NCA). */
  needsRewards: boolean;
  /** Whether the loss is pairwise (K must be 2, column 0 = chosen). */
  pairwise: boolean;
};

/** Short description of a value for error messages. */
function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 20 ? v.slice(0, 20) + "…" : v)}`;
  if (typeof v === "number") return String(v);
  return typeof v;
}

/**
 * Check that `m` is a rectangular matrix of finite numbers and return its shape. With `expected`
 * the batch size and K must match it (the shape of `policy`); otherwise K is taken from row 0.
 * An empty matrix is accepted here (the caller decides whether an empty batch is allowed).
 *
 * @throws {TypeError} not an array, a row that is not an array, ragged rows, a shape mismatch with
 *   `expected`, or an entry that is not a finite number (names the array, row and column).
 */
export function checkMatrix(fn: string, name: string, m: unknown, expected?: MatrixShape): MatrixShape {
  if (!Array.isArray(m)) {
    throw new TypeError(`${fn}: ${name} must be an array of rows (number[][]), got ${describe(m)}`);
  }
  if (expected !== undefined && m.length !== expected.batch) {
    throw new TypeError(
      `${fn}: ${name} has ${m.length} rows but policy has ${expected.batch}: ` +
        `policy, reference and rewards must all have the same shape [batch][K]`,
    );
  }
  let k = expected?.k ?? -1;
  for (let i = 0; i < m.length; i++) {
    const row: unknown = m[i];
    if (!Array.isArray(row)) {
      throw new TypeError(`${fn}: ${name} row ${i} must be an array of numbers, got ${describe(row)}`);
    }
    if (k < 0) k = row.length;
    if (row.length !== k) {
      const source = expected === undefined ? "the length of row 0" : "the K of policy";
      throw new TypeError(
        `${fn}: ${name} row ${i} has ${row.length} entries, expected K = ${k} (${source}); rows must not be ragged`,
      );
    }
    for (let j = 0; j < k; j++) {
      const v: unknown = row[j];
      if (typeof v !== "number") {
        throw new TypeError(
          `${fn}: ${name}[${i}][${j}] (row ${i}, column ${j}) must be a number, got ${describe(v)}`,
        );
      }
      if (!Number.isFinite(v)) {
        throw new TypeError(
          `${fn}: ${name}[${i}][${j}] (row ${i}, column ${j}) is ${v}; every entry must be a finite number`,
        );
      }
    }
  }
  return { batch: m.length, k: Math.max(k, 0) };
}

/**
 * Validate a loss input: shapes of policy, reference and rewards, K ≥ 2, a non-empty batch, K = 2
 * for the pairwise losses and rewards present where the loss needs them. Rewards are still checked
 * when a loss ignores them, so a malformed batch never passes unnoticed.
 *
 * @throws {TypeError} structure, shape, K ≠ 2 for a pairwise loss, non-finite entries, missing rewards.
 * @throws {RangeError} empty batch or K < 2.
 */
export function checkLossInput(x: unknown, req: InputRequirements): MatrixShape {
  const { fn } = req;
  if (typeof x !== "object" || x === null || Array.isArray(x)) {
    throw new TypeError(`${fn}: input must be an object { policy, reference, rewards? }, got ${describe(x)}`);
  }
  const input = x as Record<string, unknown>;
  const shape = checkMatrix(fn, "policy", input.policy);
  if (shape.batch === 0) {
    throw new RangeError(`${fn}: empty batch: policy has no rows (need at least one prompt)`);
  }
  if (shape.k < 2) {
    throw new RangeError(`${fn}: K must be at least 2 responses per prompt, got K = ${shape.k}`);
  }
  checkMatrix(fn, "reference", input.reference, shape);
  if (input.rewards === undefined) {
    if (req.needsRewards) {
      throw new TypeError(
        `${fn}: rewards are missing; this loss needs reward data (rewards: number[][] of shape [batch][K])`,
      );
    }
  } else {
    checkMatrix(fn, "rewards", input.rewards, shape);
  }
  if (req.pairwise && shape.k !== 2) {
    throw new TypeError(
      `${fn}: pairwise loss needs K = 2 responses per prompt (column 0 = chosen, 1 = rejected), got K = ${shape.k}`,
    );
  }
  return shape;
}

/**
 * Check β: the implicit reward scale must be a finite number > 0.
 *
 * @throws {TypeError} β is not a number. @throws {RangeError} β ≤ 0, NaN or infinite.
 */
export function checkBeta(fn: string, beta: unknown): number {
  if (typeof beta !== "number") throw new TypeError(`${fn}: beta must be a number, got ${describe(beta)}`);
  if (!Number.isFinite(beta) || beta <= 0) {
    throw new RangeError(`${fn}: beta must be a finite number > 0, got ${beta}`);
  }
  return beta;
}

/**
 * Check α: the reward temperature must be a finite number ≥ 0 (0 = one-hot on the best response).
 *
 * @throws {TypeError} α is not a number. @throws {RangeError} α < 0, NaN or infinite.
 */
export function checkAlpha(fn: string, alpha: unknown): number {
  if (typeof alpha !== "number") throw new TypeError(`${fn}: alpha must be a number, got ${describe(alpha)}`);
  if (!Number.isFinite(alpha) || alpha < 0) {
    throw new RangeError(`${fn}: alpha must be a finite number >= 0, got ${alpha}`);
  }
  return alpha;
}

/**
 * Validate loss options and apply the default α = 1.
 *
 * @throws {TypeError} options not an object or a non-numeric field. @throws {RangeError} β or α out of range.
 */
export function checkOptions(fn: string, o: unknown): { beta: number; alpha: number } {
  if (typeof o !== "object" || o === null || Array.isArray(o)) {
    throw new TypeError(`${fn}: options must be an object { beta, alpha? }, got ${describe(o)}`);
  }
  const opts = o as Record<string, unknown>;
  const beta = checkBeta(fn, opts.beta);
  const alpha = opts.alpha === undefined ? 1 : checkAlpha(fn, opts.alpha);
  return { beta, alpha };
}
