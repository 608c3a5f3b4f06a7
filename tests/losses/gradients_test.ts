// Analytic gradients against central finite differences (h = 1e-5, relative tolerance 1e-6).
import { dpoLoss, infoNcaLoss, ipoLoss, ncaLoss, ncaPairLoss } from "../../lib/losses/mod.ts";
import { checkGradient, randomInput, rng } from "./_helpers.ts";

const rewardCases: Array<{ k: number; batch: number; beta: number; alpha: number | undefined }> = [
  { k: 2, batch: 3, beta: 0.1, alpha: 1 },
  { k: 2, batch: 1, beta: 1.5, alpha: 0 },
  { k: 3, batch: 2, beta: 0.5, alpha: 2 },
  { k: 3, batch: 4, beta: 0.05, alpha: undefined },
  { k: 4, batch: 3, beta: 0.3, alpha: 0.7 },
  { k: 4, batch: 2, beta: 2, alpha: 5 },
  { k: 7, batch: 2, beta: 0.2, alpha: 1.3 },
  { k: 7, batch: 3, beta: 0.8, alpha: 0.25 },
];

Deno.test("infoNcaLoss gradient matches finite differences (K = 2, 3, 4, 7)", () => {
  const rand = rng(101);
  for (const c of rewardCases) checkGradient(infoNcaLoss, randomInput(rand, c.batch, c.k), c.beta, c.alpha);
});

Deno.test("ncaLoss gradient matches finite differences (K = 2, 3, 4, 7)", () => {
  const rand = rng(202);
  for (const c of rewardCases) checkGradient(ncaLoss, randomInput(rand, c.batch, c.k), c.beta, c.alpha);
});

const pairBetas = [0.01, 0.1, 0.5, 1, 3];

Deno.test("dpoLoss gradient matches finite differences", () => {
  const rand = rng(303);
  for (const beta of pairBetas) {
    checkGradient(dpoLoss, randomInput(rand, 1 + Math.floor(rand() * 4), 2, false), beta);
  }
});

Deno.test("ncaPairLoss gradient matches finite differences", () => {
  const rand = rng(404);
  for (const beta of pairBetas) {
    checkGradient(ncaPairLoss, randomInput(rand, 1 + Math.floor(rand() * 4), 2, false), beta);
  }
});

Deno.test("ipoLoss gradient matches finite differences", () => {
  const rand = rng(505);
  for (const beta of pairBetas) {
    checkGradient(ipoLoss, randomInput(rand, 1 + Math.floor(rand() * 4), 2, false), beta);
  }
});
