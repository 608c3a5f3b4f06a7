/**
 * Helpers of the benchmark tests: tiny model flags, a line collector, checks on JSON records, and running
 * a script as a subprocess (to see its exit status and stderr).
 */
import assert from "node:assert/strict";

/** Flags that make the GPT-2 benchmarks tiny (2 layers, hidden 32, vocab 64, 2 × 16 tokens). */
export const TINY = [
  "--layers",
  "2",
  "--hidden",
  "32",
  "--heads",
  "4",
  "--vocab",
  "64",
  "--batch",
  "2",
  "--seq",
  "16",
];

/** Collects printed lines. */
export function collector(): { lines: string[]; print: (line: string) => void } {
  const lines: string[] = [];
  return { lines, print: (l) => lines.push(l) };
}

/** Asserts that each named field of `rec` is a finite number > 0. */
export function assertPositive(rec: Record<string, unknown>, fields: string[]): void {
  for (const f of fields) {
    const v = rec[f];
    assert.ok(typeof v === "number" && Number.isFinite(v) && v > 0, `${f} = ${JSON.stringify(v)}`);
  }
}

/** Runs `deno run -A <script> ...args`; returns status, stdout and stderr. */
export async function runScript(script: string, args: string[]) {
  const url = new URL(`../../${script}`, import.meta.url);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", url.pathname, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
