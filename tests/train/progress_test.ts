import assert from "node:assert/strict";
import { formatMetric, formatProgressLine, ProgressDisplay } from "../../lib/train/progress.ts";
import { EtaEstimator, formatCount, formatDuration, progressBar } from "../../lib/cli/progress.ts";

Deno.test("formatDuration: seconds, minutes, hours, days; unknown as --", () => {
  assert.equal(formatDuration(0), "0s");
  assert.equal(formatDuration(1), "1s");
  assert.equal(formatDuration(42.4), "42s");
  assert.equal(formatDuration(59.6), "1m 00s");
  assert.equal(formatDuration(185), "3m 05s");
  assert.equal(formatDuration(3600), "1h 00m");
  assert.equal(formatDuration(3725), "1h 02m");
  assert.equal(formatDuration(86400 * 2 + 3 * 3600 + 59), "2d 03h");
  assert.equal(formatDuration(NaN), "--");
  assert.equal(formatDuration(Infinity), "--");
  assert.equal(formatDuration(-1), "--");
});

Deno.test("formatCount and formatMetric keep numbers short", () => {
  assert.equal(formatCount(950), "950");
  assert.equal(formatCount(1234), "1.23k");
  assert.equal(formatCount(45_600_000), "45.6M");
  assert.equal(formatCount(NaN), "--");
  assert.equal(formatMetric(0.693147), "0.6931");
  assert.equal(formatMetric(-12.34567), "-12.35");
  assert.equal(formatMetric(0.625), "0.625");
  assert.equal(formatMetric(1.2345e-5), "1.23e-5");
  assert.equal(formatMetric(-250123.4), "-2.5e5");
  assert.equal(formatMetric(0), "0");
  assert.equal(formatMetric(NaN), "nan");
  assert.equal(formatMetric(-Infinity), "-inf");
});

Deno.test("progressBar fills proportionally with eighth blocks, or ASCII", () => {
  assert.equal(progressBar(0, 4), "    ");
  assert.equal(progressBar(1, 4), "████");
  assert.equal(progressBar(0.5, 4), "██  ");
  assert.equal(progressBar(0.5625, 4), "██▎ ");
  assert.equal(progressBar(2, 4), "████");
  assert.equal(progressBar(0.5, 10, true), "#####-----");
  for (const f of [0, 0.01, 0.33, 0.99, 1]) assert.equal([...progressBar(f, 20)].length, 20);
});

Deno.test("formatProgressLine shows step/total, bar, percent, ETA, tokens/s and the main metrics", () => {
  const line = formatProgressLine({
    step: 12,
    totalSteps: 100,
    etaS: 185,
    tokensPerS: 1234,
    metrics: { loss: 0.693147, "rewards/margins": 0.0123, "rewards/accuracies": 0.625, lr: 5e-6 },
    barWidth: 10,
  });
  assert.equal(
    line,
    "step  12/100 █▎          12% | eta 3m 05s | 1.23k tok/s | loss 0.6931  margin 0.0123  acc 0.625",
  );
  const plain = formatProgressLine({
    step: 5,
    totalSteps: 10,
    barWidth: 0,
    epoch: 0.5,
    metrics: { loss: 1 },
  });
  assert.equal(plain, "step  5/10 50% | epoch 0.50 | eta … | loss 1");
  const done = formatProgressLine({ step: 10, totalSteps: 10, elapsedS: 65, etaS: 0, barWidth: 0 });
  assert.equal(done, "step 10/10 100% | took 1m 05s");
  const cut = formatProgressLine({ step: 1, totalSteps: 10, etaS: 1, maxWidth: 20 });
  assert.equal(cut.length, 20);
  assert.ok(cut.endsWith("…"));
});

Deno.test("EtaEstimator smooths seconds per step over chunks", () => {
  const eta = new EtaEstimator(0.5);
  assert.ok(Number.isNaN(eta.eta(100)));
  eta.update(0, 0);
  assert.ok(Number.isNaN(eta.secondsPerStep));
  eta.update(8, 16); // 2 s/step
  assert.equal(eta.secondsPerStep, 2); // bias-corrected: the first sample is the estimate
  assert.equal(eta.eta(100), 92 * 2);
  eta.update(16, 24); // 1 s/step
  // avg = 0.5·1 + 0.5·(0.5·2) = 1, weight = 0.5 + 0.5·0.5 = 0.75 → 4/3
  assert.ok(Math.abs(eta.secondsPerStep - 4 / 3) < 1e-12);
  eta.update(16, 30); // no progress: ignored
  assert.ok(Math.abs(eta.secondsPerStep - 4 / 3) < 1e-12);
  assert.equal(eta.eta(10), 0);
  assert.throws(() => new EtaEstimator(0), /smoothing/);
});

