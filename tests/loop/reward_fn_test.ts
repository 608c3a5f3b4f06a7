/**
 * The reward function scorer's process (lib/loop/scorers/reward_fn.ts): a call stuck in a loop times out
 * naming its row (or is skipped, and a fresh process scores the next items), release() and the signal stop
 * a call in progress, each call gets a copy of the row, results that are not numbers (a BigInt, a symbol,
 * an object) are refused naming the row, and import failures are reported when the scorer is made.
 * Reward modules are written into a temporary folder by each test.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { scoreFile, scoreMetaPath } from "../../lib/loop/score.ts";
import { rewardFnScorer } from "../../lib/loop/scorers/reward_fn.ts";
import { RewardProcess } from "../../lib/loop/scorers/reward_fn_process.ts";
import { ScoreError, type ScoreItem, ScorerStoppedError } from "../../lib/loop/scorers/types.ts";
import { jsonl, readRows, rewardsOf, SAMPLE_ROWS } from "./_score_helpers.ts";

/** A reward module: `body` is the default export's, with `prompt`, `response` and `row` in scope. */
function rewardModule(body: string): string {
  return `export default async (prompt: string, response: string, row: Record<string, any>): Promise<unknown> => {
  ${body}
};\n`;
}

const SPIN = `if (response === "spin") { while (true) { /* stuck */ } }`;

