/**
 * `--resume` notices what changed since the checkpoint: rows shuffled, rewards edited, examples added, the
 * model's weights replaced — each refused with what changed, or continued with `--allow-changed-inputs`;
 * and the cached reference log-probs are used only when whole and unedited (rows, widths, nulls, a shifted
 * value, broken JSON are each noticed, said, and scored again to the same values).
 */
import assert from "node:assert/strict";
import { tinyConfig } from "../fixtures/tiny_config.ts";
import { initWeights } from "../../lib/model/init.ts";
import { saveModelFolder } from "../../lib/model/model_folder.ts";
import { compareData, compareFolder, dataDigest, folderDigest } from "../../lib/train/inputs_digest.ts";
import type { PreparedExample } from "../../lib/train/prepare.ts";
import { train } from "../../lib/train/trainer.ts";
import { tinyConfigFor, tinySetup } from "./_fixtures.ts";

const ex = (p: number[], r: number[][], rewards?: number[]): PreparedExample => ({
  promptIds: p,
  responseIds: r,
  ...(rewards ? { rewards, labels: rewards.map((x) => x / 10) } : {}),
});

Deno.test("data digest: order, rewards and examples tell apart what changed", () => {
  const a = ex([1, 2], [[3, 4], [5]], [2, 1]),
    b = ex([7], [[8], [9, 9]], [1, 0]),
    c = ex([6], [[1], [2]], [3, 3]);
  const base = dataDigest([a, b], [c]);
  assert.deepEqual(compareData(base, dataDigest([a, b], [c])), []);
  assert.match(compareData(base, dataDigest([b, a], [c]))[0], /^rows reordered/);
  // a shuffle moves examples between the splits too: still the same examples
  assert.match(compareData(base, dataDigest([c, b], [a]))[0], /^rows reordered/);
  // rewards edited: the same texts (the responses re-ranked by the new rewards)
  const a2 = ex([1, 2], [[5], [3, 4]], [3, 2]);
  assert.match(compareData(base, dataDigest([a2, b], [c]))[0], /^rewards edited/);
  assert.match(
    compareData(base, dataDigest([a, b], []))[0],
    /^other examples.*\(2 training \/ 1 held-out prompts then, 2 \/ 0 now\)/,
  );
  assert.match(compareData(base, dataDigest([a, ex([7], [[8], [9, 8]], [1, 0])], [c]))[0], /^other examples/);
});