function fakeClock(): { now: () => number; advance: (s: number) => void } {
  let t = 1000;
  return { now: () => t, advance: (s) => (t += s) };
}

Deno.test("on a terminal the line redraws in place and messages print above it", () => {
  const out: string[] = [];
  const clock = fakeClock();
  const p = new ProgressDisplay({
    totalSteps: 16,
    tty: true,
    write: (s) => out.push(s),
    now: clock.now,
    columns: 200,
  });
  clock.advance(8);
  p.update(8, { metrics: { loss: 0.5, tokens_per_s: 2000 } });
  assert.equal(out.length, 1);
  assert.ok(out[0].startsWith("\rstep  8/16 ██████████            50% |"), out[0]);
  assert.ok(out[0].endsWith("\x1b[K"));
  assert.ok(out[0].includes("eta 8s") && out[0].includes("2k tok/s") && out[0].includes("loss 0.5"));
  p.log("eval loss 0.4");
  assert.ok(out[1].startsWith("\r\x1b[Keval loss 0.4\nstep  8/16"), JSON.stringify(out[1])); // then redraws
  clock.advance(8);
  p.update(16, { metrics: { loss: 0.4 } });
  assert.ok(out[2].includes("took 16s"));
  p.finish();
  assert.equal(out[3], "\n");
});

Deno.test("without a terminal a plain line is printed each time the step crosses a multiple of N", () => {
  const out: string[] = [];
  const clock = fakeClock();
  const p = new ProgressDisplay({
    totalSteps: 40,
    tty: false,
    every: 10,
    write: (s) => out.push(s),
    now: clock.now,
  });
  for (let step = 8; step <= 40; step += 8) {
    clock.advance(1);
    p.update(step, { metrics: { loss: 1 / step } });
  }
  // 8 (first), 16 (crossed 10), 24 (crossed 20), 32 (crossed 30), 40 (end)
  assert.equal(out.length, 5);
  for (const line of out) {
    assert.ok(line.endsWith("\n") && !line.includes("\r") && !line.includes("█"), JSON.stringify(line));
  }
  assert.ok(out[4].startsWith("step 40/40 100%"));
  p.log("saved checkpoint-40");
  assert.equal(out[5], "saved checkpoint-40\n");
  p.finish();
  assert.equal(out.length, 6); // the final step was already printed
});

Deno.test("finish prints the last state when it was not printed yet (a stopped run)", () => {
  const out: string[] = [];
  const p = new ProgressDisplay({
    totalSteps: 100,
    tty: false,
    every: 50,
    write: (s) => out.push(s),
    now: () => 0,
  });
  p.update(1);
  p.update(7);
  p.finish();
  assert.equal(out.length, 2);
  assert.ok(out[1].startsWith("step   7/100"));
});

Deno.test("formatDuration: under a second it keeps its digits, not 0s", () => {
  assert.equal(formatDuration(0.4), "0.4s");
  assert.equal(formatDuration(0.12), "0.1s");
  assert.equal(formatDuration(0.042), "42ms");
  assert.equal(formatDuration(0.0004), "0ms");
  assert.equal(formatDuration(0.96), "1s");
  const done = formatProgressLine({ step: 4, totalSteps: 4, elapsedS: 0.4, tokensPerS: 85, barWidth: 0 });
  assert.equal(done, "step 4/4 100% | took 0.4s | 85 tok/s");
});

Deno.test("no ETA until there is a rate: a display updated the moment it is made says eta …", () => {
  const out: string[] = [];
  const clock = fakeClock();
  const p = new ProgressDisplay({
    totalSteps: 12,
    tty: false,
    every: 1,
    write: (s) => out.push(s),
    now: clock.now,
  });
  p.update(3, { metrics: { loss: 1 } });
  assert.equal(out[0], "step  3/12 25% | eta … | loss 1\n");
  // the next chunk gives the rate, measured from the start: 6 steps in 3 s
  clock.advance(3);
  p.update(6, { metrics: { loss: 1 } });
  assert.ok(out[1].includes("eta 3s"), out[1]);
});

Deno.test("a display made after its first chunk takes that chunk's time: a rate from the first line", () => {
  const out: string[] = [];
  const clock = fakeClock();
  // a resumed run: the first chunk, steps 6 → 9, took 3 s
  const p = new ProgressDisplay({
    totalSteps: 12,
    tty: false,
    every: 1,
    write: (s) => out.push(s),
    now: clock.now,
    startStep: 6,
    elapsedS: 3,
  });
  p.update(9);
  assert.ok(out[0].includes("eta 3s"), out[0]); // 1 s a step, 3 left
  clock.advance(3);
  p.update(12);
  assert.ok(out[1].includes("took 6s"), out[1]); // both chunks
});
