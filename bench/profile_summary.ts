/**
 * Where the step time goes: reads an ONNX Runtime profile (the chrome-trace JSON that a session with
 * profiling on writes at release; `bench/train_throughput.ts --profile PREFIX` makes one per case) and
 * prints, for one session run (default: the last, a timed run):
 *
 * - the run's wall time (the `model_run` event) against the summed node kernel times, and the gap between
 *   them (feeds and outputs crossing to the device, Loop machinery, allocation);
 * - node executions in the run and per optimizer step. The step count is inferred as the most executions
 *   of any one node (a Loop body node runs once per step) unless `--steps` gives it; on CUDA each node
 *   costs a few µs of launch overhead, so this number bounds the step time from below;
 * - the top operators by total time, with counts, and the top single nodes;
 * - time and node counts per execution provider (CPU nodes in a CUDA session mean host round trips).
 *
 * Control-flow nodes (Loop, If, Scan) are reported apart: their time contains their body's nodes.
 * On CUDA a node's `dur` is host-side time (launching its kernels, plus any synchronization), not GPU
 * kernel time: a run whose kernel time is far below its wall time waits for the GPU.
 *
 * Run: `deno run -A bench/profile_summary.ts PROFILE.json [--top 15] [--run last|all|N] [--json]`.
 * @module
 */
import { parseArgs } from "node:util";
import { intFlag, round, runCli, UsageError } from "./_common.ts";

export const USAGE = `Usage: deno run -A bench/profile_summary.ts PROFILE.json [flags]

Summarizes an ONNX Runtime profile: top operators by time and count, kernel time vs wall time,
node executions per step.

  --run last|all|N   which session run (model_run event, 0-based) to summarize (default last)
  --steps N          optimizer steps in that run (default: inferred from node repeat counts)
  --top N            operators and nodes to list (default 15)
  --json             one JSON line instead of the text report
  --help             this text`;

/** One event of ONNX Runtime's chrome-trace profile. */
export type ProfileEvent = {
  cat?: string;
  name: string;
  ph?: string;
  ts: number;
  dur?: number;
  args?: { op_name?: string; provider?: string; [k: string]: unknown };
};

/** Totals of an operator, a node or a provider. */
export type Tally = { ms: number; count: number };

/** The summary of one run (or all runs). */
export type ProfileSummary = {
  bench: "profile_summary";
  file?: string;
  /** Session runs in the profile. */
  runs: number;
  /** The summarized run (0-based), or "all". */
  run: number | "all";
  wall_ms: number;
  /** Summed `dur` of the non-control-flow nodes. */
  kernel_ms: number;
  kernel_share: number;
  node_execs: number;
  steps: number;
  steps_inferred: boolean;
  node_execs_per_step: number;
  kernel_ms_per_step: number;
  wall_ms_per_step: number;
  /** Distinct nodes executed. */
  distinct_nodes: number;
  providers: Record<string, Tally>;
  control_flow: Record<string, Tally>;
  top_ops: ({ op: string; share: number; per_step: number; mean_us: number } & Tally)[];
  top_nodes: ({ node: string; op: string } & Tally)[];
};

const CONTROL_FLOW = new Set(["Loop", "If", "Scan"]);
const KERNEL_SUFFIX = "_kernel_time";

/** Options of {@link summarizeProfile}. */
export type SummaryOptions = { run?: number | "last" | "all"; steps?: number; top?: number; file?: string };

