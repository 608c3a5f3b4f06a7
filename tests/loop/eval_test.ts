/**
 * `deno task eval`: a policy against its reference on tiny random models. The same model against itself
 * gives equal rewards, only ties and a KL of exactly 0; two models give per-response log-probs that a
 * scoring graph built here gives too, a KL that is their mean difference, and rewards the scorer gives.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { loadModelFolder, saveModelFolder } from "../../lib/model/model_folder.ts";
import { storedWeights } from "../../lib/model/stored_weights.ts";
import {
  evalChart,
  evalProgressWriter,
  type EvalReport,
  evaluateAgainstReference,
  writeEval,
} from "../../lib/loop/eval.ts";
import { rewardFnScorer } from "../../lib/loop/scorers/reward_fn.ts";
import { ModelSession } from "../../lib/runtime/session.ts";
import { scoreExamples } from "../../lib/train/scoring.ts";
import { buildScoringGraph } from "../../lib/model/scoring_graph.ts";
import { loadTokenizer, tokenizePrompt } from "../../lib/data/tokenize.ts";
import { EVAL_USAGE, parseEvalArgs } from "../../eval/main.ts";
import { UsageError } from "../../lib/loop/scorers/from_flags.ts";
import { openGenerator } from "../../lib/model/open.ts";
import { sampleSeed } from "../../lib/loop/sample_settings.ts";
import { generate } from "../../lib/model/generate.ts";
import { loopSetup, writePrompts } from "./_fixtures.ts";

const REWARD = new URL("./_length_reward.ts", import.meta.url).pathname;

Deno.test("eval: a model against itself: equal rewards, only ties, KL exactly 0", async () => {
  const s = await loopSetup();
  const prompts = await writePrompts(s.dir, 5);
  const scorer = await rewardFnScorer(REWARD);
  const e = await evaluateAgainstReference({
    policy: s.model,
    reference: s.model,
    prompts,
    sample: { k: 3, maxNewTokens: 6, seed: 4 },
    scorer,
    batch: 4,
    log: () => {},
  });
  const r = e.report;
  assert.equal(r.prompts, 5);
  assert.equal(r.k, 3);
  assert.equal(r.policy.mean_reward, r.reference.mean_reward);
  assert.deepEqual(r.win_rate, { win: 0, tie: 1, loss: 0, pairs: 15, win_ties_half: 0.5 });
  assert.equal(r.kl.mean, 0);
  assert.equal(r.kl.note, undefined, "temperature 1, no filters: the KL is π's");
  assert.deepEqual(
    e.policyRows.map((x) => x.responses.map((y) => y.content)),
    e.referenceRows.map((x) => x.responses.map((y) => y.content)),
  );
  await scorer.release();
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("eval: two models: log-probs, KL, rewards and win rate as computed directly; files written", async () => {
  const s = await loopSetup();
  const cfg = tinyConfig("llama", { vocabSize: 128 });
  const other = join(s.dir, "other");
  await saveModelFolder(other, cfg, initWeights(cfg, { seed: 9, std: 0.08 }), {
    tokenizerFrom: join(s.dir, "tok"),
  });
  const prompts = await writePrompts(s.dir, 4);
  const scorer = await rewardFnScorer(REWARD);
  const e = await evaluateAgainstReference({
    policy: other,
    reference: s.model,
    prompts,
    sample: { k: 2, maxNewTokens: 8, seed: 1, temperature: 0.7 },
    scorer,
    log: () => {},
  });
  const r = e.report;
  assert.match(r.kl.note ?? "", /not KL\(π‖μ\) exactly/);
  // rewards: the scorer's, on the written contents
  const lengthReward = (await import(REWARD)).default as (p: string, r: string) => number;
  for (const rows of [e.policyRows, e.referenceRows]) {
    for (const row of rows) {
      for (const resp of row.responses) assert.equal(resp.reward, lengthReward("", resp.content));
    }
  }
  const polRewards = e.policyRows.flatMap((x) => x.responses.map((y) => y.reward));
  const refRewards = e.referenceRows.flatMap((x) => x.responses.map((y) => y.reward));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(Math.abs(r.policy.mean_reward - mean(polRewards)) < 1e-12);
  const wins = polRewards.filter((p, q) => p > refRewards[q]).length;
  const ties = polRewards.filter((p, q) => p === refRewards[q]).length;
  assert.equal(r.win_rate.win, wins / 8);
  assert.equal(r.win_rate.tie, ties / 8);
  // log-probs: a scoring graph built here, on the prompt rendered as training renders it and the generated
  // tokens (the stop token included)
  const tok = await loadTokenizer(s.model);
  const folder = await loadModelFolder(s.model);
  const session = await ModelSession.create(
    buildScoringGraph(folder.config, storedWeights(folder.stored)).build(),
  );
  const row0 = e.policyRows[0];
  const promptIds = tokenizePrompt(tok, [{ role: "user", content: row0.prompt as string }]);
  const responseIds = row0.responses.map((resp) => resp.ids!);
  assert.ok(row0.responses.every((resp) => resp.ids!.length === resp.tokens));
  const { logps } = await scoreExamples(session, [{ promptIds, responseIds }], { padId: 0, batchSize: 1 });
  await session.release();
  row0.responses.forEach((resp, j) => {
    assert.ok(
      Math.abs(resp.logp_reference! - logps[0][j]) < 1e-4,
      `${resp.logp_reference} vs ${logps[0][j]}`,
    );
  });
  // log π through another path: the KV-cache decoder's own log-probs of the same draws (the same seeds)
  const decoder = await openGenerator(other, { log: () => {}, withTokenizer: true });
  const gen = await generate(decoder.session, [promptIds, promptIds], {
    maxNewTokens: 8,
    temperature: 0.7,
    eosTokenIds: decoder.eosIds,
    seeds: [0, 1].map((j) => sampleSeed(1, e.policyRows[0].id as number, j)),
  });
  await decoder.close();
  gen.rows.forEach((g, j) => {
    assert.deepEqual(g.tokens, row0.responses[j].ids);
    const sum = g.logprobs.reduce((x, y) => x + y, 0);
    assert.ok(
      Math.abs(sum - row0.responses[j].logp_policy!) < 1e-3,
      `${sum} vs ${row0.responses[j].logp_policy}`,
    );
  });
  const diffs = e.policyRows.flatMap((x) => x.responses.map((y) => y.logp_policy! - y.logp_reference!));
  assert.ok(Math.abs(r.kl.mean - mean(diffs)) < 1e-9);
  assert.ok(e.policyRows.flat().every((x) => x.responses.every((y) => Number.isFinite(y.logp_policy))));
  // the files
  const out = join(s.dir, "eval");
  await writeEval(out, e);
  assert.deepEqual(
    JSON.parse(await Deno.readTextFile(join(out, "eval.json"))),
    JSON.parse(JSON.stringify(r)),
  );
  const lines = (await Deno.readTextFile(join(out, "samples_policy.jsonl"))).trim().split("\n");
  assert.equal(lines.length, 4);
  assert.equal(JSON.parse(lines[0]).scorer.kind, "reward-fn");
  assert.equal(JSON.parse(lines[0]).responses[0].ids, undefined, "token ids stay in memory");
  assert.match(await Deno.readTextFile(join(out, "charts", "eval.svg")), /^<svg[\s\S]*mean reward[\s\S]*win/);
  await scorer.release();
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("eval CLI: arguments, and bad input named", async () => {
  const a = parseEvalArgs([
    "--model",
    "p",
    "--reference",
    "r",
    "--prompts",
    "x.jsonl",
    "--reward-fn",
    "f.ts",
    "--k",
    "2",
  ])!;
  assert.equal(a.sample.k, 2);
  assert.equal(a.scorer.kind, "reward-fn");
  const rm = parseEvalArgs([
    "--model",
    "p",
    "--reference",
    "r",
    "--prompts",
    "x",
    "--reward-model",
    "rm",
    "--device",
    "cpu",
  ])!;
  assert.deepEqual(rm.scorer.kind === "reward-model" && rm.scorer.device, "cpu");
  assert.throws(
    () => parseEvalArgs(["--model", "p", "--prompts", "x", "--reward-fn", "f.ts"]),
    /--reference is required/,
  );
  assert.throws(() => parseEvalArgs(["--model", "p", "--reference", "r", "--prompts", "x"]), UsageError);
  assert.throws(
    () =>
      parseEvalArgs([
        "--model",
        "p",
        "--reference",
        "r",
        "--prompts",
        "x",
        "--reward-fn",
        "f",
        "--top-p",
        "2",
      ]),
    /--top-p must be in \(0, 1\]/,
  );
  assert.equal(parseEvalArgs(["--help"]), null);
  // the task end to end, and a missing prompts file named
  const s = await loopSetup();
  const prompts = await writePrompts(s.dir, 3);
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../../eval/main.ts", import.meta.url).pathname, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const common = ["--model", s.model, "--reference", s.model, "--reward-fn", REWARD, "--max-new-tokens", "4"];
  const ok = await run([...common, "--prompts", prompts, "--out", join(s.dir, "ev"), "--device", "cpu"]);
  const stdout = new TextDecoder().decode(ok.stdout);
  assert.equal(ok.code, 0, new TextDecoder().decode(ok.stderr));
  assert.match(stdout, /mean reward/);
  assert.match(stdout, /win rate, policy over reference \(12 pairs\): 0\.0% wins, 100\.0% ties/);
  assert.ok((await Deno.stat(join(s.dir, "ev", "eval.json"))).isFile);
  const bad = await run([...common, "--prompts", join(s.dir, "nope.jsonl"), "--device", "cpu"]);
  assert.equal(bad.code, 1);
  assert.match(new TextDecoder().decode(bad.stderr), /nope\.jsonl/);
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("eval CLI: samples at 1 / 1 / 0 whatever generation_config.json says, and its KL is exact; a flag wins; a log gets plain progress lines", async () => {
  const s = await loopSetup();
  const prompts = await writePrompts(s.dir, 2);
  // a model whose own sampling defaults (Qwen3-style) differ from eval's
  const genPath = join(s.model, "generation_config.json");
  const gen = JSON.parse(await Deno.readTextFile(genPath));
  await Deno.writeTextFile(genPath, JSON.stringify({ ...gen, temperature: 0.6, top_p: 0.95, top_k: 20 }));
  const run = async (name: string, extra: string[]) => {
    const out = join(s.dir, name);
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../../eval/main.ts", import.meta.url).pathname,
        ...["--model", s.model, "--reference", s.model, "--prompts", prompts, "--reward-fn", REWARD],
        ...["--k", "1", "--max-new-tokens", "3", "--device", "cpu", "--out", out, ...extra],
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(r.stdout);
    const stderr = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, stderr);
    // stderr is a pipe here, as in a redirected log: progress as plain lines, no control characters
    assert.ok(!stderr.includes("\r") && !stderr.includes("\x1b"), JSON.stringify(stderr));
    assert.match(stderr, /^eval: policy \d+\/\d+$/m);
    return { stdout, report: JSON.parse(await Deno.readTextFile(join(out, "eval.json"))) };
  };
  try {
    const plain = await run("plain", []);
    assert.deepEqual(
      [plain.report.settings.temperature, plain.report.settings.topP, plain.report.settings.topK],
      [1, 1, 0],
    );
    assert.equal(plain.report.kl.note, undefined);
    assert.doesNotMatch(plain.stdout, /not KL/);
    const warm = await run("warm", ["--temperature", "0.7"]);
    assert.deepEqual(
      [warm.report.settings.temperature, warm.report.settings.topP, warm.report.settings.topK],
      [0.7, 1, 0],
    );
    assert.match(warm.report.kl.note, /not KL\(π‖μ\) exactly/);
    assert.match(warm.stdout, /not KL\(π‖μ\) exactly/);
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("eval --help lists --device once, with eval's default", () => {
  const lines = EVAL_USAGE.split("\n").filter((l) => /^\s+--device\b/.test(l));
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(
    lines[0],
    /--device cpu\|cuda\|auto +where both models and a reward model run \(default: auto\)/,
  );
  assert.equal(EVAL_USAGE.split("\n").filter((l) => /^\s+--threads\b/.test(l)).length, 1);
  assert.match(EVAL_USAGE, /--reward-model <folder>/, "the scorer flags are still there");
});

Deno.test("eval progress: a live line on a terminal; plain, throttled lines without control characters in a log", () => {
  let t = 0;
  const feed = (tty: boolean) => {
    let text = "";
    const w = evalProgressWriter({ tty, write: (x) => text += x, everyMs: 10_000, now: () => t });
    t = 0;
    for (let done = 1; done <= 4; done++) {
      t += 6000;
      w.progress({ phase: "policy", done, total: 4 });
    }
    w.log("a note");
    w.progress({ phase: "reference", done: 1, total: 4 });
    w.end();
    return text;
  };
  const log = feed(false);
  assert.ok(!log.includes("\r") && !log.includes("\x1b"), JSON.stringify(log));
  assert.deepEqual(log.split("\n"), [
    "eval: policy 1/4", // a phase's first
    "eval: policy 3/4", // 10 s later
    "eval: policy 4/4", // its end
    "a note",
    "eval: reference 1/4",
    "",
  ]);
  const tty = feed(true);
  assert.ok(tty.startsWith("\reval: policy 1/4\x1b[K\reval: policy 2/4\x1b[K"), JSON.stringify(tty));
  assert.ok(
    tty.includes("\reval: policy 4/4\x1b[K\r\x1b[Ka note\n\reval: reference 1/4\x1b[K"),
    JSON.stringify(tty),
  );
  assert.ok(tty.endsWith("\r\x1b[K"), "the live line is cleared at the end");
});

Deno.test("eval chart: values written with the digits that make them right (0.55 is not 0.6)", () => {
  const side = (model: string, mean_reward: number) => ({
    model,
    samples: 20,
    mean_reward,
    reward_stderr: 0.21,
    mean_tokens: 9,
    cut_by_length: 0,
  });
  const report = {
    prompts: 10,
    k: 2,
    policy: side("policy", 3.27),
    reference: side("reference", 2.9),
    win_rate: { win: 0.55, tie: 0, loss: 0.45, pairs: 20, win_ties_half: 0.55 },
  } as unknown as EvalReport;
  const labels = [...evalChart(report).matchAll(/<text [^>]*fill="#222">([^<]*)<\/text>/g)].map((m) => m[1]);
  for (const v of ["3.27", "2.9", "0.55", "0", "0.45"]) assert.ok(labels.includes(v), `${v} in ${labels}`);
  assert.ok(!labels.includes("0.6") && !labels.includes("0.5") && !labels.includes("3.3"), labels.join(" "));
});
