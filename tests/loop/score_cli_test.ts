/**
 * The command lines: `deno task score`'s flags (one scorer, flags that belong to another refused, the
 * judge's key from the environment, a rubric without placeholders refused), the CLI end to end with a
 * reward function, and the flags of bench/score.ts and bench/parity/reward_ours.ts, whose comparison is
 * also run on a folder with our own numbers as the "torch" side (PyTorch is not on this machine).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseScoreArgs, UsageError } from "../../score/main.ts";
import { parseScoreBenchArgs } from "../../bench/score.ts";
import {
  compareRewards,
  main as rewardParity,
  parseRewardParityArgs,
} from "../../bench/parity/reward_ours.ts";
import { UsageError as BenchUsageError } from "../../bench/_common.ts";
import { formatScoreProgress } from "../../lib/loop/score.ts";
import { EXACT_REWARDS, jsonl, readRows, rewardsOf, SAMPLE_ROWS, taskCommand } from "./_score_helpers.ts";
import { rewardConfig, writeRewardFolder } from "./_reward_fixture.ts";

const base = ["--data", "s.jsonl", "--out", "o.jsonl"];
const noEnv = () => undefined;

Deno.test("score CLI: flags parse into one scorer; wrong combinations are usage errors", () => {
  assert.equal(parseScoreArgs(["--help"], noEnv), null);
  const rm = parseScoreArgs(
    [...base, "--reward-model", "rm", "--device", "cpu", "--max-length", "512"],
    noEnv,
  )!;
  assert.deepEqual(rm.scorer, {
    kind: "reward-model",
    path: "rm",
    device: "cpu",
    threads: undefined,
    maxLength: 512,
  });
  assert.equal(rm.batch, 8);
  const fn = parseScoreArgs(
    [...base, "--reward-fn", "r.ts", "--skip-errors", "--batch", "2", "--limit", "5"],
    noEnv,
  )!;
  assert.deepEqual([fn.scorer, fn.skipErrors, fn.batch, fn.limit], [
    { kind: "reward-fn", path: "r.ts", timeoutS: 60 },
    true,
    2,
    5,
  ]);
  const judge = parseScoreArgs(
    [...base, "--judge-url", "http://127.0.0.1:8000", "--rubric", "r.txt"],
    (n) => n === "JUDGE_API_KEY" ? "sk-env" : undefined,
    () => "rate {prompt} / {response}",
  )!;
  assert.deepEqual(judge.scorer, {
    kind: "judge",
    url: "http://127.0.0.1:8000",
    model: undefined,
    apiKey: "sk-env",
    rubric: "rate {prompt} / {response}",
    concurrency: 4,
    retries: 2,
    maxTokens: 1024,
    timeoutS: 300,
    maxResponseBytes: 4 * 1024 * 1024,
  });
  const bad: [string[], RegExp][] = [
    [base, /choose a scorer/],
    [
      [...base, "--reward-fn", "a.ts", "--judge-url", "u"],
      /choose one scorer, not --reward-fn and --judge-url/,
    ],
    [["--out", "o", "--reward-fn", "a.ts"], /--data is required/],
    [[...base, "--reward-fn", "a.ts", "--device", "cuda"], /--device applies to --reward-model only/],
    [[...base, "--reward-model", "m", "--concurrency", "2"], /--concurrency applies to --judge-url only/],
    [[...base, "--reward-model", "m", "--device", "tpu"], /--device must be one of cpu, cuda, auto/],
    [[...base, "--judge-url", "u", "--retries", "two"], /--retries must be a whole number ≥ 0/],
    [[...base, "--reward-fn", "a.ts", "--batch", "0"], /--batch must be a whole number ≥ 1/],
    [[...base, "--reward-fn", "a.ts", "--bogus"], /unknown option --bogus/],
    [[...base, "--judge-url", "u", "--judge-max-bytes", "0"], /--judge-max-bytes must be a whole number ≥ 1/],
    [
      [...base, "--reward-fn", "a.ts", "--judge-max-bytes", "9"],
      /--judge-max-bytes applies to --judge-url only/,
    ],
  ];
  for (const [args, re] of bad) {
    assert.throws(
      () => parseScoreArgs(args, noEnv),
      (e: Error) => e instanceof UsageError && re.test(e.message),
      args.join(" "),
    );
  }
  assert.throws(
    () => parseScoreArgs([...base, "--judge-url", "u", "--rubric", "r.txt"], noEnv, () => "only {prompt}"),
    /--rubric r\.txt has no \{response\} placeholder/,
  );
});

Deno.test("score CLI: --reward-timeout and --judge-timeout are seconds a timer holds; --judge-max-bytes", () => {
  const fn = (t: string) => parseScoreArgs([...base, "--reward-fn", "r.ts", `--reward-timeout=${t}`], noEnv)!;
  assert.deepEqual(fn("2.5").scorer, { kind: "reward-fn", path: "r.ts", timeoutS: 2.5 });
  assert.deepEqual(fn("2147483").scorer, { kind: "reward-fn", path: "r.ts", timeoutS: 2147483 });
  const judge = (args: string[]) =>
    parseScoreArgs([...base, "--judge-url", "u", "--judge-model", "m", ...args], noEnv)!;
  const j = judge(["--judge-timeout", "2147483.647", "--judge-max-bytes", "1000"]).scorer;
  assert.deepEqual(j.kind === "judge" && [j.timeoutS, j.maxResponseBytes], [2147483.647, 1000]);
  const bad: [string[], RegExp][] = [
    // past 2^31-1 ms a timer fires at once: every call would time out as it starts
    [
      [...base, "--reward-fn", "r.ts", "--reward-timeout", "2147484"],
      /--reward-timeout must be at most 2147483\.647 seconds \(timers hold at most 2\^31-1 ms/,
    ],
    [
      [...base, "--judge-url", "u", "--judge-timeout", "2147484"],
      /--judge-timeout must be at most 2147483\.647 seconds/,
    ],
    [
      [...base, "--judge-url", "u", "--judge-timeout", "1e300"],
      /--judge-timeout must be at most 2147483\.647 seconds/,
    ],
    [
      [...base, "--reward-fn", "r.ts", "--reward-timeout", "0"],
      /--reward-timeout must be a number of seconds > 0, got "0"/,
    ],
    [
      [...base, "--reward-fn", "r.ts", "--reward-timeout=-1"],
      /--reward-timeout must be a number of seconds > 0/,
    ],
    [
      [...base, "--reward-fn", "r.ts", "--reward-timeout", "soon"],
      /--reward-timeout must be a number of seconds > 0/,
    ],
    [
      [...base, "--reward-fn", "r.ts", "--reward-timeout", "Infinity"],
      /--reward-timeout must be a number of seconds > 0/,
    ],
    [
      [...base, "--judge-url", "u", "--judge-timeout", "NaN"],
      /--judge-timeout must be a number of seconds > 0/,
    ],
    [[...base, "--judge-url", "u", "--reward-timeout", "5"], /--reward-timeout applies to --reward-fn only/],
    [
      [...base, "--reward-model", "m", "--reward-timeout", "5"],
      /--reward-timeout applies to --reward-fn only/,
    ],
  ];
  for (const [args, re] of bad) {
    assert.throws(
      () => parseScoreArgs(args, noEnv),
      (e: Error) => e instanceof UsageError && re.test(e.message),
      args.join(" "),
    );
  }
});

Deno.test({
  name:
    "score CLI: SIGTERM or Ctrl-C stops deno task score at once while a reward function is stuck in a loop",
  ignore: Deno.build.os === "windows",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "score_cli_" });
    try {
      const fn = join(dir, "stuck.ts"), data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
      // it says where it is stuck by writing the row's marker file first
      await Deno.writeTextFile(
        fn,
        `export default (_p: string, response: string, row: Record<string, unknown>): number => {
  if (response !== "spin") return 1;
  Deno.writeTextFileSync(String(row.marker), "stuck");
  while (true) { /* stuck */ }
};\n`,
      );
      for (const signal of ["SIGTERM", "SIGINT"] as const) {
        const marker = join(dir, `${signal}.marker`);
        await Deno.writeTextFile(
          data,
          jsonl([{ prompt: "p", responses: ["ok"] }, { prompt: "q", marker, responses: ["spin"] }]),
        );
        await Deno.remove(out).catch(() => {});
        await Deno.remove(`${out}.meta.json`).catch(() => {});
        const c = await taskCommand("score", [
          "--data",
          data,
          "--out",
          out,
          "--reward-fn",
          fn,
          "--batch",
          "1",
          "--quiet",
        ]);
        const child = new Deno.Command(c.cmd, { args: c.args, cwd: c.cwd, stdout: "null", stderr: "piped" })
          .spawn();
        const stderr = child.stderr.text();
        // a process that does not stop is killed (after 60 s to start, 20 s once signalled): the test fails
        let killed = false, guard: ReturnType<typeof setTimeout> | undefined;
        const killAfter = (ms: number) => {
          clearTimeout(guard);
          guard = setTimeout(() => {
            killed = true;
            try {
              child.kill("SIGKILL");
            } catch { /* it has exited */ }
          }, ms);
        };
        killAfter(60_000);
        const reached = () => Deno.stat(marker).then(() => true, () => false);
        try {
          while (!killed && !await reached()) await new Promise((r) => setTimeout(r, 100));
          if (!await reached()) assert.fail(`the reward function was not reached: ${await stderr}`);
          await new Promise((r) => setTimeout(r, 200));
          killAfter(20_000);
          const t0 = performance.now();
          child.kill(signal);
          const status = await child.status;
          const seconds = (performance.now() - t0) / 1000;
          const err = await stderr;
          assert.ok(!killed, `${signal} did not stop it in 20 s: ${err}`);
          assert.ok(seconds < 5, `stopped after ${seconds.toFixed(1)} s`);
          assert.equal(status.code, 130, err);
          assert.match(err, /interrupted: stopping now/);
          assert.match(err, /stopped: 1 rows in .*scored\.jsonl/);
          // the row before it is written; a rerun continues from there
          assert.equal((await readRows(out)).length, 1);
        } finally {
          clearTimeout(guard);
          if (!killed) {
            try {
              child.kill("SIGKILL");
            } catch { /* it has exited */ }
          }
          await child.status;
          await stderr.catch(() => "");
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("score CLI: deno task score with a reward function writes the scored file; bad flags exit 2", async () => {
  const dir = await Deno.makeTempDir({ prefix: "score_cli_" });
  try {
    const data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
    await Deno.writeTextFile(data, jsonl(SAMPLE_ROWS));
    const fn = new URL("./_exact_reward.ts", import.meta.url).pathname;
    const run = async (args: string[]) => {
      const c = await taskCommand("score", args);
      const r = await new Deno.Command(c.cmd, { args: c.args, cwd: c.cwd, stdout: "piped", stderr: "piped" })
        .output();
      return { code: r.code, err: new TextDecoder().decode(r.stderr) };
    };
    const ok = await run(["--data", data, "--out", out, "--reward-fn", fn, "--batch", "3"]);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.err, /scored 4\/4 rows · [\d.]+ rows\/s · [\d.]+ sequences\/s · ETA 0s/);
    assert.match(ok.err, /done: 4 rows in .*scored\.jsonl \(4 scored now/);
    assert.deepEqual(rewardsOf(await readRows(out)), EXACT_REWARDS);
    const bad = await run(["--data", data, "--out", out]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /choose a scorer/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("score: the progress line has rows/s, sequences/s and the ETA", () => {
  const line = formatScoreProgress({
    rowsRead: 30,
    rowsTotal: 100,
    rowsThisRun: 20,
    sequencesThisRun: 80,
    seconds: 10,
    skipped: 1,
  });
  assert.equal(line, "scored 30/100 rows · 2.00 rows/s · 8.00 sequences/s · ETA 35s · 1 skipped");
});

Deno.test("bench/score.ts: flags", () => {
  assert.equal(parseScoreBenchArgs(["--help"]), null);
  const a = parseScoreBenchArgs(["--family", "gpt2", "--layers", "2", "--hidden", "64", "--threads", "1"])!;
  assert.deepEqual([a.family, a.layers, a.hidden, a.threads, a.batch, a.device], [
    "gpt2",
    2,
    64,
    1,
    8,
    "cpu",
  ]);
  assert.throws(() => parseScoreBenchArgs(["--hidden", "48"]), /multiple of 32/);
  assert.throws(() => parseScoreBenchArgs(["--family", "bert"]), BenchUsageError);
});

Deno.test("bench/parity/reward_ours.ts: flags, and the comparison on our own numbers", async () => {
  assert.equal(parseRewardParityArgs(["--help"]), null);
  assert.deepEqual(parseRewardParityArgs(["--dir", "d", "--models", "llama,gpt2", "--tol", "1e-3"]), {
    dir: "d",
    device: "cpu",
    models: ["llama", "gpt2"],
    tol: 1e-3,
  });
  assert.throws(() => parseRewardParityArgs([]), /--dir is required/);
  assert.throws(() => parseRewardParityArgs(["--dir", "d", "--models", "bert"]), /unknown "bert"/);
  assert.throws(() => parseRewardParityArgs(["--dir", "d", "--device", "tpu"]), /--device must be/);
  assert.throws(() => parseRewardParityArgs(["--dir", "d", "--tol", "x"]), /--tol must be a positive number/);
  const c = compareRewards([1, 2.00001], [1, 2], 1e-4);
  assert.ok(Math.abs(c.max_abs - 1e-5) < 1e-12 && c.scale === 2 && c.ok);
  assert.equal(compareRewards([1, 2.001], [1, 2], 1e-4).ok, false);
  assert.equal(compareRewards([1, NaN], [1, 2], 1e-4).ok, false);

  const dir = await Deno.makeTempDir({ prefix: "reward_parity_" });
  try {
    await writeRewardFolder(join(dir, "gpt2"), rewardConfig("gpt2"));
    const ids = [[5, 6, 7, 0], [0, 0, 9, 10]], mask = [[1, 1, 1, 0], [0, 0, 1, 1]];
    const ref = { model: "gpt2", rows: 2, width: 4, input_ids: ids, attention_mask: mask, rewards: [0, 0] };
    const file = join(dir, "gpt2", "reward_parity.json");
    await Deno.writeTextFile(file, JSON.stringify(ref));
    await Deno.writeTextFile(join(dir, "reward_manifest.json"), JSON.stringify({ models: ["gpt2"] }));
    // first pass: zeros as "torch" fail; then our own rewards as "torch" pass
    const lines: string[] = [];
    assert.equal(await rewardParity(["--dir", dir], (l) => lines.push(l)), 1);
    const first = JSON.parse(lines[0]);
    assert.equal(first.ok, false);
    await Deno.writeTextFile(file, JSON.stringify({ ...ref, rewards: first.ours }));
    lines.length = 0;
    assert.equal(await rewardParity(["--dir", dir, "--models", "gpt2"], (l) => lines.push(l)), 0);
    assert.equal(JSON.parse(lines[0]).max_abs, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
