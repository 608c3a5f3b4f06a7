/**
 * `deno task sample` writes its file alone and names it when writing fails: two runs on one `--out` (in
 * one process, or the CLI beside another process) leave one run's rows, each prompt once; a full disk
 * (/dev/full) is reported with the file's path.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { LockedError } from "../../lib/lock.ts";
import { sampleToFile } from "../../lib/loop/sample.ts";
import { sampleCli, withSetup } from "./_fixtures.ts";

const quiet = () => {};

const small = { k: 2, maxNewTokens: 6, batch: 4, device: "cpu" as const, threads: 1, log: quiet };

Deno.test("sample: two runs on one file: the second is refused at once, the file has each prompt once", async () => {
  await withSetup(async (s) => {
    const out = join(s.dir, "samples.jsonl");
    const runs = await Promise.allSettled([
      sampleToFile({ model: s.model, prompts: s.prompts, out, ...small }),
      sampleToFile({ model: s.model, prompts: s.prompts, out, ...small }),
    ]);
    const refused = runs.filter((r) => r.status === "rejected");
    assert.equal(refused.length, 1, JSON.stringify(runs.map((r) => r.status)));
    const reason = (refused[0] as PromiseRejectedResult).reason;
    assert.ok(reason instanceof LockedError, String(reason));
    assert.match(reason.message, new RegExp(`samples\\.jsonl is in use by another run \\(pid ${Deno.pid}`));
    const ids = (await Deno.readTextFile(out)).trimEnd().split("\n").map((l) => JSON.parse(l).id);
    assert.deepEqual(ids, [...Array(11).keys()]);
    await assert.rejects(Deno.stat(`${out}.lock`), Deno.errors.NotFound, "the lock is gone with the run");
    // and the file resumes (nothing to do) once the first run has ended
    const again = await sampleToFile({ model: s.model, prompts: s.prompts, out, ...small });
    assert.equal(again.done, 11);
    assert.equal(again.resumed, 11);
  });
});

Deno.test("sample CLI: a file another process writes is refused, naming its pid", async () => {
  await withSetup(async (s) => {
    const out = join(s.dir, "held.jsonl");
    // another process holds the file's lock (as a running `deno task sample` would)
    const code = `import { lockFile } from ${
      JSON.stringify(new URL("../../lib/lock.ts", import.meta.url).href)
    };
await lockFile(${JSON.stringify(out)}, { command: "deno task sample --out held.jsonl" });
console.log("held");
setInterval(() => {}, 1000);`;
    const child = new Deno.Command(Deno.execPath(), { args: ["eval", code], stdout: "piped" }).spawn();
    const reader = child.stdout.getReader();
    await reader.read();
    reader.releaseLock();
    try {
      const r = await sampleCli([
        "--model",
        s.model,
        "--prompts",
        s.prompts,
        "--out",
        out,
        "--k",
        "2",
        "--max-new-tokens",
        "4",
        "--quiet",
      ]);
      assert.equal(r.code, 1, r.err);
      assert.match(
        r.err,
        new RegExp(`held\\.jsonl is in use by another run \\(pid ${child.pid}, \`deno task sample`),
      );
      await assert.rejects(Deno.stat(out), Deno.errors.NotFound, "nothing written");
    } finally {
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel();
    }
  });
});

Deno.test("sample CLI: a full disk names the file", async () => {
  await withSetup(async (s) => {
    // writes to /dev/full fail with ENOSPC ("No space left on device"); the CLI runs with -A, as writing a
    // device needs, and the link is made by ln so that this test needs no such permission itself
    const out = join(s.dir, "full.jsonl");
    const ln = await new Deno.Command("ln", { args: ["-s", "/dev/full", out] }).output();
    assert.equal(ln.code, 0);
    const r = await sampleCli([
      "--model",
      s.model,
      "--prompts",
      s.prompts,
      "--out",
      out,
      "--k",
      "2",
      "--max-new-tokens",
      "6",
      "--quiet",
    ]);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, new RegExp(`error: ${out.replaceAll(".", "\\.")}: No space left on device`));
  });
});
