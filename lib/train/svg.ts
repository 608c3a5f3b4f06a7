/**
 * What every chart here is drawn with: the palette, XML escaping, "nice" round tick values (1, 2, 5 × 10^k
 * steps) and their labels, value labels that keep their digits, and SVG number formatting.
 * @module
 */

/** Colors for series without one (Tableau 10, readable on white and for most color-blind viewers). */
export const PALETTE: readonly string[] = Object.freeze([
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
]);

/** Escape text for XML content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!,
  );
}

/** Decimal places a tick step needs (0.5 → 1, 0.05 → 2, 10 → 0). */
function decimalsOf(step: number): number {
  return Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
}

/** Tick positions of an axis. */
export type Ticks = { min: number; max: number; step: number; values: number[] };

/**
 * Round tick values covering `[min, max]`: a step of 1, 2 or 5 × 10^k giving about `target` ticks; the axis
 * is widened to whole steps. `integer` forces steps ≥ 1 (an axis of optimizer steps). Equal or non-finite
 * bounds are widened so there is always a range to draw.
 */
export function niceTicks(min: number, max: number, target = 6, integer = false): Ticks {
  if (!Number.isFinite(min) || !Number.isFinite(max)) [min, max] = [0, 1];
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    [min, max] = [min - pad, max + pad];
  }
  // Of the 1/2/5/10 × 10^k steps around range/(target−1), the one whose tick count is closest to target
  // (ties: the smaller step, which wastes less of the axis).
  const raw = (max - min) / Math.max(1, target - 1);
  const base = 10 ** Math.floor(Math.log10(raw));
  const count = (step: number) => Math.ceil(max / step - 1e-9) - Math.floor(min / step + 1e-9) + 1;
  let step = NaN;
  for (const m of [1, 2, 5, 10]) {
    const clean = Number((m * base).toPrecision(12)); // 10 · 1e-6 is 9.999999999999999e-6 in floats
    const s = integer ? Math.max(1, Math.round(clean)) : clean;
    if (Number.isNaN(step) || Math.abs(count(s) - target) < Math.abs(count(step) - target)) step = s;
  }
  const lo = Math.floor(min / step + 1e-9);
  const hi = Math.ceil(max / step - 1e-9);
  const d = decimalsOf(step);
  const values: number[] = [];
  for (let i = lo; i <= hi && values.length < 100; i++) {
    values.push(d <= 20 ? Number((i * step).toFixed(d)) : i * step);
  }
  return { min: values[0], max: values[values.length - 1], step, values };
}

/** A tick label: plain decimals when readable ("0.05", "1200"), else short scientific ("2e-5", "1.5e6"). */
export function formatTick(v: number, step: number): string {
  if (v === 0) return "0";
  const big = Math.max(Math.abs(v), step);
  if (step >= 1e-3 && big < 1e6) return v.toFixed(decimalsOf(step));
  const e = Math.floor(Math.log10(Math.abs(v)) + 1e-12);
  const digits = Math.max(0, Math.min(15, e - Math.floor(Math.log10(step) + 1e-12)));
  const [mant, exp] = v.toExponential(digits).split("e");
  const m = mant.includes(".") ? mant.replace(/\.?0+$/, "") : mant;
  return `${m}e${exp.replace("+", "")}`;
}

/**
 * A value written on a chart (a bar's height): three significant digits, and every digit of its whole part,
 * without trailing zeros ("0.55", "0.452", "3.14", "1235"); tiny or huge ones in short scientific notation.
 * Not the axis' precision: an axis in steps of 1 would write 0.55 as "0.6" and 0.45 as "0.5".
 */
export function valueLabel(v: number): string {
  if (!Number.isFinite(v)) return "—";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e6) {
    const [m, e] = v.toExponential(2).split("e");
    return `${m.replace(/\.?0+$/, "")}e${e.replace("+", "")}`;
  }
  const decimals = Math.max(0, 2 - Math.floor(Math.log10(a) + 1e-12));
  const s = v.toFixed(decimals);
  return s.includes(".") ? s.replace(/\.?0+$/, "") : s;
}

/** A number for SVG coordinates: two decimals, no trailing zeros. */
export function px(v: number): string {
  return String(Math.round(v * 100) / 100);
}

/** Approximate width of text in pixels at a font size (no font metrics without a renderer). */
export function textWidth(s: string, size: number): number {
  return s.length * size * 0.56;
}

/** Min and max of a non-empty array (no spread: a million points would overflow the call stack). */
export function extent(values: readonly number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/** The opening of a chart: the `<svg>` element (its font for all text), a title, a white page, the heading. */
export function svgHeader(width: number, height: number, title: string): string[] {
  const font = 'font-family="Helvetica, Arial, sans-serif"';
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${font}>`,
    `<title>${escapeXml(title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${px(width / 2)}" y="22" font-size="16" font-weight="bold" text-anchor="middle" fill="#222">${
      escapeXml(title)
    }</text>`,
  ];
}
