/**
 * The README and the reference pages under docs/ stay true to the repository: every relative link leads to a
 * file (and a heading, when it names one), the package's entries (deno.json `exports`) are one per area of
 * lib/ and are all named where a reader looks for them, and the README's test command is the one CI runs,
 * with the doc examples in it.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");

async function docsPages(): Promise<string[]> {
  const pages: string[] = [];
  for await (const e of Deno.readDir(join(ROOT, "docs"))) {
    if (e.isFile && e.name.endsWith(".md")) pages.push(join(ROOT, "docs", e.name));
  }
  return pages.sort();
}

/** The lines of a Markdown text outside fenced code blocks. */
function proseLines(text: string): string[] {
  let fenced = false;
  return text.split("\n").filter((line) => {
    if (/^\s*```/.test(line)) {
      fenced = !fenced;
      return false;
    }
    return !fenced;
  });
}

/** GitHub's anchor of a heading: lower case, punctuation and backticks dropped, spaces as hyphens. */
function anchorOf(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

function anchorsIn(text: string): Set<string> {
  return new Set(proseLines(text).flatMap((l) => /^#{1,6}\s+(.*)$/.exec(l)?.[1] ?? []).map(anchorOf));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("README and docs/: every relative link leads to a file, and to a heading there when it names one", async () => {
  const pages = [join(ROOT, "README.md"), ...await docsPages()];
  assert.ok(pages.length > 1, "docs/ has no reference pages");
  const broken: string[] = [];
  for (const page of pages) {
    const text = await Deno.readTextFile(page);
    for (const line of proseLines(text)) {
      for (const m of line.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1];
        if (/^[a-z]+:/i.test(target)) continue; // http:, https:, mailto:
        const [path, anchor] = target.split("#");
        const file = path === "" ? page : resolve(dirname(page), path);
        const where = `${relative(ROOT, page)}: (${target})`;
        if (!await exists(file)) {
          broken.push(`${where}: no ${relative(ROOT, file)}`);
        } else if (anchor !== undefined && file.endsWith(".md")) {
          if (!anchorsIn(await Deno.readTextFile(file)).has(anchor)) {
            broken.push(`${where}: ${relative(ROOT, file)} has no heading #${anchor}`);
          }
        }
      }
    }
  }
  assert.deepEqual(broken, [], `broken links:\n${broken.join("\n")}`);
});

Deno.test("README links every reference page under docs/", async () => {
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const unlinked = (await docsPages()).map((p) => relative(ROOT, p)).filter((p) =>
    !readme.includes(`](${p})`)
  );
  assert.deepEqual(unlinked, [], `pages the README does not link: ${unlinked.join(", ")}`);
});

/**
 * The areas of lib/ a user's own pipeline is made of, each an entry of the package. (lib/cli/ and the files
 * directly in lib/ serve the commands, not scripts.)
 */
const LIBRARY_AREAS = ["losses", "graph", "data", "runtime", "model", "train", "loop", "serve"];

Deno.test("deno.json exports each library area's mod.ts, and mod.ts and docs/library.md say what each holds", async () => {
  const config = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json")));
  const exports: Record<string, string> = config.exports ?? {};
  assert.equal(exports["."], "./mod.ts");
  for (const area of LIBRARY_AREAS) {
    assert.equal(exports[`./${area}`], `./lib/${area}/mod.ts`, `entry ./${area}`);
  }
  for (const [key, file] of Object.entries(exports)) {
    assert.ok(await exists(join(ROOT, file)), `deno.json exports ${key} as ${file}, which does not exist`);
  }
  const modDoc = await Deno.readTextFile(join(ROOT, "mod.ts"));
  const library = await Deno.readTextFile(join(ROOT, "docs", "library.md"));
  for (const key of Object.keys(exports).filter((k) => k !== ".")) {
    assert.ok(modDoc.includes(`\`${key}\``), `mod.ts's doc comment does not say what ${key} holds`);
    assert.ok(library.includes(`\`${key}\``), `docs/library.md does not say what ${key} holds`);
  }
});

Deno.test("the README's test command is the one CI runs, and the test task runs the doc examples", async () => {
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const ci = await Deno.readTextFile(join(ROOT, ".ci", "run"));
  const command = /^(npx -y deno@[\d.]+ task test)\b/m.exec(ci)?.[1];
  assert.ok(command, ".ci/run runs no `npx -y deno@… task test`");
  assert.ok(readme.includes(command), `the README's set-up does not say ${command}`);
  const task: string = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.json"))).tasks.test;
  assert.match(task, /^deno test --doc /);
  for (const path of ["mod.ts", "lib/"]) {
    assert.ok(task.split(" ").includes(path), `the test task leaves out ${path}`);
  }
});