/** Summarizes the events of a profile. */
export function summarizeProfile(events: ProfileEvent[], o: SummaryOptions = {}): ProfileSummary {
  if (!Array.isArray(events)) throw new Error("not an ONNX Runtime profile: expected a JSON array of events");
  const runs = events.filter((e) => e.cat === "Session" && e.name === "model_run")
    .sort((a, b) => a.ts - b.ts);
  const nodes = events.filter((e) => e.cat === "Node" && e.name.endsWith(KERNEL_SUFFIX));
  if (nodes.length === 0) {
    throw new Error("the profile has no node events (was it written by a session with profiling on?)");
  }
  const want = o.run ?? "last";
  let runIndex: number | "all";
  let inRun: ProfileEvent[];
  let wallUs: number;
  if (want === "all" || runs.length === 0) {
    runIndex = "all";
    inRun = nodes;
    wallUs = runs.length ? runs.reduce((s, r) => s + (r.dur ?? 0), 0) : span(nodes);
  } else {
    const i = want === "last" ? runs.length - 1 : want;
    if (i < 0 || i >= runs.length) {
      throw new UsageError(`--run ${want}: the profile has ${runs.length} runs (0 to ${runs.length - 1})`);
    }
    const r = runs[i];
    const end = r.ts + (r.dur ?? 0);
    runIndex = i;
    inRun = nodes.filter((e) => e.ts >= r.ts && e.ts <= end);
    wallUs = r.dur ?? 0;
  }

  const byOp = new Map<string, Tally>(), byNode = new Map<string, Tally & { op: string }>();
  const providers: Record<string, Tally> = {}, control: Record<string, Tally> = {};
  let kernelUs = 0, execs = 0;
  for (const e of inRun) {
    const op = e.args?.op_name ?? "?";
    const us = e.dur ?? 0;
    if (CONTROL_FLOW.has(op)) {
      add(control, op, us);
      continue;
    }
    kernelUs += us;
    execs++;
    add(providers, e.args?.provider ?? "?", us);
    const t = byOp.get(op) ?? { ms: 0, count: 0 };
    t.ms += us;
    t.count++;
    byOp.set(op, t);
    const name = e.name.slice(0, -KERNEL_SUFFIX.length);
    const n = byNode.get(name) ?? { ms: 0, count: 0, op };
    n.ms += us;
    n.count++;
    byNode.set(name, n);
  }
  let maxRepeat = 0;
  for (const n of byNode.values()) maxRepeat = Math.max(maxRepeat, n.count);
  const steps = o.steps ?? Math.max(maxRepeat, 1);
  const top = o.top ?? 15;
  const ms = (us: number) => round(us / 1000);
  const tallyMs = (r: Record<string, Tally>) =>
    Object.fromEntries(Object.entries(r).map(([k, v]) => [k, { ms: ms(v.ms), count: v.count }]));
  return {
    bench: "profile_summary",
    ...(o.file ? { file: o.file } : {}),
    runs: runs.length,
    run: runIndex,
    wall_ms: ms(wallUs),
    kernel_ms: ms(kernelUs),
    kernel_share: wallUs > 0 ? round(kernelUs / wallUs, 4) : 0,
    node_execs: execs,
    steps,
    steps_inferred: o.steps === undefined,
    node_execs_per_step: round(execs / steps, 1),
    kernel_ms_per_step: ms(kernelUs / steps),
    wall_ms_per_step: ms(wallUs / steps),
    distinct_nodes: byNode.size,
    providers: tallyMs(providers),
    control_flow: tallyMs(control),
    top_ops: [...byOp].sort((a, b) => b[1].ms - a[1].ms).slice(0, top).map(([op, t]) => ({
      op,
      ms: ms(t.ms),
      count: t.count,
      share: kernelUs > 0 ? round(t.ms / kernelUs, 4) : 0,
      per_step: round(t.count / steps, 1),
      mean_us: round(t.ms / t.count, 1),
    })),
    top_nodes: [...byNode].sort((a, b) => b[1].ms - a[1].ms).slice(0, top).map(([node, t]) => ({
      node,
      op: t.op,
      ms: ms(t.ms),
      count: t.count,
    })),
  };
}

function add(r: Record<string, Tally>, key: string, us: number) {
  const t = r[key] ?? (r[key] = { ms: 0, count: 0 });
  t.ms += us;
  t.count++;
}

