/** bench/sample.ts: its flags, and one tiny run that reports tokens/s and dumps the prompts it sampled. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { main, parseSampleBenchArgs } from "../../bench/sample.ts";

Deno.test("bench/sample.ts: flags with defaults and clear errors", () => {
  const a = parseSampleBenchArgs(["--shape", "tiny", "--batch", "2,4", "--ignore-eos"]);
  assert.deepEqual([a.shapes, a.batches, a.prompts, a.k, a.tokens, a.ignoreEos], [
    ["tiny"],
    [2, 4],
    16,
    4,
    32,
    true,
  ]);
  assert.deepEqual(a.folds, ["auto"]);
  assert.throws(() => parseSampleBenchArgs(["--shape", "gpt-9"]), /--shape: unknown "gpt-9"/);
  assert.throws(() => parseSampleBenchArgs(["--k", "0"]), /--k must be an integer ≥ 1/);
  assert.throws(() => parseSampleBenchArgs(["--nope"]), /Unknown option '--nope'/);
});

Deno.test("bench/sample.ts: a tiny run reports tokens/s", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench-sample-" });
  try {
    const lines: string[] = [];
    const recs = await main(
      [
        "--shape",
        "tiny",
        "--batch",
        "4",
        "--prompts",
        "3",
        "--k",
        "2",
        "--tokens",
        "5",
        "--ignore-eos",
        "--threads",
        "1",
      ]
        .concat(["--models", dir, "--dump-prompts", join(dir, "prompts.json")]),
      (l) => lines.push(l),
    );
    assert.equal(recs.length, 1);
    assert.equal(recs[0].tokens, 3 * 2 * 5, "every response runs to --tokens");
    assert.ok((recs[0].tokens_per_s as number) > 0);
    assert.deepEqual(JSON.parse(lines[0]), recs[0]);
    const dumped = JSON.parse(await Deno.readTextFile(join(dir, "prompts.json")));
    assert.equal(dumped.prompts.length, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
