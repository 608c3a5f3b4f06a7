/**
 * Loss + analytic gradient throughput on a training-sized batch: 1024 prompts × K = 4 responses for
 * the reward losses (InfoNCA, NCA), K = 2 for the pairwise ones (DPO, NCA-pair, IPO). Inputs are
 * built once, outside the timed functions; each iteration includes input validation.
 *
 * Run: `deno bench bench/losses.bench.ts` (examples/s = 1024 / time per iteration).
 */
import { dpoLoss, infoNcaLoss, ipoLoss, ncaLoss, ncaPairLoss } from "../lib/losses/mod.ts";
import type { LossInput } from "../lib/losses/mod.ts";
import { mulberry32 as rng } from "../lib/data/random.ts";

const BATCH = 1024;

function makeInput(k: number, seed: number): Required<LossInput> {
  const rand = rng(seed);
  const policy: number[][] = [], reference: number[][] = [], rewards: number[][] = [];
  for (let b = 0; b < BATCH; b++) {
    const p: number[] = [], r: number[] = [], w: number[] = [];
    for (let j = 0; j < k; j++) {
      const lp = -50 - 400 * rand();
      p.push(lp);
      r.push(lp + 10 * (rand() - 0.5));
      w.push(1 + 9 * rand());
    }
    policy.push(p);
    reference.push(r);
    rewards.push(w);
  }
  return { policy, reference, rewards };
}

const reward4 = makeInput(4, 1);
const pair2 = (({ policy, reference }) => ({ policy, reference }))(makeInput(2, 2));
const opts = { beta: 0.01, alpha: 1e-4 };
let sink = 0;

Deno.bench("infonca 1024x4 loss+grad", { group: "losses", baseline: true }, () => {
  sink += infoNcaLoss(reward4, opts).loss;
});
Deno.bench("nca 1024x4 loss+grad", { group: "losses" }, () => {
  sink += ncaLoss(reward4, opts).loss;
});
Deno.bench("dpo 1024x2 loss+grad", { group: "losses" }, () => {
  sink += dpoLoss(pair2, opts).loss;
});
Deno.bench("nca_pair 1024x2 loss+grad", { group: "losses" }, () => {
  sink += ncaPairLoss(pair2, opts).loss;
});
Deno.bench("ipo 1024x2 loss+grad", { group: "losses" }, () => {
  sink += ipoLoss(pair2, opts).loss;
});

globalThis.addEventListener("unload", () => {
  if (!Number.isFinite(sink)) console.error("non-finite loss in bench");
});