Deno.test("folder digest: a file whose size, time and inode did not change keeps its recorded hash", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    await Deno.writeFile(`${dir}/model.safetensors`, new Uint8Array([1, 2, 3]));
    const d = await folderDigest(dir, [`${dir}/model.safetensors`]);
    assert.equal(Object.keys(d.files).length, 2);
    const fake = structuredClone(d);
    fake.files["model.safetensors"].sha256 = "recorded";
    assert.equal(
      (await folderDigest(dir, [`${dir}/model.safetensors`], fake)).files["model.safetensors"].sha256,
      "recorded",
    );
    await Deno.writeFile(`${dir}/model.safetensors`, new Uint8Array([1, 2, 4]));
    const after = await folderDigest(dir, [`${dir}/model.safetensors`], d);
    assert.notEqual(after.files["model.safetensors"].sha256, d.files["model.safetensors"].sha256);
    assert.match(compareFolder("the model", d, after)[0], /^the model's files changed: model\.safetensors$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A run stopped after one step, to resume; the setup's folder. */
async function stoppedRun() {
  const s = await tinySetup();
  const cfg = tinyConfigFor(s, { epochs: 1 });
  const first = await train(cfg, { log: () => {}, stopAfterSteps: 1 });
  assert.equal(first.interrupted, true);
  return { s, cfg, first };
}

async function editRows(path: string, edit: (rows: Record<string, unknown>[]) => Record<string, unknown>[]) {
  const rows = (await Deno.readTextFile(path)).trimEnd().split("\n").map((l) => JSON.parse(l));
  await Deno.writeTextFile(path, edit(rows).map((r) => JSON.stringify(r)).join("\n") + "\n");
}

const resumeOf = (s: { dir: string; model: string }, dir: string, allow = false) =>
  tinyConfigFor(s, { resume: dir, epochs: 1, allowChangedInputs: allow });

Deno.test("resume: shuffled rows are refused, saying so; --allow-changed-inputs continues with a note", async () => {
  const { s, first } = await stoppedRun();
  try {
    await editRows(`${s.dir}/reward.jsonl`, (rows) => [...rows.slice(12), ...rows.slice(0, 12)]);
    const metrics = await Deno.readTextFile(first.run.metrics);
    await assert.rejects(
      train(resumeOf(s, first.run.dir), { log: () => {} }),
      /the inputs changed since .*checkpoint-\d+: rows reordered: the same examples in another order.*--allow-changed-inputs/,
    );
    assert.equal(await Deno.readTextFile(first.run.metrics), metrics, "nothing written");
    const lines: string[] = [];
    const r = await train(resumeOf(s, first.run.dir, true), { log: (l) => lines.push(l) });
    assert.equal(r.interrupted, false);
    assert.ok(
      lines.some((l) => /on changed inputs \(--allow-changed-inputs\): rows reordered/.test(l)),
      lines.join("\n"),
    );
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("resume: edited rewards and added rows are refused, each named", async () => {
  const { s, first } = await stoppedRun();
  try {
    const data = `${s.dir}/reward.jsonl`, original = await Deno.readTextFile(data);
    await editRows(
      data,
      (rows) =>
        rows.map((r, i) =>
          i === 5
            ? {
              ...r,
              responses: (r.responses as { reward: number }[]).map((x) => ({ ...x, reward: -x.reward })),
            }
            : r
        ),
    );
    await assert.rejects(train(resumeOf(s, first.run.dir), { log: () => {} }), /rewards edited/);
    await Deno.writeTextFile(data, original + original.split("\n")[0].replace("what is", "what was") + "\n");
    await assert.rejects(
      train(resumeOf(s, first.run.dir), { log: () => {} }),
      /other examples: prompts or responses added, removed or edited/,
    );
    // a field the run does not read may change
    await editRows(data, (rows) => rows.slice(0, 24).map((r) => ({ ...r, note: "unused" })));
    const r = await train(resumeOf(s, first.run.dir), { log: () => {} });
    assert.equal(r.interrupted, false);
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("resume: a model folder whose weights were replaced is refused, naming the file", async () => {
  const { s, first } = await stoppedRun();
  try {
    const cache = await Deno.readTextFile(`${first.run.dir}/reference_logps.json`);
    const cfg = tinyConfig("llama", { vocabSize: 128 });
    await saveModelFolder(s.model, cfg, initWeights(cfg, { seed: 2 }), { tokenizerFrom: `${s.dir}/tok` });
    await assert.rejects(
      train(resumeOf(s, first.run.dir), { log: () => {} }),
      /the model's files changed: .*model\.safetensors/,
    );
    const after = await Deno.readTextFile(`${first.run.dir}/reference_logps.json`);
    assert.equal(after, cache, "refused before anything was scored with the new weights");
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("reference cache: wrong rows, widths, nulls, shifted values or broken JSON are scored again", async () => {
  const { s, first } = await stoppedRun();
  try {
    const path = `${first.run.dir}/reference_logps.json`;
    const good = JSON.parse(await Deno.readTextFile(path));
    assert.equal(typeof good.sha256, "string");
    const damage: [string, (c: typeof good) => string][] = [
      ['has 18 "train" rows for 19 prompts', (c) => JSON.stringify({ ...c, train: c.train.slice(1) })],
      [
        '"train"\\[3\\] is not 4 values',
        (c) =>
          JSON.stringify({
            ...c,
            train: c.train.map((r: number[], i: number) => (i === 3 ? r.slice(1) : r)),
          }),
      ],
      [
        '"eval"\\[0\\] holds a value that is not a finite number',
        (c) => JSON.stringify({ ...c, eval: [[null, ...c.eval[0].slice(1)], ...c.eval.slice(1)] }),
      ],
      [
        "does not match its checksum",
        (c) => JSON.stringify({ ...c, train: [c.train[1], c.train[0], ...c.train.slice(2)] }),
      ],
      [
        "does not match its checksum",
        (c) => JSON.stringify({ ...c, eval: c.eval.map((r: number[]) => r.map((x) => x - 0.5)) }),
      ],
      ["is not valid JSON", (c) => JSON.stringify(c).slice(0, -10)],
    ];
    for (const [why, edit] of damage) {
      await Deno.writeTextFile(path, edit(good));
      const lines: string[] = [];
      const r = await train(resumeOf(s, first.run.dir), { log: (l) => lines.push(l), stopAfterSteps: 0 });
      assert.equal(r.steps, first.steps);
      assert.ok(
        lines.some((l) => new RegExp(`reference_logps\\.json ${why}.*: scoring again`).test(l)),
        `${why}:\n${lines.join("\n")}`,
      );
      const again = JSON.parse(await Deno.readTextFile(path));
      assert.deepEqual(again.train, good.train);
      assert.deepEqual(again.eval, good.eval);
    }
    const lines: string[] = [];
    await train(resumeOf(s, first.run.dir), { log: (l) => lines.push(l), stopAfterSteps: 0 });
    assert.ok(lines.some((l) => /reference log-probs: cached in/.test(l)), "a whole cache is used");
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
