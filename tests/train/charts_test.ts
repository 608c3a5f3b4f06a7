import assert from "node:assert/strict";
import { lineChart, trainingCharts } from "../../lib/train/charts.ts";
import { barChart } from "../../lib/train/bar_chart.ts";
import { escapeXml, formatTick, niceTicks, valueLabel } from "../../lib/train/svg.ts";
import type { MetricsRecord } from "../../lib/train/metrics_log.ts";

/**
 * A small well-formedness check: every tag closes in order, attributes are quoted, and text and attribute
 * values hold no raw `<` or unescaped `&`. Returns the text content of every element (for label checks).
 */
function checkXml(svg: string): { texts: string[]; tags: string[] } {
  const stack: string[] = [];
  const texts: string[] = [];
  const tags: string[] = [];
  const tagRe = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/y;
  let i = 0;
  let text = "";
  while (i < svg.length) {
    if (svg[i] === "<") {
      tagRe.lastIndex = i;
      const m = tagRe.exec(svg);
      assert.ok(m, `malformed tag at ${i}: ${svg.slice(i, i + 60)}`);
      const [all, close, name, attrs, selfClose] = m;
      for (const [, value] of attrs.matchAll(/="([^"]*)"/g)) checkEntities(value);
      if (text.trim()) texts.push(text.trim());
      text = "";
      if (close) assert.equal(stack.pop(), name, `</${name}> closes the wrong element`);
      else if (!selfClose) stack.push(name);
      if (!close) tags.push(name);
      i += all.length;
    } else {
      text += svg[i++];
      if (svg[i - 1] === ">") assert.fail(`raw > in text near ${i}`);
    }
  }
  assert.deepEqual(stack, [], "unclosed elements");
  assert.equal(tags[0], "svg");
  for (const t of texts) checkEntities(t);
  return { texts, tags };
}

function checkEntities(s: string): void {
  for (const m of s.matchAll(/&([^;\s]*);?/g)) {
    assert.ok(/^&(amp|lt|gt|quot|apos);$/.test(m[0]), `bad entity ${m[0]} in ${s}`);
  }
}

const unescape = (s: string) =>
  s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(
    /&amp;/g,
    "&",
  );