function span(es: ProfileEvent[]): number {
  let lo = Infinity, hi = -Infinity;
  for (const e of es) {
    lo = Math.min(lo, e.ts);
    hi = Math.max(hi, e.ts + (e.dur ?? 0));
  }
  return hi - lo;
}

/** The text report of a summary. */
export function formatSummary(s: ProfileSummary): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const pad = (x: string | number, n: number) => String(x).padStart(n);
  const lines: string[] = [];
  if (s.file) lines.push(`profile: ${s.file}`);
  const which = s.run === "all"
    ? `all ${s.runs} runs`
    : `run ${s.run} of ${s.runs} (0-based; the last is default)`;
  lines.push(`${which}: wall ${s.wall_ms} ms, ${s.steps} steps (${s.steps_inferred ? "inferred" : "given"})`);
  lines.push(
    `node executions: ${s.node_execs} (${s.node_execs_per_step} per step, ${s.distinct_nodes} distinct nodes)`,
  );
  lines.push(
    `kernel time: ${s.kernel_ms} ms = ${
      pct(s.kernel_share)
    } of the wall time; per step ${s.kernel_ms_per_step} ms ` +
      `kernel, ${s.wall_ms_per_step} ms wall`,
  );
  const prov = Object.entries(s.providers).map(([p, t]) => `${p} ${t.count} nodes ${t.ms} ms`).join("; ");
  lines.push(`providers: ${prov}`);
  const cf = Object.entries(s.control_flow).map(([p, t]) => `${p} ×${t.count} ${t.ms} ms`).join("; ");
  if (cf) lines.push(`control flow (contains its body's time): ${cf}`);
  if (s.providers.CUDAExecutionProvider) {
    lines.push("note: on CUDA node times are host-side (launch + synchronization), not GPU kernel time");
  }
  lines.push("", "top operators by total time:");
  lines.push(
    `  ${"op".padEnd(22)}${pad("total ms", 10)}${pad("share", 8)}${pad("count", 8)}${pad("per step", 10)}${
      pad("mean µs", 10)
    }`,
  );
  for (const t of s.top_ops) {
    lines.push(
      `  ${t.op.padEnd(22)}${pad(t.ms.toFixed(3), 10)}${pad(pct(t.share), 8)}${pad(t.count, 8)}${
        pad(t.per_step, 10)
      }${pad(t.mean_us, 10)}`,
    );
  }
  lines.push("", "top nodes by total time:");
  for (const n of s.top_nodes) {
    lines.push(`  ${n.node.padEnd(36)} ${n.op.padEnd(20)}${pad(n.ms.toFixed(3), 10)} ms ×${n.count}`);
  }
  return lines.join("\n");
}

/** Reads a profile file and summarizes it; prints the report (or one JSON line) and returns the summary. */
export async function main(
  argv: string[],
  print: (line: string) => void = console.log,
): Promise<ProfileSummary | null> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        run: { type: "string", default: "last" },
        steps: { type: "string" },
        top: { type: "string", default: "15" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", default: false, short: "h" },
      },
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message.replace(/\.$/, "")}. Run with --help for the flags.`);
  }
  const { values: f, positionals } = parsed;
  if (f.help) {
    print(USAGE);
    return null;
  }
  if (positionals.length !== 1) {
    throw new UsageError(`give exactly one profile file (got ${positionals.length} arguments)`);
  }
  const run = f.run === "last" || f.run === "all" ? f.run : intFlag("run", f.run, 0);
  const steps = f.steps === undefined ? undefined : intFlag("steps", f.steps);
  const top = intFlag("top", f.top);
  const file = positionals[0];
  let events: ProfileEvent[];
  try {
    events = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    throw new Error(`${file}: ${e instanceof Deno.errors.NotFound ? "not found" : (e as Error).message}`);
  }
  const s = summarizeProfile(events, { run, steps, top, file });
  print(f.json ? JSON.stringify(s) : formatSummary(s));
  return s;
}

if (import.meta.main) await runCli(main, USAGE);
