/**
 * A dependency-free SVG bar chart with error whiskers and grouped bars: what `deno task eval` draws
 * (`charts/eval.svg`, each model's mean reward ± its standard error).
 * @module
 */
import {
  escapeXml,
  extent,
  formatTick,
  niceTicks,
  PALETTE,
  px,
  svgHeader,
  textWidth,
  valueLabel,
} from "./svg.ts";

/** One bar of a {@link barChart}: a value, an optional ± error (drawn as a whisker) and a color. */
export type Bar = { label: string; value: number; err?: number; color?: string };

/** A group of bars under one caption (e.g. the policy's and the reference's mean reward). */
export type BarGroup = { caption: string; bars: readonly Bar[] };

/**
 * Grouped vertical bars with error whiskers and the value written above each bar: evaluation results
 * (`deno task eval`'s rewards, win rates, lengths) as a picture. The y axis starts at 0 unless a value is
 * negative; non-finite values draw no bar.
 */
export function barChart(
  opts: { title: string; yLabel: string; groups: readonly BarGroup[]; width?: number; height?: number },
): string {
  const width = opts.width ?? 720;
  const height = opts.height ?? 420;
  const bars = opts.groups.flatMap((g) => g.bars);
  const ends = bars.flatMap((b) =>
    Number.isFinite(b.value) ? [b.value + (b.err ?? 0), b.value - (b.err ?? 0), b.value] : []
  );
  const [lo, hi] = ends.length ? extent([0, ...ends]) : [0, 1];
  const yt = niceTicks(lo, hi, 6);
  const yLabels = yt.values.map((v) => formatTick(v, yt.step));
  const top = 40, bottom = 56, right = 24;
  const left = 32 + Math.max(...yLabels.map((l) => textWidth(l, 11))) + 8;
  const pw = Math.max(40, width - left - right), ph = Math.max(40, height - top - bottom);
  const sy = (y: number) => top + ph - ((y - yt.min) / (yt.max - yt.min)) * ph;
  const out: string[] = svgHeader(width, height, opts.title);
  out.push(`<g stroke="#e6e6e6" stroke-width="1">`);
  for (const v of yt.values) {
    out.push(`<line x1="${px(left)}" y1="${px(sy(v))}" x2="${px(left + pw)}" y2="${px(sy(v))}"/>`);
  }
  out.push(`</g><g font-size="11" fill="#444">`);
  yt.values.forEach((v, i) =>
    out.push(
      `<text x="${px(left - 6)}" y="${px(sy(v) + 4)}" text-anchor="end">${escapeXml(yLabels[i])}</text>`,
    )
  );
  out.push(`</g>`);
  const slot = pw / Math.max(1, opts.groups.length);
  opts.groups.forEach((g, gi) => {
    const n = Math.max(1, g.bars.length);
    const bw = Math.min(64, (slot * 0.8) / n);
    const x0 = left + gi * slot + (slot - bw * n) / 2;
    g.bars.forEach((b, bi) => {
      if (!Number.isFinite(b.value)) return;
      const color = escapeXml(b.color ?? PALETTE[bi % PALETTE.length]);
      const x = x0 + bi * bw, y = sy(Math.max(0, b.value)), h = Math.abs(sy(b.value) - sy(0));
      out.push(
        `<rect x="${px(x + 2)}" y="${px(y)}" width="${px(bw - 4)}" height="${px(h)}" fill="${color}"/>`,
      );
      const cx = x + bw / 2;
      if (b.err && b.err > 0) {
        const [a, c] = [sy(b.value + b.err), sy(b.value - b.err)];
        out.push(
          `<path d="M${px(cx)} ${px(a)}L${px(cx)} ${px(c)}M${px(cx - 5)} ${px(a)}L${px(cx + 5)} ${px(a)}M${
            px(cx - 5)
          } ${px(c)}L${px(cx + 5)} ${px(c)}" stroke="#333" stroke-width="1.2" fill="none"/>`,
        );
      }
      const label = valueLabel(b.value);
      const ly = sy(b.value + Math.max(0, b.err ?? 0)) - 5;
      out.push(
        `<text x="${px(cx)}" y="${px(ly)}" font-size="11" text-anchor="middle" fill="#222">${label}</text>`,
      );
      out.push(
        `<text x="${px(cx)}" y="${px(top + ph + 16)}" font-size="11" text-anchor="middle" fill="#444">${
          escapeXml(b.label)
        }</text>`,
      );
    });
    out.push(
      `<text x="${px(left + gi * slot + slot / 2)}" y="${
        px(top + ph + 34)
      }" font-size="13" text-anchor="middle" fill="#222">${escapeXml(g.caption)}</text>`,
    );
  });
  out.push(
    `<line x1="${px(left)}" y1="${px(sy(0))}" x2="${px(left + pw)}" y2="${px(sy(0))}" stroke="#888"/>`,
  );
  out.push(
    `<text transform="translate(16 ${
      px(top + ph / 2)
    }) rotate(-90)" font-size="13" text-anchor="middle" fill="#222">${escapeXml(opts.yLabel)}</text>`,
  );
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