Deno.test("niceTicks uses 1/2/5 × 10^k steps and covers the data", () => {
  assert.deepEqual(niceTicks(0, 1), { min: 0, max: 1, step: 0.2, values: [0, 0.2, 0.4, 0.6, 0.8, 1] });
  assert.deepEqual(niceTicks(0.13, 0.71).values, [0, 0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(niceTicks(0.1, 0.7).values, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
  assert.equal(niceTicks(1e-5, 5e-5).step, 1e-5); // not 9.999999999999999e-6
  assert.deepEqual(niceTicks(1, 300, 7, true).values, [0, 50, 100, 150, 200, 250, 300]);
  assert.deepEqual(niceTicks(-262.3, -241.8).values, [-265, -260, -255, -250, -245, -240]);
  assert.deepEqual(niceTicks(5, 5, 6, true).values, [4, 5, 6]); // one point
  assert.deepEqual(niceTicks(0, 0).values, [-1, -0.5, 0, 0.5, 1]); // flat at zero
  assert.deepEqual(niceTicks(1, 3, 6, true).values, [1, 2, 3]); // steps of optimizer steps stay whole
  const tiny = niceTicks(1e-6, 3.2e-6);
  assert.ok(tiny.values[0] <= 1e-6 && tiny.values[tiny.values.length - 1] >= 3.2e-6);
  for (const [lo, hi] of [[0.1234, 0.98765], [-3.3, 17.1], [1e-7, 9e-7], [12345, 99999], [-0.003, 0.004]]) {
    const t = niceTicks(lo, hi);
    assert.ok(t.min <= lo && t.max >= hi, `${lo}..${hi} not covered`);
    const mant = t.step / 10 ** Math.floor(Math.log10(t.step) + 1e-12);
    assert.ok([1, 2, 5].some((m) => Math.abs(mant - m) < 1e-9), `step ${t.step} is not 1/2/5 × 10^k`);
    assert.ok(t.values.length >= 3 && t.values.length <= 12);
  }
});

Deno.test("tick labels are round numbers without float noise", () => {
  const labels = (lo: number, hi: number) => {
    const t = niceTicks(lo, hi);
    return t.values.map((v) => formatTick(v, t.step));
  };
  assert.deepEqual(labels(0, 0.3), ["0", "0.05", "0.10", "0.15", "0.20", "0.25", "0.30"]);
  assert.deepEqual(labels(0.1, 0.7), ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]);
  assert.deepEqual(labels(0, 3000), ["0", "500", "1000", "1500", "2000", "2500", "3000"]);
  assert.deepEqual(labels(1e-5, 5e-5), ["1e-5", "2e-5", "3e-5", "4e-5", "5e-5"]);
  assert.deepEqual(labels(0, 4e6), ["0", "1e6", "2e6", "3e6", "4e6"]);
  assert.equal(formatTick(1.5e-4, 5e-5), "1.5e-4");
  assert.equal(formatTick(-0.3, 0.1), "-0.3");
});

Deno.test("escapeXml escapes the five XML specials", () => {
  assert.equal(escapeXml(`a<b>&"c"'d'`), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;");
});

Deno.test("lineChart is well-formed SVG with title, labels and every series name in the legend", () => {
  const svg = lineChart({
    title: "Loss <train> & eval",
    xLabel: "step",
    yLabel: "loss",
    series: [
      { name: 'train "loss"', points: [[1, 0.7], [2, 0.6], [3, 0.5]] },
      { name: "eval <loss>", points: [[2, 0.65]], color: "#000", dashed: true },
    ],
  });
  const { texts, tags } = checkXml(svg);
  const plain = texts.map(unescape);
  assert.ok(plain.includes("Loss <train> & eval"));
  assert.ok(plain.includes('train "loss"'));
  assert.ok(plain.includes("eval <loss>"));
  assert.ok(plain.includes("step") && plain.includes("loss"));
  assert.ok(svg.includes("Loss &lt;train&gt; &amp; eval"));
  assert.ok(tags.includes("path") && tags.includes("circle"));
  assert.ok(svg.includes("stroke-dasharray"));
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="720" height="420"/);
});

Deno.test("tick labels in a chart are round numbers", () => {
  const svg = lineChart({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    series: [{
      name: "s",
      points: Array.from({ length: 97 }, (_, i) => [i + 3, Math.sin(i / 7) * 0.37 + 0.11]),
    }],
  });
  const labels = checkXml(svg).texts.filter((t) => /^-?[\d.e-]+$/.test(t));
  assert.ok(labels.length >= 8, `labels: ${labels}`);
  for (const l of labels) {
    const v = Number(l);
    assert.ok(Number.isFinite(v), l);
    assert.ok(
      l.replace(/^-/, "").replace(/^0\./, "").replace(/\./, "").length <= 4,
      `label ${l} is not round`,
    );
  }
});

Deno.test("NaN and Infinity leave gaps; one-point, flat and empty series still draw", () => {
  const svg = lineChart({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    series: [
      { name: "gappy", points: [[1, 1], [2, NaN], [3, 2], [4, Infinity], [5, 3], [6, 4]] },
      { name: "flat", points: [[1, 3], [2, 3]] },
      { name: "one", points: [[7, -1]] },
      { name: "none", points: [] },
    ],
  });
  checkXml(svg);
  assert.ok(!/NaN|Infinity/.test(svg));
  const paths = [...svg.matchAll(/<path d="([^"]*)"/g)].map((m) => m[1]);
  assert.equal(paths.length, 2); // gappy's [5,6] segment and flat; isolated points are circles
  assert.ok(svg.includes(">none<"));

  const flat = lineChart({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    series: [{ name: "f", points: [[1, 2], [2, 2]] }],
  });
  checkXml(flat);
  assert.ok(!/NaN/.test(flat));
  const one = lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [{ name: "o", points: [[1, 2]] }] });
  assert.equal([...one.matchAll(/<circle/g)].length, 1);
  assert.ok(!/NaN/.test(one));
  const empty = lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [] });
  checkXml(empty);
  assert.ok(empty.includes("no data"));
});

