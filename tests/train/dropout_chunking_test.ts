/**
 * LoRA dropout masks are a function of (step, micro-batch, module, token, feature) only: how the steps are
 * grouped into session runs (`--steps-per-run`), which changes how wide each batch is padded, cannot
 * change them, so the same run chunked differently ends with the same weights.
 */
import assert from "node:assert/strict";
import { loadLatestCheckpoint } from "../../lib/train/checkpoint.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

Deno.test("LoRA dropout: steps-per-run 1 and 3 end with the same weights", async () => {
  const s = await tinySetup();
  // lengths that vary from batch to batch, so that chunks pad to different widths
  const words = ["one", "two", "three", "cat", "dog", "red", "blue"];
  const rows = Array.from({ length: 24 }, (_, i) => {
    const long = (n: number) => Array.from({ length: n }, (_, j) => words[(i + j) % words.length]).join(" ");
    return JSON.stringify({
      prompt: `say ${long(1 + (i % 5) * 4)}`,
      responses: [0, 1, 2, 3].map((r) => ({ content: long(1 + ((i + r) % 3) * 5), reward: (i + r) % 4 })),
    });
  });
  await Deno.writeTextFile(`${s.dir}/varied.jsonl`, rows.join("\n") + "\n");
  const weights = async (stepsPerRun: number) => {
    const out = `${s.dir}/spr${stepsPerRun}`;
    const cfg = {
      out,
      data: `${s.dir}/varied.jsonl`,
      loraDropout: 0.05,
      stepsPerRun,
      epochs: 2,
      maxLength: 96,
    };
    await train(tinyConfigFor(s, cfg), { log: () => {} });
    return (await loadLatestCheckpoint(`${out}/checkpoints`))!.tensors;
  };
  const a = await weights(1), b = await weights(3);
  let worst = 0;
  for (const name of Object.keys(a)) {
    if (!name.endsWith(".weight")) continue; // the parameters (moments follow them)
    for (let i = 0; i < a[name].length; i++) worst = Math.max(worst, Math.abs(a[name][i] - b[name][i]));
  }
  // Only float rounding of differently padded batches is left: 7e-7 without dropout, 1.1e-5 with it after
  // 24 steps at lr 1e-2 (the masks themselves are equal, see keyed_dropout_test.ts); masks keyed by padded
  // position put these runs 0.056 apart.
  assert.ok(worst < 1e-4, `largest difference ${worst}`);
  await Deno.remove(s.dir, { recursive: true });
});
