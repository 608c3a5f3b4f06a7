/**
 * The shape of lib/, checked: the folders form a pipeline (graph, losses, data → runtime → model → train →
 * loop → serve) with no import running back up it, and no module imports itself through others (no circle
 * of imports). Imports are read from the source text (static `import`/`export … from`, and `import()` of a
 * literal path).
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const LIB = resolve(new URL("../lib", import.meta.url).pathname);

/**
 * The pipeline's stages, lowest first: a module imports from its own folder and from lower stages only.
 * Files directly in lib/ (files.ts, lock.ts, cli.ts) are shared helpers below every stage. Graph, losses and
 * data are apart from each other; runtime runs graphs; model builds them and runs them through runtime;
 * train, loop (sample, score, eval) and serve are the uses, each free to use the ones before it (the loop
 * scores with the trainer's reference log-probs; the server shows a run folder's metrics).
 */
const STAGES: Record<string, number> = {
  "": 0,
  cli: 0, // the entries' option engine, stop signals and progress formatting: used by every stage, imports none
  graph: 1,
  losses: 1,
  data: 1,
  runtime: 2,
  model: 3,
  train: 4,
  loop: 5,
  serve: 6,
};

async function libFiles(dir = LIB): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) out.push(...await libFiles(p));
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out.sort();
}

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

/** The lib/ files `file` imports (relative specifiers only). */
function importsOf(file: string, text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2];
    if (spec.startsWith(".")) out.push(resolve(dirname(file), spec));
  }
  return out;
}

const stageOf = (file: string) => {
  const rel = relative(LIB, file);
  const top = rel.includes("/") ? rel.split("/")[0] : "";
  return { top, stage: STAGES[top] };
};

Deno.test("lib/: every folder is a stage of the pipeline, and no import runs back up or across it", async () => {
  const wrong: string[] = [];
  for (const file of await libFiles()) {
    const from = stageOf(file);
    assert.ok(
      from.stage !== undefined,
      `${relative(LIB, file)}: lib/${from.top} is not a stage of the pipeline`,
    );
    for (const dep of importsOf(file, await Deno.readTextFile(file))) {
      const to = stageOf(dep);
      if (to.top !== from.top && !(to.stage < from.stage)) {
        wrong.push(`${relative(LIB, file)} → ${relative(LIB, dep)}`);
      }
    }
  }
  assert.deepEqual(wrong, [], `imports that run back up or across the pipeline:\n${wrong.join("\n")}`);
});

Deno.test("lib/: no circle of imports", async () => {
  const graph = new Map<string, string[]>();
  for (const file of await libFiles()) graph.set(file, importsOf(file, await Deno.readTextFile(file)));
  const state = new Map<string, "open" | "done">();
  const circles: string[] = [];
  const visit = (f: string, path: string[]) => {
    if (state.get(f) === "done") return;
    if (state.get(f) === "open") {
      const circle = path.slice(path.indexOf(f)).concat(f);
      circles.push(circle.map((p) => relative(LIB, p)).join(" → "));
      return;
    }
    state.set(f, "open");
    for (const d of graph.get(f) ?? []) if (graph.has(d)) visit(d, [...path, f]);
    state.set(f, "done");
  };
  for (const f of graph.keys()) visit(f, []);
  assert.deepEqual(circles, [], `circles of imports:\n${circles.join("\n")}`);
});
