/** A run keeps its data report in `summary.json` under `data` (a one-step tiny run: about a second). */
import assert from "node:assert/strict";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "../train/_fixtures.ts";

Deno.test("summary.json has the data report: rows, files, skipped rows, drops", async () => {
  const s = await tinySetup();
  try {
    const good = await Deno.readTextFile(`${s.dir}/reward.jsonl`);
    const bad =
      '{"prompt": "hi", "responses": [{"content": "a", "reward": 1}, {"content": "b", "reward": null}]}';
    const short =
      '{"prompt": "hey", "responses": [{"content": "a", "reward": 1}, {"content": "b", "reward": 2}]}';
    const data = `${s.dir}/with-bad.jsonl`;
    await Deno.writeTextFile(data, `${bad}\n${short}\n${good}`);
    const log: string[] = [];
    const cfg = tinyConfigFor(s, { data, k: 4, skipBadRows: true, maxSteps: 1, out: `${s.dir}/run` });
    const res = await train(cfg, { log: (l) => log.push(l) });
    assert.ok(
      log.includes(`  skipped ${data}:1: field "responses[1].reward": expected a finite number, got null`),
    );
    const summary = JSON.parse(await Deno.readTextFile(res.run.summary));
    assert.deepEqual(summary.data, {
      train: {
        source: data,
        files: [data],
        format: "reward",
        rows: 26,
        skipped_rows: 1,
        skipped: [`${data}:1: field "responses[1].reward": expected a finite number, got null`],
        too_few_responses: { k: 4, count: 1, by_k: { 2: 1 } },
        all_ties: 0,
        prompts: 24,
      },
    });
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