Deno.test("long series are thinned to a few points per pixel column", () => {
  const points = Array.from(
    { length: 100_000 },
    (_, i) => [i, Math.sin(i / 100) + (i === 54_321 ? 5 : 0)] as const,
  );
  const svg = lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [{ name: "s", points }] });
  checkXml(svg);
  assert.ok(svg.length < 150_000, `svg is ${svg.length} bytes`);
  // The spike (≈ 5 + sin) survives thinning: the y axis reaches past 4.
  const top = Math.max(...checkXml(svg).texts.map(Number).filter(Number.isFinite).filter((v) => v < 10));
  assert.ok(top >= 4, `top y tick ${top}`);
});

function records(n: number, withEval: boolean): MetricsRecord[] {
  const out: MetricsRecord[] = [];
  for (let s = 1; s <= n; s++) {
    out.push({
      step: s,
      epoch: s / n,
      loss: 1 / s,
      "rewards/chosen": s * 0.01,
      "rewards/rejected": -s * 0.01,
      "logps/chosen": -100 + s,
    });
    if (withEval && s % 5 === 0) {
      out.push({
        step: s,
        epoch: s / n,
        "eval/loss": 1.1 / s,
        "eval/rewards/chosen": 0,
        "eval/logps/chosen": -99,
      });
    }
  }
  return out;
}

Deno.test("trainingCharts draws loss, rewards and chosen log-likelihood, with eval series when present", () => {
  const charts = trainingCharts(records(20, true));
  assert.deepEqual(Object.keys(charts).sort(), ["logps_chosen.svg", "loss.svg", "rewards.svg"]);
  for (const svg of Object.values(charts)) checkXml(svg);
  const texts = (k: keyof typeof charts) => checkXml(charts[k]).texts.map(unescape);
  assert.ok(texts("loss.svg").includes("loss") && texts("loss.svg").includes("eval loss"));
  for (const n of ["rewards/chosen", "rewards/rejected", "eval rewards/chosen"]) {
    assert.ok(texts("rewards.svg").includes(n), n);
  }
  assert.ok(!texts("rewards.svg").includes("eval rewards/rejected")); // never evaluated: not drawn
  assert.ok(texts("logps_chosen.svg").includes("logps/chosen"));
  assert.ok(texts("logps_chosen.svg").includes("eval logps/chosen"));

  const noEval = trainingCharts(records(20, false));
  assert.ok(!checkXml(noEval["loss.svg"]).texts.includes("eval loss"));
});

Deno.test("trainingCharts falls back to rewards/A0.. and logps/A0 for K-response runs", () => {
  const recs: MetricsRecord[] = [1, 2, 3].map((s) => ({
    step: s,
    epoch: s / 3,
    loss: 1,
    "rewards/A0": 0.1 * s,
    "rewards/A1": 0,
    "rewards/A2": -0.1 * s,
    "logps/A0": -50,
  }));
  const charts = trainingCharts(recs);
  const texts = checkXml(charts["rewards.svg"]).texts;
  for (const n of ["rewards/A0", "rewards/A1", "rewards/A2"]) assert.ok(texts.includes(n), n);
  assert.ok(checkXml(charts["logps_chosen.svg"]).texts.includes("logps/A0"));
  const empty = trainingCharts([]);
  for (const svg of Object.values(empty)) assert.ok(checkXml(svg).texts.includes("no data"));
});

Deno.test("bar labels keep their digits: 0.55 and 0.45 are not written as the axis' 0.6 and 0.5", () => {
  assert.equal(valueLabel(0.55), "0.55");
  assert.equal(valueLabel(0.45), "0.45");
  assert.equal(valueLabel(0.4523), "0.452");
  assert.equal(valueLabel(3.14159), "3.14");
  assert.equal(valueLabel(1234.6), "1235");
  assert.equal(valueLabel(-0.5), "-0.5");
  assert.equal(valueLabel(0), "0");
  assert.equal(valueLabel(2.5e-5), "2.5e-5");
  const svg = barChart({
    title: "win rate",
    yLabel: "rate",
    groups: [{ caption: "A", bars: [{ label: "policy", value: 0.55 }, { label: "reference", value: 0.45 }] }],
  });
  const labels = [...svg.matchAll(/fill="#222">([^<]+)<\/text>/g)].map((m) => m[1]);
  assert.ok(labels.includes("0.55") && labels.includes("0.45"), labels.join(", "));
});
