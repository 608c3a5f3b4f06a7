/**
 * `deno task score` and `deno task eval` write their output alone: a second run on a scored file, or on an
 * eval folder, is refused before any work, naming the process that writes it; the file is left as it was.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { LockedError, lockFile, lockFolder } from "../../lib/lock.ts";
import { scoreFile } from "../../lib/loop/score.ts";
import { rewardFnScorer } from "../../lib/loop/scorers/reward_fn.ts";
import { loopSetup, writePrompts } from "./_fixtures.ts";
import { jsonl, SAMPLE_ROWS } from "./_score_helpers.ts";

const EXACT = new URL("./_exact_reward.ts", import.meta.url).pathname;
const REWARD = new URL("./_length_reward.ts", import.meta.url).pathname;

Deno.test("score: a file another run writes is refused at once; it scores once that run has ended", async () => {
  const dir = await Deno.makeTempDir({ prefix: "exclusive_test_" });
  const scorer = await rewardFnScorer(EXACT);
  try {
    const data = join(dir, "samples.jsonl"), out = join(dir, "scored.jsonl");
    await Deno.writeTextFile(data, jsonl(SAMPLE_ROWS));
    await Deno.writeTextFile(out, "partial\n");
    const held = await lockFile(out, { command: "deno task score --out scored.jsonl" });
    const e = await scoreFile({ data, out, scorer, log: () => {} }).then(() => null, (e) => e);
    await held.release();
    assert.ok(e instanceof LockedError, String(e));
    assert.match(e.message, new RegExp(`scored\\.jsonl is in use by another run \\(pid ${Deno.pid}`));
    assert.equal(await Deno.readTextFile(out), "partial\n", "left as it was");
    await assert.rejects(Deno.stat(`${out}.meta.json`), Deno.errors.NotFound);
    await Deno.remove(out);
    const r = await scoreFile({ data, out, scorer, log: () => {} });
    assert.equal(r.rowsWritten, SAMPLE_ROWS.length);
  } finally {
    await scorer.release();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("eval CLI: an --out folder another evaluation writes is refused, naming its pid", async () => {
  const s = await loopSetup();
  try {
    const prompts = await writePrompts(s.dir, 3);
    const out = join(s.dir, "ev");
    await Deno.mkdir(out);
    const held = await lockFolder(out, { command: "deno task eval --out ev" });
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../../eval/main.ts", import.meta.url).pathname,
        ...["--model", s.model, "--reference", s.model, "--reward-fn", REWARD, "--prompts", prompts],
        ...["--max-new-tokens", "4", "--device", "cpu", "--out", out],
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    await held.release();
    const err = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 1, err);
    assert.match(
      err,
      new RegExp(`ev is in use by another run \\(pid ${Deno.pid}, \`deno task eval --out ev\``),
    );
    assert.deepEqual(await Array.fromAsync(Deno.readDir(out)), [], "nothing written");
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
