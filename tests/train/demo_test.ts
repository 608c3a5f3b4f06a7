import assert from "node:assert/strict";
import { formatDemoTable, runDemo } from "../../lib/train/demo/demo.ts";

Deno.test("demo: the whole pipeline at small scale (SFT → sample K → align → evaluate) leaves a servable policy", async () => {
  const runs = await Deno.makeTempDir();
  const r = await runDemo({ runs, device: "cpu", scale: 0.1, log: () => {} });
  assert.equal(r.rows.length, 1);
  const row = r.rows[0];
  for (
    const v of [r.sft.meanReward, row.score.meanReward, row.score.exactMatch, row.score.kl, row.rewardsChosen]
  ) {
    assert.ok(Number.isFinite(v), `finite: ${v}`);
  }
  assert.ok(row.score.meanReward >= 0 && row.score.meanReward <= 1);
  assert.ok((await Deno.stat(`${r.dir}/policy/onnx/model.onnx`)).isFile, "servable policy in the run folder");
  assert.ok((await Deno.stat(`${r.dir}/demo.json`)).isFile);
  assert.ok((await Deno.stat(`${r.dir}/charts/loss.svg`)).isFile);
  const table = formatDemoTable(r);
  assert.match(table, /SFT \(reference\)/);
  assert.match(table, /NCA K=4/);
  await Deno.remove(runs, { recursive: true });
});

Deno.test("demo: --compare trains DPO, InfoNCA and NCA with K = 2 and 4 and charts the chosen likelihood", async () => {
  const runs = await Deno.makeTempDir();
  const r = await runDemo({
    runs,
    device: "cpu",
    scale: 0.06,
    compare: true,
    log: () => {},
    align: { epochs: 1 },
  });
  assert.deepEqual(r.rows.map((x) => x.method), [
    "DPO (binarized pairs)",
    "InfoNCA K=2",
    "InfoNCA K=4",
    "NCA K=2",
    "NCA K=4",
  ]);
  const svg = await Deno.readTextFile(`${r.dir}/charts/compare_logps_chosen.svg`);
  for (const m of ["DPO", "InfoNCA K=2", "NCA K=4"]) assert.ok(svg.includes(m), `chart names ${m}`);
  await Deno.remove(runs, { recursive: true });
});
