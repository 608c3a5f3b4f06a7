// Extreme inputs give finite losses and gradients (no overflow to Infinity, no NaN).
import assert from "node:assert/strict";
import { batchMetrics, dpoLoss, infoNcaLoss, ipoLoss, ncaLoss, ncaPairLoss } from "../../lib/losses/mod.ts";
import type { LossResult } from "../../lib/losses/mod.ts";
import { assertClose } from "./_helpers.ts";

function assertFinite(r: LossResult, what: string): void {
  assert.ok(Number.isFinite(r.loss), `${what}: loss ${r.loss}`);
  for (const row of r.grad) for (const g of row) assert.ok(Number.isFinite(g), `${what}: grad ${g}`);
}

Deno.test("beta·Δ = ±1e4 gives finite losses with the right asymptotic values", () => {
  // β = 1, policy − reference = ±1e4.
  const big = { policy: [[1e4, -1e4]], reference: [[0, 0]] };
  const bad = { policy: [[-1e4, 1e4]], reference: [[0, 0]] };
  for (const [name, fn] of [["dpo", dpoLoss], ["nca_pair", ncaPairLoss], ["ipo", ipoLoss]] as const) {
    assertFinite(fn(big, { beta: 1 }), name);
    assertFinite(fn(bad, { beta: 1 }), name);
  }
  // DPO: margin 2e4 → loss ≈ 0; margin −2e4 → loss = 2e4 and gradient −β on chosen.
  assert.equal(dpoLoss(big, { beta: 1 }).loss, 0);
  assert.equal(dpoLoss(bad, { beta: 1 }).loss, 2e4);
  assert.deepEqual(dpoLoss(bad, { beta: 1 }).grad, [[-1, 1]]);
  // NCA-pair with z = [−1e4, 1e4]: softplus(1e4) + ½ softplus(−1e4) + ½ softplus(1e4) = 1.5e4.
  assertClose(ncaPairLoss(bad, { beta: 1 }).loss, 1.5e4, 1e-15);
  // Reward losses with z = ±1e4, K = 4.
  const x = { policy: [[1e4, -1e4, 1e4, -1e4]], reference: [[0, 0, 0, 0]], rewards: [[1, 2, 3, 4]] };
  for (const alpha of [0, 1e-4, 1, 1e6]) {
    assertFinite(infoNcaLoss(x, { beta: 1, alpha }), `infonca alpha ${alpha}`);
    assertFinite(ncaLoss(x, { beta: 1, alpha }), `nca alpha ${alpha}`);
  }
  // InfoNCA, one-hot on column 3 (z = −1e4) against lse ≈ 1e4 + ln 2: loss ≈ 2e4 + ln 2.
  assertClose(infoNcaLoss(x, { beta: 1, alpha: 0 }).loss, 2e4 + Math.LN2, 1e-15);
});

Deno.test("rewards ±1e6 with alpha 1e-4 or 0 give finite losses and gradients", () => {
  const x = {
    policy: [[-20, -25, -30], [-3, -4, -5]],
    reference: [[-21, -24, -31], [-3, -3, -3]],
    rewards: [[1e6, -1e6, 0], [-1e6, -1e6, 1e6]],
  };
  for (const alpha of [0, 1e-4, 1, 1e9]) {
    for (const beta of [1e-3, 0.1, 10, 1e3]) {
      assertFinite(infoNcaLoss(x, { beta, alpha }), `infonca ${alpha} ${beta}`);
      assertFinite(ncaLoss(x, { beta, alpha }), `nca ${alpha} ${beta}`);
    }
  }
  const m = batchMetrics(x, { beta: 0.1 });
  for (const [k, v] of Object.entries(m)) assert.ok(Number.isFinite(v), `${k}: ${v}`);
});

Deno.test("alpha 1e-4 with UltraFeedback-like scores 1..10 and K = 4 is finite (the paper's config)", () => {
  const x = {
    policy: [[-120, -140, -95, -210]],
    reference: [[-121, -139, -96, -205]],
    rewards: [[7.5, 3, 9, 9]],
  };
  for (const fn of [infoNcaLoss, ncaLoss]) {
    const r = fn(x, { beta: 0.01, alpha: 1e-4 });
    assertFinite(r, fn.name);
    assert.ok(r.loss > 0);
  }
});

Deno.test("arithmetic overflow throws a RangeError instead of returning Infinity", () => {
  const huge = { policy: [[1e308, -1e308]], reference: [[-1e308, 1e308]], rewards: [[1, 0]] };
  for (const fn of [infoNcaLoss, ncaLoss, dpoLoss, ncaPairLoss]) {
    assert.throws(
      () => fn(huge, { beta: 1 }),
      (e: Error) => e instanceof RangeError && /overflows at row 0/.test(e.message),
    );
  }
  assert.throws(
    () => ipoLoss({ policy: [[-1, -2]], reference: [[-1, -1]] }, { beta: 1e-320 }),
    (e: Error) => e instanceof RangeError && /ipoLoss/.test(e.message),
  );
});