/** Writes `modules` (name: text) into a temporary folder (or `into`, then removed too) for `fn`. */
async function withModules(
  modules: Record<string, string>,
  fn: (paths: Record<string, string>, dir: string) => Promise<void>,
  into?: string,
): Promise<void> {
  const dir = into ?? await Deno.makeTempDir({ prefix: "reward_fn_test_" });
  try {
    const paths: Record<string, string> = {};
    for (const [name, text] of Object.entries(modules)) {
      paths[name] = join(dir, `${name}.ts`);
      await Deno.writeTextFile(paths[name], text);
    }
    await fn(paths, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const item = (response: string, at = `f.jsonl:1 responses[0]`): ScoreItem => ({
  prompt: [{ role: "user", content: "q" }],
  response,
  row: { answer: "a" },
  at,
});

Deno.test("reward fn: a call stuck in a loop times out naming its row; skipped, a fresh process goes on", async () => {
  await withModules({ spin: rewardModule(`${SPIN}\n  return response.length;`) }, async ({ spin }) => {
    const scorer = await rewardFnScorer(spin, { timeoutS: 0.3 });
    try {
      const t0 = performance.now();
      await assert.rejects(
        () => scorer.score([item("ok"), item("spin", "f.jsonl:2 responses[1]")]),
        (e: Error) =>
          e instanceof ScoreError &&
          e.message ===
            "f.jsonl:2 responses[1]: the reward function timed out after 0.3 s (--reward-timeout)",
      );
      assert.ok(performance.now() - t0 < 10_000, "timed out promptly");
      // the same scorer goes on with a fresh process
      assert.deepEqual(await scorer.score([item("abc")]), [3]);
    } finally {
      await scorer.release();
    }
    const skipped: [string, string][] = [];
    const skipping = await rewardFnScorer(spin, {
      timeoutS: 0.3,
      skipErrors: true,
      onSkip: (at, why) => skipped.push([at, why]),
    });
    try {
      const r = await skipping.score([item("ab"), item("spin", "f.jsonl:2 responses[0]"), item("abcd")]);
      assert.deepEqual(r, [2, NaN, 4]);
      assert.deepEqual(skipped, [[
        "f.jsonl:2 responses[0]",
        "the reward function timed out after 0.3 s (--reward-timeout)",
      ]]);
    } finally {
      await skipping.release();
    }
  });
});

Deno.test("reward fn: release() or the signal stops a call in progress; the pending score() rejects", async () => {
  await withModules({ spin: rewardModule(`${SPIN}\n  return 1;`) }, async ({ spin }) => {
    const scorer = await rewardFnScorer(spin);
    const pending = scorer.score([item("spin")]);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    await scorer.release();
    await assert.rejects(
      () => pending,
      (e: Error) => e instanceof ScorerStoppedError && /released/.test(e.message),
    );
    assert.ok(performance.now() - t0 < 5_000);
    await assert.rejects(() => scorer.score([item("x")]), ScorerStoppedError);

    const stop = new AbortController();
    const stoppable = await rewardFnScorer(spin, { signal: stop.signal });
    try {
      const p = stoppable.score([item("x"), item("spin")]);
      setTimeout(() => stop.abort(), 200);
      await assert.rejects(
        () => p,
        (e: Error) =>
          e instanceof ScorerStoppedError && e.message === `${spin}: the reward function was stopped`,
      );
    } finally {
      await stoppable.release();
    }
    // an aborted signal: nothing starts
    await assert.rejects(() => rewardFnScorer(spin, { signal: AbortSignal.abort() }), ScorerStoppedError);
  });
});

Deno.test("reward fn: a run stopped by its signal in a stuck call writes nothing of that batch; a rerun completes it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "reward_fn_test_" });
  const flag = join(dir, "spin.flag");
  // stuck on row 1 while the flag file exists
  const body = `if (row.id === 1 && response === "7") {
    let stuck = true;
    try { Deno.statSync(${JSON.stringify(flag)}); } catch { stuck = false; }
    while (stuck) { /* stuck */ }
  }
  return response.length;`;
  await withModules({ spin: rewardModule(body) }, async ({ spin }) => {
    await Deno.writeTextFile(flag, "");
    const data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
    await Deno.writeTextFile(data, jsonl(SAMPLE_ROWS));
    const stop = new AbortController();
    const scorer = await rewardFnScorer(spin, { signal: stop.signal });
    try {
      setTimeout(() => stop.abort(), 300);
      const r = await scoreFile({ data, out, scorer, batch: 1, signal: stop.signal, log: () => {} });
      assert.equal(r.complete, false);
      assert.equal(r.rowsRead, 1);
      assert.equal((await readRows(out)).length, 1);
      assert.equal(JSON.parse(await Deno.readTextFile(scoreMetaPath(out))).progress.rowsRead, 1);
    } finally {
      await scorer.release();
    }
    await Deno.remove(flag);
    const again = await rewardFnScorer(spin);
    try {
      const r = await scoreFile({ data, out, scorer: again, batch: 1, log: () => {} });
      assert.deepEqual([r.complete, r.resumedFrom, r.rowsWritten], [true, 1, 4]);
      assert.deepEqual(rewardsOf(await readRows(out)), [[1, 9, 1], [1, 1], [1, 3], [3, 2]]);
    } finally {
      await again.release();
    }
  }, dir);
});

Deno.test("reward fn: each call gets a copy of the row: a module that mutates it changes nothing written", async () => {
  const mutate = rewardModule(`
  row.prompt = "changed";
  row.responses?.push({ content: "added" });
  if (Array.isArray(row.responses) && typeof row.responses[0] === "object") row.responses[0].content = "x";
  row.extra = "added";
  delete row.answer;
  return 1;`);
  await withModules({ mutate }, async ({ mutate }, dir) => {
    const data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
    await Deno.writeTextFile(data, jsonl(SAMPLE_ROWS));
    const scorer = await rewardFnScorer(mutate);
    try {
      await scoreFile({ data, out, scorer, batch: 2, log: () => {} });
    } finally {
      await scorer.release();
    }
    const rows = await readRows(out);
    const scorerField = { kind: "reward-fn", name: mutate };
    const withReward = (r: unknown) =>
      typeof r === "string" ? { content: r, reward: 1 } : { ...(r as object), reward: 1 };
    assert.deepEqual(
      rows.slice(0, 3),
      SAMPLE_ROWS.slice(0, 3).map((r) => ({
        ...r,
        responses: (r.responses as unknown[]).map(withReward),
        scorer: scorerField,
      })),
    );
    assert.deepEqual(rows[3], {
      ...SAMPLE_ROWS[3],
      responses: [{ content: "yes", reward: 1 }, { content: "no", reward: 1 }],
      scorer: scorerField,
    });
  });
});

Deno.test("reward fn: a BigInt, a symbol, an object or nothing is refused naming the row; true/false are 1/0", async () => {
  const results = rewardModule(`
  if (response === "bigint") return 10n;
  if (response === "symbol") return Symbol("s");
  if (response === "object") return { score: 1 };
  if (response === "nothing") return undefined;
  if (response === "string") return "7";
  if (response === "true") return true;
  if (response === "false") return false;
  if (response === "throw") throw new Error("cannot parse " + prompt);
  return 0.25;`);
  await withModules({ results }, async ({ results }) => {
    const skipped: [string, string][] = [];
    const scorer = await rewardFnScorer(results, {
      skipErrors: true,
      onSkip: (at, why) => skipped.push([at, why]),
    });
    try {
      const names = ["bigint", "symbol", "object", "nothing", "string", "true", "false", "throw", "plain"];
      const r = await scorer.score(names.map((n, i) => item(n, `f.jsonl:${i + 1} responses[0]`)));
      assert.deepEqual(r, [NaN, NaN, NaN, NaN, NaN, 1, 0, NaN, 0.25]);
      assert.deepEqual(skipped, [
        ["f.jsonl:1 responses[0]", "the reward function returned a BigInt (10n); return a number"],
        ["f.jsonl:2 responses[0]", "the reward function returned a symbol (Symbol(s)); return a number"],
        ["f.jsonl:3 responses[0]", 'the reward function returned {"score":1} (expected a finite number)'],
        ["f.jsonl:4 responses[0]", "the reward function returned nothing (expected a finite number)"],
        ["f.jsonl:5 responses[0]", 'the reward function returned "7" (expected a finite number)'],
        ["f.jsonl:8 responses[0]", "the reward function threw: cannot parse q"],
      ]);
    } finally {
      await scorer.release();
    }
    const strict = await rewardFnScorer(results);
    try {
      await assert.rejects(
        () => strict.score([item("plain"), item("bigint", "s.jsonl:3 responses[1]")]),
        (e: Error) =>
          e instanceof ScoreError &&
          e.message ===
            "s.jsonl:3 responses[1]: the reward function returned a BigInt (10n); return a number",
      );
    } finally {
      await strict.release();
    }
  });
});

Deno.test("reward fn: an error thrown outside the call fails the item in progress; the next gets a fresh process", async () => {
  const late = rewardModule(`
  if (response === "late") {
    setTimeout(() => { throw new Error("late boom"); }, 1);
    return new Promise(() => {});
  }
  return 1;`);
  await withModules({ late }, async ({ late }) => {
    const skipped: string[] = [];
    const scorer = await rewardFnScorer(late, { skipErrors: true, onSkip: (_at, why) => skipped.push(why) });
    try {
      const t0 = performance.now();
      assert.deepEqual(await scorer.score([item("late"), item("fine")]), [NaN, 1]);
      assert.ok(performance.now() - t0 < 30_000, "not the 60 s timeout");
      assert.deepEqual(skipped, ["the reward function failed: an uncaught error: late boom"]);
    } finally {
      await scorer.release();
    }
  });
});

Deno.test("reward fn: import failures and a module without a function are reported when the scorer is made", async () => {
  await withModules({
    broken: `throw new Error("broken at import");\nexport default () => 1;\n`,
    none: `export const reward = 3;\n`,
    stuck: `while (true) { /* stuck */ }\nexport default () => 1;\n`,
    named: `export function reward(): number {\n  return 2;\n}\nexport default () => 1;\n`,
  }, async (m, dir) => {
    await assert.rejects(
      () => rewardFnScorer(m.broken),
      (e: Error) =>
        e.message.startsWith(`${m.broken}: could not import the reward module: `) &&
        e.message.includes("broken at import"),
    );
    await assert.rejects(
      () => rewardFnScorer(m.none),
      (e: Error) => e.message.startsWith(`${m.none}: exports no reward function`),
    );
    const missing = join(dir, "missing.ts");
    await assert.rejects(
      () => rewardFnScorer(missing),
      (e: Error) => e.message.startsWith(`${missing}: could not import the reward module`),
    );
    await assert.rejects(
      () => rewardFnScorer(m.stuck, { timeoutS: 0.5, importTimeoutS: 3 }),
      (e: Error) => e.message === `${m.stuck}: importing the reward module took longer than 3 s`,
    );
    // `reward` is preferred to the default export; the settings a resumed file checks are the module's
    const named = await rewardFnScorer(m.named);
    try {
      assert.deepEqual(await named.score([item("x")]), [2]);
      assert.equal(named.settings.export, "reward");
      assert.equal(named.settings.module, m.named);
      assert.match(String(named.settings.sha), /^[0-9a-f]{8}$/);
    } finally {
      await named.release();
    }
    for (const bad of [0, -1, NaN, Infinity, 2 ** 31 / 1000]) {
      await assert.rejects(() => rewardFnScorer(m.named, { timeoutS: bad }), RangeError, String(bad));
      await assert.rejects(() => rewardFnScorer(m.named, { importTimeoutS: bad }), RangeError, String(bad));
    }
  });
});

/** Whether process `pid` still exists (a zombie counts as gone: it runs nothing); asked of ps. */
async function alive(pid: number): Promise<boolean> {
  const r = await new Deno.Command("ps", { args: ["-o", "stat=", "-p", String(pid)], stdout: "piped" })
    .output();
  const stat = new TextDecoder().decode(r.stdout).trim();
  return r.code === 0 && stat !== "" && !stat.startsWith("Z");
}

Deno.test({
  name: "reward fn: a process stuck in a loop is gone once killed, and with its parent when that is killed",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await withModules({ spin: rewardModule(SPIN) }, async (paths) => {
      // killed by the scorer: the process ends (a Worker stuck so would keep a core busy after terminate())
      const p = RewardProcess.start();
      p.postMessage({ type: "load", url: `file://${paths.spin}`, path: paths.spin });
      p.postMessage({ type: "call", id: 1, prompt: "q", response: "spin", row: {} });
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(await alive(p.pid), "spinning");
      p.terminate();
      assert.equal((await p.exited).signal, "SIGKILL");
      assert.equal(await alive(p.pid), false);

      // the scorer's process killed with SIGKILL: its reward function's process dies with it
      const script = `import { RewardProcess } from ${
        JSON.stringify(new URL("../../lib/loop/scorers/reward_fn_process.ts", import.meta.url).href)
      };
const p = RewardProcess.start();
p.postMessage({ type: "load", url: "file://${paths.spin}", path: "${paths.spin}" });
p.postMessage({ type: "call", id: 1, prompt: "q", response: "spin", row: {} });
console.log(p.pid);
await p.exited;`;
      const parent = new Deno.Command(Deno.execPath(), { args: ["eval", script], stdout: "piped" }).spawn();
      const reader = parent.stdout.getReader();
      const pid = Number(new TextDecoder().decode((await reader.read()).value).trim());
      reader.releaseLock();
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(await alive(pid), "the child spins");
      parent.kill("SIGKILL");
      await parent.status;
      await parent.stdout.cancel();
      let gone = false;
      for (let i = 0; i < 50 && !gone; i++) {
        gone = !(await alive(pid));
        if (!gone) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(gone, `process ${pid} outlived its parent`);
    });
  },
});
