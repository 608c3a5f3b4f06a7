import assert from "node:assert/strict";
import { batchMetrics } from "../../lib/losses/mod.ts";
import { assertClose } from "./_helpers.ts";

function assertMetrics(got: Record<string, number>, want: Record<string, number>): void {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  for (const [k, v] of Object.entries(want)) assertClose(got[k], v, 1e-13, 1e-15, k);
}

Deno.test("batchMetrics on preference pairs: column 0 chosen, column 1 rejected", () => {
  // β = 0.5. Row 0: z = [0.5, −0.5]. Row 1: z = 0.5·([−4, −6] − [−3, −8]) = [−0.5, 1].
  // chosen mean (0.5 − 0.5)/2 = 0; rejected (−0.5 + 1)/2 = 0.25; margins −0.25; accuracy 1/2.
  // logps chosen (−10 − 4)/2 = −7; rejected (−12 − 6)/2 = −9.
  const m = batchMetrics({ policy: [[-10, -12], [-4, -6]], reference: [[-11, -11], [-3, -8]] }, {
    beta: 0.5,
  });
  assertMetrics(m, {
    "rewards/chosen": 0,
    "rewards/rejected": 0.25,
    "rewards/margins": -0.25,
    "rewards/accuracies": 0.5,
    "logps/chosen": -7,
    "logps/rejected": -9,
  });
});

Deno.test("batchMetrics with K = 4 rewards: best is chosen, A0.. sorted by reward", () => {
  // β = 1 so r_θ = policy − reference.
  // Row 0: policy [−10, −20, −30, −40], reference [−12, −19, −30, −45] → z = [2, −1, 0, 5];
  //   rewards [3, 9, 1, 5] → order by reward: cols 1, 3, 0, 2 → A z = [−1, 5, 2, 0], A logp = [−20, −40, −10, −30].
  //   chosen z = −1, others mean (5 + 2 + 0)/3 = 7/3; chosen logp −20, others (−40 − 10 − 30)/3 = −80/3.
  //   accuracy 0 (−1 is not above 5).
  // Row 1: policy [−1, −2, −3, −4], reference [−2, −2, −2, −2] → z = [1, 0, −1, −2];
  //   rewards [8, 2, 4, 6] → order: cols 0, 3, 2, 1 → A z = [1, −2, −1, 0], A logp = [−1, −4, −3, −2].
  //   chosen z = 1, others (−2 − 1 + 0)/3 = −1; chosen logp −1, others (−4 − 3 − 2)/3 = −3. accuracy 1.
  const x = {
    policy: [[-10, -20, -30, -40], [-1, -2, -3, -4]],
    reference: [[-12, -19, -30, -45], [-2, -2, -2, -2]],
    rewards: [[3, 9, 1, 5], [8, 2, 4, 6]],
  };
  const m = batchMetrics(x, { beta: 1 });
  assertMetrics(m, {
    "rewards/chosen": 0,
    "rewards/rejected": (7 / 3 - 1) / 2,
    "rewards/margins": (-1 - 7 / 3 + 1 + 1) / 2,
    "rewards/accuracies": 0.5,
    "logps/chosen": -10.5,
    "logps/rejected": (-80 / 3 - 3) / 2,
    "rewards/A0": 0,
    "rewards/A1": 1.5,
    "rewards/A2": 0.5,
    "rewards/A3": 0,
    "logps/A0": -10.5,
    "logps/A1": -22,
    "logps/A2": -6.5,
    "logps/A3": -16,
  });
  // β scales the implicit rewards, not the log-probs.
  const half = batchMetrics(x, { beta: 0.5 });
  assertClose(half["rewards/A1"], 0.75, 1e-15);
  assertClose(half["logps/A1"], -22, 1e-15);
});

Deno.test("batchMetrics: reward ties pick the earlier column; accuracy needs a strict win", () => {
  // β = 1: z = [0, 1, 1]; rewards tie on columns 1 and 2 → chosen = column 1 (z = 1), not strictly
  // above column 2 (z = 1) → accuracy 0. A order: 1, 2, 0.
  const m = batchMetrics({ policy: [[-1, -1, -1]], reference: [[-1, -2, -2]], rewards: [[0, 5, 5]] }, {
    beta: 1,
  });
  assert.equal(m["rewards/accuracies"], 0);
  assert.equal(m["rewards/chosen"], 1);
  assert.equal(m["rewards/rejected"], 0.5);
  assert.deepEqual([m["rewards/A0"], m["rewards/A1"], m["rewards/A2"]], [1, 1, 0]);
  // Equal pair rewards without rewards data: not a strict win either.
  assert.equal(
    batchMetrics({ policy: [[-1, -1]], reference: [[-1, -1]] }, { beta: 1 })["rewards/accuracies"],
    0,
  );
});
