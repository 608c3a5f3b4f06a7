// Every bad input throws the right error class with a message naming the problem.
import assert from "node:assert/strict";
import { batchMetrics, dpoLoss, infoNcaLoss, ipoLoss, ncaLoss, ncaPairLoss } from "../../lib/losses/mod.ts";
import type { LossFn } from "../../lib/losses/mod.ts";

const all: Array<[string, LossFn]> = [
  ["infoNcaLoss", infoNcaLoss],
  ["ncaLoss", ncaLoss],
  ["dpoLoss", dpoLoss],
  ["ncaPairLoss", ncaPairLoss],
  ["ipoLoss", ipoLoss],
  ["batchMetrics", (x, o) => ({ loss: 0, grad: [], ...batchMetrics(x, o) })],
];
const pairs: Array<[string, LossFn]> = [["dpoLoss", dpoLoss], ["ncaPairLoss", ncaPairLoss], [
  "ipoLoss",
  ipoLoss,
]];
const good = () => ({
  policy: [[-1, -2], [-3, -4]],
  reference: [[-1, -1], [-3, -3]],
  rewards: [[1, 0], [0, 1]],
});

// deno-lint-ignore no-explicit-any
function throwsWith(f: () => unknown, cls: any, ...patterns: RegExp[]): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    for (const p of patterns) assert.match((e as Error).message, p);
    return true;
  });
}

// deno-lint-ignore no-explicit-any
const call = (fn: LossFn, x: any, o: any = { beta: 0.1 }) => () => fn(x, o);

Deno.test("valid input passes for every loss", () => {
  for (const [, fn] of all) fn(good(), { beta: 0.1, alpha: 1 });
});

Deno.test("TypeError: input, policy, rows that are not arrays", () => {
  for (const [name, fn] of all) {
    throwsWith(call(fn, null), TypeError, new RegExp(name), /input must be an object/);
    throwsWith(call(fn, [[1, 2]]), TypeError, /input must be an object/);
    throwsWith(call(fn, { ...good(), policy: "abc" }), TypeError, /policy must be an array/);
    throwsWith(call(fn, { ...good(), reference: undefined }), TypeError, /reference must be an array/);
    throwsWith(call(fn, { ...good(), policy: [[-1, -2], 5] }), TypeError, /policy row 1 must be an array/);
  }
});

Deno.test("TypeError: ragged rows name the row index and the expected K", () => {
  for (const [, fn] of all) {
    throwsWith(
      call(fn, { ...good(), policy: [[-1, -2], [-3, -4, -5]] }),
      TypeError,
      /policy row 1 has 3 entries, expected K = 2/,
    );
    throwsWith(
      call(fn, { ...good(), reference: [[-1, -1], [-3]] }),
      TypeError,
      /reference row 1 has 1 entries, expected K = 2/,
    );
    throwsWith(
      call(fn, { ...good(), rewards: [[1, 0, 2], [0, 1]] }),
      TypeError,
      /rewards row 0 has 3 entries, expected K = 2/,
    );
  }
});

Deno.test("TypeError: policy/reference/rewards batch-size mismatch", () => {
  for (const [, fn] of all) {
    throwsWith(
      call(fn, { ...good(), reference: [[-1, -1]] }),
      TypeError,
      /reference has 1 rows but policy has 2/,
    );
    throwsWith(
      call(fn, { ...good(), rewards: [[1, 0], [0, 1], [1, 1]] }),
      TypeError,
      /rewards has 3 rows but policy has 2/,
    );
  }
});

Deno.test("TypeError: pairwise losses need K = 2", () => {
  const x = { policy: [[-1, -2, -3]], reference: [[-1, -1, -1]] };
  for (const [name, fn] of pairs) throwsWith(call(fn, x), TypeError, new RegExp(name), /K = 2/, /got K = 3/);
  // batchMetrics without rewards is pairwise too.
  throwsWith(() => batchMetrics(x, { beta: 0.1 }), TypeError, /K must be 2/, /got K = 3/);
});

Deno.test("TypeError: non-finite numbers name the array, row and column", () => {
  for (const [, fn] of all) {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const p = good();
      p.policy[1][0] = bad;
      throwsWith(call(fn, p), TypeError, /policy\[1\]\[0\]/, /row 1, column 0/, new RegExp(String(bad)));
      const r = good();
      r.reference[0][1] = bad;
      throwsWith(call(fn, r), TypeError, /reference\[0\]\[1\]/, /row 0, column 1/);
      const w = good();
      w.rewards[1][1] = bad;
      throwsWith(call(fn, w), TypeError, /rewards\[1\]\[1\]/, /row 1, column 1/);
    }
    throwsWith(
      call(fn, { ...good(), policy: [[-1, "x"], [-3, -4]] }),
      TypeError,
      /policy\[0\]\[1\].*must be a number/,
    );
  }
});

Deno.test("TypeError: reward losses need rewards", () => {
  const x = { policy: [[-1, -2]], reference: [[-1, -1]] };
  throwsWith(call(infoNcaLoss, x), TypeError, /infoNcaLoss/, /rewards are missing/);
  throwsWith(call(ncaLoss, x), TypeError, /ncaLoss/, /rewards are missing/);
  for (const [, fn] of pairs) fn(x, { beta: 0.1 }); // pairwise losses do not
});

Deno.test("RangeError: beta <= 0 or non-finite; TypeError: beta missing", () => {
  for (const [, fn] of all) {
    for (const beta of [0, -0.1, NaN, Infinity, -Infinity]) {
      throwsWith(call(fn, good(), { beta }), RangeError, /beta must be a finite number > 0/);
    }
    throwsWith(call(fn, good(), {}), TypeError, /beta must be a number/);
    throwsWith(call(fn, good(), null), TypeError, /options must be an object/);
  }
});

Deno.test("RangeError: alpha < 0 or non-finite", () => {
  for (const [, fn] of all) {
    for (const alpha of [-1e-9, -1, NaN, Infinity]) {
      throwsWith(call(fn, good(), { beta: 0.1, alpha }), RangeError, /alpha must be a finite number >= 0/);
    }
    throwsWith(call(fn, good(), { beta: 0.1, alpha: "1" }), TypeError, /alpha must be a number/);
  }
});

Deno.test("RangeError: K < 2 and empty batch", () => {
  for (const [, fn] of all) {
    throwsWith(
      call(fn, { policy: [[-1]], reference: [[-1]], rewards: [[1]] }),
      RangeError,
      /K must be at least 2/,
      /K = 1/,
    );
    throwsWith(call(fn, { policy: [[]], reference: [[]], rewards: [[]] }), RangeError, /K = 0/);
    throwsWith(call(fn, { policy: [], reference: [], rewards: [] }), RangeError, /empty batch/);
  }
});
