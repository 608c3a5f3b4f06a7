/**
 * Dependency-free SVG line charts of a run's metrics, so every run folder has pictures a user can open in a
 * browser (or embed in a README) without Python, matplotlib or TensorBoard (bar charts: bar_chart.ts). The paper's central picture —
 * NCA keeps the chosen response's likelihood from falling while DPO/InfoNCA let it fall — is
 * `logps_chosen.svg`.
 *
 * Charts are plain SVG 1.1 text: axes with "nice" round tick values (1, 2, 5 × 10^k steps), a legend,
 * gaps where a value is NaN/Infinity, a marker for points with no neighbour, and all text XML-escaped.
 *
 * @module
 */

import type { MetricsRecord } from "./metrics_log.ts";
import { escapeXml, extent, formatTick, niceTicks, PALETTE, px, svgHeader, textWidth } from "./svg.ts";

/** One line of a chart. */
export type Series = {
  name: string;
  /** `[x, y]` pairs in drawing order; pairs with a non-finite coordinate leave a gap. */
  points: readonly (readonly [number, number])[];
  /** Any SVG color; a palette color by default. */
  color?: string;
  /** Draw dashed (eval series). */
  dashed?: boolean;
};

/** What {@link lineChart} draws. */
export type LineChartOptions = {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  /** Pixels; default 720. */
  width?: number;
  /** Pixels; default 420. */
  height?: number;
};

