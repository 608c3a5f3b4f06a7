/**
 * The dashboard script's pure functions, without a browser (dashboard_test.ts drives the page itself): the
 * chart rows (one per step, a step's eval record merged into its training record), the padded y range and
 * which runs get the demo's example in the inspector. The script starts the page only where there is a
 * document, so it can be evaluated here as it is served.
 */
import assert from "node:assert/strict";

type Row = Record<string, number>;
type Logic = {
  rowsByStep(records: Row[]): Row[];
  yRange(min: number | null, max: number | null): [number, number];
  isDemoRun(run: unknown): boolean;
};

const source = await Deno.readTextFile(new URL("../../lib/serve/static/dashboard.js", import.meta.url));
const logic = new Function(`${source}\nreturn { rowsByStep, yRange, isDemoRun };`)() as Logic;

Deno.test("dashboard logic: one chart row per step, the final eval merged into its step, in step order", () => {
  const records: Row[] = [
    { step: 1, loss: 1.5 },
    { step: 2, loss: 1.4 },
    { step: 2, "eval/loss": 1.45 },
    { step: 3, loss: 1.3 },
    { step: 3, "eval/loss": 1.35 },
  ];
  assert.deepEqual(logic.rowsByStep(records), [
    { step: 1, loss: 1.5 },
    { step: 2, loss: 1.4, "eval/loss": 1.45 },
    { step: 3, loss: 1.3, "eval/loss": 1.35 },
  ]);
  assert.equal(logic.rowsByStep(records).length, 3, "3 logged steps, not 5");
  assert.deepEqual(logic.rowsByStep([{ step: 5, loss: 1 }, { step: 2, loss: 2 }]).map((r) => r.step), [2, 5]);
  assert.deepEqual(logic.rowsByStep([]), []);
});

Deno.test("dashboard logic: the y range holds every value with room; a lone value gets a range around it", () => {
  const [lo, hi] = logic.yRange(1.38, 1.41);
  assert.ok(lo < 1.38 && hi > 1.41, `${lo}..${hi}`);
  const [a, b] = logic.yRange(1.41, 1.41);
  assert.ok(a < 1.41 && b > 1.41 && b - a > 0.2, `${a}..${b}`);
  const [z0, z1] = logic.yRange(0, 0);
  assert.deepEqual([z0, z1], [-1, 1]);
  assert.deepEqual(logic.yRange(null, null), [0, 1]);
});

Deno.test("dashboard logic: only the demo's runs get the demo's prompt", () => {
  assert.equal(logic.isDemoRun({ run: { id: "demo-1" }, config: { name: "demo" } }), true);
  assert.equal(logic.isDemoRun({ run: { id: "qwen-1" }, config: { name: "qwen" } }), false);
  assert.equal(logic.isDemoRun({ run: null, config: null }), false, "a bare model folder");
});
