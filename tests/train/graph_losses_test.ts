import assert from "node:assert/strict";
import { GraphBuilder } from "../../lib/graph/builder.ts";
import { gradients } from "../../lib/graph/autodiff.ts";
import { serializeModel } from "../../lib/graph/serialize.ts";
import { f64, ModelSession } from "../../lib/runtime/session.ts";
import { graphLoss, type TrainLossName } from "../../lib/train/graph_losses.ts";
import { batchMetrics, lossByName, type LossInput, type LossName, softLabels } from "../../lib/losses/mod.ts";
import { rankByReward } from "../../lib/losses/metrics.ts";
import { mulberry32 } from "../../lib/data/random.ts";

/** Runs the graph version of a loss on [P, K] inputs; returns loss, d loss / d policy, and metrics. */
async function runGraph(name: TrainLossName, x: LossInput, beta: number, alpha: number) {
  const P = x.policy.length, K = x.policy[0].length;
  const g = new GraphBuilder("loss");
  const policy = g.input("policy", "float64", [P, K]);
  const reference = g.input("reference", "float64", [P, K]);
  const labels = g.input("labels", "float64", [P, K]);
  const out = graphLoss(name, { policy, reference, labels }, { beta, k: K, ranked: !!x.rewards });
  g.output(out.loss, "loss");
  g.output(gradients(out.loss, [policy])[0], "grad");
  const metricNames = Object.keys(out.metrics);
  metricNames.forEach((m) => g.output(out.metrics[m], m));
  const s = await ModelSession.create(serializeModel(g.build()), { intraOpThreads: 1 });
  const lab = x.rewards ? softLabels(x.rewards, alpha) : x.policy.map(() => new Array(K).fill(0));
  const res = await s.run({
    policy: f64(x.policy.flat(), [P, K]),
    reference: f64(x.reference.flat(), [P, K]),
    labels: f64(lab.flat(), [P, K]),
  });
  await s.release();
  return {
    loss: Number(res.loss.data[0]),
    grad: Array.from(res.grad.data as Float64Array),
    metrics: Object.fromEntries(metricNames.map((m) => [m, Number(res[m].data[0])])),
  };
}

/** Random reward data with responses sorted best first, as the trainer feeds them. */
function randomBatch(seed: number, P: number, K: number, spread: number, withRewards: boolean): LossInput {
  const r = mulberry32(seed);
  const policy: number[][] = [], reference: number[][] = [], rewards: number[][] = [];
  for (let p = 0; p < P; p++) {
    const rw = Array.from({ length: K }, () => Math.round(r() * 10) / 2);
    const order = rankByReward(rw);
    rewards.push(order.map((i) => rw[i]));
    const ref = Array.from({ length: K }, () => -20 - r() * 30);
    reference.push(ref);
    policy.push(ref.map((v) => v + (r() * 2 - 1) * spread));
  }
  return withRewards ? { policy, reference, rewards } : { policy, reference };
}

const cases: { name: LossName; k: number; rewards: boolean }[] = [
  { name: "infonca", k: 4, rewards: true },
  { name: "infonca", k: 2, rewards: true },
  { name: "nca", k: 4, rewards: true },
  { name: "nca", k: 3, rewards: true },
  { name: "dpo", k: 2, rewards: false },
  { name: "nca_pair", k: 2, rewards: false },
  { name: "ipo", k: 2, rewards: false },
];

for (const c of cases) {
  for (const [beta, alpha, spread] of [[0.1, 1, 3], [0.01, 1e-4, 50], [2, 0, 5]]) {
    Deno.test(`graph loss ${c.name} K=${c.k} β=${beta} α=${alpha}: equals the TypeScript reference in value, gradient and metrics`, async () => {
      const x = randomBatch(c.k * 100 + beta * 7, 5, c.k, spread, c.rewards);
      const want = lossByName[c.name](x, { beta, alpha });
      const got = await runGraph(c.name, x, beta, alpha);
      const close = (a: number, b: number, what: string) =>
        assert.ok(Math.abs(a - b) <= 1e-9 * (1 + Math.abs(b)), `${what}: graph ${a} vs reference ${b}`);
      close(got.loss, want.loss, "loss");
      want.grad.flat().forEach((v, i) => close(got.grad[i], v, `grad[${i}]`));
      const wantMetrics = batchMetrics(x, { beta, alpha });
      assert.deepEqual(Object.keys(got.metrics).sort(), Object.keys(wantMetrics).sort());
      for (const [m, v] of Object.entries(wantMetrics)) close(got.metrics[m], v, m);
    });
  }
}

Deno.test("graph loss: extreme implicit rewards stay finite", async () => {
  const x: LossInput = {
    policy: [[1e4, -1e4, 0, 5], [-1e4, 1e4, 3, -3]],
    reference: [[0, 0, 0, 0], [0, 0, 0, 0]],
    rewards: [[4, 3, 2, 1], [4, 3, 2, 1]],
  };
  for (const name of ["infonca", "nca"] as const) {
    const got = await runGraph(name, x, 1, 1e-4);
    const want = lossByName[name](x, { beta: 1, alpha: 1e-4 });
    assert.ok(Number.isFinite(got.loss) && got.grad.every(Number.isFinite), name);
    assert.ok(
      Math.abs(got.loss - want.loss) <= 1e-9 * (1 + Math.abs(want.loss)),
      `${name}: ${got.loss} vs ${want.loss}`,
    );
  }
  const pair: LossInput = { policy: [[1e4, -1e4], [-1e4, 1e4]], reference: [[0, 0], [0, 0]] };
  for (const name of ["dpo", "nca_pair"] as const) {
    const got = await runGraph(name, pair, 1, 1);
    const want = lossByName[name](pair, { beta: 1 });
    assert.ok(
      Math.abs(got.loss - want.loss) <= 1e-9 * (1 + Math.abs(want.loss)),
      `${name}: ${got.loss} vs ${want.loss}`,
    );
  }
});

Deno.test("graph loss: sft is the mean token negative log-likelihood", async () => {
  const g = new GraphBuilder("sft");
  const policy = g.input("policy", "float64", [2, 1]);
  const tokens = g.input("tokens", "float64", [2, 1]);
  g.output(graphLoss("sft", { policy, tokens }, { beta: 1, k: 1 }).loss, "loss");
  const s = await ModelSession.create(serializeModel(g.build()));
  const res = await s.run({ policy: f64([-6, -4], [2, 1]), tokens: f64([3, 2], [2, 1]) });
  assert.equal(res.loss.data[0], 2);
});

Deno.test("graph loss: wrong K for a pair loss is an error that says so", () => {
  const g = new GraphBuilder("bad");
  const p = g.input("p", "float32", [2, 3]);
  assert.throws(
    () => graphLoss("dpo", { policy: p, reference: p }, { beta: 0.1, k: 3 }),
    /dpo loss takes pairs \(K = 2\), got K = 3/,
  );
  assert.throws(
    () => graphLoss("nca", { policy: p, reference: p }, { beta: 0.1, k: 3 }),
    /needs soft labels/,
  );
});