/** At most ~2 points per pixel column: keep each bucket's min and max in x order (keeps spikes visible). */
function decimate(points: [number, number][], columns: number): [number, number][] {
  if (points.length <= columns * 4) return points;
  const [x0, x1] = extent(points.map((p) => p[0]));
  const buckets = new Map<number, [number, number][]>();
  for (const p of points) {
    const b = x1 === x0 ? 0 : Math.floor(((p[0] - x0) / (x1 - x0)) * (columns - 1));
    let list = buckets.get(b);
    if (!list) buckets.set(b, list = []);
    list.push(p);
  }
  const out: [number, number][] = [];
  for (const b of [...buckets.keys()].sort((a, c) => a - c)) {
    const list = buckets.get(b)!;
    let lo = list[0];
    let hi = list[0];
    for (const p of list) {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
    if (lo === hi) out.push(lo);
    else out.push(...(lo[0] <= hi[0] ? [lo, hi] : [hi, lo]));
  }
  return out;
}

/** Split a series at non-finite points into runs of drawable points. */
function segments(points: Series["points"]): [number, number][][] {
  const out: [number, number][][] = [];
  let cur: [number, number][] = [];
  for (const [x, y] of points) {
    if (Number.isFinite(x) && Number.isFinite(y)) cur.push([x, y]);
    else if (cur.length) {
      out.push(cur);
      cur = [];
    }
  }
  if (cur.length) out.push(cur);
  return out;
}

/**
 * Render a line chart as a standalone SVG document.
 *
 * @example
 * ```ts
 * import { join } from "node:path";
 * const svg = lineChart({ title: "Loss", xLabel: "step", yLabel: "loss",
 *   series: [{ name: "train", points: [[1, 0.69], [2, 0.6], [3, 0.52]] }] });
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(join(dir, "loss.svg"), svg); // opens in any browser
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function lineChart(opts: LineChartOptions): string {
  const width = opts.width ?? 720;
  const height = opts.height ?? 420;
  const series = opts.series.map((s, i) => ({
    ...s,
    color: s.color ?? PALETTE[i % PALETTE.length],
    segs: segments(s.points),
  }));
  const all = series.flatMap((s) => s.segs.flat());
  const hasData = all.length > 0;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const integerX = hasData && xs.every(Number.isInteger);
  const [x0, x1] = hasData ? extent(xs) : [0, 1];
  const [y0, y1] = hasData ? extent(ys) : [0, 1];
  const xt = niceTicks(x0, x1, 7, integerX);
  const yt = niceTicks(y0, y1, 6);
  const xLabels = xt.values.map((v) => formatTick(v, xt.step));
  const yLabels = yt.values.map((v) => formatTick(v, yt.step));

  // Legend rows under the title, wrapped to the width.
  const legendItems = series.map((s) => ({ s, w: 28 + textWidth(s.name, 12) + 18 }));
  const legendRows: (typeof legendItems)[] = [[]];
  let rowW = 0;
  for (const item of legendItems) {
    if (rowW + item.w > width - 40 && legendRows[legendRows.length - 1].length) {
      legendRows.push([]);
      rowW = 0;
    }
    legendRows[legendRows.length - 1].push(item);
    rowW += item.w;
  }
  const legendH = series.length ? legendRows.length * 18 + 6 : 0;

  const top = 34 + legendH;
  const left = 32 + Math.max(...yLabels.map((l) => textWidth(l, 11))) + 8;
  const right = 24;
  const bottom = 52;
  const pw = Math.max(40, width - left - right);
  const ph = Math.max(40, height - top - bottom);
  // Data and ticks stay `inset` pixels inside the frame, so points at the extremes do not sit on it.
  const inset = 8;
  const sx = (x: number) => left + inset + ((x - xt.min) / (xt.max - xt.min)) * (pw - 2 * inset);
  const sy = (y: number) => top + ph - inset - ((y - yt.min) / (yt.max - yt.min)) * (ph - 2 * inset);

  const out: string[] = svgHeader(width, height, opts.title);

  // Legend.
  legendRows.forEach((row, r) => {
    const rowWidth = row.reduce((a, it) => a + it.w, 0);
    let x = (width - rowWidth) / 2;
    const y = 36 + r * 18;
    for (const { s, w } of row) {
      const dash = s.dashed ? ` stroke-dasharray="5 3"` : "";
      out.push(
        `<line x1="${px(x)}" y1="${px(y)}" x2="${px(x + 22)}" y2="${px(y)}" stroke="${
          escapeXml(s.color)
        }" stroke-width="2.5"${dash}/>`,
      );
      out.push(
        `<text x="${px(x + 28)}" y="${px(y + 4)}" font-size="12" fill="#333">${escapeXml(s.name)}</text>`,
      );
      x += w;
    }
  });

  // Grid, ticks and tick labels.
  out.push(`<g stroke="#e6e6e6" stroke-width="1">`);
  for (const v of yt.values) {
    out.push(`<line x1="${px(left)}" y1="${px(sy(v))}" x2="${px(left + pw)}" y2="${px(sy(v))}"/>`);
  }
  for (const v of xt.values) {
    out.push(`<line x1="${px(sx(v))}" y1="${px(top)}" x2="${px(sx(v))}" y2="${px(top + ph)}"/>`);
  }
  out.push(`</g>`);
  if (yt.min < 0 && yt.max > 0) {
    out.push(
      `<line x1="${px(left)}" y1="${px(sy(0))}" x2="${px(left + pw)}" y2="${
        px(sy(0))
      }" stroke="#999" stroke-width="1"/>`,
    );
  }
  out.push(`<g font-size="11" fill="#444">`);
  yt.values.forEach((v, i) =>
    out.push(
      `<text x="${px(left - 6)}" y="${px(sy(v) + 4)}" text-anchor="end">${escapeXml(yLabels[i])}</text>`,
    )
  );
  xt.values.forEach((v, i) =>
    out.push(
      `<text x="${px(sx(v))}" y="${px(top + ph + 16)}" text-anchor="middle">${escapeXml(xLabels[i])}</text>`,
    )
  );
  out.push(`</g>`);
  out.push(
    `<rect x="${px(left)}" y="${px(top)}" width="${px(pw)}" height="${
      px(ph)
    }" fill="none" stroke="#888" stroke-width="1"/>`,
  );

  // Axis labels.
  out.push(
    `<text x="${px(left + pw / 2)}" y="${px(height - 12)}" font-size="13" text-anchor="middle" fill="#222">${
      escapeXml(opts.xLabel)
    }</text>`,
  );
  out.push(
    `<text transform="translate(16 ${
      px(top + ph / 2)
    }) rotate(-90)" font-size="13" text-anchor="middle" fill="#222">${escapeXml(opts.yLabel)}</text>`,
  );

  // Data, clipped to the plot area.
  out.push(
    `<clipPath id="plot"><rect x="${px(left - 3)}" y="${px(top - 3)}" width="${px(pw + 6)}" height="${
      px(ph + 6)
    }"/></clipPath>`,
  );
  out.push(
    `<g clip-path="url(#plot)" fill="none" stroke-width="2" stroke-linejoin="round" stroke-linecap="round">`,
  );
  for (const s of series) {
    const color = escapeXml(s.color);
    const dash = s.dashed ? ` stroke-dasharray="6 4"` : "";
    const count = s.segs.reduce((a, seg) => a + seg.length, 0);
    const markers = count <= 40;
    for (const seg of s.segs) {
      const pts = decimate(seg, Math.ceil(pw));
      if (pts.length > 1) {
        const d = pts.map(([x, y], i) => `${i ? "L" : "M"}${px(sx(x))} ${px(sy(y))}`).join("");
        out.push(`<path d="${d}" stroke="${color}"${dash}/>`);
      }
      if (markers || pts.length === 1) {
        for (const [x, y] of pts) {
          out.push(`<circle cx="${px(sx(x))}" cy="${px(sy(y))}" r="2.5" fill="${color}" stroke="none"/>`);
        }
      }
    }
  }
  out.push(`</g>`);
  if (!hasData) {
    out.push(
      `<text x="${px(left + pw / 2)}" y="${
        px(top + ph / 2)
      }" font-size="14" text-anchor="middle" fill="#999">no data</text>`,
    );
  }
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

/** The `[step, value]` points of one metric across records (records without it are skipped, not gaps). */
export function metricPoints(records: readonly MetricsRecord[], name: string): [number, number][] {
  const out: [number, number][] = [];
  for (const r of records) {
    const v = r[name];
    if (v !== undefined) out.push([r.step, v]);
  }
  return out;
}

const CHOSEN = "#2ca02c";
const REJECTED = "#d62728";

/** Train series of `names`, then eval series (dashed) for those that were evaluated. */
function withEval(
  records: readonly MetricsRecord[],
  names: { name: string; label?: string; color?: string }[],
): Series[] {
  const out: Series[] = [];
  for (const eval_ of [false, true]) {
    for (const n of names) {
      const key = eval_ ? `eval/${n.name}` : n.name;
      const points = metricPoints(records, key);
      if (points.length === 0 && (eval_ || names.length > 1)) continue;
      out.push({
        name: eval_ ? `eval ${n.label ?? n.name}` : n.label ?? n.name,
        points,
        color: n.color,
        dashed: eval_,
      });
    }
  }
  return out;
}

/** `rewards/A0`, `rewards/A1`, … present in the records, in index order. */
function responseMetrics(records: readonly MetricsRecord[], prefix: string): string[] {
  const found = new Set<number>();
  for (const r of records) {
    for (const k of Object.keys(r)) {
      const m = new RegExp(`^${prefix}/A(\\d+)$`).exec(k);
      if (m) found.add(Number(m[1]));
    }
  }
  return [...found].sort((a, b) => a - b).map((i) => `${prefix}/A${i}`);
}

/** File name → SVG of the standard charts of a run. */
export type TrainingCharts = { "loss.svg": string; "rewards.svg": string; "logps_chosen.svg": string };

/**
 * The standard charts of a run from its metrics records: loss; implicit rewards of chosen and rejected
 * responses (or, for K-response runs that log only `rewards/A0..`, each ranked response); and the
 * log-likelihood of chosen responses (`logps/A0`, the best response, when there is no `logps/chosen`).
 * Eval metrics (`eval/…`) are drawn dashed in the same colors.
 */
export function trainingCharts(records: readonly MetricsRecord[]): TrainingCharts {
  const has = (name: string) => records.some((r) => r[name] !== undefined || r[`eval/${name}`] !== undefined);
  const loss = lineChart({
    title: "Loss",
    xLabel: "step",
    yLabel: "loss",
    series: withEval(records, [{ name: "loss", color: PALETTE[0] }]),
  });

  let rewardNames: { name: string; color?: string }[];
  if (has("rewards/chosen") || has("rewards/rejected") || responseMetrics(records, "rewards").length === 0) {
    rewardNames = [{ name: "rewards/chosen", color: CHOSEN }, { name: "rewards/rejected", color: REJECTED }];
  } else {
    rewardNames = responseMetrics(records, "rewards").map((name) => ({ name }));
  }
  const rewards = lineChart({
    title: "Implicit rewards β·(log π − log μ)",
    xLabel: "step",
    yLabel: "reward",
    series: withEval(records, rewardNames),
  });

  const logpName = !has("logps/chosen") && has("logps/A0") ? "logps/A0" : "logps/chosen";
  const logps = lineChart({
    title: "Log-likelihood of chosen responses",
    xLabel: "step",
    yLabel: "log π(y|x), summed over tokens",
    series: withEval(records, [{ name: logpName, color: CHOSEN }]),
  });
  return { "loss.svg": loss, "rewards.svg": rewards, "logps_chosen.svg": logps };
}
