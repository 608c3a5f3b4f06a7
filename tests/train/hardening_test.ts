/**
 * Runs that survive faults with exactly the promised result: a run killed during its export resumes
 * without logging its final evaluation twice; the policy folder is published whole or not at all; write
 * errors name their file; truncation is reported with counts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { withPath, writeFolderAtomic, writeTextAtomic } from "../../lib/files.ts";
import { readMetrics } from "../../lib/train/metrics_log.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

Deno.test("a run resumed after its last checkpoint (killed during the export) logs its final evaluation once", async () => {
  const s = await tinySetup();
  const first = await train(tinyConfigFor(s, { epochs: 1 }), { log: () => {} });
  // the export did not finish: no policy, no summary
  await Deno.remove(first.run.policy, { recursive: true });
  await Deno.remove(first.run.summary);
  const again = await train(tinyConfigFor(s, { resume: first.run.dir, epochs: 1 }), { log: () => {} });
  assert.equal(again.steps, first.steps);
  const finals = (await readMetrics(first.run.metrics)).filter((r) =>
    r.step === first.steps && r["eval/loss"] !== undefined
  );
  assert.equal(finals.length, 1, "one final evaluation record");
  assert.ok((await Deno.stat(join(first.run.policy, "onnx/model.onnx"))).isFile, "the export was redone");
  assert.deepEqual(again.eval, first.eval);
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("truncation is reported with counts: prompts cut at their start, responses at their end", async () => {
  const s = await tinySetup();
  const rows = Array.from({ length: 12 }, (_, i) =>
    JSON.stringify({
      prompt: `${"tell me more ".repeat(i % 2 ? 12 : 1)}${i}`,
      responses: [0, 1, 2, 3].map((r) => ({
        content: `${"and so on ".repeat(r === 0 ? 20 : 1)}${r}`,
        reward: r,
      })),
    }));
  await Deno.writeTextFile(`${s.dir}/long.jsonl`, rows.join("\n") + "\n");
  const lines: string[] = [];
  await train(
    tinyConfigFor(s, { data: `${s.dir}/long.jsonl`, maxLength: 40, maxPromptLength: 16, epochs: 1 }),
    {
      log: (l) => lines.push(l),
    },
  );
  const line = lines.find((l) => l.startsWith("truncation:"));
  assert.ok(line, lines.join("\n"));
  assert.match(
    line,
    /6 prompts of 12 cut at their start to 16 tokens \(\d+ tokens dropped; --max-prompt-length\)/,
  );
  assert.match(line, /12 responses cut at their end to fit 40 tokens/);
  await Deno.remove(s.dir, { recursive: true });
});

Deno.test("writeFolderAtomic: a failing export leaves the old folder and no temporary one", async () => {
  const dir = await Deno.makeTempDir();
  const target = join(dir, "policy");
  await writeFolderAtomic(target, (tmp) => writeTextAtomic(join(tmp, "model.onnx"), "old"));
  await assert.rejects(
    () =>
      writeFolderAtomic(target, async (tmp) => {
        await writeTextAtomic(join(tmp, "model.onnx"), "half");
        throw new Deno.errors.Interrupted("No space left on device (os error 28)");
      }),
    /No space left on device/,
  );
  assert.equal(await Deno.readTextFile(join(target, "model.onnx")), "old");
  assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), ["policy"]);
  await writeFolderAtomic(target, (tmp) => writeTextAtomic(join(tmp, "model.onnx"), "new"));
  assert.equal(await Deno.readTextFile(join(target, "model.onnx")), "new");
  assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), ["policy"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("write errors name their file, keeping the error's class", async () => {
  const e = withPath(
    new Deno.errors.Interrupted("No space left on device (os error 28)"),
    "/runs/x/summary.json",
  );
  assert.ok(e instanceof Deno.errors.Interrupted);
  assert.equal((e as Error).message, "/runs/x/summary.json: No space left on device (os error 28)");
  const dir = await Deno.makeTempDir();
  const missing = join(dir, "no/such/folder/summary.json");
  await assert.rejects(() => writeTextAtomic(missing, "{}"), (err: Error) => err.message.includes(missing));
  await Deno.remove(dir, { recursive: true });
});
