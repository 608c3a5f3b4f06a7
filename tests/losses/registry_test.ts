import assert from "node:assert/strict";
import * as losses from "../../lib/losses/mod.ts";
import { isLossName, lossByName, lossNames, needsRewards } from "../../lib/losses/mod.ts";
import type { LossName } from "../../lib/losses/mod.ts";

Deno.test("lossByName maps every name to its function", () => {
  assert.equal(lossByName.infonca, losses.infoNcaLoss);
  assert.equal(lossByName.nca, losses.ncaLoss);
  assert.equal(lossByName.dpo, losses.dpoLoss);
  assert.equal(lossByName.nca_pair, losses.ncaPairLoss);
  assert.equal(lossByName.ipo, losses.ipoLoss);
  assert.deepEqual(Object.keys(lossByName).sort(), [...lossNames].sort());
  assert.ok(Object.isFrozen(lossByName));
});

Deno.test("needsRewards is true exactly for the reward losses", () => {
  assert.deepEqual(lossNames.map((n) => [n, needsRewards(n)]), [
    ["infonca", true],
    ["nca", true],
    ["dpo", false],
    ["nca_pair", false],
    ["ipo", false],
  ]);
  assert.throws(
    () => needsRewards("kto" as unknown as LossName),
    (e: Error) => e instanceof TypeError && /kto/.test(e.message),
  );
  assert.ok(isLossName("nca_pair"));
  assert.ok(!isLossName("NCA"));
});

Deno.test("each loss in lossByName runs on data of its kind", () => {
  const reward = { policy: [[-1, -2, -3]], reference: [[-1, -1, -1]], rewards: [[3, 2, 1]] };
  const pair = { policy: [[-1, -2]], reference: [[-1, -1]] };
  for (const name of lossNames) {
    const r = lossByName[name](needsRewards(name) ? reward : pair, { beta: 0.1 });
    assert.ok(Number.isFinite(r.loss));
  }
});
